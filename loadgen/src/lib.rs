//! loadgen: progressd's load generator for capacity planners.
//!
//! It answers "how many heartbeats per second can this take, at what latency, with how
//! many store writes, and is every learner's progress still right at the end?".
//! One module per concern; `main.rs` only dispatches:
//! - [`cli`]: flags and their validation into typed configurations;
//! - [`workload`]: what the synthetic players do (churn, Zipf lessons, retries,
//!   reordering, offline batches, device switches) and the hybrid-clock `seq`;
//! - [`schedule`]: intended send times and coordinated-omission-corrected latency;
//! - [`client`]: one HTTP/1.1 keep-alive connection;
//! - [`stats`]: HDR histograms, counters, client CPU;
//! - [`metrics`]: the server's `/metrics`, read tolerantly;
//! - [`verify`]: the end-to-end check of invariants I1 and I6;
//! - [`run`]: the load loop and its orchestration;
//! - [`report`]: the text and JSON report;
//! - [`estimate`]: the capacity arithmetic;
//! - [`compare`]: two reports side by side;
//! - [`error`]: errors and exit codes.

pub mod cli;
pub mod client;
pub mod compare;
pub mod error;
pub mod estimate;
pub mod metrics;
pub mod report;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod verify;
pub mod workload;

pub use cli::{Ack, RunArgs, RunConfig};
pub use error::{Error, EXIT_VERIFY_FAILED};
pub use report::Report;
pub use run::{run, run_blocking};
