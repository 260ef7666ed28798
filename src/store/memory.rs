//! `memory://`: a store that keeps rows in this process only.
//!
//! For tests and benches: it exercises the engine's flush path without disk cost. It
//! enforces the same last-write-wins rule as the durable stores, so the store contract
//! suite holds for it too. Nothing survives a restart, and `open` logs that loudly.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Store, StoreError, WriteReport};
use crate::model::{LessonProgress, Progress, ProgressRow};

/// Rows per learner, then per lesson: a learner listing is one lookup.
type Learners = HashMap<Arc<str>, HashMap<Arc<str>, Progress>>;

#[derive(Default)]
pub struct MemoryStore {
    rows: Mutex<Learners>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn write_batch(&self, rows: Arc<[ProgressRow]>) -> Result<WriteReport, StoreError> {
        let mut stored = self.rows.lock();
        for row in rows.iter() {
            let lessons = stored.entry(row.learner_id.clone()).or_default();
            match lessons.get_mut(&row.lesson_id) {
                Some(current) if !row.progress.supersedes(current) => {}
                Some(current) => *current = row.progress.clone(),
                None => {
                    lessons.insert(row.lesson_id.clone(), row.progress.clone());
                }
            }
        }
        Ok(WriteReport {
            written: rows.len(),
            rejected: Vec::new(),
        })
    }

    async fn get(&self, learner_id: &str, lesson_id: &str) -> Result<Option<Progress>, StoreError> {
        let stored = self.rows.lock();
        Ok(stored
            .get(learner_id)
            .and_then(|l| l.get(lesson_id))
            .cloned())
    }

    async fn list(&self, learner_id: &str) -> Result<Vec<LessonProgress>, StoreError> {
        let stored = self.rows.lock();
        let lessons = stored.get(learner_id).into_iter().flatten();
        Ok(lessons
            .map(|(lesson_id, progress)| LessonProgress {
                lesson_id: lesson_id.clone(),
                progress: progress.clone(),
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "memory:// (not durable: everything is lost at exit)".to_string()
    }
}
