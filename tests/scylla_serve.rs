//! The `progressd` binary on a `scylla://` store, end to end: the real server and
//! the real driver against an in-process `kassandra` node (the node ignores write
//! timestamps, so this checks wiring and durability, not LWW).
//!
//! Protects I2/I3 on this backend (an `ack=durable` answer means the row is in the
//! node; a clean stop drains to it) and the startup rule that `serve` never creates a
//! keyspace.

mod common;
mod scylla_node;

use std::process::Command;

use common::{binary, heartbeat, Server};
use nix::sys::signal::Signal;
use progressd::store::Store;
use scylla_node::{migrated_store, test_config, url, KassandraNode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i3_durable_heartbeats_are_in_the_node_and_i2_a_clean_stop_drains_the_rest() {
    let node = KassandraNode::start().await;
    let store_url = url(node.addr, "progress");
    let (direct, _registry) = migrated_store(&store_url, &test_config()).await;
    let server = Server::start(&store_url.to_string(), &["--flush-interval", "1h"]);

    let (status, _) = server
        .post(
            "/v1/heartbeats?ack=durable",
            &heartbeat("learner-1", "lesson-1", 10, 1_000),
        )
        .await;
    assert_eq!(status, 200);
    let stored = direct.get("learner-1", "lesson-1").await.expect("get");
    assert_eq!(stored.map(|p| (p.seq, p.position_ms)), Some((10, 1_000)));

    let (status, body) = server.get("/v1/progress/learner-1/lesson-1").await;
    assert_eq!((status, &body["seq"]), (200, &json!(10)));
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, 200);
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("progressd_scylla_write_seconds_count"),
        "{metrics}"
    );

    let (status, _) = server
        .post(
            "/v1/heartbeats",
            &heartbeat("learner-2", "lesson-9", 20, 2_000),
        )
        .await;
    assert_eq!(status, 200);
    let exit = tokio::task::spawn_blocking(move || server.stop(Signal::SIGTERM))
        .await
        .expect("stop");
    assert!(exit.success(), "{exit:?}");
    let drained = direct.get("learner-2", "lesson-9").await.expect("get");
    assert_eq!(drained.map(|p| p.seq), Some(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_keyspace_that_was_never_migrated() {
    let node = KassandraNode::start().await;
    let store_url = url(node.addr, "never_migrated").to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--store", &store_url])
            .output()
            .expect("run progressd")
    })
    .await
    .expect("join");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The driver's own log lines may still arrive after the verdict (a background
    // metadata refresh racing the exit): find the one line progressd itself wrote.
    let verdict: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("progressd: "))
        .collect();
    assert_eq!(verdict.len(), 1, "{stderr}");
    assert!(verdict[0].contains("progressd migrate"), "{stderr}");
}

#[test]
fn migrate_without_replication_exits_with_one_line() {
    let out = Command::new(binary())
        .args(["migrate", "--store", "scylla://127.0.0.1:1/ks"])
        .env_remove("PROGRESSD_SCYLLA_REPLICATION")
        .output()
        .expect("run progressd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--scylla-replication"), "{stderr}");
}
