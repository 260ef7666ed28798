//! `--verify`: invariant I1 (convergence) and I6 (reads never go back), checked end to
//! end under load.
//!
//! While the run goes, every connection task keeps a [`Ledger`]: per key, the highest
//! `seq` it sent and the highest `seq` the server acknowledged with a 200, each with
//! its position. A learner lives in exactly one slot, so each `seq` names exactly one
//! payload and the ledger needs only those two entries per key. After the run (and a
//! flush) every learner is read back with `GET /v1/progress/{learner}` and each key
//! is judged:
//!
//! - **lost**: acknowledged, but the server knows nothing of the key;
//! - **stale**: the server holds a `seq` older than one it acknowledged;
//! - **phantom**: the server holds something loadgen never sent (a higher `seq`, a
//!   different position for a `seq` it sent, or a lesson it never touched);
//! - **unconfirmed** (not a failure): the newest heartbeat got no 200 (timeout, 503)
//!   and did not land, which the API allows;
//! - **unreadable**: the read-back itself failed, so nothing could be proved.
//!
//! Device switches read a key mid-run; a read older than an acknowledged write is a
//! **stale read** (I6).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{Conn, Endpoint};
use crate::workload::{Heartbeat, Ids, Key};

/// What loadgen knows about one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyRecord {
    pub sent_seq: u64,
    pub sent_pos: u64,
    /// 0 when nothing was acknowledged.
    pub acked_seq: u64,
    pub acked_pos: u64,
}

/// Per-key record of what was sent and acknowledged, plus mid-run read findings.
#[derive(Debug, Default)]
pub struct Ledger {
    keys: HashMap<Key, KeyRecord, BuildKeyHasher>,
    stale_reads: u64,
    examples: Vec<String>,
}

const MAX_EXAMPLES: usize = 10;

/// A multiply-rotate hasher for [`Key`]s. The ledger is updated on every request and
/// its keys are loadgen's own integers (no untrusted input, so no need for SipHash's
/// flood resistance).
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildKeyHasher;

#[derive(Default)]
pub struct KeyHasher(u64);

impl std::hash::BuildHasher for BuildKeyHasher {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher::default()
    }
}

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
}

impl Ledger {
    /// `hb` was sent; `acked` when the server answered 200 for it.
    pub fn sent(&mut self, hb: &Heartbeat, acked: bool) {
        let r = self.keys.entry(hb.key).or_default();
        if hb.seq > r.sent_seq {
            r.sent_seq = hb.seq;
            r.sent_pos = hb.position_ms;
        }
        if acked && hb.seq > r.acked_seq {
            r.acked_seq = hb.seq;
            r.acked_pos = hb.position_ms;
        }
    }

    /// A mid-run read of `key` returned `server_seq` (`None`: 404).
    pub fn read(&mut self, key: Key, server_seq: Option<u64>, ids: &Ids) {
        let acked = self.keys.get(&key).map_or(0, |r| r.acked_seq);
        if acked > server_seq.unwrap_or(0) {
            self.stale_reads += 1;
            self.example(format!(
                "stale read: {}/{} returned seq {:?} after seq {acked} was acknowledged",
                ids.learner(key.learner),
                Ids::lesson(key.lesson),
                server_seq
            ));
        }
    }

    fn example(&mut self, s: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(s);
        }
    }

    /// Folds another task's ledger in (tasks own disjoint learners).
    pub fn merge(&mut self, other: Ledger) {
        for (k, r) in other.keys {
            let mine = self.keys.entry(k).or_default();
            if r.sent_seq > mine.sent_seq {
                mine.sent_seq = r.sent_seq;
                mine.sent_pos = r.sent_pos;
            }
            if r.acked_seq > mine.acked_seq {
                mine.acked_seq = r.acked_seq;
                mine.acked_pos = r.acked_pos;
            }
        }
        self.stale_reads += other.stale_reads;
        for e in other.examples {
            self.example(e);
        }
    }

    /// Keys grouped by learner, for the read-back.
    fn by_learner(&self) -> Vec<(u64, Vec<(u32, KeyRecord)>)> {
        let mut m: BTreeMap<u64, Vec<(u32, KeyRecord)>> = BTreeMap::new();
        for (k, r) in &self.keys {
            m.entry(k.learner).or_default().push((k.lesson, *r));
        }
        m.into_iter().collect()
    }
}

/// The verdict of a verification.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub learners: u64,
    pub keys: u64,
    pub ok: u64,
    pub lost: u64,
    pub stale: u64,
    pub phantom: u64,
    pub unconfirmed: u64,
    pub unreadable: u64,
    pub stale_reads: u64,
    /// Whether the server reported zero dirty keys before the read-back (`None`: it
    /// does not publish them, so loadgen waited a fixed time instead).
    pub flushed: Option<bool>,
    /// Up to ten findings, spelled out.
    pub examples: Vec<String>,
}

impl VerifyReport {
    /// No lost, stale or phantom key, no stale read, every key was read, and at least
    /// one key was confirmed: a run whose every write failed (all 503s or timeouts)
    /// proved nothing, and does not pass.
    pub fn passed(&self) -> bool {
        self.ok > 0
            && self.lost + self.stale + self.phantom + self.unreadable + self.stale_reads == 0
    }

    fn example(&mut self, s: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(s);
        }
    }

    fn add(&mut self, o: VerifyReport) {
        self.learners += o.learners;
        self.keys += o.keys;
        self.ok += o.ok;
        self.lost += o.lost;
        self.stale += o.stale;
        self.phantom += o.phantom;
        self.unconfirmed += o.unconfirmed;
        self.unreadable += o.unreadable;
        self.stale_reads += o.stale_reads;
        for e in o.examples {
            self.example(e);
        }
    }
}

/// One lesson as the server lists it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ServerLesson {
    pub lesson_id: String,
    pub seq: u64,
    pub position_ms: u64,
}

#[derive(Deserialize)]
struct LearnerListing {
    lessons: Vec<ServerLesson>,
}

/// Judges one learner's keys against the server's listing of that learner.
pub fn judge_learner(
    learner_id: &str,
    expected: &[(u32, KeyRecord)],
    server: &[ServerLesson],
) -> VerifyReport {
    let mut v = VerifyReport {
        learners: 1,
        ..VerifyReport::default()
    };
    let mut held: HashMap<Option<u32>, &ServerLesson> = HashMap::with_capacity(server.len());
    for l in server {
        let lesson = Ids::parse_lesson(&l.lesson_id);
        // Ids this run never renders are phantoms anyway (counted below, once each).
        if held.insert(lesson, l).is_some() && lesson.is_some() {
            v.phantom += 1;
            v.example(format!(
                "phantom: {learner_id}/{} is listed more than once",
                l.lesson_id
            ));
        }
    }
    for &(lesson, r) in expected {
        v.keys += 1;
        let name = format!("{learner_id}/{}", Ids::lesson(lesson));
        match held.get(&Some(lesson)) {
            None if r.acked_seq > 0 => {
                v.lost += 1;
                v.example(format!(
                    "lost: {name} acknowledged seq {} but the server has nothing",
                    r.acked_seq
                ));
            }
            None => v.unconfirmed += 1,
            Some(s) if s.seq < r.acked_seq => {
                v.stale += 1;
                v.example(format!(
                    "stale: {name} holds seq {} but seq {} was acknowledged",
                    s.seq, r.acked_seq
                ));
            }
            Some(s)
                if s.seq > r.sent_seq
                    || (s.seq == r.sent_seq && s.position_ms != r.sent_pos)
                    || (s.seq == r.acked_seq && s.position_ms != r.acked_pos) =>
            {
                v.phantom += 1;
                v.example(format!(
                    "phantom: {name} holds seq {} position {} never sent (newest sent: seq {} position {})",
                    s.seq, s.position_ms, r.sent_seq, r.sent_pos
                ));
            }
            Some(s) if s.seq < r.sent_seq => v.unconfirmed += 1,
            Some(_) => v.ok += 1,
        }
    }
    for l in server {
        let known = Ids::parse_lesson(&l.lesson_id)
            .is_some_and(|n| expected.iter().any(|&(lesson, _)| lesson == n));
        if !known {
            v.phantom += 1;
            v.example(format!(
                "phantom: {learner_id}/{} was never sent by this run",
                l.lesson_id
            ));
        }
    }
    v
}

/// How the read-back runs.
#[derive(Clone, Debug)]
pub struct ReadBack {
    pub endpoint: Endpoint,
    pub connections: usize,
}

const READ_ATTEMPTS: u32 = 20;

async fn read_learner(
    conn: &mut Option<Conn>,
    ep: &Endpoint,
    path: &str,
) -> Result<Vec<ServerLesson>, String> {
    let mut last = String::new();
    for attempt in 0..READ_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let c = match conn {
            Some(c) => c,
            None => match Conn::connect(ep).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            },
        };
        let answer = c.get(path).await;
        if !c.reusable() {
            *conn = None;
        }
        match answer {
            Ok(a) if a.status.is_success() => {
                return serde_json::from_slice::<LearnerListing>(&a.body)
                    .map(|l| l.lessons)
                    .map_err(|e| format!("unreadable listing: {e}"));
            }
            Ok(a) if a.status.as_u16() == 503 => last = "503".into(),
            Ok(a) => return Err(format!("status {}", a.status)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Reads every learner of `ledger` back and judges it.
pub async fn read_back(rb: ReadBack, ids: &Ids, ledger: &Ledger) -> VerifyReport {
    let learners = Arc::new(ledger.by_learner());
    let next = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(Mutex::new(VerifyReport::default()));
    let mut tasks = Vec::new();
    for _ in 0..rb.connections.clamp(1, 256) {
        let (learners, next, total, ids, ep) = (
            learners.clone(),
            next.clone(),
            total.clone(),
            ids.clone(),
            rb.endpoint.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            let mut mine = VerifyReport::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((learner, expected)) = learners.get(i) else {
                    break;
                };
                let learner_id = ids.learner(*learner);
                let path = format!("/v1/progress/{learner_id}");
                match read_learner(&mut conn, &ep, &path).await {
                    Ok(server) => mine.add(judge_learner(&learner_id, expected, &server)),
                    Err(e) => {
                        mine.learners += 1;
                        mine.keys += expected.len() as u64;
                        mine.unreadable += expected.len() as u64;
                        mine.example(format!("unreadable: {learner_id}: {e}"));
                    }
                }
            }
            if let Ok(mut t) = total.lock() {
                t.add(mine);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut report = total.lock().map(|t| t.clone()).unwrap_or_default();
    report.stale_reads = ledger.stale_reads;
    let mut examples = ledger.examples.clone();
    examples.append(&mut report.examples);
    examples.truncate(MAX_EXAMPLES);
    report.examples = examples;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(lesson: u32, seq: u64, pos: u64) -> Heartbeat {
        Heartbeat {
            key: Key { learner: 1, lesson },
            position_ms: pos,
            seq,
            device: 0,
        }
    }

    fn server(lesson: u32, seq: u64, pos: u64) -> ServerLesson {
        ServerLesson {
            lesson_id: Ids::lesson(lesson),
            seq,
            position_ms: pos,
        }
    }

    fn judge(ledger: &Ledger, srv: &[ServerLesson]) -> VerifyReport {
        let learners = ledger.by_learner();
        judge_learner("t-1", &learners[0].1, srv)
    }

    #[test]
    fn a_converged_key_is_ok_and_an_unacknowledged_tail_is_only_unconfirmed() {
        let mut l = Ledger::default();
        l.sent(&hb(1, 10, 100), true);
        l.sent(&hb(2, 10, 100), true);
        l.sent(&hb(2, 11, 200), false);
        let v = judge(&l, &[server(1, 10, 100), server(2, 10, 100)]);
        assert_eq!((v.ok, v.unconfirmed), (1, 1));
        assert!(v.passed());
    }

    #[test]
    fn a_server_that_drops_an_acknowledged_key_is_caught_as_lost() {
        let mut l = Ledger::default();
        l.sent(&hb(1, 10, 100), true);
        let v = judge(&l, &[]);
        assert_eq!(v.lost, 1);
        assert!(!v.passed());
    }

    #[test]
    fn a_server_that_lets_a_late_heartbeat_win_is_caught_as_stale() {
        let mut l = Ledger::default();
        for (seq, pos) in [(11, 200), (10, 100)] {
            l.sent(&hb(1, seq, pos), true);
        }
        let v = judge(&l, &[server(1, 10, 100)]);
        assert_eq!(v.stale, 1);
        assert!(v.examples[0].contains("holds seq 10 but seq 11"));
    }

    #[test]
    fn state_never_sent_is_phantom() {
        let mut l = Ledger::default();
        l.sent(&hb(1, 10, 100), true);
        assert_eq!(judge(&l, &[server(1, 12, 100)]).phantom, 1);
        assert_eq!(judge(&l, &[server(1, 10, 999)]).phantom, 1);
        let extra = judge(&l, &[server(1, 10, 100), server(7, 1, 1)]);
        assert_eq!((extra.ok, extra.phantom), (1, 1));
        // One lesson listed twice (say, from memory and from the store) is a bug too.
        let twice = judge(&l, &[server(1, 10, 100), server(1, 10, 100)]);
        assert_eq!(twice.phantom, 1);
        assert!(twice.examples[0].contains("more than once"), "{twice:?}");
    }

    #[test]
    fn a_run_where_nothing_was_acknowledged_proves_nothing_and_fails() {
        let mut l = Ledger::default();
        l.sent(&hb(1, 10, 100), false);
        let v = judge(&l, &[]);
        assert_eq!((v.ok, v.unconfirmed, v.lost), (0, 1, 0));
        assert!(!v.passed());
    }

    #[test]
    fn a_read_older_than_an_acknowledged_write_is_a_stale_read() {
        let ids = Ids::new("t");
        let mut l = Ledger::default();
        l.sent(&hb(1, 10, 100), true);
        l.read(hb(1, 0, 0).key, Some(10), &ids);
        assert_eq!(l.stale_reads, 0);
        l.read(hb(1, 0, 0).key, Some(9), &ids);
        l.read(hb(1, 0, 0).key, None, &ids);
        assert_eq!(l.stale_reads, 2);
    }
}
