//! Reading the server's `/metrics` (Prometheus text format), tolerantly.
//!
//! loadgen must keep working against a server that names a metric differently, lacks
//! one, or has no `/metrics` at all: every figure is an `Option`, and a missing one is
//! reported as unknown rather than failing the run. Series of one metric with
//! different labels are summed (e.g. per-shard counters).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{get_once, Endpoint};

/// The server figures loadgen reports, as read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSnapshot {
    pub received: Option<f64>,
    pub applied: Option<f64>,
    pub stale: Option<f64>,
    pub rows_written: Option<f64>,
    pub dirty_keys: Option<f64>,
    pub resident_keys: Option<f64>,
}

/// Sums every sample of the text format by metric name (labels dropped).
pub fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) if line.as_bytes()[i] == b'{' => match line.rfind('}') {
                Some(close) => (&line[..i], &line[close + 1..]),
                None => continue,
            },
            Some(i) => (&line[..i], &line[i..]),
            None => continue,
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        *out.entry(name.to_string()).or_insert(0.0) += value;
    }
    out
}

fn pick(m: &HashMap<String, f64>, names: &[&str]) -> Option<f64> {
    names.iter().find_map(|n| m.get(*n).copied())
}

impl ServerSnapshot {
    pub fn from_text(text: &str) -> ServerSnapshot {
        let m = parse(text);
        ServerSnapshot {
            received: pick(
                &m,
                &[
                    "progressd_heartbeats_received_total",
                    "progressd_heartbeats_received",
                ],
            ),
            applied: pick(
                &m,
                &[
                    "progressd_heartbeats_applied_total",
                    "progressd_heartbeats_applied",
                ],
            ),
            stale: pick(
                &m,
                &[
                    "progressd_heartbeats_stale_total",
                    "progressd_heartbeats_stale",
                ],
            ),
            rows_written: pick(
                &m,
                &[
                    "progressd_store_rows_written_total",
                    "progressd_store_rows_written",
                ],
            ),
            dirty_keys: pick(&m, &["progressd_dirty_keys"]),
            resident_keys: pick(&m, &["progressd_resident_keys"]),
        }
    }

    /// Scrapes `/metrics`; `None` when the server does not answer it with 200.
    pub async fn scrape(ep: &Endpoint) -> Option<ServerSnapshot> {
        let answer = get_once(ep, "/metrics").await.ok()?;
        if !answer.status.is_success() {
            return None;
        }
        Some(ServerSnapshot::from_text(&String::from_utf8_lossy(
            &answer.body,
        )))
    }

    /// Polls until the server reports no dirty keys (everything flushed) or `limit`
    /// passes. Returns whether the flush was observed, `None` if the server does not
    /// publish dirty keys (then it waited `fallback`, a flush interval's worth).
    pub async fn wait_for_flush(
        ep: &Endpoint,
        limit: Duration,
        fallback: Duration,
    ) -> Option<bool> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let snap = ServerSnapshot::scrape(ep).await;
            match snap.and_then(|s| s.dirty_keys) {
                None => {
                    tokio::time::sleep(fallback.min(limit)).await;
                    return None;
                }
                Some(d) if d <= 0.0 => return Some(true),
                Some(_) if tokio::time::Instant::now() >= deadline => return Some(false),
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// End minus start of one counter, when both were read.
pub fn delta(start: Option<f64>, end: Option<f64>) -> Option<f64> {
    Some(end? - start?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP progressd_heartbeats_received_total Heartbeats received.
# TYPE progressd_heartbeats_received_total counter
progressd_heartbeats_received_total 1200
progressd_heartbeats_applied_total{shard=\"0\"} 500
progressd_heartbeats_applied_total{shard=\"1\",note=\"a b\"} 600 1700000000000
progressd_store_rows_written_total 300
progressd_dirty_keys 0
garbage line without value
progressd_resident_keys NaN-ish
";

    #[test]
    fn sums_labelled_series_and_tolerates_noise() {
        let s = ServerSnapshot::from_text(TEXT);
        assert_eq!(s.received, Some(1200.0));
        assert_eq!(s.applied, Some(1100.0));
        assert_eq!(s.rows_written, Some(300.0));
        assert_eq!(s.dirty_keys, Some(0.0));
        assert_eq!(s.stale, None);
        assert_eq!(s.resident_keys, None);
    }

    #[test]
    fn missing_metrics_are_unknown_not_zero() {
        assert_eq!(ServerSnapshot::from_text(""), ServerSnapshot::default());
        assert_eq!(delta(Some(5.0), None), None);
        assert_eq!(delta(Some(5.0), Some(7.0)), Some(2.0));
    }
}
