//! `POST /v1/heartbeats`: validate the whole request, apply it, answer.
//!
//! With `ack=durable` the answer waits for the flush that commits these heartbeats
//! (I3); the default `ack=buffered` answers once they are in memory.

use std::borrow::Cow;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use super::error::{json_response, ApiError};
use super::heartbeat::{self, Heartbeat, Parsed};
use super::{body, App};
use crate::clock::now_ms;
use crate::engine::{EngineError, Merged};
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

    let reply = match &parsed {
        Parsed::Single(hb) => {
            let m = apply_one(app, hb, now).await?;
            json_response(
                StatusCode::OK,
                &SingleReply {
                    applied: m.applied,
                    seq: m.seq,
                    position_ms: m.position_ms,
                },
            )
        }
        Parsed::Batch(hbs) => {
            let applied = apply_batch(app, hbs, now).await?;
            json_response(
                StatusCode::OK,
                &BatchReply {
                    accepted: hbs.len(),
                    applied,
                    stale: hbs.len() - applied,
                },
            )
        }
    };
    if ack == Ack::Durable {
        wait_durable(app, items).await?;
    }
    Ok(reply)
}

async fn apply_one(app: &App, hb: &Heartbeat<'_>, now: u64) -> Result<Merged, EngineError> {
    let incoming = hb.incoming(now);
    app.engine
        .apply(&hb.learner_id, &hb.lesson_id, &incoming)
        .await
}

/// Store reads one batch may have in flight for keys not in memory.
const BATCH_LOADS_IN_FLIGHT: usize = 32;

/// Applies a validated batch; returns how many items were applied. Resident keys merge
/// at once; an offline sync of new lessons misses on most of its keys, and those store
/// reads run up to [`BATCH_LOADS_IN_FLIGHT`] at a time rather than one after another
/// (1000 sequential round trips to a cluster are a second). Items of one key may merge
/// in any order: the state is the same (I1), only which of them counts as applied
/// differs.
async fn apply_batch(app: &App, hbs: &[Heartbeat<'_>], now: u64) -> Result<usize, EngineError> {
    let mut waiting = hbs.iter();
    let mut running = FuturesUnordered::new();
    let mut applied = 0;
    loop {
        while running.len() < BATCH_LOADS_IN_FLIGHT {
            let Some(hb) = waiting.next() else { break };
            running.push(apply_one(app, hb, now));
        }
        match running.next().await {
            Some(merged) => applied += usize::from(merged?.applied),
            None => return Ok(applied),
        }
    }
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::engine::{Engine, EngineConfig};
    use crate::model::{LessonProgress, Progress, ProgressRow};
    use crate::store::{Store, StoreError, WriteReport};

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

    /// A test double over the real memory store whose reads take a while and which
    /// records how many of them ran at once.
    #[derive(Default)]
    struct SlowReads {
        inner: crate::store::memory::MemoryStore,
        now: AtomicUsize,
        most: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Store for SlowReads {
        async fn write_batch(&self, rows: Arc<[ProgressRow]>) -> Result<WriteReport, StoreError> {
            self.inner.write_batch(rows).await
        }
        async fn get(&self, learner: &str, lesson: &str) -> Result<Option<Progress>, StoreError> {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            self.inner.get(learner, lesson).await
        }
        async fn list(&self, learner: &str) -> Result<Vec<LessonProgress>, StoreError> {
            self.inner.list(learner).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn describe(&self) -> String {
            "slow-read test double".into()
        }
    }

    /// An offline sync of new lessons reads their stored state concurrently (bounded),
    /// not one round trip after another, and every item is still applied once (I1).
    #[tokio::test]
    async fn a_batch_of_new_keys_loads_them_concurrently_within_the_bound() {
        let store = Arc::new(SlowReads::default());
        let mut registry = crate::metrics::new_registry();
        let metrics = Arc::new(crate::metrics::Metrics::register(&mut registry));
        let engine = Engine::new(store.clone(), EngineConfig::default(), metrics.clone());
        let app = App {
            engine,
            metrics,
            registry,
            auth: None,
            body_timeout: std::time::Duration::from_secs(1),
        };
        let body: Vec<String> = (0..200)
            .map(|i| format!(r#"{{"learner_id":"l","lesson_id":"s{i}","position_ms":1,"seq":5}}"#))
            .collect();
        let body = format!("[{}]", body.join(","));
        let now = crate::clock::now_ms();
        let Ok(Parsed::Batch(hbs)) = heartbeat::parse(body.as_bytes(), now) else {
            panic!("a valid batch");
        };
        let applied = apply_batch(&app, &hbs, now).await.expect("applied");
        assert_eq!(applied, 200);
        let most = store.most.load(Ordering::SeqCst);
        assert!(
            most > 1 && most <= BATCH_LOADS_IN_FLIGHT,
            "{most} reads at once"
        );
        assert_eq!(app.engine.resident_keys(), 200);
    }
}
