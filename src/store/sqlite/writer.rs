//! The writer thread: one transaction per flush batch, one fsync per transaction.
//!
//! The upsert only replaces a stored row when the new state is newer in the LWW order
//! (I1), compared as a row value `(seq, tiebreak, position_ms, device)` exactly like
//! [`crate::model::LwwKey`]; a missing device sorts as `''`, before every real id.
//! Rows are written in key order, which keeps B-tree page visits local.

use std::sync::Arc;

use crossbeam::channel::{self, Receiver, Sender};
use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::{classify, is_row_poison};
use crate::model::ProgressRow;
use crate::store::{RejectedRow, StoreError, WriteReport};

const UPSERT: &str = "INSERT INTO progress
        (learner_id, lesson_id, position_ms, seq, tiebreak, device_id, updated_at_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
    ON CONFLICT (learner_id, lesson_id) DO UPDATE SET
        position_ms = excluded.position_ms,
        seq = excluded.seq,
        tiebreak = excluded.tiebreak,
        device_id = excluded.device_id,
        updated_at_ms = excluded.updated_at_ms
    WHERE (excluded.seq, excluded.tiebreak, excluded.position_ms, coalesce(excluded.device_id, ''))
        > (progress.seq, progress.tiebreak, progress.position_ms, coalesce(progress.device_id, ''))";

pub(super) struct WriteJob {
    pub rows: Arc<[ProgressRow]>,
    pub reply: oneshot::Sender<Result<WriteReport, StoreError>>,
}

pub(super) fn spawn(conn: Connection) -> Result<Sender<WriteJob>, StoreError> {
    // One batch queued behind the one being written: the flusher waits for each
    // verdict, so more only queue up when it gave up on a stalled write.
    let (tx, rx) = channel::bounded(1);
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || run(conn, rx))
        .map_err(|e| StoreError::Fatal(format!("cannot start sqlite writer: {e}")))?;
    Ok(tx)
}

fn run(mut conn: Connection, jobs: Receiver<WriteJob>) {
    for job in jobs {
        // A flusher that gave up on this job (store timeout) has put its rows back on
        // the dirty lists; the retry carries their newest state, so skip the stale copy.
        if job.reply.is_closed() {
            continue;
        }
        let verdict = write(&mut conn, &job.rows);
        // The flusher may give up while the write runs; the write stands anyway.
        let _ = job.reply.send(verdict);
    }
}

fn write(conn: &mut Connection, rows: &[ProgressRow]) -> Result<WriteReport, StoreError> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        (&rows[a].learner_id, &rows[a].lesson_id).cmp(&(&rows[b].learner_id, &rows[b].lesson_id))
    });
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(classify)?;
    let mut report = WriteReport::default();
    {
        let mut upsert = tx.prepare_cached(UPSERT).map_err(classify)?;
        for index in order {
            match upsert_row(&mut upsert, &rows[index]) {
                Ok(()) => report.written += 1,
                Err(e) if is_row_poison(&e) => report.rejected.push(RejectedRow {
                    index,
                    reason: e.to_string(),
                }),
                Err(e) => return Err(classify(e)),
            }
        }
    }
    tx.commit().map_err(classify)?;
    Ok(report)
}

fn upsert_row(
    upsert: &mut rusqlite::CachedStatement<'_>,
    row: &ProgressRow,
) -> rusqlite::Result<()> {
    let p = &row.progress;
    let key = p.lww_key();
    upsert.execute(params![
        &*row.learner_id,
        &*row.lesson_id,
        sql_int(p.position_ms)?,
        sql_int(p.seq)?,
        key.tiebreak(),
        p.device_id.as_deref(),
        sql_int(p.updated_at_ms)?,
    ])?;
    Ok(())
}

/// SQLite integers are signed 64-bit; API bounds keep every value far below the limit,
/// and a value beyond it is refused as this row's own fault (poison), never wrapped.
fn sql_int(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}
