//! The HTTP API (`docs/api.md`): routing, handlers, auth, errors, and the server loop.
//!
//! - [`server`]: accept loop with a connection cap, header/body timeouts, graceful stop.
//! - [`routes`]: path and method dispatch (404/405 with JSON bodies).
//! - [`ingest`] and [`read`]: the heartbeat POST and the progress GETs.
//! - [`heartbeat`]: parsing and validation (I5).
//! - [`auth`]: bearer tokens.

pub mod auth;
mod body;
mod error;
pub mod heartbeat;
mod ingest;
mod ops;
mod read;
mod routes;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::engine::Engine;
use crate::metrics::Metrics;

pub use error::ApiError;

/// Everything a request handler needs, shared by all connections.
pub struct App {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub registry: Registry,
    pub auth: Option<auth::Auth>,
    /// Longest time a client may take to send a request body.
    pub body_timeout: Duration,
}
