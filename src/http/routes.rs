//! Path and method dispatch. Every miss is a JSON error: unknown path 404, known path
//! with the wrong method 405 (with `Allow`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use percent_encoding::percent_decode_str;

use super::error::ApiError;
use super::{ingest, ops, read, App};

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    route(&app, req)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn route(app: &App, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
    // The ingest path is nearly all traffic: match it before splitting anything.
    if req.uri().path() == "/v1/heartbeats" {
        return match *req.method() {
            Method::POST => ingest::post(app, req).await,
            _ => Err(ApiError::method_not_allowed("POST")),
        };
    }
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match segments.as_slice() {
        ["v1", "progress", learner] => match method {
            Method::GET => read::learner(app, req.headers(), &decode(learner)?).await,
            _ => Err(ApiError::method_not_allowed("GET")),
        },
        ["v1", "progress", learner, lesson] => match method {
            Method::GET => {
                read::lesson(app, req.headers(), &decode(learner)?, &decode(lesson)?).await
            }
            _ => Err(ApiError::method_not_allowed("GET")),
        },
        ["healthz"] | ["readyz"] | ["metrics"] if method != Method::GET => {
            Err(ApiError::method_not_allowed("GET"))
        }
        ["healthz"] => Ok(ops::healthz()),
        ["readyz"] => Ok(ops::readyz(app).await),
        ["metrics"] => Ok(ops::metrics(app)),
        _ => Err(ApiError::not_found()),
    }
}

/// A path segment, percent-decoded (`%40` → `@`); ids are then checked by the handler.
fn decode(segment: &str) -> Result<String, ApiError> {
    percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request("invalid_id", "path segment is not valid UTF-8"))
}
