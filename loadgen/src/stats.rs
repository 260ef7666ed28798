//! What a run measured: HDR latency histograms per operation (corrected and
//! uncorrected), request and heartbeat counters, and the client's own CPU use.
//!
//! Each connection task records into its own [`Recorder`] behind an uncontended mutex;
//! the reporter takes the interval's figures once a second and folds them into the run
//! total, so the hot path never waits on another task. A 503 is counted as
//! back-pressure, apart from errors: it is the server protecting itself as the API
//! promises, not a failure. Every request that reached the server is in the latency
//! histograms, timeouts included (at the moment they were given up).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::schedule::Latency;

/// The request kinds measured separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `POST /v1/heartbeats` with one heartbeat.
    Post,
    /// `POST /v1/heartbeats` with an array.
    Batch,
    /// `GET /v1/progress/…` (device switches).
    Get,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Post, Op::Batch, Op::Get];

    pub fn name(self) -> &'static str {
        match self {
            Op::Post => "post",
            Op::Batch => "post_batch",
            Op::Get => "get",
        }
    }

    fn index(self) -> usize {
        match self {
            Op::Post => 0,
            Op::Batch => 1,
            Op::Get => 2,
        }
    }
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// 503: the server shed load or could not commit in time.
    Backpressure,
    /// Any other non-2xx status.
    Status(u16),
    /// Connection refused, reset, or a body that could not be read.
    Transport,
    Timeout,
}

/// Counters of one interval or of a whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub requests: u64,
    pub ok: u64,
    pub backpressure: u64,
    pub status_errors: u64,
    pub transport_errors: u64,
    pub timeouts: u64,
    /// Heartbeats carried by requests (a duplicate counts again).
    pub heartbeats_sent: u64,
    /// Heartbeats in requests answered 200.
    pub heartbeats_acked: u64,
    /// Of those, how many the server said it applied, and how many were stale.
    pub applied: u64,
    pub stale: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Counters {
    pub fn errors(&self) -> u64 {
        self.status_errors + self.transport_errors + self.timeouts
    }

    pub fn add(&mut self, o: &Counters) {
        self.requests += o.requests;
        self.ok += o.ok;
        self.backpressure += o.backpressure;
        self.status_errors += o.status_errors;
        self.transport_errors += o.transport_errors;
        self.timeouts += o.timeouts;
        self.heartbeats_sent += o.heartbeats_sent;
        self.heartbeats_acked += o.heartbeats_acked;
        self.applied += o.applied;
        self.stale += o.stale;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
    }

    pub fn count(&mut self, outcome: Outcome) {
        self.requests += 1;
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Backpressure => self.backpressure += 1,
            Outcome::Status(_) => self.status_errors += 1,
            Outcome::Transport => self.transport_errors += 1,
            Outcome::Timeout => self.timeouts += 1,
        }
    }
}

/// Latencies in microseconds, 3 significant digits, growing as needed.
fn histogram() -> Histogram<u64> {
    // `new` fails only for more than 5 significant figures: 3 is a constant invariant.
    let mut h = Histogram::new(3).expect("3 significant figures are within hdrhistogram's range");
    h.auto(true);
    h
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Corrected and uncorrected latency of one operation.
#[derive(Clone, Debug)]
pub struct OpLatency {
    pub corrected: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
}

impl Default for OpLatency {
    fn default() -> OpLatency {
        OpLatency {
            corrected: histogram(),
            uncorrected: histogram(),
        }
    }
}

impl OpLatency {
    fn record(&mut self, l: Latency) {
        // The histograms resize themselves (`auto`), so recording can only fail if a
        // value's bucket index overflowed usize, which microseconds cannot reach.
        // (`saturating_record` would clamp to the current size instead of growing.)
        let _ = self.corrected.record(micros(l.corrected));
        let _ = self.uncorrected.record(micros(l.uncorrected));
    }

    fn add(&mut self, o: &OpLatency) {
        // Both sides auto-resize, so adding cannot fail for range reasons; a failure
        // would only drop samples from a report, never corrupt a run.
        let _ = self.corrected.add(&o.corrected);
        let _ = self.uncorrected.add(&o.uncorrected);
    }
}

/// Everything one connection task measured since the reporter last looked.
#[derive(Clone, Debug)]
pub struct Recorder {
    pub counters: Counters,
    pub ops: [OpLatency; 3],
    /// How late requests left against their intended time (open loop): timer
    /// granularity plus any time the generator itself fell behind.
    pub send_lag: Histogram<u64>,
    /// Error statuses (not 503) by code, each with the first answer body seen.
    pub statuses: BTreeMap<u16, (u64, String)>,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder {
            counters: Counters::default(),
            ops: Default::default(),
            send_lag: histogram(),
            statuses: BTreeMap::new(),
        }
    }
}

impl Recorder {
    /// An error status and its answer body (kept for the first one of each code).
    pub fn status(&mut self, code: u16, body: &[u8]) {
        let e = self.statuses.entry(code).or_insert_with(|| {
            let text = String::from_utf8_lossy(body);
            (0, text.chars().take(200).collect())
        });
        e.0 += 1;
    }

    /// Counts a request and, unless it never reached the server (a refused or reset
    /// connection), records its latency. Error statuses are answers like any other,
    /// and a timeout is recorded at the moment it was given up: leaving out the slowest
    /// requests would hide exactly the stalls the corrected figure exists to show.
    pub fn record(&mut self, op: Op, outcome: Outcome, latency: Latency) {
        self.counters.count(outcome);
        if outcome != Outcome::Transport {
            self.ops[op.index()].record(latency);
            let lag = latency.corrected.saturating_sub(latency.uncorrected);
            let _ = self.send_lag.record(micros(lag));
        }
    }

    pub fn op(&self, op: Op) -> &OpLatency {
        &self.ops[op.index()]
    }

    pub fn add(&mut self, o: &Recorder) {
        self.counters.add(&o.counters);
        for (a, b) in self.ops.iter_mut().zip(o.ops.iter()) {
            a.add(b);
        }
        let _ = self.send_lag.add(&o.send_lag);
        for (code, (n, body)) in &o.statuses {
            let e = self
                .statuses
                .entry(*code)
                .or_insert_with(|| (0, body.clone()));
            e.0 += n;
        }
    }

    /// Adds the figures so far to `into` and starts over, keeping the histograms'
    /// memory (the reporter does this for every task every second).
    pub fn drain_into(&mut self, into: &mut Recorder) {
        into.add(self);
        self.counters = Counters::default();
        for op in &mut self.ops {
            op.corrected.reset();
            op.uncorrected.reset();
        }
        self.send_lag.reset();
        self.statuses.clear();
    }

    /// Corrected latencies of every operation together (for the live line).
    pub fn all_corrected(&self) -> Histogram<u64> {
        let mut h = histogram();
        for op in &self.ops {
            let _ = h.add(&op.corrected);
        }
        h
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The clock ticks per second of `/proc/<pid>/stat` times. Linux fixes this user-visible
/// unit (USER_HZ) at 100 on every architecture it exposes it on.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`; `None`
/// where that file does not exist or cannot be parsed.
pub fn cpu_seconds() -> Option<f64> {
    cpu_seconds_of(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// User + system CPU seconds from the text of a `/proc/<pid>/stat` file.
fn cpu_seconds_of(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces; the fields after it are plain.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, so utime (14) and stime (15) are the 12th and
    // 13th fields of the remainder.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(c: u64, u: u64) -> Latency {
        Latency {
            corrected: Duration::from_micros(c),
            uncorrected: Duration::from_micros(u),
        }
    }

    #[test]
    fn backpressure_is_not_an_error_and_only_unsent_requests_have_no_latency() {
        let mut r = Recorder::default();
        r.record(Op::Post, Outcome::Ok, l(100, 100));
        r.record(Op::Post, Outcome::Backpressure, l(200, 150));
        r.record(Op::Post, Outcome::Transport, l(5, 5));
        r.record(Op::Get, Outcome::Timeout, l(10_000_000, 10_000_000));
        r.record(Op::Get, Outcome::Status(500), l(300, 300));
        assert_eq!(r.counters.requests, 5);
        assert_eq!(r.counters.backpressure, 1);
        assert_eq!(r.counters.errors(), 3);
        assert_eq!(r.op(Op::Post).corrected.len(), 2);
        let s = Summary::of(&r.op(Op::Post).uncorrected);
        assert_eq!(s.count, 2);
        assert!(s.max >= 150 && s.max < 152);
        // The timeout is the slowest request of the run, not a missing one.
        let gets = Summary::of(&r.op(Op::Get).corrected);
        assert_eq!(gets.count, 2);
        assert!(gets.max >= 9_990_000, "{gets:?}");
    }

    #[test]
    fn long_latencies_are_kept_not_clamped() {
        let mut task = Recorder::default();
        task.record(Op::Post, Outcome::Ok, l(5_000_000, 300));
        task.record(Op::Post, Outcome::Ok, l(300, 300));
        let mut total = Recorder::default();
        task.drain_into(&mut total);
        let s = Summary::of(&total.op(Op::Post).corrected);
        assert!(s.max >= 4_990_000 && s.max <= 5_010_000, "{s:?}");
        assert!(s.p50 >= 299 && s.p50 <= 301, "{s:?}");
    }

    #[test]
    fn draining_moves_the_interval_into_the_total() {
        let mut task = Recorder::default();
        let mut total = Recorder::default();
        task.record(Op::Batch, Outcome::Ok, l(1000, 10));
        task.drain_into(&mut total);
        task.record(Op::Batch, Outcome::Ok, l(3000, 30));
        task.drain_into(&mut total);
        assert_eq!(task.counters, Counters::default());
        assert!(task.op(Op::Batch).corrected.is_empty());
        assert_eq!(total.counters.ok, 2);
        assert_eq!(Summary::of(&total.op(Op::Batch).corrected).count, 2);
        assert_eq!(Summary::of(&total.all_corrected()).count, 2);
    }

    #[test]
    fn cpu_time_is_utime_plus_stime_in_user_hz() {
        // A real line's shape: the name holds a space and a parenthesis; utime (field
        // 14) is 250 ticks, stime (15) 50 ticks, the fields around them differ.
        let line = "4242 (load gen) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 7 9 20 0 3 0";
        assert_eq!(cpu_seconds_of(line), Some(3.0));
        assert_eq!(cpu_seconds_of("4242 (truncated"), None);
    }

    #[test]
    fn cpu_time_of_this_process_is_readable() {
        let before = cpu_seconds().expect("/proc/self/stat readable on Linux");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds().expect("readable") >= before);
    }
}
