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
//! Threads take jobs from crossbeam channels and answer over oneshot channels, which is
//! how blocking work crosses into async code without tying up tokio's blocking pool.

mod checkpoint;
mod reader;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crossbeam::channel::Sender;
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
        self.reads.send(job(tx)).map_err(|_| stopped("reader"))?;
        rx.await.map_err(|_| stopped("reader"))
    }
}

fn stopped(what: &str) -> StoreError {
    StoreError::Fatal(format!("sqlite {what} thread has stopped"))
}

#[async_trait]
impl Store for SqliteStore {
    async fn write_batch(&self, rows: Arc<[ProgressRow]>) -> Result<WriteReport, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writes
            .send(WriteJob { rows, reply })
            .map_err(|_| stopped("writer"))?;
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
