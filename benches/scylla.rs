//! ScyllaDB store costs that can be measured without a cluster.
//!
//! - `scylla_bind`: binding one row to the prepared insert with its protocol-level
//!   write timestamp (the per-row CPU cost of a flush on the ingest node).
//! - `scylla_flush_plumbing`: `write_batch` of 1000 rows at 1, 64 and 256 writes in
//!   flight into an in-process `kassandra` node. This is a **plumbing number** (driver,
//!   semaphore, tasks, one in-memory node behind one lock), **not ScyllaDB's
//!   throughput**: a real cluster has other latencies and scales with nodes and shards.

#[path = "../tests/scylla_node/mod.rs"]
mod scylla_node;

use std::{hint::black_box, sync::Arc, time::Duration};

use ::scylla::client::session_builder::SessionBuilder;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use progressd::store::{
    scylla::{self, writer::bind_row, ScyllaConfig},
    Store,
};
use scylla_node::{migrated_store, rows, test_config, url, KassandraNode};

const FLUSH_ROWS: usize = 1000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn bind(c: &mut Criterion) {
    let rt = runtime();
    let node = rt.block_on(KassandraNode::start());
    let url = url(node.addr, "bench");
    let insert = rt.block_on(async {
        scylla::migrate(&url, &test_config())
            .await
            .expect("migrate");
        let session = SessionBuilder::new()
            .known_node(node.addr.to_string())
            .build()
            .await
            .expect("session");
        session
            .prepare(scylla::schema::insert(&url))
            .await
            .expect("prepare")
    });
    let batch = rows(100, 10);
    let now_ms = 1_780_000_000_000;
    let mut group = c.benchmark_group("scylla_bind");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("bind_1000_rows", |b| {
        b.iter(|| {
            for row in batch.iter() {
                black_box(bind_row(&insert, row, now_ms).expect("bindable"));
            }
        })
    });
    group.finish();
}

fn flush(c: &mut Criterion) {
    let rt = runtime();
    let node = rt.block_on(KassandraNode::start());
    let mut group = c.benchmark_group("scylla_flush_plumbing");
    group.throughput(Throughput::Elements(FLUSH_ROWS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for in_flight in [1, 64, 256] {
        let cfg = ScyllaConfig {
            max_in_flight: in_flight,
            ..test_config()
        };
        let (store, _registry) = rt.block_on(migrated_store(&url(node.addr, "bench"), &cfg));
        let batch = rows(FLUSH_ROWS / 4, 4);
        group.bench_with_input(
            BenchmarkId::new("kassandra_in_flight", in_flight),
            &batch,
            |b, batch| {
                b.to_async(&rt).iter(|| async {
                    let report = store.write_batch(Arc::clone(batch)).await.expect("flush");
                    black_box(report.written)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bind, flush);
criterion_main!(benches);
