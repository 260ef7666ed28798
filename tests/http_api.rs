//! Black-box tests of the real binary over TCP: convergence under concurrent, shuffled,
//! duplicated traffic (I1), clean stop (I2), durable acks across SIGKILL (I3), bad
//! input (I5), eviction (I6), and the connection guards.

mod common;

use std::time::Duration;

use common::{heartbeat, Data, Server};
use nix::sys::signal::Signal;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};

const LEARNERS: u64 = 40;
const LESSONS: u64 = 4;
const SEQS: u64 = 15;

fn key(i: u64) -> (String, String) {
    (
        format!("learner-{}", i % LEARNERS),
        format!("lesson-{}", (i / LEARNERS) % LESSONS),
    )
}

/// Every (key, seq) once, plus a third of them again (retries), shuffled per client.
fn shuffled_traffic(seed: u64) -> Vec<Value> {
    let mut all = Vec::new();
    for k in 0..LEARNERS * LESSONS {
        for seq in 1..=SEQS {
            let (l, s) = key(k);
            all.push(heartbeat(&l, &s, seq, seq * 1000 + k));
        }
    }
    let dups: Vec<Value> = all.iter().step_by(3).cloned().collect();
    all.extend(dups);
    all.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    all
}

async fn assert_converged(server: &Server) {
    for k in 0..LEARNERS * LESSONS {
        let (l, s) = key(k);
        let (status, body) = server.get(&format!("/v1/progress/{l}/{s}")).await;
        assert_eq!(status, 200, "{l}/{s}: {body}");
        assert_eq!(
            (body["seq"].as_u64(), body["position_ms"].as_u64()),
            (Some(SEQS), Some(SEQS * 1000 + k))
        );
    }
}

/// I1 + I2: four concurrent clients send thousands of shuffled, duplicated heartbeats,
/// half as singles and half as batches; every key converges to its max seq, and after
/// SIGTERM and a restart on the same file the state is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i1_i2_concurrent_shuffled_duplicated_clients_converge_and_survive_restart() {
    let data = Data::new();
    let server = Server::start(&data.store_url(), &["--flush-interval", "50ms"]);
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let (client, url) = (server.client.clone(), server.url("/v1/heartbeats"));
        clients.push(tokio::spawn(async move {
            let traffic = shuffled_traffic(c);
            let mut applied = 0u64;
            for (i, chunk) in traffic.chunks(25).enumerate() {
                let replies: Vec<Value> = if c % 2 == 0 && i % 2 == 0 {
                    let resp = client.post(&url).json(&chunk).send().await.expect("post");
                    assert_eq!(resp.status(), 200);
                    vec![resp.json().await.expect("json")]
                } else {
                    let mut v = Vec::new();
                    for hb in chunk {
                        let resp = client.post(&url).json(hb).send().await.expect("post");
                        assert_eq!(resp.status(), 200);
                        v.push(resp.json().await.expect("json"));
                    }
                    v
                };
                for r in replies {
                    applied += r["applied"]
                        .as_u64()
                        .or_else(|| r["applied"].as_bool().map(u64::from))
                        .expect("applied");
                }
            }
            applied
        }));
    }
    let mut applied = 0;
    for c in clients {
        applied += c.await.expect("client");
    }
    // Each (key, seq) can apply at most once, and the max seq of every key did apply.
    assert!(applied <= LEARNERS * LESSONS * SEQS, "applied {applied}");
    assert!(applied >= LEARNERS * LESSONS);
    assert_converged(&server).await;

    let status = tokio::task::spawn_blocking(move || server.stop(Signal::SIGTERM))
        .await
        .expect("stop");
    assert!(status.success(), "clean stop exits 0: {status}");
    let server = Server::start(&data.store_url(), &[]);
    assert_converged(&server).await;
}

/// I2: with a flush interval far longer than the test, SIGTERM still drains every
/// accepted heartbeat to the store before exiting 0.
#[tokio::test]
async fn i2_sigterm_drains_everything_accepted() {
    let data = Data::new();
    let server = Server::start(&data.store_url(), &["--flush-interval", "1h"]);
    for i in 0..300u64 {
        let (status, _) = server
            .post("/v1/heartbeats", &heartbeat(&format!("l{i}"), "s", 5, i))
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        server.metric("progressd_store_rows_written_total").await,
        0.0
    );
    let status = tokio::task::spawn_blocking(move || server.stop(Signal::SIGTERM))
        .await
        .expect("stop");
    assert!(status.success());
    let server = Server::start(&data.store_url(), &[]);
    for i in 0..300u64 {
        let (status, body) = server.get(&format!("/v1/progress/l{i}/s")).await;
        assert_eq!((status, body["position_ms"].as_u64()), (200, Some(i)));
    }
}

/// I3: what was answered 200 with `ack=durable` survives SIGKILL, even with a flush
/// interval far longer than the test (durable requests make the flusher commit now).
#[tokio::test]
async fn i3_durable_ack_survives_sigkill() {
    let data = Data::new();
    let server = Server::start(&data.store_url(), &["--flush-interval", "1h"]);
    let batch: Vec<Value> = (0..200u64)
        .map(|i| heartbeat(&format!("l{i}"), "s", 9, i))
        .collect();
    let (status, body) = server
        .post("/v1/heartbeats?ack=durable", &json!(batch))
        .await;
    assert_eq!((status, body["applied"].as_u64()), (200, Some(200)));
    let (status, _) = server
        .post(
            "/v1/heartbeats?ack=durable",
            &heartbeat("single", "s", 3, 33),
        )
        .await;
    assert_eq!(status, 200);
    tokio::task::spawn_blocking(move || server.stop(Signal::SIGKILL))
        .await
        .expect("kill");

    let server = Server::start(&data.store_url(), &[]);
    for i in 0..200u64 {
        let (status, body) = server.get(&format!("/v1/progress/l{i}/s")).await;
        assert_eq!((status, body["position_ms"].as_u64()), (200, Some(i)));
    }
    let (_, body) = server.get("/v1/progress/single/s").await;
    assert_eq!(body["position_ms"].as_u64(), Some(33));
}

/// I5: each bad request gets its status and a JSON error with a code and message, and
/// changes nothing: the known key keeps its state and nothing new is applied.
#[tokio::test]
async fn i5_bad_input_is_rejected_clearly_and_changes_nothing() {
    let data = Data::new();
    let server = Server::start(&data.store_url(), &[]);
    let (status, _) = server
        .post("/v1/heartbeats", &heartbeat("known", "s", 10, 100))
        .await;
    assert_eq!(status, 200);
    let applied_before = server.metric("progressd_heartbeats_applied_total").await;

    let ok = heartbeat("known", "s", 50, 1);
    let far_future = heartbeat("known", "s", 9_000_000_000_000_000, 1);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "/v1/heartbeats",
            b"{not json".to_vec(),
            400,
            "invalid_json",
        ),
        ("POST", "/v1/heartbeats", b"".to_vec(), 400, "invalid_json"),
        (
            "POST",
            "/v1/heartbeats",
            "[".repeat(100_000).into_bytes(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/heartbeats",
            br#"{"learner_id":"kn own","lesson_id":"s","seq":50,"position_ms":1}"#.to_vec(),
            400,
            "invalid_heartbeat",
        ),
        (
            "POST",
            "/v1/heartbeats",
            format!(
                r#"{{"learner_id":"{}","lesson_id":"s","seq":50,"position_ms":1}}"#,
                "k".repeat(129)
            )
            .into_bytes(),
            400,
            "invalid_heartbeat",
        ),
        (
            "POST",
            "/v1/heartbeats",
            br#"{"learner_id":"known","lesson_id":"s","seq":50,"position_ms":-1}"#.to_vec(),
            400,
            "invalid_heartbeat",
        ),
        (
            "POST",
            "/v1/heartbeats",
            br#"{"learner_id":"known","lesson_id":"s","seq":0,"position_ms":1}"#.to_vec(),
            400,
            "invalid_heartbeat",
        ),
        (
            "POST",
            "/v1/heartbeats",
            br#"{"learner_id":"known","lesson_id":"s","seq":50,"position_ms":1e3}"#.to_vec(),
            400,
            "invalid_heartbeat",
        ),
        (
            "POST",
            "/v1/heartbeats",
            far_future.to_string().into_bytes(),
            400,
            "seq_in_future",
        ),
        (
            "POST",
            "/v1/heartbeats",
            json!([ok, ok, {"learner_id": "known"}])
                .to_string()
                .into_bytes(),
            400,
            "invalid_heartbeat",
        ),
        (
            "POST",
            "/v1/heartbeats",
            b"[]".to_vec(),
            400,
            "invalid_batch",
        ),
        (
            "POST",
            "/v1/heartbeats?ack=sometimes",
            ok.to_string().into_bytes(),
            400,
            "invalid_query",
        ),
        ("GET", "/v1/heartbeats", vec![], 405, "method_not_allowed"),
        (
            "PUT",
            "/v1/progress/known/s",
            vec![],
            405,
            "method_not_allowed",
        ),
        ("POST", "/healthz", vec![], 405, "method_not_allowed"),
        ("GET", "/v2/nothing", vec![], 404, "not_found"),
        ("GET", "/v1/progress/kn%20own/s", vec![], 400, "invalid_id"),
        ("GET", "/v1/progress/known/never", vec![], 404, "not_found"),
    ];
    for (method, path, body, want_status, want_code) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = server
            .client
            .request(method.clone(), server.url(path))
            .body(body)
            .send()
            .await
            .expect("send");
        let (status, json) = common::decode(resp).await;
        assert_eq!(status, want_status, "{method} {path}: {json}");
        assert_eq!(json["error"]["code"], want_code, "{method} {path}: {json}");
        assert!(json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    assert_oversize_body_is_refused(&server).await;
    let (_, body) = server.get("/v1/progress/known/s").await;
    assert_eq!(
        (body["seq"].as_u64(), body["position_ms"].as_u64()),
        (Some(10), Some(100))
    );
    assert_eq!(
        server.metric("progressd_heartbeats_applied_total").await,
        applied_before
    );
    assert_eq!(server.get("/healthz").await.0, 200, "still serving");
}

/// Bodies over 1 MiB get 413 and change nothing, whether the size is declared (refused
/// before a byte is read) or only found while reading a chunked body. Raw sockets: the
/// server closes once it has answered, and an HTTP client still sending the body would
/// report a broken pipe instead of the answer.
async fn assert_oversize_body_is_refused(server: &Server) {
    let declared = "POST /v1/heartbeats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\n\r\n";
    let reply = send_raw(server, declared.as_bytes(), &[b' '; 4096]).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "declared: {reply}");
    assert!(reply.contains(r#""code":"payload_too_large""#), "{reply}");

    let chunked = "POST /v1/heartbeats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut body = Vec::new();
    for _ in 0..40 {
        body.extend_from_slice(b"8000\r\n");
        body.extend_from_slice(&[b' '; 0x8000]);
        body.extend_from_slice(b"\r\n");
    }
    let reply = send_raw(server, chunked.as_bytes(), &body).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "chunked: {reply:.200}");
    assert!(reply.contains(r#""code":"payload_too_large""#), "{reply}");
}

/// Writes `head` then as much of `body` as the server takes, and returns all it answers.
async fn send_raw(server: &Server, head: &[u8], body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(&server.addr)
        .await
        .expect("connect");
    conn.write_all(head).await.expect("write head");
    // The server may answer and close before the whole body is sent: not an error here.
    let _ = conn.write_all(body).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

/// I6 + I1: a key evicted from memory is read back from the store, and a late stale
/// write for it neither wins nor is reported applied.
#[tokio::test]
async fn i6_eviction_then_late_stale_write() {
    let data = Data::new();
    let flags = [
        "--shards",
        "1",
        "--max-resident-keys",
        "1",
        "--flush-interval",
        "20ms",
    ];
    let server = Server::start(&data.store_url(), &flags);
    let (status, _) = server
        .post(
            "/v1/heartbeats?ack=durable",
            &heartbeat("l", "old", 10, 100),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .post("/v1/heartbeats?ack=durable", &heartbeat("l", "newer", 1, 1))
        .await;
    assert_eq!(status, 200);
    for _ in 0..500 {
        if server.metric("progressd_resident_keys").await <= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        server.metric("progressd_resident_keys").await,
        1.0,
        "one key evicted"
    );

    let (_, body) = server
        .post("/v1/heartbeats", &heartbeat("l", "old", 5, 50))
        .await;
    assert_eq!(
        body,
        json!({"applied": false, "seq": 10, "position_ms": 100})
    );
    let (_, body) = server.get("/v1/progress/l/old").await;
    assert_eq!(
        (body["seq"].as_u64(), body["position_ms"].as_u64()),
        (Some(10), Some(100))
    );
    let (_, body) = server.get("/v1/progress/l").await;
    assert_eq!(body["lessons"].as_array().map(Vec::len), Some(2));
}

/// A client that never finishes its headers is disconnected after the request timeout.
#[tokio::test]
async fn slow_header_client_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start("memory://", &["--request-timeout", "300ms"]);
    let mut conn = tokio::net::TcpStream::connect(&server.addr)
        .await
        .expect("connect");
    conn.write_all(b"POST /v1/heartbeats HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "server closed the stalled connection");
}

/// Past the connection cap, a new connection waits until another one closes.
#[tokio::test]
async fn connection_cap_holds_new_connections_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start("memory://", &["--max-connections", "1"]);
    let held = tokio::net::TcpStream::connect(&server.addr)
        .await
        .expect("first");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = tokio::net::TcpStream::connect(&server.addr)
        .await
        .expect("kernel queues it");
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(300), second.read_to_end(&mut buf)).await;
    assert!(
        early.is_err(),
        "second connection must not be served while the first is held"
    );
    drop(held);
    tokio::time::timeout(Duration::from_secs(20), second.read_to_end(&mut buf))
        .await
        .expect("served")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
}
