//! Read-through for keys not in memory, one store read per key however many requests
//! miss on it at once (single flight).
//!
//! A miss must learn the stored state before it merges, so that `applied` and the
//! returned state are truthful (I1) and an evicted key never goes back in time (I6).
//!
//! The cell of a load stays in the shard's `loading` map until someone turns its
//! result into a resident entry, and only the request that finds *its own* cell still
//! there may do so. A request that finds the cell gone retries the whole lookup: the
//! entry made from that cell may since have changed, been flushed and evicted, and
//! re-inserting the old loaded value would resurrect a stale state.
//!
//! A failed load is shared too: every request waiting on the cell gets the same error
//! (one store timeout, not one each, in turn), and the first to see it removes the
//! cell so the next request loads afresh. A cell whose every request went away before
//! it was used (client disconnects) is dropped by the eviction sweep.

use std::sync::Arc;

use tokio::sync::OnceCell;

use super::shard::{Incoming, Merged};
use super::{Engine, EngineError};
use crate::model::Progress;
use crate::store::StoreError;

/// The shared result of one in-flight store read, failure included.
pub(super) type LoadCell = OnceCell<Result<Option<Progress>, StoreError>>;

fn load_key(learner: &str, lesson: &str) -> String {
    format!("{learner}/{lesson}")
}

impl Engine {
    /// Merges `incoming` into the key, loading it from the store first if it is not
    /// resident. Fails only when the store cannot be read (or memory is at its cap).
    pub(super) async fn merge_with_load(
        &self,
        learner: &str,
        lesson: &str,
        incoming: &Incoming<'_>,
    ) -> Result<Merged, EngineError> {
        let shard = self.shard(learner);
        let key = load_key(learner, lesson);
        loop {
            let cell = {
                let mut guard = shard.lock();
                if let Some(merged) = guard.merge(learner, lesson, incoming) {
                    return Ok(self.count_merge(merged));
                }
                if self.shedding() {
                    return Err(EngineError::Overloaded);
                }
                guard.loading.entry(key.clone()).or_default().clone()
            };
            let loaded = cell.get_or_init(|| self.store_get(learner, lesson)).await;
            let mut guard = shard.lock();
            let ours = guard
                .loading
                .get(&key)
                .is_some_and(|c| Arc::ptr_eq(c, &cell));
            let stored = match loaded {
                Ok(stored) => stored.clone(),
                Err(e) => {
                    if ours {
                        guard.loading.remove(&key);
                    }
                    return Err(EngineError::StoreRead(e.clone()));
                }
            };
            if ours && guard.entry(learner, lesson).is_none() {
                guard.loading.remove(&key);
                guard.insert_loaded(learner, lesson, stored, incoming.now_ms);
                self.resident_grew();
            }
            if let Some(merged) = guard.merge(learner, lesson, incoming) {
                return Ok(self.count_merge(merged));
            }
        }
    }
}
