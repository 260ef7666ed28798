//! Map apply throughput: resident keys (the hot path) and fresh keys (first heartbeat
//! of a session: a store read-through on the memory store, then an insert), on one and
//! two threads. `cargo bench --bench engine`.
//!
//! `apply` on the memory store never pends, so each call is polled once with a no-op
//! waker instead of being scheduled by a runtime: the number is the map's, not tokio's.
//! (A runtime is entered only because a miss arms the store-read timeout.)

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use progressd::engine::{Engine, EngineConfig, Incoming};
use progressd::metrics::{new_registry, Metrics};
use progressd::store::memory::MemoryStore;

const KEYS: usize = 250_000;

fn keys() -> Vec<(String, String)> {
    (0..KEYS)
        .map(|i| {
            (
                format!("{:08x}-0000-4000-8000-{:012x}", i * 7919, i),
                "lesson-0001".to_string(),
            )
        })
        .collect()
}

fn engine() -> Arc<Engine> {
    let metrics = Arc::new(Metrics::register(&mut new_registry()));
    let config = EngineConfig {
        max_dirty_keys: usize::MAX,
        flush_dirty_threshold: usize::MAX,
        ..Default::default()
    };
    Engine::new(Arc::new(MemoryStore::new()), config, metrics)
}

/// Applies one heartbeat, polling once: resident keys and the memory store never pend.
fn apply_now(engine: &Engine, learner: &str, lesson: &str, seq: u64) {
    let hb = Incoming {
        position_ms: seq * 10,
        seq,
        device_id: None,
        now_ms: 1,
    };
    let fut = pin!(engine.apply(learner, lesson, &hb));
    let mut cx = Context::from_waker(Waker::noop());
    match fut.poll(&mut cx) {
        Poll::Ready(r) => {
            std::hint::black_box(r.ok());
        }
        Poll::Pending => panic!("apply pended on a memory store"),
    }
}

/// Runs `per_thread` applies on each of `threads` threads over disjoint key ranges.
fn run_threads(
    engine: &Engine,
    keys: &[(String, String)],
    threads: usize,
    per_thread: u64,
    seq0: u64,
) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let runtime = &runtime;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let part = &keys[t * keys.len() / threads..(t + 1) * keys.len() / threads];
            s.spawn(move || {
                let _entered = runtime.enter();
                for i in 0..per_thread {
                    let (l, s) = &part[i as usize % part.len()];
                    apply_now(engine, l, s, seq0 + i);
                }
            });
        }
    });
    start.elapsed()
}

/// Resident keys: 250 k (each apply walks cold memory, like real traffic over many
/// learners) and 1 k (the map's CPU cost when its working set is in cache).
fn resident(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_resident");
    for (key_count, threads) in [(KEYS, 1usize), (KEYS, 2), (1_000, 1), (1_000, 2)] {
        let keys = &keys()[..key_count];
        let engine = engine();
        run_threads(&engine, keys, 1, key_count as u64, 1);
        group.throughput(Throughput::Elements(100_000 * threads as u64));
        let mut seq = 2u64;
        group.bench_function(format!("{key_count}_keys_{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_threads(&engine, keys, threads, 100_000, seq);
                    seq += 100_000;
                }
                total
            })
        });
    }
    group.finish();
}

fn fresh(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("apply_fresh");
    group.sample_size(10);
    for threads in [1usize, 2] {
        group.throughput(Throughput::Elements(keys.len() as u64));
        group.bench_function(format!("{threads}_threads"), |b| {
            b.iter_batched(
                engine,
                |engine| run_threads(&engine, &keys, threads, (keys.len() / threads) as u64, 1),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, resident, fresh);
criterion_main!(benches);
