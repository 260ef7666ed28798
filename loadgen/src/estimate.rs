//! `loadgen estimate`: the seed's back-of-the-envelope as arithmetic a planner can rerun.
//!
//! The model, in the design's terms:
//! - heartbeats/s = concurrent viewers / interval;
//! - a key (learner, lesson) is written at most once per flush, and at most once per
//!   heartbeat, so store writes/s = active keys / max(interval, flush interval) —
//!   store load is bounded by active keys, not by the request rate;
//! - bytes are the request and response as HTTP/1.1 carries them, from the id sizes;
//! - resident memory counts the keys of current viewers (what must stay in memory) and
//!   the day's keys (the ceiling if nothing were ever evicted);
//! - ScyllaDB nodes = replica writes/s / per-node write rate, at least the replication
//!   factor.
//!
//! Every constant below is a stated assumption, printed with the result.

use std::time::Duration;

use serde::Serialize;

use crate::report::Report;
use crate::schedule::Pacing;

/// The planner's numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct EstimateInput {
    pub daily_learners: u64,
    pub viewers: u64,
    pub interval: Duration,
    pub flush_interval: Duration,
    pub lessons_per_learner: u64,
    pub learner_id_bytes: u64,
    pub lesson_id_bytes: u64,
    pub device_id_bytes: u64,
    pub scylla_node_writes: f64,
    pub replication_factor: u64,
    pub batch: u64,
}

/// JSON punctuation and field names of one heartbeat object without ids and numbers.
const HEARTBEAT_JSON_FIXED: u64 =
    r#"{"learner_id":"","lesson_id":"","position_ms":,"seq":}"#.len() as u64;
/// `,"device_id":""` when a device id is sent.
const DEVICE_JSON_FIXED: u64 = r#","device_id":"""#.len() as u64;
/// Digits of a position (an hour of video in ms) and of a millisecond-clock seq.
const NUMBER_DIGITS: u64 = 7 + 13;
/// Request line and headers of a POST as a lean client sends them.
pub const HTTP_REQUEST_OVERHEAD: u64 = 110;
/// A single heartbeat's answer: `{"applied":true,"seq":…,"position_ms":…}` plus the
/// status line and headers.
pub const HTTP_RESPONSE_BYTES: u64 = 60 + 110;
/// Memory per resident key beyond its ids: map entry, state, dirty flag, allocator slack.
pub const RESIDENT_OVERHEAD_BYTES: u64 = 160;
/// Stored bytes per row beyond its ids (three integers, row and index overhead).
pub const ROW_OVERHEAD_BYTES: u64 = 64;

/// The figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub heartbeats_per_s: f64,
    pub requests_per_s: f64,
    pub active_keys: f64,
    pub store_writes_per_s: f64,
    pub coalescing_ratio: f64,
    pub request_bytes: f64,
    pub ingress_bytes_per_s: f64,
    pub egress_bytes_per_s: f64,
    pub resident_bytes_active: f64,
    pub daily_keys: f64,
    pub resident_bytes_daily: f64,
    pub store_bytes_daily_keys: f64,
    pub scylla_replica_writes_per_s: f64,
    pub scylla_nodes: u64,
}

pub fn estimate(i: &EstimateInput) -> Estimate {
    let interval = i.interval.as_secs_f64();
    let flush = i.flush_interval.as_secs_f64();
    let viewers = i.viewers as f64;
    let heartbeats_per_s = viewers / interval;
    let requests_per_s = heartbeats_per_s / i.batch as f64;
    // One lesson plays per viewer: its key is the active one.
    let active_keys = viewers;
    let store_writes_per_s = active_keys / interval.max(flush);
    let device = if i.device_id_bytes > 0 {
        DEVICE_JSON_FIXED + i.device_id_bytes
    } else {
        0
    };
    let object =
        HEARTBEAT_JSON_FIXED + i.learner_id_bytes + i.lesson_id_bytes + NUMBER_DIGITS + device;
    // An array adds brackets and commas: about one byte per object.
    let body = if i.batch > 1 {
        i.batch * (object + 1) + 1
    } else {
        object
    };
    let request_bytes = (body + HTTP_REQUEST_OVERHEAD) as f64;
    let key_bytes = (i.learner_id_bytes + i.lesson_id_bytes + i.device_id_bytes) as f64;
    let daily_keys = i.daily_learners as f64 * i.lessons_per_learner as f64;
    let replica = store_writes_per_s * i.replication_factor as f64;
    let nodes = (replica / i.scylla_node_writes).ceil().max(0.0) as u64;
    Estimate {
        heartbeats_per_s,
        requests_per_s,
        active_keys,
        store_writes_per_s,
        coalescing_ratio: heartbeats_per_s / store_writes_per_s,
        request_bytes,
        ingress_bytes_per_s: requests_per_s * request_bytes,
        egress_bytes_per_s: requests_per_s * HTTP_RESPONSE_BYTES as f64,
        resident_bytes_active: active_keys * (key_bytes + RESIDENT_OVERHEAD_BYTES as f64),
        daily_keys,
        resident_bytes_daily: daily_keys * (key_bytes + RESIDENT_OVERHEAD_BYTES as f64),
        store_bytes_daily_keys: daily_keys * (key_bytes + ROW_OVERHEAD_BYTES as f64),
        scylla_replica_writes_per_s: replica,
        scylla_nodes: nodes.max(i.replication_factor),
    }
}

fn si(v: f64) -> String {
    match v.abs() {
        x if x >= 1e9 => format!("{:.2} G", v / 1e9),
        x if x >= 1e6 => format!("{:.2} M", v / 1e6),
        x if x >= 1e4 => format!("{:.1} k", v / 1e3),
        _ => format!("{v:.1} "),
    }
}

/// The estimate as text, with the inputs and assumptions that produced it.
pub fn text(i: &EstimateInput, e: &Estimate) -> String {
    let mut lines = vec![
        format!(
            "inputs: {} daily learners, {} concurrent viewers, one heartbeat every {:?}, flush every {:?}, {} lessons per learner, ids {}+{}+{} B, batch {}",
            i.daily_learners, i.viewers, i.interval, i.flush_interval, i.lessons_per_learner,
            i.learner_id_bytes, i.lesson_id_bytes, i.device_id_bytes, i.batch
        ),
        format!("heartbeats/s              {}/s", si(e.heartbeats_per_s)),
        format!("requests/s                {}/s", si(e.requests_per_s)),
        format!("store writes/s            {}/s  (active keys {} / max(interval, flush); coalescing ratio {:.2})",
            si(e.store_writes_per_s), si(e.active_keys), e.coalescing_ratio),
        format!("ingress                   {}B/s  ({:.0} B per request incl. ~{} B of HTTP headers)",
            si(e.ingress_bytes_per_s), e.request_bytes, HTTP_REQUEST_OVERHEAD),
        format!("egress                    {}B/s", si(e.egress_bytes_per_s)),
        format!("resident memory, active   {}B  ({} keys × (ids + {} B))",
            si(e.resident_bytes_active), si(e.active_keys), RESIDENT_OVERHEAD_BYTES),
        format!("resident memory, a day    {}B  ({} keys if nothing is evicted)",
            si(e.resident_bytes_daily), si(e.daily_keys)),
        format!("store size, a day's keys  {}B", si(e.store_bytes_daily_keys)),
        format!("ScyllaDB                  {} nodes  ({}/s replica writes at RF {}, {}/s per node)",
            e.scylla_nodes, si(e.scylla_replica_writes_per_s), i.replication_factor, si(i.scylla_node_writes)),
    ];
    lines.push(String::new());
    lines.join("\n")
}

/// Predicted next to measured for a run report (prediction made for the run's own
/// viewers, interval and batch, with the planner's flush interval and id sizes).
pub fn versus_measured(i: &EstimateInput, r: &Report) -> String {
    let run_input = EstimateInput {
        viewers: r.config.viewers,
        interval: Duration::from_millis(r.config.interval_ms.max(1)),
        batch: r.config.batch as u64,
        ..i.clone()
    };
    let p = estimate(&run_input);
    let unknown = || "unknown".to_string();
    let m = |v: Option<f64>| v.map_or_else(unknown, si);
    let rows = [
        (
            "heartbeats/s",
            si(p.heartbeats_per_s),
            si(r.throughput.heartbeats_per_s),
        ),
        (
            "requests/s",
            si(p.requests_per_s),
            si(r.throughput.requests_per_s),
        ),
        (
            "store writes/s",
            si(p.store_writes_per_s),
            m(r.server.rows_written_per_s),
        ),
        (
            "coalescing ratio",
            format!("{:.2}", p.coalescing_ratio),
            r.server
                .coalescing_ratio
                .map_or_else(unknown, |c| format!("{c:.2}")),
        ),
        (
            "request body B/s",
            si(p.requests_per_s * (p.request_bytes - HTTP_REQUEST_OVERHEAD as f64)),
            si(r.throughput.bytes_sent_per_s),
        ),
        (
            "resident keys",
            si(p.active_keys),
            m(r.server.resident_keys),
        ),
    ];
    let mut out = format!(
        "predicted vs measured for the run's shape: {} viewers every {} ms, batch {}\n",
        r.config.viewers, r.config.interval_ms, r.config.batch
    );
    if r.config.pacing == Pacing::Closed {
        out.push_str(
            "note: a closed-loop (--max) run sends as fast as answers come back, not at the viewers' pace; the predictions describe the planned load, not this run\n",
        );
    }
    out.push_str(&format!(
        "{:<20} {:>14} {:>14}\n",
        "figure", "predicted", "measured"
    ));
    for (name, a, b) in rows {
        out.push_str(&format!("{name:<20} {a:>14} {b:>14}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_case() -> EstimateInput {
        EstimateInput {
            daily_learners: 3_000_000,
            viewers: 250_000,
            interval: Duration::from_secs(10),
            flush_interval: Duration::from_secs(1),
            lessons_per_learner: 5,
            learner_id_bytes: 36,
            lesson_id_bytes: 16,
            device_id_bytes: 0,
            scylla_node_writes: 50_000.0,
            replication_factor: 3,
            batch: 1,
        }
    }

    #[test]
    fn the_seed_case_is_25k_heartbeats_per_second() {
        let e = estimate(&seed_case());
        assert_eq!(e.heartbeats_per_s, 25_000.0);
        assert_eq!(e.requests_per_s, 25_000.0);
        // A 1 s flush is shorter than the 10 s interval: nothing to coalesce.
        assert_eq!(e.store_writes_per_s, 25_000.0);
        assert_eq!(e.coalescing_ratio, 1.0);
        assert_eq!(e.daily_keys, 15_000_000.0);
        // 75 k replica writes/s at 50 k per node → 2 nodes, but RF 3 needs 3.
        assert_eq!(e.scylla_replica_writes_per_s, 75_000.0);
        assert_eq!(e.scylla_nodes, 3);
    }

    #[test]
    fn a_flush_longer_than_the_interval_coalesces() {
        let e = estimate(&EstimateInput {
            flush_interval: Duration::from_secs(30),
            ..seed_case()
        });
        assert!((e.store_writes_per_s - 250_000.0 / 30.0).abs() < 1e-6);
        assert!((e.coalescing_ratio - 3.0).abs() < 1e-9);
    }

    #[test]
    fn bytes_follow_the_id_sizes_and_batching() {
        let one = estimate(&seed_case());
        // 54 B of JSON syntax + 36 + 16 B of ids + 20 digits = 126 B, + 110 B of headers.
        assert_eq!(HEARTBEAT_JSON_FIXED, 54);
        assert_eq!(one.request_bytes, 236.0);
        assert_eq!(one.ingress_bytes_per_s, 25_000.0 * 236.0);
        let batched = estimate(&EstimateInput {
            batch: 100,
            ..seed_case()
        });
        assert_eq!(batched.requests_per_s, 250.0);
        assert_eq!(batched.request_bytes, (100 * 127 + 1 + 110) as f64);
        let bigger = estimate(&EstimateInput {
            scylla_node_writes: 10_000.0,
            ..seed_case()
        });
        assert_eq!(bigger.scylla_nodes, 8);
    }
}
