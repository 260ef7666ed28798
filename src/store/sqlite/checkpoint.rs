//! The checkpointer: copies the WAL into the database file in the background.
//!
//! Left to SQLite, a checkpoint runs inside whichever commit crosses the threshold and
//! stalls it (200–350 ms measured here). A PASSIVE checkpoint from a connection of its
//! own runs beside the writer instead, and never waits for readers or writers. The
//! thread stops when the store is dropped.

use std::path::Path;
use std::time::Duration;

use crossbeam::channel::{self, Sender};

use super::schema;
use crate::store::StoreError;

pub(super) struct Checkpointer {
    _stop: Sender<()>,
}

impl Checkpointer {
    pub(super) fn spawn(path: &Path, every: Duration) -> Result<Self, StoreError> {
        let conn = schema::open_connection(path, 1)?;
        let (stop, stopped) = channel::bounded::<()>(0);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                // Wakes on the tick; a disconnected channel (store dropped) ends the loop.
                while let Err(channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "sqlite checkpoint failed; will retry");
                    }
                }
            })
            .map_err(|e| StoreError::Fatal(format!("cannot start sqlite checkpointer: {e}")))?;
        Ok(Checkpointer { _stop: stop })
    }
}
