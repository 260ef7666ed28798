//! Reader threads: point reads and learner listings for read-through and the GETs.
//!
//! Each thread owns a connection; jobs come from one shared crossbeam channel, so a
//! slow read on one thread does not hold up the others.

use std::path::Path;

use crossbeam::channel::{self, Receiver, Sender};
use rusqlite::{Connection, Row};
use tokio::sync::oneshot;

use super::{classify, schema, SqliteOptions};
use crate::model::{LessonProgress, Progress};
use crate::store::StoreError;

const GET: &str = "SELECT position_ms, seq, device_id, updated_at_ms
    FROM progress WHERE learner_id = ?1 AND lesson_id = ?2";
const LIST: &str = "SELECT position_ms, seq, device_id, updated_at_ms, lesson_id
    FROM progress WHERE learner_id = ?1";

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum ReadJob {
    Get {
        learner: String,
        lesson: String,
        reply: Reply<Option<Progress>>,
    },
    List {
        learner: String,
        reply: Reply<Vec<LessonProgress>>,
    },
    Ping {
        reply: Reply<()>,
    },
}

pub(super) fn spawn(path: &Path, options: &SqliteOptions) -> Result<Sender<ReadJob>, StoreError> {
    let (tx, rx) = channel::bounded(1024);
    for n in 0..options.readers.max(1) {
        let conn = schema::open_connection(path, options.cache_mib)?;
        let jobs = rx.clone();
        std::thread::Builder::new()
            .name(format!("sqlite-reader-{n}"))
            .spawn(move || run(conn, jobs))
            .map_err(|e| StoreError::Fatal(format!("cannot start sqlite reader: {e}")))?;
    }
    Ok(tx)
}

fn run(conn: Connection, jobs: Receiver<ReadJob>) {
    for job in jobs {
        // A requester that went away (timeout, closed connection) needs no answer, and
        // its read is skipped: after a stall the queue drains at once.
        match job {
            ReadJob::Get {
                learner,
                lesson,
                reply,
            } if !reply.is_closed() => {
                let _ = reply.send(get(&conn, &learner, &lesson));
            }
            ReadJob::List { learner, reply } if !reply.is_closed() => {
                let _ = reply.send(list(&conn, &learner));
            }
            ReadJob::Ping { reply } if !reply.is_closed() => {
                let _ = reply.send(ping(&conn));
            }
            _ => {}
        }
    }
}

fn get(conn: &Connection, learner: &str, lesson: &str) -> Result<Option<Progress>, StoreError> {
    let mut stmt = conn.prepare_cached(GET).map_err(classify)?;
    let mut rows = stmt.query([learner, lesson]).map_err(classify)?;
    match rows.next().map_err(classify)? {
        Some(row) => progress(row).map(Some),
        None => Ok(None),
    }
}

fn list(conn: &Connection, learner: &str) -> Result<Vec<LessonProgress>, StoreError> {
    let mut stmt = conn.prepare_cached(LIST).map_err(classify)?;
    let mut rows = stmt.query([learner]).map_err(classify)?;
    let mut lessons = Vec::new();
    while let Some(row) = rows.next().map_err(classify)? {
        let lesson_id: String = row.get(4).map_err(classify)?;
        lessons.push(LessonProgress {
            lesson_id: lesson_id.into(),
            progress: progress(row)?,
        });
    }
    Ok(lessons)
}

fn ping(conn: &Connection) -> Result<(), StoreError> {
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .map_err(classify)
}

/// Decodes the first four columns; a value no write could have produced is corruption.
fn progress(row: &Row<'_>) -> Result<Progress, StoreError> {
    let corrupt = |e: rusqlite::Error| StoreError::Fatal(format!("unreadable progress row: {e}"));
    let unsigned = |i: usize| -> Result<u64, StoreError> {
        let v: i64 = row.get(i).map_err(corrupt)?;
        u64::try_from(v)
            .map_err(|_| StoreError::Fatal(format!("negative value {v} in progress row")))
    };
    let device: Option<String> = row.get(2).map_err(corrupt)?;
    Ok(Progress {
        position_ms: unsigned(0)?,
        seq: unsigned(1)?,
        device_id: device.map(Into::into),
        updated_at_ms: unsigned(3)?,
    })
}
