//! progressd: ingests learning-progress heartbeats at high rate and keeps them correct.
//!
//! One folder per box of the design (`docs/architecture.md`):
//! - [`model`]: progress states and the last-write-wins order (I1).
//! - [`store`]: the durable stores behind one seam (SQLite, memory, ScyllaDB).

pub mod model;
pub mod store;
