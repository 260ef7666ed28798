//! The progress GETs: one lesson, or every lesson of a learner (memory and store
//! merged). Never older than a state this server acknowledged (I6).

use bytes::Bytes;
use http_body_util::Full;
use hyper::{HeaderMap, Response, StatusCode};
use serde::Serialize;

use super::error::{json_response, ApiError};
use super::App;
use crate::model::{valid_id, LessonProgress, Progress};

#[derive(Serialize)]
struct LessonView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    learner_id: Option<&'a str>,
    lesson_id: &'a str,
    position_ms: u64,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<&'a str>,
    updated_at_ms: u64,
}

impl<'a> LessonView<'a> {
    fn new(learner_id: Option<&'a str>, lesson_id: &'a str, p: &'a Progress) -> Self {
        LessonView {
            learner_id,
            lesson_id,
            position_ms: p.position_ms,
            seq: p.seq,
            device_id: p.device_id.as_deref(),
            updated_at_ms: p.updated_at_ms,
        }
    }
}

/// Who asks comes first (401 before any 400), then whether the id is one, then
/// whether the token may read it (403).
fn check_learner(app: &App, headers: &HeaderMap, learner: &str) -> Result<(), ApiError> {
    let principal = app.auth.as_ref().map(|a| a.verify(headers)).transpose()?;
    valid_id(learner)
        .map_err(|e| ApiError::bad_request("invalid_id", format!("learner_id {e}")))?;
    principal.map_or(Ok(()), |p| p.may_act_for(learner))
}

pub async fn lesson(
    app: &App,
    headers: &HeaderMap,
    learner: &str,
    lesson: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    check_learner(app, headers, learner)?;
    valid_id(lesson).map_err(|e| ApiError::bad_request("invalid_id", format!("lesson_id {e}")))?;
    match app.engine.get(learner, lesson).await? {
        Some(p) => Ok(json_response(
            StatusCode::OK,
            &LessonView::new(Some(learner), lesson, &p),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no progress is known for this learner and lesson",
        )),
    }
}

pub async fn learner(
    app: &App,
    headers: &HeaderMap,
    learner: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    check_learner(app, headers, learner)?;
    let lessons: Vec<LessonProgress> = app.engine.list(learner).await?;
    #[derive(Serialize)]
    struct Listing<'a> {
        learner_id: &'a str,
        lessons: Vec<LessonView<'a>>,
    }
    let views = lessons
        .iter()
        .map(|l| LessonView::new(Some(learner), &l.lesson_id, &l.progress))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &Listing {
            learner_id: learner,
            lessons: views,
        },
    ))
}
