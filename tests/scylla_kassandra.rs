//! The ScyllaDB store driven through the real `scylla` driver against an in-memory
//! `kassandra` CQL v4 node started in-process (no ScyllaDB can run in CI).
//!
//! What this proves: `migrate` creates keyspace and table idempotently, `open`
//! prepares every statement and refuses a missing keyspace, rows written with a
//! protocol-level timestamp come back through `get` and `list` (also across pages),
//! re-writes are idempotent, and poison rows are set aside without blocking the rest.
//! What it cannot prove: last-write-wins by timestamp. kassandra ignores write
//! timestamps (the last write to arrive wins), so no test here asserts LWW; the store
//! contract suite does that against a real node when `PROGRESSD_TEST_SCYLLA` is set.

mod scylla_node;

use std::sync::Arc;

use progressd::{
    model::ProgressRow,
    store::{scylla, Store, StoreError},
};
use prometheus_client::registry::Registry;
use scylla_node::{
    assert_all_stored, metric, migrated_store, row, rows, test_config, url, KassandraNode,
};

#[tokio::test]
async fn migrate_is_idempotent_and_open_prepares_every_statement() {
    let node = KassandraNode::start().await;
    let url = url(node.addr, "progress_ks");
    let cfg = test_config();
    scylla::migrate(&url, &cfg).await.expect("first migrate");
    scylla::migrate(&url, &cfg)
        .await
        .expect("second migrate changes nothing");
    let mut registry = Registry::with_prefix("progressd");
    let store = scylla::open(&url, &cfg, &mut registry).await.expect("open");
    store.ping().await.expect("ping");
    assert!(store.describe().contains("progress_ks"));
}

#[tokio::test]
async fn migrate_refuses_without_an_explicit_replication() {
    let node = KassandraNode::start().await;
    let cfg = scylla::ScyllaConfig {
        replication: None,
        ..test_config()
    };
    let err = scylla::migrate(&url(node.addr, "ks"), &cfg)
        .await
        .expect_err("no replication given");
    assert!(err.to_string().contains("--scylla-replication"), "{err}");
}

#[tokio::test]
async fn open_never_creates_a_keyspace_and_points_at_migrate() {
    let node = KassandraNode::start().await;
    let mut registry = Registry::with_prefix("progressd");
    let err = scylla::open(
        &url(node.addr, "never_migrated"),
        &test_config(),
        &mut registry,
    )
    .await
    .expect_err("keyspace missing");
    assert!(matches!(err, StoreError::Fatal(_)), "{err:?}");
    assert!(err.to_string().contains("progressd migrate"), "{err}");
}

#[tokio::test]
async fn open_reports_an_unreachable_cluster_as_unavailable() {
    let node = KassandraNode::start().await;
    let addr = node.addr;
    drop(node);
    let mut registry = Registry::with_prefix("progressd");
    let err = scylla::open(&url(addr, "ks"), &test_config(), &mut registry)
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn written_rows_come_back_through_get_and_list() {
    let node = KassandraNode::start().await;
    let (store, _registry) = migrated_store(&url(node.addr, "ks"), &test_config()).await;
    let mut batch: Vec<ProgressRow> = rows(20, 5).to_vec();
    batch.push(row("learner-no-device", "lesson-x", 77, 1_234, None));
    let report = store
        .write_batch(batch.clone().into())
        .await
        .expect("write");
    assert_eq!(report.written, batch.len());
    assert!(report.rejected.is_empty());

    assert_all_stored(&store, &batch).await;
    let mut listed = store.list("learner-3").await.expect("list");
    listed.sort_by(|a, b| a.lesson_id.cmp(&b.lesson_id));
    let expected: Vec<_> = batch
        .iter()
        .filter(|r| &*r.learner_id == "learner-3")
        .collect();
    assert_eq!(listed.len(), expected.len());
    for (l, e) in listed.iter().zip(expected) {
        assert_eq!((&l.lesson_id, &l.progress), (&e.lesson_id, &e.progress));
    }

    assert_eq!(
        store.get("learner-3", "no-such-lesson").await.expect("get"),
        None
    );
    assert!(store
        .list("no-such-learner")
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn list_reads_a_learner_across_pages() {
    let node = KassandraNode::start().await;
    let (store, _registry) = migrated_store(&url(node.addr, "ks"), &test_config()).await;
    let batch = rows(1, 2_500);
    store.write_batch(Arc::clone(&batch)).await.expect("write");
    let listed = store.list("learner-0").await.expect("list");
    assert_eq!(listed.len(), 2_500);
}

#[tokio::test]
async fn i4_rewriting_the_same_batch_is_idempotent() {
    let node = KassandraNode::start().await;
    let (store, _registry) = migrated_store(&url(node.addr, "ks"), &test_config()).await;
    let batch = rows(10, 3);
    for _ in 0..3 {
        let report = store.write_batch(Arc::clone(&batch)).await.expect("write");
        assert_eq!(report.written, batch.len());
    }
    assert_all_stored(&store, &batch).await;
    assert_eq!(store.list("learner-0").await.expect("list").len(), 3);
}

#[tokio::test]
async fn i4_a_row_with_no_valid_timestamp_is_poison_and_the_rest_is_written() {
    let node = KassandraNode::start().await;
    let (store, registry) = migrated_store(&url(node.addr, "ks"), &test_config()).await;
    let mut batch: Vec<ProgressRow> = rows(3, 2).to_vec();
    batch.insert(
        2,
        row("learner-0", "from-the-far-future", u64::MAX / 2, 5, None),
    );
    let report = store.write_batch(batch.into()).await.expect("write");
    assert_eq!(report.written, 6);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].index, 2);
    assert!(
        report.rejected[0].reason.contains("ahead"),
        "{:?}",
        report.rejected
    );
    assert_eq!(metric(&registry, "progressd_scylla_poison_rows_total"), 1.0);
    assert_eq!(
        store
            .get("learner-0", "from-the-far-future")
            .await
            .expect("get"),
        None
    );
    assert_eq!(store.list("learner-0").await.expect("list").len(), 2);
}

#[tokio::test]
async fn ping_fails_once_the_node_is_gone() {
    let node = KassandraNode::start().await;
    let (store, _registry) = migrated_store(&url(node.addr, "ks"), &test_config()).await;
    store.ping().await.expect("node up");
    drop(node);
    let err = store.ping().await.expect_err("node down");
    assert!(!matches!(err, StoreError::Fatal(_)), "{err:?}");
    let err = store
        .write_batch(rows(1, 1))
        .await
        .expect_err("a write to a dead node fails the batch");
    assert!(!matches!(err, StoreError::Fatal(_)), "{err:?}");
}
