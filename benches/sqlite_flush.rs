//! SQLite flush throughput: one flush of 10 k and 100 k dirty rows (distinct random keys
//! over a 250 k-key table that already holds every key, the steady state), through the real
//! store: sort, one transaction of conditional upserts, one fsync. Compare with
//! `../shared/perf-ref` ref-sqlite (~100 k rows/s tuned). `cargo bench --bench sqlite_flush`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use progressd::model::{Progress, ProgressRow};
use progressd::store::sqlite::{SqliteOptions, SqliteStore};
use progressd::store::Store;
use rand::SeedableRng;

const KEYS: usize = 250_000;

fn row(key: usize, seq: u64) -> ProgressRow {
    ProgressRow {
        learner_id: format!("{:08x}-0000-4000-8000-{:012x}", key * 7919, key).into(),
        lesson_id: "lesson-0001".into(),
        progress: Progress {
            position_ms: seq * 10,
            seq,
            device_id: None,
            updated_at_ms: seq,
        },
    }
}

fn flush(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        SqliteStore::open(&dir.path().join("bench.db"), &SqliteOptions::default()).expect("open");
    let all: Arc<[ProgressRow]> = (0..KEYS).map(|k| row(k, 1)).collect();
    rt.block_on(store.write_batch(all)).expect("prepopulate");

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut seq = 2u64;
    let mut group = c.benchmark_group("sqlite_flush");
    group.sample_size(10);
    for rows in [10_000usize, 100_000] {
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_function(format!("{rows}_rows"), |b| {
            b.iter_batched(
                || {
                    seq += 1;
                    // Distinct keys, as in a real flush: the dirty set holds a key once.
                    rand::seq::index::sample(&mut rng, KEYS, rows)
                        .into_iter()
                        .map(|k| row(k, seq))
                        .collect::<Arc<[ProgressRow]>>()
                },
                |batch| rt.block_on(store.write_batch(batch)).expect("flush"),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, flush);
criterion_main!(benches);
