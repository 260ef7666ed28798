//! The store seam: where progress becomes durable.
//!
//! The engine talks to every backend through [`Store`]. The trait is async because the
//! ScyllaDB driver is; blocking backends (SQLite) keep their blocking calls on threads
//! of their own and hand results back over channels, so no store call ever blocks the
//! async reactor that serves HTTP.
//!
//! Every backend enforces last-write-wins itself ([`crate::model::Progress::lww_key`]):
//! a write never replaces a newer state, so reordered flushes, retries, several ingest
//! nodes and late offline syncs are all safe (I1).

mod error;
pub mod memory;
pub mod scylla;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use error::StoreError;

use crate::model::{LessonProgress, Progress, ProgressRow};

/// A row the store refused for good (not a timeout): set aside so it cannot block the
/// rest of the flush forever. `index` points into the batch passed to `write_batch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    pub index: usize,
    pub reason: String,
}

/// What one batch write did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Rows the store accepted (whether or not LWW let them replace the stored state).
    pub written: usize,
    /// Rows refused for good; every other row of the batch is durable.
    pub rejected: Vec<RejectedRow>,
}

/// A durable home for progress rows.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes one flush batch with last-write-wins semantics per row. `Ok` means every
    /// row not listed in `rejected` is durable (committed, and for SQLite fsynced);
    /// `Err` means the engine must assume none of the batch is and retry it all.
    async fn write_batch(&self, rows: Arc<[ProgressRow]>) -> Result<WriteReport, StoreError>;

    /// The stored state of one key, `None` when nothing is stored.
    async fn get(&self, learner_id: &str, lesson_id: &str) -> Result<Option<Progress>, StoreError>;

    /// Every stored lesson of one learner, in no particular order.
    async fn list(&self, learner_id: &str) -> Result<Vec<LessonProgress>, StoreError>;

    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// A short human description for logs ("sqlite ./progressd-data/progress.db").
    fn describe(&self) -> String;
}
