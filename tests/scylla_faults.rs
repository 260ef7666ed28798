//! Fault injection for the ScyllaDB store: `scylla-proxy` sits between the real
//! driver and an in-process `kassandra` node and forges write timeouts, Overloaded
//! errors, slow answers, dropped connections and invalid-row errors.
//!
//! Every test here protects I4 (or, for the timestamp, I1's plumbing): faults make
//! the store retry, a flush that outlasts its retries fails whole so the engine keeps
//! it dirty, and once the faults stop every row is in the node; a poison row is set
//! aside without blocking the rest. kassandra ignores write timestamps, so these
//! tests check that the timestamp travels on the wire, not how a cluster resolves it.

mod scylla_node;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use progressd::{
    engine::{run_flusher, Engine, EngineConfig, Incoming},
    metrics::{new_registry, ErrorKind, Metrics},
    model::{tiebreak, ProgressRow},
    store::{
        scylla::{self, ScyllaConfig},
        Store, StoreError,
    },
};
use prometheus_client::registry::Registry;
use scylla_node::{
    assert_all_stored, metric, migrated_store, row, rows, test_config, url, KassandraNode,
};
use scylla_proxy::{
    Condition, Node, Proxy, ProxyError, Reaction, RequestOpcode, RequestReaction, RequestRule,
    RunningProxy, ShardAwareness, WorkerError,
};
use tokio::sync::{mpsc, oneshot};

/// A kassandra node behind a proxy; the store under test connects to the proxy.
struct Faulty {
    proxy: RunningProxy,
    addr: SocketAddr,
    node: KassandraNode,
}

impl Faulty {
    async fn start() -> Self {
        let node = KassandraNode::start().await;
        let addr = {
            let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
            free.local_addr().expect("local addr")
        };
        let proxy = Proxy::builder()
            .with_node(
                Node::builder()
                    .real_address(node.addr)
                    .proxy_address(addr)
                    .shard_awareness(ShardAwareness::Unaware)
                    .build(),
            )
            .build()
            .run()
            .await
            .expect("proxy runs");
        Faulty { proxy, addr, node }
    }

    /// Asserts every row is in the node, read directly (not through the proxy, whose
    /// unbuffered two-part frame writes cost a Nagle delay per sequential request).
    async fn assert_all_stored(&self, batch: &[ProgressRow]) {
        let mut registry = Registry::with_prefix("progressd");
        let direct = scylla::open(&url(self.node.addr, "ks"), &test_config(), &mut registry)
            .await
            .expect("open directly on the node");
        assert_all_stored(&direct, batch).await;
    }

    /// Applies `reaction` to the next `times` row writes (EXECUTE requests).
    fn on_next_writes(&mut self, times: usize, reaction: RequestReaction) {
        self.on_writes(
            Condition::RequestOpcode(RequestOpcode::Execute)
                .and(Condition::TrueForLimitedTimes(times)),
            reaction,
        );
    }

    fn on_writes(&mut self, condition: Condition, reaction: RequestReaction) {
        self.proxy.running_nodes[0]
            .change_request_rules(Some(vec![RequestRule(condition, reaction)]));
    }

    fn heal(&mut self) {
        self.proxy.turn_off_rules();
    }

    /// Stops the proxy. Drivers hanging up (a migrate session closing, a dropped
    /// connection) are logged by the proxy as errors; anything else fails the test.
    async fn stop(self) {
        match self.proxy.finish().await {
            Ok(()) | Err(ProxyError::Worker(WorkerError::DriverDisconnected(_))) => {}
            Err(e) => panic!("proxy failed: {e}"),
        }
    }
}

fn cfg(attempts: u32) -> ScyllaConfig {
    ScyllaConfig {
        write_attempts: attempts,
        request_timeout: Duration::from_millis(300),
        ..test_config()
    }
}

#[tokio::test]
async fn i4_overloaded_and_write_timeouts_are_retried_until_every_row_lands() {
    let mut f = Faulty::start().await;
    let (store, registry) = migrated_store(&url(f.addr, "ks"), &cfg(5)).await;
    let batch = rows(40, 5);

    f.on_next_writes(30, RequestReaction::forge().overloaded());
    let report = store
        .write_batch(Arc::clone(&batch))
        .await
        .expect("retried");
    assert_eq!(report.written, batch.len());
    f.on_next_writes(30, RequestReaction::forge().write_timeout());
    let report = store
        .write_batch(Arc::clone(&batch))
        .await
        .expect("retried");
    assert_eq!(report.written, batch.len());

    f.heal();
    f.assert_all_stored(&batch).await;
    // Every retriable fault the proxy forged was retried, and each kind was seen.
    let overloaded = metric(
        &registry,
        "progressd_scylla_errors_total{kind=\"overloaded\"}",
    );
    let timeouts = metric(&registry, "progressd_scylla_errors_total{kind=\"timeout\"}");
    assert!(
        overloaded >= 1.0 && timeouts >= 1.0,
        "{overloaded} {timeouts}"
    );
    assert_eq!(
        metric(&registry, "progressd_scylla_retries_total"),
        overloaded + timeouts
    );
    assert_eq!(metric(&registry, "progressd_scylla_writes_in_flight"), 0.0);
    f.stop().await;
}

/// Polls `done` every 20 ms for up to 30 s: a liveness deadline, not a timing claim.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

/// I4 through the engine and its flusher: heartbeats accepted before the cluster
/// starts answering Overloaded to every write stay dirty across the failed flushes
/// and their backoff; once the faults stop, the flusher's next attempt puts every
/// accepted heartbeat in the node.
#[tokio::test]
async fn i4_the_engine_keeps_what_it_accepted_until_the_cluster_takes_it() {
    let mut f = Faulty::start().await;
    let (store, registry) = migrated_store(&url(f.addr, "ks"), &cfg(2)).await;
    let metrics = Arc::new(Metrics::register(&mut new_registry()));
    let config = EngineConfig {
        flush_interval: Duration::from_millis(50),
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let engine = Engine::new(Arc::new(store), config, metrics.clone());
    // Few keys: each first heartbeat is a read through the proxy, a Nagle delay each.
    let batch = rows(6, 2);
    for r in batch.iter() {
        let p = &r.progress;
        let incoming = Incoming {
            position_ms: p.position_ms,
            seq: p.seq,
            device_id: p.device_id.as_deref(),
            now_ms: p.updated_at_ms,
        };
        let merged = engine
            .apply(&r.learner_id, &r.lesson_id, &incoming)
            .await
            .expect("accepted (the read-through still works)");
        assert!(merged.applied);
    }

    f.on_writes(
        Condition::RequestOpcode(RequestOpcode::Execute),
        RequestReaction::forge().overloaded(),
    );
    let (drain, drained) = oneshot::channel::<()>();
    let flusher = tokio::spawn(run_flusher(engine.clone(), async {
        let _ = drained.await;
    }));
    // Counted by the engine once per failed flush (an Overloaded write that outlasts
    // its retries fails the flush as "unavailable").
    let failed_flushes = || {
        metrics
            .store_errors
            .get_or_create(&ErrorKind {
                kind: "unavailable",
            })
            .get()
    };
    eventually("two flushes fail", || failed_flushes() >= 2).await;
    assert!(!engine.store_healthy());
    assert!(
        metric(
            &registry,
            "progressd_scylla_errors_total{kind=\"overloaded\"}"
        ) >= 2.0
    );
    assert_eq!(
        engine.dirty_keys(),
        batch.len(),
        "nothing accepted was dropped"
    );

    f.heal();
    eventually("every key is clean", || engine.dirty_keys() == 0).await;
    assert!(engine.store_healthy());
    drain.send(()).expect("flusher alive");
    flusher.await.expect("flusher ends");
    f.assert_all_stored(&batch).await;
    f.stop().await;
}

#[tokio::test]
async fn i4_a_client_timeout_is_retried() {
    let mut f = Faulty::start().await;
    let (store, registry) = migrated_store(&url(f.addr, "ks"), &cfg(5)).await;
    let batch = rows(5, 2);
    f.on_next_writes(3, RequestReaction::delay(Duration::from_millis(600)));
    let report = store
        .write_batch(Arc::clone(&batch))
        .await
        .expect("retried");
    assert_eq!(report.written, batch.len());
    f.heal();
    f.assert_all_stored(&batch).await;
    assert!(metric(&registry, "progressd_scylla_errors_total{kind=\"timeout\"}") >= 1.0);
    f.stop().await;
}

#[tokio::test]
async fn i4_dropped_connections_mid_flush_are_retried() {
    let mut f = Faulty::start().await;
    let (store, registry) = migrated_store(&url(f.addr, "ks"), &cfg(30)).await;
    let batch = rows(50, 4);
    f.on_next_writes(3, RequestReaction::drop_connection());
    let report = store
        .write_batch(Arc::clone(&batch))
        .await
        .expect("retried");
    assert_eq!(report.written, batch.len());
    f.heal();
    f.assert_all_stored(&batch).await;
    assert!(
        metric(
            &registry,
            "progressd_scylla_errors_total{kind=\"connection\"}"
        ) >= 1.0
    );
    f.stop().await;
}

#[tokio::test]
async fn i4_when_faults_outlast_the_retries_the_flush_fails_whole_and_a_later_one_lands_all() {
    let mut f = Faulty::start().await;
    let (store, _registry) = migrated_store(&url(f.addr, "ks"), &cfg(3)).await;
    let batch = rows(20, 3);
    f.on_writes(
        Condition::RequestOpcode(RequestOpcode::Execute),
        RequestReaction::forge().overloaded(),
    );
    let err = store
        .write_batch(Arc::clone(&batch))
        .await
        .expect_err("the cluster never answers");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));

    f.heal();
    let report = store
        .write_batch(Arc::clone(&batch))
        .await
        .expect("faults gone");
    assert_eq!(report.written, batch.len());
    f.assert_all_stored(&batch).await;
    store.ping().await.expect("ready again");
    f.stop().await;
}

#[tokio::test]
async fn i4_a_poison_row_does_not_block_the_rest() {
    let mut f = Faulty::start().await;
    let (store, registry) = migrated_store(&url(f.addr, "ks"), &cfg(3)).await;
    let mut batch: Vec<ProgressRow> = rows(10, 3).to_vec();
    batch.insert(7, row("poison-learner", "lesson-0", 5, 5, None));
    f.on_writes(
        Condition::RequestOpcode(RequestOpcode::Execute).and(Condition::BodyContainsCaseSensitive(
            Box::from(&b"poison-learner"[..]),
        )),
        RequestReaction::forge().invalid(),
    );
    let report = store
        .write_batch(batch.clone().into())
        .await
        .expect("flush goes on");
    assert_eq!(report.written, batch.len() - 1);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].index, 7);
    assert_eq!(metric(&registry, "progressd_scylla_poison_rows_total"), 1.0);
    assert_eq!(metric(&registry, "progressd_scylla_retries_total"), 0.0);

    f.heal();
    batch.remove(7);
    f.assert_all_stored(&batch).await;
    assert_eq!(
        store.get("poison-learner", "lesson-0").await.expect("get"),
        None
    );
    f.stop().await;
}

#[tokio::test]
async fn i4_a_table_that_refuses_everything_fails_the_flush_instead_of_poisoning_it() {
    let mut f = Faulty::start().await;
    let (store, registry) = migrated_store(&url(f.addr, "ks"), &cfg(3)).await;
    f.on_writes(
        Condition::RequestOpcode(RequestOpcode::Execute),
        RequestReaction::forge().invalid(),
    );
    let err = store.write_batch(rows(5, 2)).await.expect_err("not poison");
    assert!(matches!(err, StoreError::Fatal(_)), "{err:?}");
    assert_eq!(metric(&registry, "progressd_scylla_poison_rows_total"), 0.0);
    f.stop().await;
}

#[tokio::test]
async fn i1_the_write_timestamp_travels_at_the_protocol_level() {
    let mut f = Faulty::start().await;
    let (store, _registry) = migrated_store(&url(f.addr, "ks"), &test_config()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    f.on_writes(
        Condition::RequestOpcode(RequestOpcode::Execute).and(Condition::BodyContainsCaseSensitive(
            Box::from(&b"ts-learner"[..]),
        )),
        RequestReaction::noop().with_feedback_when_performed(tx),
    );
    let r = row(
        "ts-learner",
        "lesson-1",
        1_780_000_000_123,
        42_000,
        Some("tv"),
    );
    store
        .write_batch(Arc::from([r.clone()]))
        .await
        .expect("write");
    let (frame, _shard) = rx.recv().await.expect("the write passed the proxy");
    // EXECUTE in protocol v4 ends with the optional 8-byte timestamp when its flag
    // (0x20) is set; no other optional field follows it.
    let body = &frame.body;
    let stamp = i64::from_be_bytes(body[body.len() - 8..].try_into().expect("8 bytes"));
    let expected = 1_780_000_000_123 * 1000 + i64::from(tiebreak(42_000, Some("tv")));
    assert_eq!(stamp, expected);
    f.stop().await;
}
