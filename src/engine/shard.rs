//! One shard of the last-write-wins map: the entries of the learners hashed to it,
//! their dirty list, and their in-flight loads.
//!
//! A shard is guarded by a `parking_lot::Mutex`, never held across an `.await`: every
//! operation here is short and synchronous, so a blocking lock is cheaper than an
//! async one. Entries are keyed learner → lesson, so a learner listing is one lookup
//! and one lock, and a resident hit allocates nothing.
//!
//! Maps hash with foldhash, seeded randomly per map: several times faster than std's
//! SipHash on short ids, and the random seed keeps client-chosen ids from being
//! crafted into collisions offline.
//!
//! Dirty tracking is what makes flushing O(dirty): an entry goes on `dirty` the first
//! time it changes after being queued, and the flusher swaps the whole list out.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

use super::loader::LoadCell;
use crate::model::{LessonProgress, Progress};

/// One (learner, lesson) held in memory.
#[derive(Debug)]
pub(super) struct Entry {
    pub state: Progress,
    /// Bumped by every applied write; a flush records the generation it wrote.
    pub generation: u64,
    /// Newest generation known durable (or set aside as poison).
    pub flushed: u64,
    /// On this shard's dirty list right now (so it is not pushed twice).
    pub queued: bool,
    /// The store refused this state for good; kept resident so reads stay truthful.
    pub poisoned: bool,
    /// Last access, ms since the Unix epoch: idle entries are evicted first.
    pub touched_ms: u64,
}

impl Entry {
    pub fn is_dirty(&self) -> bool {
        self.generation != self.flushed
    }

    fn evictable(&self) -> bool {
        !self.is_dirty() && !self.queued && !self.poisoned
    }
}

/// What a merge did, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    pub applied: bool,
    pub seq: u64,
    pub position_ms: u64,
    /// The entry went from clean to dirty (the engine's dirty count grows by one).
    pub(super) newly_dirty: bool,
}

/// A key on a shard's dirty list.
pub(super) type DirtyKey = (Arc<str>, Arc<str>);

/// Lessons of one learner.
type Lessons = HashMap<Arc<str>, Entry, RandomState>;

#[derive(Default)]
pub(super) struct Shard {
    pub learners: HashMap<Arc<str>, Lessons, RandomState>,
    pub dirty: Vec<DirtyKey>,
    /// Single-flight loads of keys not resident, keyed `learner/lesson`.
    pub loading: HashMap<String, Arc<LoadCell>>,
    pub resident: usize,
}

impl Shard {
    pub fn entry_mut(&mut self, learner: &str, lesson: &str) -> Option<&mut Entry> {
        self.learners.get_mut(learner)?.get_mut(lesson)
    }

    pub fn entry(&self, learner: &str, lesson: &str) -> Option<&Entry> {
        self.learners.get(learner)?.get(lesson)
    }

    /// The LWW merge (I1): `incoming` replaces the entry's state only if it is newer.
    /// `None` when the key is not resident.
    pub fn merge(
        &mut self,
        learner: &str,
        lesson: &str,
        incoming: &Incoming<'_>,
    ) -> Option<Merged> {
        let lessons = self.learners.get_mut(learner)?;
        let entry = lessons.get_mut(lesson)?;
        entry.touched_ms = incoming.now_ms;
        let applied = incoming.key() > entry.state.lww_key();
        let newly_dirty = applied && !entry.is_dirty();
        let enqueue = applied && !entry.queued;
        if applied {
            entry.state = incoming.to_progress();
            entry.generation += 1;
            entry.poisoned = false;
            entry.queued = true;
        }
        let merged = Merged {
            applied,
            seq: entry.state.seq,
            position_ms: entry.state.position_ms,
            newly_dirty,
        };
        if enqueue {
            self.enqueue(learner, lesson);
        }
        Some(merged)
    }

    /// Puts a resident key on the dirty list, sharing the map's key allocations.
    pub fn enqueue(&mut self, learner: &str, lesson: &str) {
        let Some((learner_key, lessons)) = self.learners.get_key_value(learner) else {
            return;
        };
        if let Some((lesson_key, _)) = lessons.get_key_value(lesson) {
            self.dirty.push((learner_key.clone(), lesson_key.clone()));
        }
    }

    /// Makes a key resident with the state the store holds (`None`: nothing stored).
    pub fn insert_loaded(
        &mut self,
        learner: &str,
        lesson: &str,
        stored: Option<Progress>,
        now_ms: u64,
    ) {
        let lessons = match self.learners.get_mut(learner) {
            Some(lessons) => lessons,
            None => self.learners.entry(Arc::from(learner)).or_default(),
        };
        // An absent row loads as the bottom of the order: any real heartbeat beats it.
        let state = stored.unwrap_or(Progress {
            position_ms: 0,
            seq: 0,
            device_id: None,
            updated_at_ms: 0,
        });
        lessons.insert(
            Arc::from(lesson),
            Entry {
                state,
                generation: 0,
                flushed: 0,
                queued: false,
                poisoned: false,
                touched_ms: now_ms,
            },
        );
        self.resident += 1;
    }

    /// Resident lessons of one learner that hold a real state.
    pub fn lessons_of(&self, learner: &str) -> Vec<LessonProgress> {
        let Some(lessons) = self.learners.get(learner) else {
            return Vec::new();
        };
        lessons
            .iter()
            .filter(|(_, e)| e.state.seq > 0)
            .map(|(lesson_id, e)| LessonProgress {
                lesson_id: lesson_id.clone(),
                progress: e.state.clone(),
            })
            .collect()
    }

    /// Drops clean entries idle since before `idle_before_ms`, then, if the shard still
    /// holds more than `keep` entries, the least recently used clean ones. Dirty,
    /// queued and poisoned entries always stay: their state is not (only) in the store.
    /// Also forgets loads nobody waits for any more. Returns how many entries went.
    ///
    /// One pass collects access times and finds the cut-off, one `retain` drops what is
    /// older: no key is cloned or hashed again.
    pub fn evict(&mut self, idle_before_ms: u64, keep: usize) -> usize {
        self.loading.retain(|_, cell| Arc::strong_count(cell) > 1);
        let mut times: Vec<u64> = (self.learners.values())
            .flat_map(|lessons| lessons.values())
            .filter(|e| e.evictable())
            .map(|e| e.touched_ms)
            .collect();
        let over_cap = self.resident.saturating_sub(keep);
        let idle = times.iter().filter(|&&t| t < idle_before_ms).count();
        let count = idle.max(over_cap).min(times.len());
        if count == 0 {
            return 0;
        }
        let cutoff = *times.select_nth_unstable(count - 1).1;
        // Everything touched before the cut-off goes, and as many touched exactly at it
        // as make up `count`.
        let mut ties = count - times.iter().filter(|&&t| t < cutoff).count();
        self.learners.retain(|_, lessons| {
            lessons.retain(|_, e| {
                let go = e.evictable()
                    && (e.touched_ms < cutoff || (e.touched_ms == cutoff && ties > 0));
                if go && e.touched_ms == cutoff {
                    ties -= 1;
                }
                !go
            });
            !lessons.is_empty()
        });
        self.resident -= count;
        count
    }
}

/// A validated heartbeat on its way into the map, borrowing from the request body.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub position_ms: u64,
    pub seq: u64,
    pub device_id: Option<&'a str>,
    /// Server clock when it arrived: becomes `updated_at_ms` if applied.
    pub now_ms: u64,
}

impl<'a> Incoming<'a> {
    fn key(&self) -> crate::model::LwwKey<'a> {
        crate::model::LwwKey::new(self.seq, self.position_ms, self.device_id)
    }

    fn to_progress(self) -> Progress {
        Progress {
            position_ms: self.position_ms,
            seq: self.seq,
            device_id: self.device_id.map(Arc::from),
            updated_at_ms: self.now_ms,
        }
    }
}
