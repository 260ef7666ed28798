//! Engine tests, each named for the invariant it protects. The store here is
//! `FlakyStore`, a test double over the real `MemoryStore` that fails, stalls or
//! refuses on command: faults a real disk cannot be made to produce on cue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use tokio::sync::Semaphore;

use super::*;
use crate::metrics::{new_registry, Metrics};
use crate::model::{LwwKey, ProgressRow};
use crate::store::memory::MemoryStore;
use crate::store::{RejectedRow, WriteReport};

/// Fault-injecting test double over the real in-memory store.
#[derive(Default)]
struct FlakyStore {
    inner: MemoryStore,
    /// The next this-many writes fail as if the store were unreachable.
    fail_writes: AtomicUsize,
    /// The next this-many writes hang (until the engine's store timeout fires).
    stall_writes: AtomicUsize,
    /// Reads fail while non-zero (decremented per read).
    fail_reads: AtomicUsize,
    /// Each read takes this long, so concurrent misses overlap.
    read_delay_ms: AtomicUsize,
    reads: AtomicUsize,
    /// Rows of this lesson are refused for good.
    poison_lesson: Option<&'static str>,
    /// When set, each write waits for a permit: a test holds a flush mid-write.
    write_gate: Option<Arc<Semaphore>>,
    /// When set, each read waits for a permit: a test holds a load mid-read.
    read_gate: Option<Arc<Semaphore>>,
    writes_started: AtomicUsize,
}

/// Waits for one permit of `gate`, if there is a gate.
async fn pass(gate: &Option<Arc<Semaphore>>) {
    if let Some(gate) = gate {
        gate.acquire().await.expect("gate open").forget();
    }
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl Store for FlakyStore {
    async fn write_batch(&self, rows: Arc<[ProgressRow]>) -> Result<WriteReport, StoreError> {
        self.writes_started.fetch_add(1, Ordering::SeqCst);
        pass(&self.write_gate).await;
        if take_one(&self.stall_writes) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if take_one(&self.fail_writes) {
            return Err(StoreError::Unavailable("injected write failure".into()));
        }
        let poison = |r: &ProgressRow| Some(&*r.lesson_id) == self.poison_lesson;
        let good: Vec<ProgressRow> = rows.iter().filter(|r| !poison(r)).cloned().collect();
        let mut report = self.inner.write_batch(good.into()).await?;
        report.rejected = (rows.iter().enumerate())
            .filter(|(_, r)| poison(r))
            .map(|(index, _)| RejectedRow {
                index,
                reason: "injected poison".into(),
            })
            .collect();
        Ok(report)
    }

    async fn get(&self, learner_id: &str, lesson_id: &str) -> Result<Option<Progress>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        pass(&self.read_gate).await;
        let delay = self.read_delay_ms.load(Ordering::SeqCst) as u64;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if take_one(&self.fail_reads) {
            return Err(StoreError::Unavailable("injected read failure".into()));
        }
        self.inner.get(learner_id, lesson_id).await
    }

    async fn list(&self, learner_id: &str) -> Result<Vec<LessonProgress>, StoreError> {
        self.inner.list(learner_id).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "flaky test double".into()
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        shards: 4,
        flush_interval: Duration::from_millis(100),
        store_timeout: Duration::from_secs(1),
        durable_timeout: Duration::from_secs(30),
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(200),
        ..EngineConfig::default()
    }
}

fn engine_with(store: Arc<FlakyStore>, config: EngineConfig) -> Arc<Engine> {
    let metrics = Arc::new(Metrics::register(&mut new_registry()));
    Engine::new(store, config, metrics)
}

fn hb(seq: u64, position_ms: u64, device: Option<&str>) -> Incoming<'_> {
    Incoming {
        position_ms,
        seq,
        device_id: device,
        now_ms: 1_000,
    }
}

async fn apply(e: &Engine, learner: &str, lesson: &str, seq: u64, pos: u64) -> Merged {
    e.apply(learner, lesson, &hb(seq, pos, None))
        .await
        .expect("apply")
}

/// The real flusher task, drained on demand.
struct Flusher {
    drain: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Flusher {
    fn spawn(engine: &Arc<Engine>) -> Self {
        let (drain, drained) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_flusher(engine.clone(), async {
            let _ = drained.await;
        }));
        Flusher { drain, task }
    }

    async fn drain(self) {
        self.drain.send(()).expect("flusher alive");
        self.task.await.expect("flusher task");
    }
}

async fn flush_until_clean(e: &Engine) {
    for _ in 0..1000 {
        if e.flush_once().await.is_ok() && e.dirty_keys() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("engine never became clean: {} dirty", e.dirty_keys());
}

async fn stored(store: &FlakyStore, learner: &str, lesson: &str) -> Option<Progress> {
    store
        .inner
        .get(learner, lesson)
        .await
        .expect("memory store read")
}

/// A heartbeat as a property test generates it: (key, seq, position, device).
fn heartbeats() -> impl Strategy<Value = Vec<(u8, u64, u64, Option<u8>)>> {
    prop::collection::vec(
        (0u8..6, 1u64..40, 0u64..4, prop::option::of(0u8..3)),
        1..120,
    )
}

const DEVICES: [&str; 3] = ["phone", "laptop", "tv"];

fn expected_winners(
    items: &[(u8, u64, u64, Option<u8>)],
) -> HashMap<u8, (u64, u64, Option<&'static str>)> {
    let mut best: HashMap<u8, (u64, u64, Option<&'static str>)> = HashMap::new();
    for &(k, seq, pos, dev) in items {
        let dev = dev.map(|d| DEVICES[d as usize]);
        let candidate = (seq, pos, dev);
        let wins = |cur: &(u64, u64, Option<&str>)| {
            LwwKey::new(seq, pos, dev) > LwwKey::new(cur.0, cur.1, cur.2)
        };
        if best.get(&k).is_none_or(wins) {
            best.insert(k, candidate);
        }
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// I1: any permutation of a heartbeat set, with duplicates and flushes and a
    /// restart at arbitrary points, converges to the max-LWW state in memory and store.
    #[test]
    fn i1_any_order_with_duplicates_flushes_and_restart_converges(
        items in heartbeats(),
        dup_every in 1usize..5,
        flush_at in prop::collection::vec(0usize..200, 0..4),
        restart_at in 0usize..200,
        shuffle_seed in any::<u64>(),
    ) {
        let mut input: Vec<_> = items.clone();
        input.extend(items.iter().step_by(dup_every).copied());
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(shuffle_seed);
        rand::seq::SliceRandom::shuffle(&mut input[..], &mut rng);

        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let store = Arc::new(FlakyStore::default());
            let mut engine = engine_with(store.clone(), config());
            for (i, &(k, seq, pos, dev)) in input.iter().enumerate() {
                if flush_at.contains(&i) {
                    engine.flush_once().await.expect("flush");
                }
                if i == restart_at {
                    flush_until_clean(&engine).await;
                    engine = engine_with(store.clone(), config());
                }
                let dev = dev.map(|d| DEVICES[d as usize]);
                engine.apply("learner", &format!("lesson-{k}"), &hb(seq, pos, dev)).await.expect("apply");
            }
            flush_until_clean(&engine).await;
            for (k, (seq, pos, dev)) in expected_winners(&items) {
                let lesson = format!("lesson-{k}");
                let mem = engine.get("learner", &lesson).await.expect("get").expect("known");
                let disk = stored(&store, "learner", &lesson).await.expect("stored");
                for state in [mem, disk] {
                    prop_assert_eq!((state.seq, state.position_ms, state.device_id.as_deref()), (seq, pos, dev));
                }
            }
            Ok(())
        })?;
    }
}

/// I1: concurrent writers racing on the same keys converge to the max state, and
/// exactly one of the racers of each distinct winning heartbeat sees `applied`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn i1_concurrent_shuffled_writers_converge() {
    let store = Arc::new(FlakyStore::default());
    let engine = engine_with(store.clone(), config());
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs: Vec<u64> = (1..=300).collect();
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(t);
            rand::seq::SliceRandom::shuffle(&mut seqs[..], &mut rng);
            let mut applied = Vec::new();
            for seq in seqs {
                let lesson = format!("lesson-{}", seq % 7);
                let merged = apply(
                    &engine,
                    &format!("learner-{}", seq % 3),
                    &lesson,
                    seq,
                    seq * 10,
                )
                .await;
                if merged.applied {
                    applied.push(seq);
                }
            }
            applied
        }));
    }
    let mut applied_by = HashMap::<u64, usize>::new();
    for t in tasks {
        for seq in t.await.expect("writer task") {
            *applied_by.entry(seq).or_default() += 1;
        }
    }
    assert!(
        applied_by.values().all(|&n| n == 1),
        "a heartbeat was applied by two racers: {applied_by:?}"
    );
    flush_until_clean(&engine).await;
    for seq in 294..=300u64 {
        let (learner, lesson) = (
            format!("learner-{}", seq % 3),
            format!("lesson-{}", seq % 7),
        );
        let state = stored(&store, &learner, &lesson).await.expect("stored");
        let best = (1..=300)
            .filter(|s| s % 3 == seq % 3 && s % 7 == seq % 7)
            .max()
            .expect("some");
        assert_eq!((state.seq, state.position_ms), (best, best * 10));
        assert_eq!(
            applied_by.get(&best),
            Some(&1),
            "the winner was applied once"
        );
    }
}

/// I4: a store that fails many times in a row loses nothing: rows stay dirty, are
/// retried with backoff, and all land once it recovers.
#[tokio::test]
async fn i4_failing_store_loses_nothing() {
    let store = Arc::new(FlakyStore {
        fail_writes: AtomicUsize::new(5),
        ..Default::default()
    });
    let engine = engine_with(store.clone(), config());
    for i in 0..500 {
        apply(&engine, &format!("l{}", i % 50), &format!("s{i}"), 10, i).await;
    }
    for _ in 0..5 {
        assert!(engine.flush_once().await.is_err());
        assert_eq!(engine.dirty_keys(), 500);
        assert!(!engine.store_healthy());
        // Writes keep landing while the store is down; the retry carries the newest.
        apply(&engine, "l0", "s0", 11, 999).await;
    }
    flush_until_clean(&engine).await;
    assert!(engine.store_healthy());
    for i in 0..500u64 {
        let state = stored(&store, &format!("l{}", i % 50), &format!("s{i}"))
            .await
            .expect("landed");
        let expect = if i == 0 { (11, 999) } else { (10, i) };
        assert_eq!((state.seq, state.position_ms), expect);
    }
}

/// I4: a store that hangs is cut off by the store timeout and the batch retried.
#[tokio::test(start_paused = true)]
async fn i4_stalled_store_times_out_and_is_retried() {
    let store = Arc::new(FlakyStore {
        stall_writes: AtomicUsize::new(2),
        ..Default::default()
    });
    let engine = engine_with(store.clone(), config());
    apply(&engine, "l", "s", 7, 70).await;
    let err = engine.flush_once().await.expect_err("first flush stalls");
    assert!(matches!(err, StoreError::Timeout(_)));
    flush_until_clean(&engine).await;
    assert_eq!(stored(&store, "l", "s").await.map(|p| p.seq), Some(7));
}

/// I4: memory stays bounded while the store is down: past the dirty-key cap new keys
/// are refused (503 upstream), keys already in memory still take writes, and once the
/// store catches up new keys are accepted again.
#[tokio::test]
async fn i4_memory_cap_sheds_new_keys_instead_of_dropping() {
    let store = Arc::new(FlakyStore {
        fail_writes: AtomicUsize::new(usize::MAX),
        ..Default::default()
    });
    let engine = engine_with(
        store.clone(),
        EngineConfig {
            max_dirty_keys: 10,
            ..config()
        },
    );
    for i in 0..10 {
        apply(&engine, "l", &format!("s{i}"), 1, 0).await;
    }
    let shed = engine.apply("l", "new", &hb(1, 0, None)).await;
    assert!(matches!(shed, Err(EngineError::Overloaded)));
    assert!(
        apply(&engine, "l", "s3", 2, 5).await.applied,
        "resident keys still take writes"
    );
    assert!(engine.flush_once().await.is_err());
    assert_eq!(engine.resident_keys(), 10);

    store.fail_writes.store(0, Ordering::SeqCst);
    flush_until_clean(&engine).await;
    assert!(apply(&engine, "l", "new", 1, 0).await.applied);
}

/// I3: `ack=durable` waits while the store fails and answers once the commit lands.
#[tokio::test]
async fn i3_durable_ack_waits_for_the_commit() {
    let store = Arc::new(FlakyStore {
        fail_writes: AtomicUsize::new(3),
        ..Default::default()
    });
    let engine = engine_with(store.clone(), config());
    let flusher = Flusher::spawn(&engine);
    apply(&engine, "l", "s", 3, 30).await;
    let ticket = engine.durable_ticket();
    engine
        .wait_durable(ticket, &[("l", "s")])
        .await
        .expect("durable after retries");
    assert_eq!(stored(&store, "l", "s").await.map(|p| p.seq), Some(3));
    assert_eq!(
        store.fail_writes.load(Ordering::SeqCst),
        0,
        "the failures happened first"
    );
    flusher.drain().await;
}

/// I3: when the store cannot commit in time, `ack=durable` says so (503 upstream) and
/// the heartbeat stays queued: it lands once the store is back.
#[tokio::test(start_paused = true)]
async fn i3_durable_ack_times_out_but_the_heartbeat_stays_queued() {
    let store = Arc::new(FlakyStore {
        fail_writes: AtomicUsize::new(usize::MAX),
        ..Default::default()
    });
    let engine = engine_with(
        store.clone(),
        EngineConfig {
            durable_timeout: Duration::from_secs(2),
            ..config()
        },
    );
    let flusher = Flusher::spawn(&engine);
    apply(&engine, "l", "s", 3, 30).await;
    let ticket = engine.durable_ticket();
    let answer = engine.wait_durable(ticket, &[("l", "s")]).await;
    assert!(matches!(answer, Err(EngineError::NotDurableYet)));
    assert_eq!(engine.dirty_keys(), 1);

    store.fail_writes.store(0, Ordering::SeqCst);
    flusher.drain().await;
    assert_eq!(stored(&store, "l", "s").await.map(|p| p.seq), Some(3));
}

/// I2: the drain after shutdown flushes every accepted heartbeat.
#[tokio::test]
async fn i2_drain_flushes_everything() {
    let store = Arc::new(FlakyStore {
        fail_writes: AtomicUsize::new(2),
        ..Default::default()
    });
    let engine = engine_with(
        store.clone(),
        EngineConfig {
            flush_interval: Duration::from_secs(3600),
            ..config()
        },
    );
    let flusher = Flusher::spawn(&engine);
    for i in 0..200 {
        apply(&engine, &format!("l{i}"), "s", 1, i).await;
    }
    flusher.drain().await;
    assert_eq!(engine.dirty_keys(), 0);
    for i in 0..200u64 {
        assert_eq!(
            stored(&store, &format!("l{i}"), "s")
                .await
                .map(|p| p.position_ms),
            Some(i)
        );
    }
}

/// I6 and I1: after eviction a read comes from the store and is not older than what
/// was acknowledged; a late stale write neither wins nor is reported applied.
#[tokio::test]
async fn i6_evicted_key_never_goes_back_and_stale_write_loses() {
    let store = Arc::new(FlakyStore::default());
    let engine = engine_with(
        store.clone(),
        EngineConfig {
            max_resident_keys: 0,
            ..config()
        },
    );
    assert!(apply(&engine, "l", "s", 10, 100).await.applied);
    flush_until_clean(&engine).await;
    engine.sweep(0);
    assert_eq!(engine.resident_keys(), 0, "clean key evicted");

    let read = engine.get("l", "s").await.expect("get").expect("known");
    assert_eq!((read.seq, read.position_ms), (10, 100));
    let late = apply(&engine, "l", "s", 5, 50).await;
    assert_eq!((late.applied, late.seq, late.position_ms), (false, 10, 100));
    assert_eq!(engine.dirty_keys(), 0);
}

/// I6: dirty entries are never evicted, whatever the cap.
#[tokio::test]
async fn i6_dirty_entries_survive_eviction() {
    let store = Arc::new(FlakyStore::default());
    let engine = engine_with(
        store.clone(),
        EngineConfig {
            max_resident_keys: 0,
            ..config()
        },
    );
    apply(&engine, "l", "s", 10, 100).await;
    engine.sweep(0);
    assert_eq!(engine.resident_keys(), 1);
    let read = engine.get("l", "s").await.expect("get").expect("known");
    assert_eq!(read.seq, 10);
}

/// I6: concurrent misses on one key share a single store read (single flight), and
/// all of them see a truthful `applied`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_concurrent_misses_share_one_load() {
    let store = Arc::new(FlakyStore {
        read_delay_ms: AtomicUsize::new(50),
        ..Default::default()
    });
    let engine = engine_with(store.clone(), config());
    let tasks: Vec<_> = (0..32u64)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move { apply(&engine, "l", "s", 1 + i % 4, 0).await })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        applied += usize::from(t.await.expect("task").applied);
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    assert!(
        (1..=4).contains(&applied),
        "each distinct seq applies at most once, got {applied}"
    );
    assert_eq!(
        engine.get("l", "s").await.expect("get").map(|p| p.seq),
        Some(4)
    );
}

/// A failed read-through answers an error rather than a guess, and a later request
/// loads again.
#[tokio::test]
async fn i6_failed_load_is_an_error_not_a_guess() {
    let store = Arc::new(FlakyStore {
        fail_reads: AtomicUsize::new(1),
        ..Default::default()
    });
    store
        .inner
        .write_batch(vec![row("l", "s", 9)].into())
        .await
        .expect("seed");
    let engine = engine_with(store.clone(), config());
    let first = engine.apply("l", "s", &hb(5, 0, None)).await;
    assert!(matches!(first, Err(EngineError::StoreRead(_))));
    let second = apply(&engine, "l", "s", 5, 0).await;
    assert_eq!((second.applied, second.seq), (false, 9));
}

fn row(learner: &str, lesson: &str, seq: u64) -> ProgressRow {
    ProgressRow {
        learner_id: learner.into(),
        lesson_id: lesson.into(),
        progress: Progress {
            position_ms: 0,
            seq,
            device_id: None,
            updated_at_ms: 0,
        },
    }
}

/// I4: a poison row is set aside and counted without blocking the rest of the flush;
/// a durable waiter on it is told, not left hanging.
#[tokio::test]
async fn i4_poison_row_is_set_aside_without_blocking_others() {
    let store = Arc::new(FlakyStore {
        poison_lesson: Some("bad"),
        ..Default::default()
    });
    let engine = engine_with(store.clone(), config());
    apply(&engine, "l", "bad", 1, 0).await;
    apply(&engine, "l", "good", 1, 0).await;
    let ticket = engine.durable_ticket();
    engine.flush_once().await.expect("flush");
    assert_eq!(engine.dirty_keys(), 0);
    assert_eq!(engine.metrics.poison_rows.get(), 1);
    assert!(stored(&store, "l", "good").await.is_some());
    assert!(engine.wait_durable(ticket, &[("l", "good")]).await.is_ok());
    let answer = engine.wait_durable(ticket, &[("l", "bad")]).await;
    assert!(matches!(answer, Err(EngineError::Refused(_))));
}

/// A learner listing merges memory (newest) with the store.
#[tokio::test]
async fn list_merges_memory_and_store() {
    let store = Arc::new(FlakyStore::default());
    store
        .inner
        .write_batch(vec![row("l", "old", 3), row("l", "both", 3)].into())
        .await
        .expect("seed");
    let engine = engine_with(store.clone(), config());
    apply(&engine, "l", "both", 8, 0).await;
    apply(&engine, "l", "new", 1, 0).await;
    let lessons = engine.list("l").await.expect("list");
    let got: Vec<(&str, u64)> = lessons
        .iter()
        .map(|l| (&*l.lesson_id, l.progress.seq))
        .collect();
    assert_eq!(got, vec![("both", 8), ("new", 1), ("old", 3)]);
}

/// I1: a key overwritten while its flush is being written stays dirty. The flush marks
/// clean only the generation it wrote, and the next flush carries the newer state.
#[tokio::test]
async fn i1_a_write_during_its_flush_stays_dirty_and_goes_out_next() {
    let gate = Arc::new(Semaphore::new(0));
    let store = Arc::new(FlakyStore {
        write_gate: Some(gate.clone()),
        ..Default::default()
    });
    let engine = engine_with(store.clone(), config());
    apply(&engine, "l", "s", 1, 10).await;
    let flush = tokio::spawn({
        let engine = engine.clone();
        async move { engine.flush_once().await }
    });
    while store.writes_started.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    assert!(apply(&engine, "l", "s", 2, 20).await.applied);
    gate.add_permits(1);
    flush.await.expect("flush task").expect("flush");
    assert_eq!(stored(&store, "l", "s").await.map(|p| p.seq), Some(1));
    assert_eq!(engine.dirty_keys(), 1, "seq 2 is not durable yet");

    gate.add_permits(1);
    engine.flush_once().await.expect("second flush");
    assert_eq!(stored(&store, "l", "s").await.map(|p| p.seq), Some(2));
    assert_eq!(engine.dirty_keys(), 0);
}

/// The flusher does not wait out a long interval once enough keys are dirty.
#[tokio::test]
async fn a_dirty_threshold_starts_a_flush_before_the_interval() {
    let store = Arc::new(FlakyStore::default());
    let engine = engine_with(
        store.clone(),
        EngineConfig {
            flush_interval: Duration::from_secs(3600),
            flush_dirty_threshold: 10,
            ..config()
        },
    );
    let flusher = Flusher::spawn(&engine);
    for k in 0..10 {
        apply(&engine, "l", &format!("s{k}"), 1, 0).await;
    }
    // A liveness deadline, not a timing claim: without the threshold this waits an hour.
    let mut flushed = false;
    for _ in 0..500 {
        if stored(&store, "l", "s9").await.is_some() {
            flushed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(flushed, "the threshold did not start a flush");
    flusher.drain().await;
}

/// The single-flight cell of `learner/lesson`, if a load of it is registered.
fn load_cell(engine: &Engine, learner: &str, lesson: &str) -> Option<Arc<loader::LoadCell>> {
    let key = format!("{learner}/{lesson}");
    engine.shard(learner).lock().loading.get(&key).cloned()
}

/// I4 and I6: concurrent misses on a key whose store read fails share that one
/// failure. One read, every waiter answered with the error (a 503, never a guess) at
/// once rather than each after its own timeout; the next request loads afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_a_failed_load_is_shared_by_every_waiter() {
    let gate = Arc::new(Semaphore::new(0));
    let store = Arc::new(FlakyStore {
        fail_reads: AtomicUsize::new(1),
        read_gate: Some(gate.clone()),
        ..Default::default()
    });
    let engine = engine_with(store.clone(), config());
    let waiters: Vec<_> = (0..16u64)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.apply("l", "s", &hb(1 + i, 0, None)).await })
        })
        .collect();
    // Every waiter holds the cell (the map holds one more) before the read may end.
    while load_cell(&engine, "l", "s").map_or(0, |c| Arc::strong_count(&c)) < 16 + 2 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1);
    for w in waiters {
        let answer = w.await.expect("waiter");
        assert!(
            matches!(answer, Err(EngineError::StoreRead(_))),
            "{answer:?}"
        );
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    assert!(
        load_cell(&engine, "l", "s").is_none(),
        "the failed cell is gone"
    );

    gate.add_permits(1);
    assert!(apply(&engine, "l", "s", 1, 0).await.applied);
    assert_eq!(store.reads.load(Ordering::SeqCst), 2);
}

/// A load whose every request went away (a client hung up mid-read) does not stay
/// registered forever: the eviction sweep forgets it.
#[tokio::test]
async fn abandoned_loads_are_forgotten_by_the_sweep() {
    let store = Arc::new(FlakyStore {
        read_gate: Some(Arc::new(Semaphore::new(0))),
        ..Default::default()
    });
    let engine = engine_with(
        store.clone(),
        EngineConfig {
            shards: 1,
            ..config()
        },
    );
    let request = tokio::spawn({
        let engine = engine.clone();
        async move { engine.apply("l", "s", &hb(1, 0, None)).await }
    });
    while store.reads.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    request.abort();
    assert!(request.await.is_err_and(|e| e.is_cancelled()));
    assert!(load_cell(&engine, "l", "s").is_some());
    engine.sweep(0);
    assert!(load_cell(&engine, "l", "s").is_none());
}

/// Eviction takes idle clean entries, then the least recently used clean ones down to
/// the shard's share; dirty and queued entries stay whatever their age (I6).
#[test]
fn eviction_takes_idle_then_least_recently_used_clean_entries() {
    let mut shard = shard::Shard::default();
    for (lesson, touched) in [("a", 10), ("b", 20), ("c", 30), ("d", 30), ("e", 40)] {
        shard.insert_loaded("l", lesson, None, touched);
    }
    shard.insert_loaded("l", "dirty", None, 1);
    let incoming = Incoming {
        position_ms: 0,
        seq: 1,
        device_id: None,
        now_ms: 1,
    };
    assert!(shard
        .merge("l", "dirty", &incoming)
        .is_some_and(|m| m.applied));
    let left = |shard: &shard::Shard| -> Vec<String> {
        let mut v: Vec<String> = shard.learners["l"].keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    };
    // Idle before 15: only "a" ("dirty" is older but not in the store yet).
    assert_eq!(shard.evict(15, 100), 1);
    assert_eq!(left(&shard), ["b", "c", "d", "dirty", "e"]);
    // Keep 3 of the 5: the two least recently used clean ones go, one of the tie at 30.
    assert_eq!(shard.evict(0, 3), 2);
    let kept = left(&shard);
    assert!(kept.contains(&"dirty".to_string()) && kept.contains(&"e".to_string()));
    assert!(!kept.contains(&"b".to_string()), "{kept:?}");
    assert_eq!(kept.len(), 3);
    assert_eq!(shard.resident, 3);
}
