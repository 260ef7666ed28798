//! The flush path into ScyllaDB: one prepared, idempotent, single-partition write
//! per row, many in flight, each stamped with its state's write timestamp.
//!
//! Owns I4 on this backend. A write that times out, meets an overloaded node or loses
//! its connection is retried with jittered backoff up to the configured attempts;
//! after that the whole `write_batch` fails and the engine keeps every row dirty
//! (replaying rows that did land is harmless: same timestamp, same cells). A row the
//! cluster refuses as invalid is set aside as a poison row and counted, and the rest
//! of the flush goes on — but only once a probe shows the table itself still answers,
//! so a dropped table or keyspace (which also reads as "invalid") fails the flush
//! instead of poisoning every row. Writes in flight are bounded by one semaphore
//! shared by all flushes, so a slow cluster backs the flusher up instead of piling up
//! requests.
//!
//! Rows are not grouped into unlogged batches: one learner plays one lesson at a
//! time, so a flush rarely holds two rows of one partition, and a statement per row
//! keeps a poison row from taking its neighbours down with it. The driver's default
//! policy routes each statement to a replica owning its token (and shard).

use std::{sync::Arc, time::Instant};

use scylla::{
    client::session::Session,
    statement::{bound::BoundStatement, prepared::PreparedStatement},
};
use tokio::{sync::Semaphore, task::JoinSet};

use super::{
    metrics::{ErrorKind, ScyllaMetrics},
    retry::{backoff, classify, store_error},
    timestamp::progress_timestamp,
};
use crate::{
    clock::now_ms,
    model::ProgressRow,
    store::{RejectedRow, StoreError, WriteReport},
};

/// How a row's write ended.
#[derive(Debug)]
enum RowOutcome {
    Written,
    Poison(String),
    Failed(StoreError),
}

/// Retry settings of the write path.
#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    pub attempts: u32,
    pub base_backoff: std::time::Duration,
}

/// Writes flush batches.
#[derive(Debug)]
pub struct Writer {
    session: Arc<Session>,
    insert: PreparedStatement,
    probe: PreparedStatement,
    in_flight: Arc<Semaphore>,
    retry: RetrySettings,
    metrics: ScyllaMetrics,
}

/// Binds one row to the insert, with its write timestamp set at the protocol level.
/// An error is the reason the row can never be written.
pub fn bind_row(
    insert: &PreparedStatement,
    row: &ProgressRow,
    now_ms: u64,
) -> Result<BoundStatement, String> {
    let p = &row.progress;
    let timestamp = progress_timestamp(p, now_ms).map_err(|e| e.to_string())?;
    let int = |name: &str, v: u64| {
        i64::try_from(v).map_err(|_| format!("{name} {v} does not fit a CQL bigint"))
    };
    let values = (
        &*row.learner_id,
        &*row.lesson_id,
        int("position_ms", p.position_ms)?,
        int("seq", p.seq)?,
        p.device_id.as_deref().unwrap_or(""),
        int("updated_at_ms", p.updated_at_ms)?,
    );
    let mut bound = insert.clone().bind(&values).map_err(|e| e.to_string())?;
    bound.set_timestamp(Some(timestamp));
    Ok(bound)
}

impl Writer {
    pub fn new(
        session: Arc<Session>,
        insert: PreparedStatement,
        probe: PreparedStatement,
        max_in_flight: usize,
        retry: RetrySettings,
        metrics: ScyllaMetrics,
    ) -> Self {
        Writer {
            session,
            insert,
            probe,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            retry,
            metrics,
        }
    }

    /// Writes every row of `rows`; see the module docs for what `Ok` and `Err` mean.
    pub async fn write_batch(
        self: &Arc<Self>,
        rows: Arc<[ProgressRow]>,
    ) -> Result<WriteReport, StoreError> {
        let now = now_ms();
        let mut report = WriteReport::default();
        let mut tasks = JoinSet::new();
        for (index, row) in rows.iter().enumerate() {
            match bind_row(&self.insert, row, now) {
                Ok(bound) => {
                    let writer = Arc::clone(self);
                    tasks.spawn(async move { (index, writer.write_row(bound).await) });
                }
                Err(reason) => self.poison(&mut report, index, reason),
            }
        }
        let mut refused = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (index, outcome) =
                joined.map_err(|e| StoreError::Fatal(format!("row write task failed: {e}")))?;
            match outcome {
                RowOutcome::Written => report.written += 1,
                RowOutcome::Poison(reason) => refused.push((index, reason)),
                // Dropping `tasks` cancels the rest: the engine retries the whole batch.
                RowOutcome::Failed(err) => return Err(err),
            }
        }
        if !refused.is_empty() {
            self.session
                .execute_unpaged(&self.probe, ())
                .await
                .map_err(|e| {
                    StoreError::Fatal(format!(
                        "the cluster refused {} row(s) and the progress table does not answer: {e}",
                        refused.len()
                    ))
                })?;
            for (index, reason) in refused {
                self.poison(&mut report, index, reason);
            }
        }
        report.rejected.sort_by_key(|r| r.index);
        Ok(report)
    }

    fn poison(&self, report: &mut WriteReport, index: usize, reason: String) {
        tracing::warn!(index, %reason, "scylla refused a row for good; set aside as poison");
        self.metrics.poison_rows.inc();
        report.rejected.push(RejectedRow { index, reason });
    }

    async fn write_row(&self, bound: BoundStatement) -> RowOutcome {
        let mut retry = 0;
        loop {
            let result = {
                let Ok(_permit) = self.in_flight.acquire().await else {
                    return RowOutcome::Failed(StoreError::Fatal("scylla store closed".into()));
                };
                self.metrics.writes_in_flight.inc();
                let started = Instant::now();
                let result = self.session.execute_bound_unpaged(&bound).await;
                self.metrics
                    .write_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.writes_in_flight.dec();
                result
            };
            let err = match result {
                Ok(_) => return RowOutcome::Written,
                Err(err) => err,
            };
            let kind = classify(&err);
            self.metrics.error(kind);
            match kind {
                ErrorKind::Invalid => return RowOutcome::Poison(err.to_string()),
                ErrorKind::Fatal => return RowOutcome::Failed(store_error(&err, kind)),
                _ if retry + 1 >= self.retry.attempts => {
                    tracing::warn!(%err, attempts = retry + 1, "scylla write gave up; flush stays dirty");
                    return RowOutcome::Failed(store_error(&err, kind));
                }
                _ => {
                    self.metrics.retries.inc();
                    let jitter = rand::random::<f64>();
                    tokio::time::sleep(backoff(self.retry.base_backoff, retry, jitter)).await;
                    retry += 1;
                }
            }
        }
    }
}
