//! The ScyllaDB store's own metrics: what an operator watches to tell a slow
//! cluster (latency, writes in flight, retries) from bad data (poison rows).
//!
//! They make I4 visible: retries show a store that is struggling but losing nothing,
//! and every poison row set aside is counted here, never dropped silently.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// Why a request to the cluster failed, as the `kind` label of
/// `progressd_scylla_errors_total` and the input of the retry decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The client or a replica timed out.
    Timeout,
    /// The coordinator shed load (Overloaded, rate limit).
    Overloaded,
    /// Not enough replicas alive, a node bootstrapping, a replica-side failure.
    Unavailable,
    /// A broken or missing connection.
    Connection,
    /// The cluster refused this one row for good: a poison row.
    Invalid,
    /// Schema, auth or protocol trouble that retrying a row cannot fix.
    Fatal,
}

impl ErrorKind {
    /// True when the same request may succeed if tried again later.
    pub fn is_retriable(self) -> bool {
        !matches!(self, ErrorKind::Invalid | ErrorKind::Fatal)
    }

    /// The `kind` label value, snake_case like the rest of progressd's labels.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Connection => "connection",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Fatal => "fatal",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
}

/// Handles to the store's metrics; cloning shares the same series.
#[derive(Clone, Debug)]
pub struct ScyllaMetrics {
    pub writes_in_flight: Gauge,
    /// Seconds per write attempt of one row, as the cluster answered it.
    pub write_seconds: Histogram,
    pub retries: Counter,
    pub poison_rows: Counter,
    pub errors: Family<ErrorLabels, Counter>,
}

impl Default for ScyllaMetrics {
    fn default() -> Self {
        ScyllaMetrics {
            writes_in_flight: Gauge::default(),
            write_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            retries: Counter::default(),
            poison_rows: Counter::default(),
            errors: Family::default(),
        }
    }
}

impl ScyllaMetrics {
    /// Registers every series under a `scylla` prefix inside `registry`, which is
    /// expected to be progressd's own (prefixed `progressd`), giving names like
    /// `progressd_scylla_retries_total` (counters get `_total` from the encoder).
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("scylla");
        registry.register(
            "writes_in_flight",
            "Row writes currently awaiting the cluster",
            self.writes_in_flight.clone(),
        );
        registry.register(
            "write_seconds",
            "Latency of one row write attempt to the cluster",
            self.write_seconds.clone(),
        );
        registry.register(
            "retries",
            "Row writes retried after a timeout, overload or lost connection",
            self.retries.clone(),
        );
        registry.register(
            "poison_rows",
            "Rows the cluster refused for good, set aside so the flush goes on",
            self.poison_rows.clone(),
        );
        registry.register(
            "errors",
            "Failed requests to the cluster by kind",
            self.errors.clone(),
        );
    }

    pub(super) fn error(&self, kind: ErrorKind) {
        self.errors
            .get_or_create(&ErrorLabels { kind: kind.label() })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn metric_names_follow_the_progressd_scheme() {
        let metrics = ScyllaMetrics::default();
        let mut registry = Registry::with_prefix("progressd");
        metrics.register(&mut registry);
        metrics.error(ErrorKind::Overloaded);
        metrics.retries.inc();
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        for name in [
            "progressd_scylla_writes_in_flight ",
            "progressd_scylla_write_seconds_bucket",
            "progressd_scylla_retries_total 1",
            "progressd_scylla_poison_rows_total 0",
            "progressd_scylla_errors_total{kind=\"overloaded\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing in:\n{text}");
        }
    }
}
