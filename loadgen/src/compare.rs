//! `loadgen compare a.json b.json`: two run reports side by side, with `b / a` per
//! figure, so a run can be held against a saved baseline.
//!
//! It walks every numeric field of both reports (through the JSON form, so a figure
//! added to the report later is compared without touching this file), skipping the
//! per-interval rows and the configuration's identity fields. A figure present in
//! only one report shows as missing on the other side.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::report::Report;

/// Fields that describe the run rather than measure it.
const SKIP: &[&str] = &[
    "intervals",
    "schema",
    "loadgen_version",
    "seed",
    "start",
    "end",
];

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, f64>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if SKIP.contains(&k.as_str()) {
                    continue;
                }
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.insert(prefix.to_string(), f);
            }
        }
        Value::Bool(b) => {
            out.insert(prefix.to_string(), f64::from(u8::from(*b)));
        }
        _ => {}
    }
}

/// Every numeric figure of a report by dotted path.
pub fn figures(r: &Report) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if let Ok(v) = serde_json::to_value(r) {
        flatten("", &v, &mut out);
    }
    out
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// The side-by-side table.
pub fn compare(a: &Report, b: &Report) -> String {
    let (fa, fb) = (figures(a), figures(b));
    let mut keys: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    keys.sort();
    keys.dedup();
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(6).max(6);
    let mut out = format!(
        "{:<width$} {:>16} {:>16} {:>8}\n",
        "figure", "a", "b", "b/a"
    );
    for k in keys {
        let (x, y) = (fa.get(k).copied(), fb.get(k).copied());
        let ratio = match (x, y) {
            (Some(x), Some(y)) if x != 0.0 => format!("{:.3}", y / x),
            (Some(_), Some(0.0)) => "=".into(),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{k:<width$} {:>16} {:>16} {ratio:>8}\n",
            num(x),
            num(y)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use clap::Parser;

    use crate::cli::{Cli, Command};
    use crate::metrics::ServerSnapshot;
    use crate::schedule::Latency;
    use crate::stats::{Op, Outcome, Recorder};

    fn sample() -> Report {
        let cfg = match Cli::try_parse_from(["loadgen", "run", "--viewers", "10"])
            .expect("valid flags")
            .command
        {
            Command::Run(r) => r.into_config().expect("valid config"),
            other => panic!("expected run, got {other:?}"),
        };
        let mut rec = Recorder::default();
        let l = Latency {
            corrected: Duration::from_millis(2),
            uncorrected: Duration::from_millis(1),
        };
        rec.record(Op::Post, Outcome::Ok, l);
        rec.counters.heartbeats_sent = 1;
        let snap = |n: f64| ServerSnapshot {
            received: Some(n),
            rows_written: Some(n),
            ..ServerSnapshot::default()
        };
        let server = (Some(snap(0.0)), Some(snap(1.0)), Some(true));
        Report::new(
            &cfg,
            Duration::from_secs(2),
            rec,
            Some(5.0),
            server,
            vec![],
            None,
        )
    }

    #[test]
    fn ratios_are_b_over_a_and_missing_figures_show() {
        let a = sample();
        let mut b = a.clone();
        b.throughput.heartbeats_per_s *= 2.0;
        b.server.rows_written = None;
        let t = compare(&a, &b);
        let line = |name: &str| {
            t.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            line("throughput.heartbeats_per_s").ends_with("2.000"),
            "{t}"
        );
        assert!(line("counters.requests").ends_with("1.000"));
        assert!(line("server.rows_written").ends_with("-"));
        assert!(!t.contains("intervals"));
        assert!(figures(&a).contains_key("latency_us.post.corrected.p99"));
    }
}
