//! The flusher: moves dirty state from memory to the store in coalesced batches.
//!
//! A flush starts when the flush interval has passed since the last one started, or
//! earlier when enough keys are dirty or an `ack=durable` request is waiting. Each
//! flush swaps out every shard's dirty list (O(dirty), never O(resident)), writes the
//! snapshot in chunks, and marks an entry clean only if no write changed it meanwhile.
//!
//! - I4: a failed write leaves its rows dirty and queued; the next attempt, after a
//!   jittered exponential backoff, carries their newest state. Rows the store refuses
//!   for good are set aside, counted and logged, so they cannot block the rest.
//! - I3: flushes are numbered; a durable request waits for a flush that started after
//!   its write to commit. Many requests share one commit (group commit).
//! - I2: after the HTTP server has stopped, [`run_flusher`] drains until nothing is
//!   dirty.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Engine;
use crate::backoff;
use crate::model::ProgressRow;
use crate::store::{StoreError, WriteReport};

/// One snapshotted row and where its entry lives.
struct Pending {
    shard: usize,
    generation: u64,
}

/// Runs until `drain` resolves, then flushes until nothing is dirty (I2). The caller
/// bounds the drain with a timeout if the store may never come back.
pub async fn run_flusher(engine: Arc<Engine>, drain: impl Future<Output = ()>) {
    tokio::pin!(drain);
    let mut backoff = Backoff::new(engine.config.retry_min, engine.config.retry_max);
    let mut sweep_next = 0usize;
    loop {
        let started = Instant::now();
        let result = engine.flush_once().await;
        let wait = match result {
            Ok(()) => {
                backoff.reset();
                engine
                    .config
                    .flush_interval
                    .saturating_sub(started.elapsed())
            }
            Err(_) => backoff.next_delay(),
        };
        sweep_next = engine.sweep(sweep_next);
        let deadline = tokio::time::Instant::now() + wait;
        let failing = result.is_err();
        tokio::select! {
            _ = &mut drain => return drain_all(&engine, &mut backoff).await,
            _ = tokio::time::sleep_until(deadline) => {}
            // A threshold or a durable waiter may cut the interval short, but never a backoff.
            _ = engine.wake_flusher.notified(), if !failing => {}
        }
    }
}

async fn drain_all(engine: &Engine, backoff: &mut Backoff) {
    loop {
        match engine.flush_once().await {
            Ok(()) if engine.dirty_keys() == 0 => return,
            Ok(()) => {}
            Err(_) => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
}

impl Engine {
    /// One flush: snapshot, write in chunks, settle. Errors leave rows queued.
    pub(super) async fn flush_once(&self) -> Result<(), StoreError> {
        let number = self.flushes_started.fetch_add(1, Ordering::AcqRel) + 1;
        let (rows, pending) = self.take_dirty();
        let started = Instant::now();
        let mut offset = 0;
        while offset < rows.len() {
            let end = (offset + self.config.batch_rows.max(1)).min(rows.len());
            let chunk: Arc<[ProgressRow]> = rows[offset..end].into();
            match self.timed(self.store.write_batch(chunk.clone())).await {
                Ok(report) => self.settle(&chunk, &pending[offset..end], &report),
                Err(e) => {
                    self.requeue(&rows[offset..], &pending[offset..]);
                    self.flush_failed(&e);
                    return Err(e);
                }
            }
            offset = end;
        }
        if !rows.is_empty() {
            self.metrics
                .flush_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        self.store_healthy.store(true, Ordering::Relaxed);
        self.flushes_committed
            .send_modify(|done| *done = (*done).max(number));
        Ok(())
    }

    fn flush_failed(&self, e: &StoreError) {
        self.store_healthy.store(false, Ordering::Relaxed);
        self.count_store_error(e);
        tracing::warn!(error = %e, dirty = self.dirty_keys(), "flush failed; rows stay queued and will be retried");
    }

    /// Swaps out every shard's dirty list and snapshots the entries on it.
    fn take_dirty(&self) -> (Vec<ProgressRow>, Vec<Pending>) {
        let mut rows = Vec::new();
        let mut pending = Vec::new();
        for (index, shard) in self.shards.iter().enumerate() {
            let mut shard = shard.lock();
            for (learner_id, lesson_id) in std::mem::take(&mut shard.dirty) {
                let Some(entry) = shard.entry_mut(&learner_id, &lesson_id) else {
                    continue;
                };
                entry.queued = false;
                if entry.is_dirty() {
                    pending.push(Pending {
                        shard: index,
                        generation: entry.generation,
                    });
                    rows.push(ProgressRow {
                        learner_id,
                        lesson_id,
                        progress: entry.state.clone(),
                    });
                }
            }
        }
        (rows, pending)
    }

    /// Marks written rows clean unless overwritten meanwhile; sets refused rows aside.
    fn settle(&self, rows: &[ProgressRow], pending: &[Pending], report: &WriteReport) {
        let mut refused = vec![false; rows.len()];
        for rejected in &report.rejected {
            if let (Some(flag), Some(row)) =
                (refused.get_mut(rejected.index), rows.get(rejected.index))
            {
                *flag = true;
                self.metrics.poison_rows.inc();
                tracing::error!(learner_id = %row.learner_id, lesson_id = %row.lesson_id,
                    seq = row.progress.seq, reason = %rejected.reason, "store refused a row; set aside");
            }
        }
        self.metrics
            .store_rows_written
            .inc_by(report.written as u64);
        for ((row, p), refused) in rows.iter().zip(pending).zip(refused) {
            let mut shard = self.shards[p.shard].lock();
            let Some(entry) = shard.entry_mut(&row.learner_id, &row.lesson_id) else {
                continue;
            };
            let was_dirty = entry.is_dirty();
            entry.flushed = entry.flushed.max(p.generation);
            if refused && entry.generation == p.generation {
                entry.poisoned = true;
            }
            if was_dirty && !entry.is_dirty() {
                self.dirty.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Puts rows of a failed write back on their shards' dirty lists.
    fn requeue(&self, rows: &[ProgressRow], pending: &[Pending]) {
        for (row, p) in rows.iter().zip(pending) {
            let mut shard = self.shards[p.shard].lock();
            let requeue = shard
                .entry_mut(&row.learner_id, &row.lesson_id)
                .is_some_and(|e| e.is_dirty() && !std::mem::replace(&mut e.queued, true));
            if requeue {
                shard
                    .dirty
                    .push((row.learner_id.clone(), row.lesson_id.clone()));
            }
        }
    }

    /// Evicts clean entries: every shard when over the resident cap, else one shard
    /// per call (round robin) for idle entries. Returns the next shard to visit.
    ///
    /// Over the cap, each shard is cut to nine tenths of its share, so the walk over
    /// every shard is paid once per tenth of the cap of new keys, not after every flush.
    pub(super) fn sweep(&self, next: usize) -> usize {
        let n = self.shards.len();
        let share = self.config.max_resident_keys / n;
        let idle_before =
            crate::clock::now_ms().saturating_sub(self.config.idle_ttl.as_millis() as u64);
        let over_cap = self.resident_keys() > self.config.max_resident_keys;
        let (visit, keep) = if over_cap {
            (0..n, share - share / 10)
        } else {
            (next % n..next % n + 1, share)
        };
        for i in visit {
            let evicted = self.shards[i].lock().evict(idle_before, keep);
            self.resident.fetch_sub(evicted, Ordering::Relaxed);
        }
        (next + 1) % n
    }
}

/// The flusher's retry state: how many flushes in a row have failed.
struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: 0,
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
    }

    fn next_delay(&mut self) -> Duration {
        let wait = backoff::jittered(self.base, self.max, self.failures);
        self.failures = self.failures.saturating_add(1);
        wait
    }
}
