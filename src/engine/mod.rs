//! The ingestion engine: a sharded in-memory last-write-wins map in front of a store.
//!
//! - [`shard`]: the map itself and the LWW merge (I1); dirty lists; eviction.
//! - [`loader`]: single-flight read-through for keys not in memory (I1, I6).
//! - [`flusher`]: coalesced batches to the store, retries with backoff (I4), durable
//!   acknowledgements (I3), the final drain at shutdown (I2).
//!
//! The hot path — a heartbeat for a resident key — takes one shard lock, compares, and
//! returns: no I/O, no await, no allocation unless the state changes. The store is
//! only awaited on a miss, and never while a lock is held.

mod flusher;
mod loader;
mod shard;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::utils::CachePadded;
use foldhash::fast::RandomState;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

pub use flusher::run_flusher;
pub use shard::{Incoming, Merged};

use crate::metrics::Metrics;
use crate::model::{LessonProgress, Progress};
use crate::store::{Store, StoreError};
use shard::Shard;

/// Engine knobs, validated by `config` before they get here.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub shards: usize,
    /// Longest time an accepted heartbeat waits in memory before its flush starts.
    pub flush_interval: Duration,
    /// A flush starts early once this many keys are dirty.
    pub flush_dirty_threshold: usize,
    /// Rows per store write (one SQLite transaction; for Scylla, rows written before
    /// the flusher settles them and moves on).
    pub batch_rows: usize,
    /// Clean entries beyond this many are evicted, least recently used first.
    pub max_resident_keys: usize,
    /// Clean entries idle this long are evicted.
    pub idle_ttl: Duration,
    /// New keys are refused with 503 while this many keys wait for the store (I4).
    pub max_dirty_keys: usize,
    /// Longest wait for one store call.
    pub store_timeout: Duration,
    /// Longest wait for an `ack=durable` answer.
    pub durable_timeout: Duration,
    /// Backoff after a failed flush: starts here, doubles, with full jitter...
    pub retry_min: Duration,
    /// ...up to this.
    pub retry_max: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: 64,
            flush_interval: Duration::from_secs(1),
            flush_dirty_threshold: 50_000,
            batch_rows: 50_000,
            max_resident_keys: 2_000_000,
            idle_ttl: Duration::from_secs(30 * 60),
            max_dirty_keys: 1_000_000,
            store_timeout: Duration::from_secs(10),
            durable_timeout: Duration::from_secs(10),
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
        }
    }
}

/// Why the engine could not take or answer a request; each maps to a 503 or 500.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Memory is at its cap while the store is behind (I4): shed, don't drop.
    #[error("too many heartbeats are waiting for the store; retry later")]
    Overloaded,
    /// A key not in memory could not be read from the store, so its state is unknown.
    #[error("the store could not be read: {0}")]
    StoreRead(#[from] StoreError),
    /// `ack=durable`: the store did not commit in time. The heartbeat stays queued.
    #[error("the store did not commit in time; the heartbeat stays queued")]
    NotDurableYet,
    /// `ack=durable`: the store refused this state for good (a poison row).
    #[error("the store refused this heartbeat: {0}")]
    Refused(String),
}

/// The sharded map, its counters and the signals between requests and the flusher.
pub struct Engine {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    hasher: RandomState,
    store: Arc<dyn Store>,
    config: EngineConfig,
    metrics: Arc<Metrics>,
    /// Keys whose newest state is not yet durable (changes only on clean↔dirty).
    dirty: CachePadded<AtomicUsize>,
    resident: CachePadded<AtomicUsize>,
    /// Wakes the flusher early: dirty threshold crossed, a durable waiter, shutdown.
    wake_flusher: Notify,
    /// Number of flushes started; a flush snapshots every write made before it starts.
    flushes_started: AtomicU64,
    /// Newest flush number whose every row is committed (or set aside as poison).
    flushes_committed: watch::Sender<u64>,
    store_healthy: AtomicBool,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, config: EngineConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let shards = (0..config.shards.max(1))
            .map(|_| CachePadded::new(Mutex::default()))
            .collect();
        Arc::new(Engine {
            shards,
            hasher: RandomState::default(),
            store,
            config,
            metrics,
            dirty: CachePadded::new(AtomicUsize::new(0)),
            resident: CachePadded::new(AtomicUsize::new(0)),
            wake_flusher: Notify::new(),
            flushes_started: AtomicU64::new(0),
            flushes_committed: watch::Sender::new(0),
            store_healthy: AtomicBool::new(true),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// One learner's lessons all live in one shard.
    fn shard(&self, learner: &str) -> &Mutex<Shard> {
        let i = self.hasher.hash_one(learner) as usize % self.shards.len();
        &self.shards[i]
    }

    /// Applies one validated heartbeat (I1). Loads the key first if it is not resident.
    pub async fn apply(
        &self,
        learner: &str,
        lesson: &str,
        incoming: &Incoming<'_>,
    ) -> Result<Merged, EngineError> {
        let resident = self.shard(learner).lock().merge(learner, lesson, incoming);
        match resident {
            Some(merged) => Ok(self.count_merge(merged)),
            None => self.merge_with_load(learner, lesson, incoming).await,
        }
    }

    fn count_merge(&self, merged: Merged) -> Merged {
        if merged.applied {
            self.metrics.heartbeats_applied.inc();
        } else {
            self.metrics.heartbeats_stale.inc();
        }
        if merged.newly_dirty {
            let dirty = self.dirty.fetch_add(1, Ordering::Relaxed) + 1;
            if dirty == self.config.flush_dirty_threshold {
                self.wake_flusher.notify_one();
            }
        }
        merged
    }

    fn resident_grew(&self) {
        self.resident.fetch_add(1, Ordering::Relaxed);
    }

    /// New keys are refused while the store is this far behind (I4).
    fn shedding(&self) -> bool {
        self.dirty.load(Ordering::Relaxed) >= self.config.max_dirty_keys
    }

    /// One key from the store, bounded by the store timeout; a failure is counted.
    async fn store_get(&self, learner: &str, lesson: &str) -> Result<Option<Progress>, StoreError> {
        self.timed(self.store.get(learner, lesson))
            .await
            .inspect_err(|e| self.count_store_error(e))
    }

    /// A store call bounded by the store timeout: a hung store is a failed call.
    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let limit = self.config.store_timeout;
        tokio::time::timeout(limit, call)
            .await
            .unwrap_or(Err(StoreError::Timeout(limit)))
    }

    fn count_store_error(&self, e: &StoreError) {
        self.metrics
            .store_errors
            .get_or_create(&crate::metrics::ErrorKind::of(e))
            .inc();
    }

    /// The state of one key: memory if resident, else the store (I6: an entry is only
    /// evicted once its state is durable, so the store is never behind an answer).
    pub async fn get(&self, learner: &str, lesson: &str) -> Result<Option<Progress>, EngineError> {
        let resident = {
            let shard = self.shard(learner).lock();
            shard.entry(learner, lesson).map(|e| e.state.clone())
        };
        match resident {
            Some(state) if state.seq > 0 => Ok(Some(state)),
            Some(_) => Ok(None),
            None => Ok(self.store_get(learner, lesson).await?),
        }
    }

    /// Every lesson of a learner, memory and store merged by the LWW order. Memory is
    /// read first: an entry evicted in between is in the store by then (I6).
    pub async fn list(&self, learner: &str) -> Result<Vec<LessonProgress>, EngineError> {
        let mut lessons = self.shard(learner).lock().lessons_of(learner);
        let stored = self
            .timed(self.store.list(learner))
            .await
            .inspect_err(|e| self.count_store_error(e))?;
        for row in stored {
            match lessons.iter_mut().find(|l| l.lesson_id == row.lesson_id) {
                Some(l) if row.progress.supersedes(&l.progress) => l.progress = row.progress,
                Some(_) => {}
                None => lessons.push(row),
            }
        }
        lessons.sort_by(|a, b| a.lesson_id.cmp(&b.lesson_id));
        Ok(lessons)
    }

    /// The flush number whose completion proves durable every write made so far.
    /// Taken after the write: any flush that starts later snapshots it.
    pub fn durable_ticket(&self) -> u64 {
        self.flushes_started.load(Ordering::Acquire) + 1
    }

    /// `ack=durable` (I3): waits until flush `ticket` (or a later one) has committed,
    /// waking the flusher so durable writers are grouped into the next commit.
    pub async fn wait_durable(
        &self,
        ticket: u64,
        keys: &[(&str, &str)],
    ) -> Result<(), EngineError> {
        let mut committed = self.flushes_committed.subscribe();
        self.wake_flusher.notify_one();
        let wait = committed.wait_for(|&done| done >= ticket);
        let in_time = tokio::time::timeout(self.config.durable_timeout, wait)
            .await
            .is_ok_and(|committed| committed.is_ok());
        if !in_time {
            return Err(EngineError::NotDurableYet);
        }
        self.check_not_poisoned(keys)
    }

    fn check_not_poisoned(&self, keys: &[(&str, &str)]) -> Result<(), EngineError> {
        for (learner, lesson) in keys {
            let shard = self.shard(learner).lock();
            if shard.entry(learner, lesson).is_some_and(|e| e.poisoned) {
                return Err(EngineError::Refused(format!("{learner}/{lesson}")));
            }
        }
        Ok(())
    }

    /// Keys whose newest state is not yet durable.
    pub fn dirty_keys(&self) -> usize {
        self.dirty.load(Ordering::Relaxed)
    }

    pub fn resident_keys(&self) -> usize {
        self.resident.load(Ordering::Relaxed)
    }

    /// False while flushes fail: `/readyz` answers 503.
    pub fn store_healthy(&self) -> bool {
        self.store_healthy.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
