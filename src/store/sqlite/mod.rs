//! `sqlite://PATH`: the embedded default store, one durable file, nothing to install.
//!
//! SQLite is blocking and has a single writer, so this store owns threads of its own
//! and never runs SQLite on the async reactor:
//! - one **writer** thread holds the only write connection. A flush batch is one
//!   transaction of cached, prepared conditional upserts ending in one fsync (group
//!   commit: `synchronous=FULL`, so `ack=durable` answers are truly on disk, while
//!   fsyncs are paid per flush, not per request);
//! - a few **reader** threads serve read-through misses and GETs (WAL lets them read
//!   while the writer writes);
//! - one **checkpointer** thread moves the WAL into the main file in the background.
//!   Automatic checkpoints are off because they run inside a commit and stall it for
//!   hundreds of milliseconds on this disk.
//!
//! Threads take jobs from bounded crossbeam channels and answer over oneshot channels,
//! which is how blocking work crosses into async code without tying up tokio's blocking
//! pool. Jobs are queued with `try_send`: when a stalled disk fills a queue, the caller
//! gets a retryable error at once instead of blocking a tokio worker (I4). A job whose
//! caller has given up (store timeout, closed connection) is skipped, not run.

mod checkpoint;
mod reader;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crossbeam::channel::{Sender, TrySendError};
use tokio::sync::oneshot;

use super::{Store, StoreError, WriteReport};
use crate::model::{LessonProgress, Progress, ProgressRow};
use reader::ReadJob;
use writer::WriteJob;

/// Tuning knobs; the defaults are what measurements on 2-core machines favoured
/// (`docs/performance.md`).
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Page cache per connection, in MiB (SQLite's own default is 2 MiB).
    pub cache_mib: u32,
    /// Reader threads (each with its own connection).
    pub readers: usize,
    /// How often the background checkpointer runs.
    pub checkpoint_every: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            cache_mib: 64,
            readers: 2,
            checkpoint_every: Duration::from_secs(2),
        }
    }
}

pub struct SqliteStore {
    path: PathBuf,
    writes: Sender<WriteJob>,
    reads: Sender<ReadJob>,
    _checkpointer: checkpoint::Checkpointer,
}

impl SqliteStore {
    /// Opens (creating file and folders if needed) and migrates the database, then
    /// starts the store's threads.
    pub fn open(path: &Path, options: &SqliteOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Fatal(format!("cannot create folder {}: {e}", dir.display()))
            })?;
        }
        let conn = schema::open_connection(path, options.cache_mib)?;
        schema::migrate(&conn)?;
        let writes = writer::spawn(conn)?;
        let reads = reader::spawn(path, options)?;
        let checkpointer = checkpoint::Checkpointer::spawn(path, options.checkpoint_every)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writes,
            reads,
            _checkpointer: checkpointer,
        })
    }

    async fn read<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<T>) -> ReadJob,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        hand_off(&self.reads, job(tx), "reader")?;
        rx.await.map_err(|_| stopped("reader"))
    }
}

/// Queues a job for a store thread without ever blocking the async caller: a full
/// queue means the disk is not keeping up, which is a retryable failure (the flusher
/// backs off, a read-through answers 503), never a stalled tokio worker.
fn hand_off<T>(queue: &Sender<T>, job: T, what: &str) -> Result<(), StoreError> {
    queue.try_send(job).map_err(|e| match e {
        TrySendError::Full(_) => {
            StoreError::Unavailable(format!("sqlite {what} is behind: its queue is full"))
        }
        TrySendError::Disconnected(_) => stopped(what),
    })
}

fn stopped(what: &str) -> StoreError {
    StoreError::Fatal(format!("sqlite {what} thread has stopped"))
}

#[async_trait]
impl Store for SqliteStore {
    async fn write_batch(&self, rows: Arc<[ProgressRow]>) -> Result<WriteReport, StoreError> {
        let (reply, rx) = oneshot::channel();
        hand_off(&self.writes, WriteJob { rows, reply }, "writer")?;
        rx.await.map_err(|_| stopped("writer"))?
    }

    async fn get(&self, learner_id: &str, lesson_id: &str) -> Result<Option<Progress>, StoreError> {
        let (learner, lesson) = (learner_id.to_owned(), lesson_id.to_owned());
        self.read(|reply| ReadJob::Get {
            learner,
            lesson,
            reply,
        })
        .await?
    }

    async fn list(&self, learner_id: &str) -> Result<Vec<LessonProgress>, StoreError> {
        let learner = learner_id.to_owned();
        self.read(|reply| ReadJob::List { learner, reply }).await?
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|reply| ReadJob::Ping { reply }).await?
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }
}

/// Maps a SQLite error to what the flusher can do about it.
fn classify(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase | ReadOnly | PermissionDenied) => {
            StoreError::Fatal(e.to_string())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// True when a row-level error is the row's own fault (retrying it cannot help), so
/// the row is set aside as poison instead of failing the whole flush.
fn is_row_poison(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        e.sqlite_error_code(),
        Some(ConstraintViolation | TooBig | TypeMismatch)
    ) || matches!(e, rusqlite::Error::ToSqlConversionFailure(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64) -> ProgressRow {
        ProgressRow {
            learner_id: "ada".into(),
            lesson_id: "l1".into(),
            progress: Progress {
                position_ms: seq * 10,
                seq,
                device_id: None,
                updated_at_ms: 1,
            },
        }
    }

    /// I4: while another process holds the database's write lock (a stalled disk, as
    /// the writer sees it), flush attempts that time out pile up only to the queue's
    /// bound; the next one is refused at once as retryable instead of blocking the
    /// tokio thread it runs on (this test's only thread). Once the lock is gone the
    /// newest state lands.
    #[tokio::test]
    async fn i4_a_stalled_writer_refuses_more_work_instead_of_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.db");
        let store = SqliteStore::open(&path, &SqliteOptions::default()).expect("open");
        let locker = rusqlite::Connection::open(&path).expect("second connection");
        locker
            .execute_batch("BEGIN EXCLUSIVE")
            .expect("take the write lock");

        let attempt = |seq| {
            tokio::time::timeout(
                Duration::from_millis(100),
                store.write_batch(Arc::from(vec![row(seq)])),
            )
        };
        // One attempt ends up waiting on the lock inside the writer, one waits in the
        // queue (however the writer thread is scheduled, a few attempts get there); the
        // next is refused at once. Each attempt returns: none blocks this thread.
        let mut refused = None;
        for seq in 1..=10 {
            match attempt(seq).await {
                Err(_elapsed) => continue,
                Ok(Err(StoreError::Unavailable(m))) if m.contains("queue is full") => {
                    refused = Some(seq);
                    break;
                }
                Ok(other) => {
                    panic!("attempt {seq}: expected a timeout or a refusal, got {other:?}")
                }
            }
        }
        assert!(refused.is_some(), "no attempt was refused");

        locker.execute_batch("ROLLBACK").expect("release the lock");
        let mut written = None;
        for _ in 0..200 {
            match store.write_batch(Arc::from(vec![row(4)])).await {
                Ok(report) => {
                    written = Some(report);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        assert_eq!(written.map(|r| r.written), Some(1));
        let stored = store.get("ada", "l1").await.expect("read");
        assert_eq!(stored.map(|p| p.seq), Some(4));
    }
}
