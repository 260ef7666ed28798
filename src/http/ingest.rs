//! `POST /v1/heartbeats`: validate the whole request, apply it, answer.
//!
//! With `ack=durable` the answer waits for the flush that commits these heartbeats
//! (I3); the default `ack=buffered` answers once they are in memory.

use std::borrow::Cow;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use super::error::{json_response, ApiError};
use super::heartbeat::{self, Heartbeat, Parsed};
use super::{body, App};
use crate::clock::now_ms;
use crate::engine::EngineError;
use crate::metrics::RejectReason;

#[derive(Serialize)]
struct SingleReply {
    applied: bool,
    seq: u64,
    position_ms: u64,
}

#[derive(Serialize)]
struct BatchReply {
    accepted: usize,
    applied: usize,
    stale: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ack {
    Buffered,
    Durable,
}

pub async fn post(app: &App, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
    let result = accept(app, req).await;
    if let Err(e) = &result {
        let metrics = &app.metrics;
        if e.status.is_client_error() {
            metrics
                .heartbeats_rejected
                .get_or_create(&RejectReason { code: e.code })
                .inc();
        } else if e.code == "overloaded" {
            metrics.requests_shed.inc();
        }
    }
    result
}

async fn accept(app: &App, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
    // Who asks comes first: an unauthenticated caller learns nothing from a 400.
    let principal = app
        .auth
        .as_ref()
        .map(|a| a.verify(req.headers()))
        .transpose()?;
    let ack = ack_mode(req.uri().query())?;
    let body = body::read(req.into_body(), app.body_timeout).await?;
    let now = now_ms();
    let parsed = heartbeat::parse(&body, now)?;
    let items: &[Heartbeat<'_>] = match &parsed {
        Parsed::Single(hb) => std::slice::from_ref(hb),
        Parsed::Batch(hbs) => hbs,
    };
    if let Some(p) = &principal {
        items
            .iter()
            .try_for_each(|hb| p.may_act_for(&hb.learner_id))?;
    }
    app.metrics.heartbeats_received.inc_by(items.len() as u64);

    let mut applied = 0;
    let mut last = None;
    for hb in items {
        let merged = app
            .engine
            .apply(&hb.learner_id, &hb.lesson_id, &hb.incoming(now))
            .await?;
        applied += usize::from(merged.applied);
        last = Some(merged);
    }
    if ack == Ack::Durable {
        wait_durable(app, items).await?;
    }
    Ok(match (&parsed, last) {
        (Parsed::Single(_), Some(m)) => json_response(
            StatusCode::OK,
            &SingleReply {
                applied: m.applied,
                seq: m.seq,
                position_ms: m.position_ms,
            },
        ),
        _ => json_response(
            StatusCode::OK,
            &BatchReply {
                accepted: items.len(),
                applied,
                stale: items.len() - applied,
            },
        ),
    })
}

async fn wait_durable(app: &App, items: &[Heartbeat<'_>]) -> Result<(), EngineError> {
    let ticket = app.engine.durable_ticket();
    let keys: Vec<(&str, &str)> = items
        .iter()
        .map(|hb| (&*hb.learner_id, &*hb.lesson_id))
        .collect();
    app.engine.wait_durable(ticket, &keys).await
}

fn ack_mode(query: Option<&str>) -> Result<Ack, ApiError> {
    let mut ack = Ack::Buffered;
    for (key, value) in url_pairs(query.unwrap_or("")) {
        if key == "ack" {
            ack = match &*value {
                "buffered" => Ack::Buffered,
                "durable" => Ack::Durable,
                other => {
                    return Err(ApiError::bad_request(
                        "invalid_query",
                        format!("ack must be buffered or durable, not {other:?}"),
                    ))
                }
            };
        }
    }
    Ok(ack)
}

fn url_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s| percent_encoding::percent_decode_str(s).decode_utf8_lossy();
        (decode(k), decode(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i5_ack_mode_is_checked() {
        assert!(matches!(ack_mode(None), Ok(Ack::Buffered)));
        assert!(matches!(ack_mode(Some("ack=buffered")), Ok(Ack::Buffered)));
        assert!(matches!(
            ack_mode(Some("x=1&ack=durable")),
            Ok(Ack::Durable)
        ));
        let err = ack_mode(Some("ack=later")).err().map(|e| e.code);
        assert_eq!(err, Some("invalid_query"));
    }
}
