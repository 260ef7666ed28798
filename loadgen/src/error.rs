//! The errors that end a loadgen command, and the exit code each one maps to.
//!
//! Exit codes (also in `docs/capacity-planning.md`):
//! - 0: the command did what it was asked (for `run --verify`: every key checked out);
//! - 1: `run --verify` found lost, stale or phantom keys, stale reads, or unreadable keys;
//! - 2: bad arguments (clap's own usage errors use 2 as well);
//! - 3: the command could not be carried out (target unreachable, file unreadable, a
//!   load task that failed …).

use std::path::PathBuf;

/// Why a command stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("target {target}: {message}")]
    Target { target: String, message: String },
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a loadgen report: {source}", path.display())]
    Report {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    /// A bug in loadgen itself (a load task panicked): the run proves nothing.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Exit code for a `run --verify` that found problems.
pub const EXIT_VERIFY_FAILED: i32 = 1;

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            _ => 3,
        }
    }
}
