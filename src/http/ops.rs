//! Operations endpoints: liveness, readiness (can the store take writes?), metrics.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::error::{json_response, ApiError};
use super::App;

pub fn healthz() -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// Ready when the last flush committed and the store answers a probe now.
pub async fn readyz(app: &App) -> Response<Full<Bytes>> {
    let engine = &app.engine;
    let probe = tokio::time::timeout(engine.config().store_timeout, engine.store().ping()).await;
    let problem = match probe {
        _ if !engine.store_healthy() => Some("the last flush failed; retrying".to_string()),
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("store probe timed out".to_string()),
    };
    match problem {
        None => json_response(StatusCode::OK, &json!({"status": "ready"})),
        Some(reason) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", reason)
            .into_response(),
    }
}

pub fn metrics(app: &App) -> Response<Full<Bytes>> {
    app.metrics.dirty_keys.set(app.engine.dirty_keys() as i64);
    app.metrics
        .resident_keys
        .set(app.engine.resident_keys() as i64);
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &app.registry) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
