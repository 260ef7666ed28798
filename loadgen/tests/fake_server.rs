//! loadgen against in-process fake servers on 127.0.0.1:0: a correct one (the run
//! passes verification), one that loses writes, one that lets a late heartbeat win
//! (verification must catch both), and one without `/metrics` (figures are unknown,
//! the run still works). No test here asserts a speed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use loadgen::cli::{Cli, Command};
use loadgen::{Report, RunConfig};
use serde_json::{json, Value};
use tokio::net::TcpListener;

#[derive(Clone, Copy, PartialEq)]
enum Bug {
    None,
    /// Answers 200 but never stores heartbeats of learners whose id ends in '7'.
    LoseSomeLearners,
    /// Last arrival wins, whatever its seq.
    ArrivalOrderWins,
    /// No `/metrics` endpoint.
    NoMetrics,
    /// The 100th heartbeat POST is answered after a one-second stall.
    StallOnce,
}

#[derive(Default)]
struct State {
    keys: HashMap<(String, String), (u64, u64)>,
    received: u64,
    applied: u64,
    posts: u64,
}

type Shared = Arc<(Bug, Mutex<State>)>;

fn answer(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r
}

fn apply(s: &mut State, bug: Bug, hb: &Value) -> (bool, u64, u64) {
    let learner = hb["learner_id"].as_str().unwrap_or_default().to_string();
    let lesson = hb["lesson_id"].as_str().unwrap_or_default().to_string();
    let seq = hb["seq"].as_u64().unwrap_or_default();
    let pos = hb["position_ms"].as_u64().unwrap_or_default();
    s.received += 1;
    if bug == Bug::LoseSomeLearners && learner.ends_with('7') {
        s.applied += 1;
        return (true, seq, pos);
    }
    let slot = s.keys.entry((learner, lesson)).or_insert((0, 0));
    let wins = seq > slot.0 || bug == Bug::ArrivalOrderWins;
    if wins {
        *slot = (seq, pos);
    }
    let now = *slot;
    s.applied += u64::from(wins);
    (wins, now.0, now.1)
}

async fn handle(
    req: Request<Incoming>,
    shared: Shared,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (bug, state) = (&shared.0, &shared.1);
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let body = req.into_body().collect().await?.to_bytes();
    if method == "POST" && *bug == Bug::StallOnce {
        let posts = {
            let mut s = state.lock().expect("fake server lock");
            s.posts += 1;
            s.posts
        };
        if posts == 100 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let mut s = state.lock().expect("fake server lock");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Ok(match (method.as_str(), parts.as_slice()) {
        ("POST", ["v1", "heartbeats"]) => match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) => {
                let applied = items.iter().filter(|hb| apply(&mut s, *bug, hb).0).count();
                answer(
                    StatusCode::OK,
                    json!({"accepted": items.len(), "applied": applied, "stale": items.len() - applied}),
                )
            }
            Ok(hb) => {
                let (applied, seq, pos) = apply(&mut s, *bug, &hb);
                answer(
                    StatusCode::OK,
                    json!({"applied": applied, "seq": seq, "position_ms": pos}),
                )
            }
            Err(_) => answer(
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": "bad_json"}}),
            ),
        },
        ("GET", ["v1", "progress", learner, lesson]) => {
            match s.keys.get(&(learner.to_string(), lesson.to_string())) {
                Some((seq, pos)) => answer(
                    StatusCode::OK,
                    json!({"learner_id": learner, "lesson_id": lesson, "seq": seq, "position_ms": pos, "updated_at_ms": 0}),
                ),
                None => answer(
                    StatusCode::NOT_FOUND,
                    json!({"error": {"code": "not_found"}}),
                ),
            }
        }
        ("GET", ["v1", "progress", learner]) => {
            let lessons: Vec<Value> = s
                .keys
                .iter()
                .filter(|((l, _), _)| l == learner)
                .map(|((_, lesson), (seq, pos))| {
                    json!({"lesson_id": lesson, "seq": seq, "position_ms": pos, "updated_at_ms": 0})
                })
                .collect();
            answer(
                StatusCode::OK,
                json!({"learner_id": learner, "lessons": lessons}),
            )
        }
        ("GET", ["metrics"]) if *bug != Bug::NoMetrics => {
            let text = format!(
                "# TYPE progressd_heartbeats_received_total counter\nprogressd_heartbeats_received_total {}\nprogressd_heartbeats_applied_total {}\nprogressd_store_rows_written_total {}\nprogressd_dirty_keys 0\nprogressd_resident_keys {}\n",
                s.received, s.applied, s.applied, s.keys.len()
            );
            Response::new(Full::new(Bytes::from(text)))
        }
        _ => answer(
            StatusCode::NOT_FOUND,
            json!({"error": {"code": "not_found"}}),
        ),
    })
}

async fn fake(bug: Bug) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let shared: Shared = Arc::new((bug, Mutex::new(State::default())));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, shared.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn config(addr: SocketAddr, extra: &[&str]) -> RunConfig {
    let target = format!("http://{addr}");
    let mut args = vec![
        "loadgen",
        "run",
        "--target",
        &target,
        "--viewers",
        "300",
        "--interval",
        "200ms",
        "--duration",
        "1500ms",
        "--connections",
        "8",
        "--verify",
        "--quiet",
        "--settle",
        "1s",
        "--reorder-rate",
        "0.2",
        "--dup-rate",
        "0.1",
        "--offline-rate",
        "0.05",
        "--offline-beats",
        "3",
        "--device-switch-rate",
        "0.05",
        "--churn-rate",
        "0.05",
        "--seed",
        "9",
    ];
    args.extend_from_slice(extra);
    match Cli::try_parse_from(args).expect("valid flags").command {
        Command::Run(r) => r.into_config().expect("valid config"),
        _ => unreachable!("a run command was parsed"),
    }
}

use clap::Parser as _;

async fn run(bug: Bug, settle: Duration) -> Report {
    let addr = fake(bug).await;
    let mut cfg = config(addr, &[]);
    cfg.settle = settle;
    loadgen::run(cfg).await.expect("run completes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_server_passes_verification_under_adversarial_traffic() {
    let r = run(Bug::None, Duration::from_secs(1)).await;
    let v = r.verify.as_ref().expect("verify ran");
    assert!(r.passed(), "{}", r.text());
    assert!(v.keys > 100 && v.ok > 100, "{}", r.text());
    assert!(
        r.counters.stale > 0,
        "late heartbeats were sent and answered stale"
    );
    assert!(r.latency_us.contains_key("post") && r.latency_us.contains_key("get"));
    assert!(
        r.latency_us.contains_key("post_batch"),
        "offline backlogs go as batches"
    );
    assert_eq!(
        r.server.heartbeats_received,
        Some(r.counters.heartbeats_sent as f64)
    );
    assert_eq!(r.server.flushed, Some(true));
    assert!(r.text().contains("PASSED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_loses_writes_fails_verification() {
    let r = run(Bug::LoseSomeLearners, Duration::from_secs(1)).await;
    let v = r.verify.as_ref().expect("verify ran");
    assert!(!r.passed());
    assert!(v.lost > 0, "{}", r.text());
    assert!(v.examples.iter().any(|e| e.contains("lost")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lets_late_writes_win_fails_verification() {
    let r = run(Bug::ArrivalOrderWins, Duration::from_secs(1)).await;
    let v = r.verify.as_ref().expect("verify ran");
    assert!(!r.passed());
    assert!(v.stale > 0, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_metrics_are_reported_unknown_and_the_run_still_works() {
    let r = run(Bug::NoMetrics, Duration::from_millis(100)).await;
    assert!(r.passed(), "{}", r.text());
    assert_eq!(r.server.rows_written, None);
    assert_eq!(r.server.coalescing_ratio, None);
    assert_eq!(r.server.flushed, None);
    assert!(r.text().contains("store rows written  unknown"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_batches_stop_at_the_request_budget() {
    let addr = fake(Bug::None).await;
    let mut cfg = config(addr, &["--max", "--batch", "10", "--requests", "50"]);
    cfg.duration = None;
    let r = loadgen::run(cfg).await.expect("run completes");
    assert_eq!(r.counters.requests, 50, "{}", r.text());
    assert!(r.latency_us.contains_key("post_batch"));
    assert!(r.passed(), "{}", r.text());
    let back: Report = serde_json::from_str(&serde_json::to_string(&r).expect("serialises"))
        .expect("the JSON report reads back");
    assert_eq!((back.counters, back.verify), (r.counters, r.verify));
}

/// Coordinated omission, end to end: one connection at 200 heartbeats/s, and the
/// server stalls one answer for a second. Every heartbeat due during the stall waited
/// for it, and the corrected latency (from the intended send time) says so; the
/// uncorrected figure (from the actual send) sees one slow request only. The bounds
/// follow from the injected stall, so a slower machine only widens the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_corrected_latency_and_hides_from_uncorrected() {
    let addr = fake(Bug::StallOnce).await;
    let mut cfg = config(addr, &[]);
    cfg.connections = 1;
    cfg.duration = Some(Duration::from_secs(3));
    cfg.verify = false;
    // 300 viewers every 1.5 s: 200 heartbeats/s, each a plain single POST.
    cfg.workload.interval = Duration::from_millis(1500);
    let w = &mut cfg.workload;
    (w.reorder_rate, w.dup_rate, w.offline_rate, w.switch_rate) = (0.0, 0.0, 0.0, 0.0);
    let r = loadgen::run(cfg).await.expect("run completes");
    let post = &r.latency_us["post"];
    assert!(post.corrected.max >= 1_000_000, "{}", r.text());
    assert!(post.corrected.p90 >= 300_000, "{}", r.text());
    assert!(post.uncorrected.p90 < post.corrected.p90, "{}", r.text());
    assert!(
        post.uncorrected.max >= 1_000_000,
        "the stalled request itself"
    );
}
