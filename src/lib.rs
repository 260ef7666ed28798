//! progressd: ingests learning-progress heartbeats at high rate and keeps them correct.
//!
//! One folder per box of the design (`docs/architecture.md`):
//! - [`model`]: progress states and the last-write-wins order (I1).
//! - [`engine`]: the sharded in-memory map, read-through, flusher (I1–I4, I6).
//! - [`store`]: the durable stores behind one seam (SQLite, memory, ScyllaDB).
//! - [`http`]: the API, auth, validation (I5).
//! - [`config`]: command line and environment, validated once.
//! - [`metrics`]: Prometheus metrics.
//! - [`serve`]: wires them together and owns startup and shutdown (I2).

pub mod clock;
pub mod config;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod model;
pub mod serve;
pub mod store;
