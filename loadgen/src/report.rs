//! The run's report: one serde type that is both the `--json` file (schema
//! `loadgen-report/1`, documented in `docs/capacity-planning.md`) and the source of the
//! human text summary, so the two never disagree. `compare` and `estimate --measured`
//! read the same type back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::{Ack, RunConfig};
use crate::error::Error;
use crate::metrics::{delta, ServerSnapshot};
use crate::run::fmt_us;
use crate::schedule::Pacing;
use crate::stats::{Counters, Op, Recorder, Summary};
use crate::verify::VerifyReport;

/// The value of the `schema` field this version writes.
pub const SCHEMA: &str = "loadgen-report/1";

/// The run's shape, as given (after validation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportConfig {
    pub target: String,
    pub pacing: Pacing,
    pub viewers: u64,
    /// Effective interval per player (changed by `--rate`).
    pub interval_ms: u64,
    /// Intended heartbeats per second (open loop).
    pub rate: f64,
    pub duration_ms: Option<u64>,
    pub requests: Option<u64>,
    pub warmup_ms: u64,
    pub connections: usize,
    pub threads: usize,
    pub batch: usize,
    /// Longest wait of a partial batch (`--batch-wait`); absent in older reports.
    #[serde(default)]
    pub batch_wait_ms: u64,
    pub ack: Ack,
    pub seed: u64,
    pub id_prefix: String,
    pub jitter: f64,
    pub lessons_per_learner: u32,
    pub catalog: u32,
    pub zipf: f64,
    pub churn_rate: f64,
    pub dup_rate: f64,
    pub reorder_rate: f64,
    pub offline_rate: f64,
    pub offline_beats: u32,
    pub device_switch_rate: f64,
    pub verify: bool,
}

/// Answers with one error status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusErrors {
    pub count: u64,
    pub first_body: String,
}

/// Rates over the measured window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub requests_per_s: f64,
    pub heartbeats_per_s: f64,
    pub acked_heartbeats_per_s: f64,
    pub bytes_sent_per_s: f64,
    pub bytes_received_per_s: f64,
}

/// Corrected and uncorrected latency of one operation, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    pub corrected: Summary,
    pub uncorrected: Summary,
}

/// What the server's `/metrics` said (figures are `null` when not published).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerReport {
    pub start: Option<ServerSnapshot>,
    pub end: Option<ServerSnapshot>,
    pub heartbeats_received: Option<f64>,
    pub heartbeats_applied: Option<f64>,
    pub heartbeats_stale: Option<f64>,
    pub rows_written: Option<f64>,
    /// Rows written over the measured window plus the settle time, per measured second.
    pub rows_written_per_s: Option<f64>,
    /// Heartbeats the server received per row it wrote.
    pub coalescing_ratio: Option<f64>,
    pub dirty_keys: Option<f64>,
    pub resident_keys: Option<f64>,
    /// Whether zero dirty keys were seen before the end scrape.
    pub flushed: Option<bool>,
}

/// One row per `--report-every`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntervalRow {
    /// Seconds since the start (warm-up included) at the row's end.
    pub t_s: f64,
    pub requests_per_s: f64,
    pub heartbeats_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub errors: u64,
    pub backpressure: u64,
    pub client_cpu_percent: Option<f64>,
}

impl IntervalRow {
    pub fn new(t_s: f64, secs: f64, r: &Recorder, cpu: Option<f64>) -> IntervalRow {
        let s = Summary::of(&r.all_corrected());
        IntervalRow {
            t_s,
            requests_per_s: r.counters.requests as f64 / secs,
            heartbeats_per_s: r.counters.heartbeats_sent as f64 / secs,
            p50_us: s.p50,
            p99_us: s.p99,
            max_us: s.max,
            errors: r.counters.errors(),
            backpressure: r.counters.backpressure,
            client_cpu_percent: cpu,
        }
    }

    pub fn header() -> String {
        format!(
            "{:>7} {:>10} {:>10} {:>9} {:>9} {:>9} {:>7} {:>7} {:>5}",
            "t", "hb/s", "req/s", "p50", "p99", "max", "errors", "503", "cpu"
        )
    }

    pub fn line(&self) -> String {
        format!(
            "{:>6.0}s {:>10.0} {:>10.0} {:>9} {:>9} {:>9} {:>7} {:>7} {:>5}",
            self.t_s,
            self.heartbeats_per_s,
            self.requests_per_s,
            fmt_us(self.p50_us),
            fmt_us(self.p99_us),
            fmt_us(self.max_us),
            self.errors,
            self.backpressure,
            self.client_cpu_percent
                .map_or("?".into(), |c| format!("{c:.0}%")),
        )
    }
}

/// Everything a run found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub loadgen_version: String,
    pub config: ReportConfig,
    /// Length of the measured window (after the warm-up), seconds.
    pub elapsed_s: f64,
    pub counters: Counters,
    /// Error statuses other than 503, by code: count and the first answer body.
    #[serde(default)]
    pub status_errors: BTreeMap<String, StatusErrors>,
    pub throughput: Throughput,
    /// Per operation: `post`, `post_batch`, `get` (only those that ran).
    pub latency_us: BTreeMap<String, OpReport>,
    /// Intended → actual send time, microseconds (0 in closed loop). A high figure
    /// means the generator could not keep its timetable (or the connections were all
    /// busy waiting for answers): see `client_cpu_percent`.
    #[serde(default)]
    pub send_lag_us: Summary,
    /// CPU used by the loadgen process over the measured window, % of one core.
    pub client_cpu_percent: Option<f64>,
    pub server: ServerReport,
    pub intervals: Vec<IntervalRow>,
    pub verify: Option<VerifyReport>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Report {
    pub fn new(
        cfg: &RunConfig,
        window: Duration,
        total: Recorder,
        client_cpu_percent: Option<f64>,
        server: (Option<ServerSnapshot>, Option<ServerSnapshot>, Option<bool>),
        intervals: Vec<IntervalRow>,
        verify: Option<VerifyReport>,
    ) -> Report {
        let w = &cfg.workload;
        let secs = window.as_secs_f64().max(1e-9);
        let c = total.counters;
        let latency_us = Op::ALL
            .iter()
            .filter(|op| !total.op(**op).corrected.is_empty())
            .map(|op| {
                let h = total.op(*op);
                (
                    op.name().to_string(),
                    OpReport {
                        corrected: Summary::of(&h.corrected),
                        uncorrected: Summary::of(&h.uncorrected),
                    },
                )
            })
            .collect();
        let (start, end, flushed) = server;
        let field = |f: fn(&ServerSnapshot) -> Option<f64>| {
            delta(start.as_ref().and_then(f), end.as_ref().and_then(f))
        };
        let received = field(|s| s.received);
        let rows_written = field(|s| s.rows_written);
        Report {
            schema: SCHEMA.into(),
            loadgen_version: env!("CARGO_PKG_VERSION").into(),
            config: ReportConfig {
                target: cfg.target.clone(),
                pacing: cfg.pacing,
                viewers: w.viewers,
                interval_ms: ms(w.interval),
                rate: cfg.rate,
                duration_ms: cfg.duration.map(ms),
                requests: cfg.requests,
                warmup_ms: ms(cfg.warmup),
                connections: cfg.connections,
                threads: cfg.threads,
                batch: cfg.batch,
                batch_wait_ms: u64::try_from(cfg.batch_wait.as_millis()).unwrap_or(u64::MAX),
                ack: cfg.ack,
                seed: w.seed,
                id_prefix: w.id_prefix.clone(),
                jitter: w.jitter,
                lessons_per_learner: w.lessons_per_learner,
                catalog: w.catalog,
                zipf: w.zipf,
                churn_rate: w.churn_rate,
                dup_rate: w.dup_rate,
                reorder_rate: w.reorder_rate,
                offline_rate: w.offline_rate,
                offline_beats: w.offline_beats,
                device_switch_rate: w.switch_rate,
                verify: cfg.verify,
            },
            elapsed_s: window.as_secs_f64(),
            counters: c,
            status_errors: total
                .statuses
                .iter()
                .map(|(code, (count, body))| {
                    let e = StatusErrors {
                        count: *count,
                        first_body: body.clone(),
                    };
                    (code.to_string(), e)
                })
                .collect(),
            throughput: Throughput {
                requests_per_s: c.requests as f64 / secs,
                heartbeats_per_s: c.heartbeats_sent as f64 / secs,
                acked_heartbeats_per_s: c.heartbeats_acked as f64 / secs,
                bytes_sent_per_s: c.bytes_sent as f64 / secs,
                bytes_received_per_s: c.bytes_received as f64 / secs,
            },
            latency_us,
            send_lag_us: Summary::of(&total.send_lag),
            client_cpu_percent,
            server: ServerReport {
                heartbeats_received: received,
                heartbeats_applied: field(|s| s.applied),
                heartbeats_stale: field(|s| s.stale),
                rows_written,
                rows_written_per_s: rows_written.map(|r| r / secs),
                coalescing_ratio: match (received, rows_written) {
                    (Some(a), Some(r)) if r > 0.0 => Some(a / r),
                    _ => None,
                },
                dirty_keys: end.and_then(|s| s.dirty_keys),
                resident_keys: end.and_then(|s| s.resident_keys),
                flushed,
                start,
                end,
            },
            intervals,
            verify,
        }
    }

    /// Did the run pass? (Only `--verify` can fail it.)
    pub fn passed(&self) -> bool {
        self.verify.as_ref().is_none_or(VerifyReport::passed)
    }

    pub fn write_json(&self, path: &Path) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::Report {
            path: path.into(),
            source,
        })?;
        std::fs::write(path, text + "\n").map_err(|source| Error::File {
            path: path.into(),
            source,
        })
    }

    pub fn read_json(path: &Path) -> Result<Report, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::File {
            path: path.into(),
            source,
        })?;
        let report: Report = serde_json::from_str(&text).map_err(|source| Error::Report {
            path: path.into(),
            source,
        })?;
        if report.schema != SCHEMA {
            return Err(Error::Config(format!(
                "{}: schema {:?}, but this loadgen reads {SCHEMA:?}",
                path.display(),
                report.schema
            )));
        }
        Ok(report)
    }

    /// The human summary.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let c = &self.config;
        let t = &self.throughput;
        let n = &self.counters;
        let shape = match c.pacing {
            Pacing::Open => format!("open loop at {:.0} hb/s", c.rate),
            Pacing::Closed => "closed loop (--max)".into(),
        };
        let _ = writeln!(
            o,
            "loadgen {} → {}: {shape}; {} viewers every {:.1}s, {} connections, {} thread(s), batch {}, ack {:?}, seed {}",
            self.loadgen_version,
            c.target,
            c.viewers,
            c.interval_ms as f64 / 1000.0,
            c.connections,
            c.threads,
            c.batch,
            c.ack,
            c.seed,
        );
        let _ = writeln!(
            o,
            "measured {:.1}s after a {:.1}s warm-up",
            self.elapsed_s,
            c.warmup_ms as f64 / 1000.0
        );
        let _ = writeln!(
            o,
            "requests    {:>10} ({:.0}/s)  ok {}  503 back-pressure {}  errors {} (status {}, transport {}, timeout {})",
            n.requests,
            t.requests_per_s,
            n.ok,
            n.backpressure,
            n.errors(),
            n.status_errors,
            n.transport_errors,
            n.timeouts
        );
        for (code, e) in &self.status_errors {
            let _ = writeln!(o, "  status {code} × {}: {}", e.count, e.first_body);
        }
        let _ = writeln!(
            o,
            "heartbeats  {:>10} ({:.0}/s)  acknowledged {} ({:.0}/s)  applied {}  stale {}",
            n.heartbeats_sent,
            t.heartbeats_per_s,
            n.heartbeats_acked,
            t.acked_heartbeats_per_s,
            n.applied,
            n.stale
        );
        let _ = writeln!(
            o,
            "bytes       sent {:.1} MB/s, received {:.1} MB/s (bodies)",
            t.bytes_sent_per_s / 1e6,
            t.bytes_received_per_s / 1e6
        );
        let _ = writeln!(
            o,
            "client CPU  {}",
            self.client_cpu_percent
                .map_or("unknown".into(), |c| format!("{c:.0}% of one core"))
        );
        let _ = writeln!(
            o,
            "\nlatency                 count      mean       p50       p90       p99     p99.9       max"
        );
        for (name, op) in &self.latency_us {
            for (kind, s) in [
                ("corrected", &op.corrected),
                ("uncorrected", &op.uncorrected),
            ] {
                let _ = writeln!(
                    o,
                    "{:<10} {:<11} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    name,
                    kind,
                    s.count,
                    fmt_us(s.mean.round() as u64),
                    fmt_us(s.p50),
                    fmt_us(s.p90),
                    fmt_us(s.p99),
                    fmt_us(s.p999),
                    fmt_us(s.max)
                );
            }
        }
        let g = &self.send_lag_us;
        let _ = writeln!(
            o,
            "{:<22} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "send lag",
            g.count,
            fmt_us(g.mean.round() as u64),
            fmt_us(g.p50),
            fmt_us(g.p90),
            fmt_us(g.p99),
            fmt_us(g.p999),
            fmt_us(g.max)
        );
        let s = &self.server;
        let f = |v: Option<f64>| v.map_or("unknown".into(), |v| format!("{v:.0}"));
        let _ = writeln!(o, "\nserver /metrics (end − start)");
        let _ = writeln!(
            o,
            "  heartbeats received {}  applied {}  stale {}",
            f(s.heartbeats_received),
            f(s.heartbeats_applied),
            f(s.heartbeats_stale)
        );
        let _ = writeln!(
            o,
            "  store rows written  {} ({}/s)  coalescing ratio {} (received / rows written)",
            f(s.rows_written),
            f(s.rows_written_per_s),
            s.coalescing_ratio
                .map_or("unknown".into(), |r| format!("{r:.2}"))
        );
        let _ = writeln!(
            o,
            "  at the end: dirty keys {}  resident keys {}  flushed {}",
            f(s.dirty_keys),
            f(s.resident_keys),
            match s.flushed {
                Some(true) => "yes",
                Some(false) => "NO (timed out)",
                None => "unknown",
            }
        );
        if let Some(v) = &self.verify {
            let _ = writeln!(
                o,
                "\nverify      {}: {} learners, {} keys: ok {}, lost {}, stale {}, phantom {}, unconfirmed {}, unreadable {}, stale reads {}",
                if v.passed() { "PASSED" } else { "FAILED" },
                v.learners,
                v.keys,
                v.ok,
                v.lost,
                v.stale,
                v.phantom,
                v.unconfirmed,
                v.unreadable,
                v.stale_reads
            );
            if v.ok == 0 {
                let _ = writeln!(
                    o,
                    "  no key was confirmed: nothing this run sent was both acknowledged and read back, so it proves nothing"
                );
            }
            for e in &v.examples {
                let _ = writeln!(o, "  {e}");
            }
        }
        o
    }
}
