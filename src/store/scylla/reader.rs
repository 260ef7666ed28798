//! The read path: prepared single-partition reads for read-through and the GET
//! endpoints, and the readiness probe.
//!
//! Reads go at the configured consistency; with LOCAL_QUORUM on both sides a read
//! sees every write the cluster acknowledged, which is what I6 needs once a key has
//! been evicted from memory. Stored cells are converted back strictly: a value that
//! does not fit the model is reported, never guessed.

use std::sync::Arc;

use scylla::{
    client::session::Session,
    errors::ExecutionError,
    response::{PagingState, PagingStateResponse},
    statement::prepared::PreparedStatement,
};

use super::metrics::ScyllaMetrics;
use super::retry::{classify, store_error};
use crate::{
    model::{LessonProgress, Progress},
    store::StoreError,
};

/// Rows per page when listing a learner.
const LIST_PAGE_SIZE: i32 = 1000;

/// Prepared reads.
#[derive(Debug)]
pub struct Reader {
    session: Arc<Session>,
    select_one: PreparedStatement,
    select_learner: PreparedStatement,
    probe: PreparedStatement,
    metrics: ScyllaMetrics,
}

type Cells = (i64, i64, Option<String>, i64);

fn decoded(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Fatal(format!(
        "scylla {what} returned rows progressd cannot read: {e}"
    ))
}

fn progress((position_ms, seq, device_id, updated_at_ms): Cells) -> Result<Progress, StoreError> {
    let unsigned = |name: &str, v: i64| {
        u64::try_from(v).map_err(|_| StoreError::Fatal(format!("stored {name} {v} is negative")))
    };
    Ok(Progress {
        position_ms: unsigned("position_ms", position_ms)?,
        seq: unsigned("seq", seq)?,
        device_id: device_id.filter(|d| !d.is_empty()).map(Arc::from),
        updated_at_ms: unsigned("updated_at_ms", updated_at_ms)?,
    })
}

impl Reader {
    pub fn new(
        session: Arc<Session>,
        mut select_one: PreparedStatement,
        mut select_learner: PreparedStatement,
        mut probe: PreparedStatement,
        metrics: ScyllaMetrics,
    ) -> Self {
        select_one.set_is_idempotent(true);
        select_learner.set_is_idempotent(true);
        select_learner.set_page_size(LIST_PAGE_SIZE);
        probe.set_is_idempotent(true);
        Reader {
            session,
            select_one,
            select_learner,
            probe,
            metrics,
        }
    }

    fn failed(&self, err: &ExecutionError) -> StoreError {
        let kind = classify(err);
        self.metrics.error(kind);
        store_error(err, kind)
    }

    pub async fn get(
        &self,
        learner_id: &str,
        lesson_id: &str,
    ) -> Result<Option<Progress>, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.select_one, (learner_id, lesson_id))
            .await
            .map_err(|e| self.failed(&e))?;
        let rows = result.into_rows_result().map_err(|e| decoded("get", e))?;
        match rows.maybe_first_row::<(String, i64, i64, Option<String>, i64)>() {
            Ok(Some((lesson, position_ms, seq, device_id, updated_at_ms)))
                if lesson == lesson_id =>
            {
                progress((position_ms, seq, device_id, updated_at_ms)).map(Some)
            }
            Ok(_) => Ok(None),
            Err(e) => Err(decoded("get", e)),
        }
    }

    pub async fn list(&self, learner_id: &str) -> Result<Vec<LessonProgress>, StoreError> {
        let mut lessons = Vec::new();
        let mut paging = PagingState::start();
        loop {
            let (result, next) = self
                .session
                .execute_single_page(&self.select_learner, (learner_id,), paging)
                .await
                .map_err(|e| self.failed(&e))?;
            let rows = result.into_rows_result().map_err(|e| decoded("list", e))?;
            for row in rows
                .rows::<(String, i64, i64, Option<String>, i64)>()
                .map_err(|e| decoded("list", e))?
            {
                let (lesson_id, position_ms, seq, device_id, updated_at_ms) =
                    row.map_err(|e| decoded("list", e))?;
                lessons.push(LessonProgress {
                    lesson_id: Arc::from(lesson_id),
                    progress: progress((position_ms, seq, device_id, updated_at_ms))?,
                });
            }
            match next {
                PagingStateResponse::HasMorePages { state } => paging = state,
                PagingStateResponse::NoMorePages => return Ok(lessons),
            }
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(&self.probe, ())
            .await
            .map(drop)
            .map_err(|e| self.failed(&e))
    }
}
