//! The domain's nouns: a learner's progress on one lesson, and the one order that
//! decides which of two states wins (invariant I1).
//!
//! Every layer — the in-memory map, SQLite's conditional upsert, ScyllaDB's write
//! timestamps — resolves conflicts with [`Progress::lww_key`], so a learner's state
//! converges to the same value whichever node, store or retry saw it last.

mod ids;
mod order;

use std::sync::Arc;

pub use ids::{valid_device_id, valid_id, IdError, MAX_DEVICE_ID_LEN, MAX_ID_LEN};
pub use order::{tiebreak, LwwKey, TIEBREAK_RANGE};

/// The state of one (learner, lesson): the newest heartbeat accepted for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub position_ms: u64,
    pub seq: u64,
    pub device_id: Option<Arc<str>>,
    /// Server clock (ms since the Unix epoch) when this state was accepted.
    /// Informational: it takes no part in the last-write-wins order.
    pub updated_at_ms: u64,
}

impl Progress {
    /// The total order of states: a state replaces another only if its key is greater.
    pub fn lww_key(&self) -> LwwKey<'_> {
        LwwKey::new(self.seq, self.position_ms, self.device_id.as_deref())
    }

    /// True when `self` should replace `current` (strictly newer in the LWW order).
    pub fn supersedes(&self, current: &Progress) -> bool {
        self.lww_key() > current.lww_key()
    }
}

/// One row as the stores see it: a key and its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressRow {
    pub learner_id: Arc<str>,
    pub lesson_id: Arc<str>,
    pub progress: Progress,
}

/// A lesson's state as listed for one learner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LessonProgress {
    pub lesson_id: Arc<str>,
    pub progress: Progress,
}
