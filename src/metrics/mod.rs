//! Prometheus metrics, one scheme: `progressd_<noun>_<verb>_total`, `_seconds`.
//!
//! Handles are created once at startup and shared; counters are atomics, so the hot
//! path pays an atomic add, never a lock. Gauges of engine state (dirty and resident
//! keys) are read from the engine when `/metrics` is scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::store::StoreError;

/// Label for store errors, by class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorKind {
    pub kind: &'static str,
}

impl ErrorKind {
    pub fn of(e: &StoreError) -> Self {
        ErrorKind { kind: e.kind() }
    }
}

/// Label for rejected requests, by API error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectReason {
    pub code: &'static str,
}

pub struct Metrics {
    pub heartbeats_received: Counter,
    pub heartbeats_applied: Counter,
    pub heartbeats_stale: Counter,
    pub heartbeats_rejected: Family<RejectReason, Counter>,
    pub requests_shed: Counter,
    pub store_rows_written: Counter,
    pub poison_rows: Counter,
    pub store_errors: Family<ErrorKind, Counter>,
    pub flush_seconds: Histogram,
    pub dirty_keys: Gauge,
    pub resident_keys: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them under the `progressd_` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            heartbeats_received: Counter::default(),
            heartbeats_applied: Counter::default(),
            heartbeats_stale: Counter::default(),
            heartbeats_rejected: Family::default(),
            requests_shed: Counter::default(),
            store_rows_written: Counter::default(),
            poison_rows: Counter::default(),
            store_errors: Family::default(),
            flush_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            dirty_keys: Gauge::default(),
            resident_keys: Gauge::default(),
        };
        let r = registry;
        r.register(
            "heartbeats_received",
            "Heartbeats in valid requests",
            m.heartbeats_received.clone(),
        );
        r.register(
            "heartbeats_applied",
            "Heartbeats that became a key's newest state",
            m.heartbeats_applied.clone(),
        );
        r.register(
            "heartbeats_stale",
            "Heartbeats older than the key's state (retries, late arrivals)",
            m.heartbeats_stale.clone(),
        );
        r.register(
            "heartbeats_rejected",
            "Requests rejected, by error code",
            m.heartbeats_rejected.clone(),
        );
        r.register(
            "requests_shed",
            "Requests answered 503 to protect memory while the store is behind",
            m.requests_shed.clone(),
        );
        r.register(
            "store_rows_written",
            "Rows written to the store",
            m.store_rows_written.clone(),
        );
        r.register(
            "store_poison_rows",
            "Rows the store refused for good, set aside",
            m.poison_rows.clone(),
        );
        r.register(
            "store_errors",
            "Failed store calls, by class",
            m.store_errors.clone(),
        );
        r.register(
            "flush_duration_seconds",
            "Time to write one flush to the store",
            m.flush_seconds.clone(),
        );
        r.register(
            "dirty_keys",
            "Keys whose newest state is not yet durable",
            m.dirty_keys.clone(),
        );
        r.register(
            "resident_keys",
            "Keys held in memory",
            m.resident_keys.clone(),
        );
        m
    }
}

/// A registry with the project's prefix.
pub fn new_registry() -> Registry {
    Registry::with_prefix("progressd")
}
