//! Command line and environment, validated once into typed settings.
//!
//! Every flag has an env twin and a default shown in `--help`. Values are checked here,
//! before anything listens: a bad value exits non-zero with one clear line.

mod store_url;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use store_url::StoreUrl;

use crate::engine::EngineConfig;
use crate::store::scylla::{ScyllaArgs, ScyllaConfig};

#[derive(Debug, Parser)]
#[command(
    name = "progressd",
    version,
    about = "Ingests learning-progress heartbeats and keeps them correct"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ingestion server.
    Serve(Box<ServeArgs>),
    /// Create the ScyllaDB keyspace and table (idempotent; scylla:// stores only).
    Migrate(Box<MigrateArgs>),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The store to prepare: scylla://HOST:PORT[,…]/KEYSPACE (SQLite creates its schema on open).
    #[arg(long, env = "PROGRESSD_STORE")]
    pub store: StoreUrl,

    #[command(flatten)]
    pub scylla: ScyllaArgs,
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 200ms, 1s, 5m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The environment variable that may hold the auth secret itself.
pub const AUTH_SECRET_ENV: &str = "PROGRESSD_AUTH_SECRET";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP/1.1 listen address.
    #[arg(long, env = "PROGRESSD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where progress is made durable: sqlite://PATH, scylla://HOST:PORT[,…]/KEYSPACE, or memory:// (tests and benches only).
    #[arg(
        long,
        env = "PROGRESSD_STORE",
        default_value = "sqlite://./progressd-data/progress.db"
    )]
    pub store: StoreUrl,

    /// Longest time an accepted heartbeat waits in memory before its flush starts.
    #[arg(long, env = "PROGRESSD_FLUSH_INTERVAL", default_value = "1s", value_parser = duration)]
    pub flush_interval: Duration,

    /// File holding the HS256 secret; turns on bearer-token auth. The environment variable PROGRESSD_AUTH_SECRET may hold the secret itself instead (there is no flag for it: a command line is visible to every local user).
    #[arg(long, env = "PROGRESSD_AUTH_SECRET_FILE")]
    pub auth_secret_file: Option<PathBuf>,

    /// Allow a non-loopback listen address without auth.
    #[arg(long, env = "PROGRESSD_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Shards of the in-memory map (more shards, less lock contention).
    #[arg(long, env = "PROGRESSD_SHARDS", default_value = "64", value_parser = positive)]
    pub shards: usize,

    /// Start a flush early once this many keys are dirty.
    #[arg(long, env = "PROGRESSD_FLUSH_DIRTY_THRESHOLD", default_value = "50000", value_parser = positive)]
    pub flush_dirty_threshold: usize,

    /// Rows per store write [default: sqlite and memory: the flush dirty threshold, so a flush it starts is one SQLite transaction; scylla: 4 × --scylla-max-in-flight, so each write finishes well inside --store-timeout and a slow cluster still makes progress one write at a time].
    #[arg(long, env = "PROGRESSD_BATCH_ROWS", value_parser = positive)]
    pub batch_rows: Option<usize>,

    /// Clean keys kept in memory beyond this are evicted, least recently used first.
    #[arg(long, env = "PROGRESSD_MAX_RESIDENT_KEYS", default_value = "2000000", value_parser = positive)]
    pub max_resident_keys: usize,

    /// Clean keys idle this long are evicted.
    #[arg(long, env = "PROGRESSD_IDLE_TTL", default_value = "30m", value_parser = duration)]
    pub idle_ttl: Duration,

    /// New keys get 503 + Retry-After while this many keys wait for the store.
    #[arg(long, env = "PROGRESSD_MAX_DIRTY_KEYS", default_value = "1000000", value_parser = positive)]
    pub max_dirty_keys: usize,

    /// Longest wait for one store call before it counts as failed.
    #[arg(long, env = "PROGRESSD_STORE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub store_timeout: Duration,

    /// Longest wait for an ack=durable answer before 503 (the heartbeat stays queued).
    #[arg(long, env = "PROGRESSD_DURABLE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub durable_timeout: Duration,

    /// Concurrent connections; more wait in the kernel's accept queue.
    #[arg(long, env = "PROGRESSD_MAX_CONNECTIONS", default_value = "4096", value_parser = positive)]
    pub max_connections: usize,

    /// A client must send a request's headers within this, and its body within this again.
    #[arg(long, env = "PROGRESSD_REQUEST_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub request_timeout: Duration,

    /// Longest time SIGTERM waits for the final flush, once in-flight requests have finished (those are bounded by --request-timeout and --durable-timeout).
    #[arg(long, env = "PROGRESSD_SHUTDOWN_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub shutdown_timeout: Duration,

    /// SQLite page cache per connection, MiB.
    #[arg(long, env = "PROGRESSD_SQLITE_CACHE_MIB", default_value = "64", value_parser = positive)]
    pub sqlite_cache_mib: usize,

    #[command(flatten)]
    pub scylla: ScyllaArgs,
}

impl ServeArgs {
    pub fn engine_config(&self, scylla: &ScyllaConfig) -> EngineConfig {
        let batch_rows = self.batch_rows.unwrap_or(match self.store {
            StoreUrl::Scylla(_) => 4 * scylla.max_in_flight,
            StoreUrl::Sqlite(_) | StoreUrl::Memory => self.flush_dirty_threshold,
        });
        EngineConfig {
            shards: self.shards,
            flush_interval: self.flush_interval,
            flush_dirty_threshold: self.flush_dirty_threshold,
            batch_rows,
            max_resident_keys: self.max_resident_keys,
            idle_ttl: self.idle_ttl,
            max_dirty_keys: self.max_dirty_keys,
            store_timeout: self.store_timeout,
            durable_timeout: self.durable_timeout,
            ..EngineConfig::default()
        }
    }

    /// The auth secret from the file or the environment; `None` means auth is off.
    /// Refuses to run open on a non-loopback address unless told to.
    pub fn auth_secret(&self) -> Result<Option<Vec<u8>>, String> {
        let from_env = std::env::var_os(AUTH_SECRET_ENV).filter(|v| !v.is_empty());
        let secret = match (&self.auth_secret_file, from_env) {
            (Some(_), Some(_)) => {
                return Err(
                    "give the auth secret once: --auth-secret-file or PROGRESSD_AUTH_SECRET".into(),
                )
            }
            (Some(path), None) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--auth-secret-file {}: {e}", path.display()))?;
                Some(text.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
            }
            (None, Some(s)) => Some(s.into_encoded_bytes()),
            (None, None) => None,
        };
        if secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err("the auth secret must be at least 16 bytes".into());
        }
        if secret.is_none() && !self.listen.ip().is_loopback() && !self.insecure_no_auth {
            return Err(format!(
                "refusing to listen on {} without auth: give --auth-secret-file, or --insecure-no-auth",
                self.listen
            ));
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["progressd", "serve"].iter().chain(args))
            .expect("valid arguments");
        match cli.command {
            Command::Serve(args) => *args,
            Command::Migrate(_) => panic!("parsed as migrate"),
        }
    }

    fn batch_rows(args: &[&str]) -> usize {
        let args = serve_args(args);
        let scylla = args.scylla.config().expect("scylla flags");
        args.engine_config(&scylla).batch_rows
    }

    #[test]
    fn batch_rows_default_to_what_each_store_can_finish_in_one_write() {
        assert_eq!(batch_rows(&[]), 50_000);
        assert_eq!(batch_rows(&["--flush-dirty-threshold", "7000"]), 7_000);
        let scylla = ["--store", "scylla://127.0.0.1:9042/progress"];
        assert_eq!(batch_rows(&scylla), 4 * 256);
        let narrow = [&scylla[..], &["--scylla-max-in-flight", "16"]].concat();
        assert_eq!(batch_rows(&narrow), 64);
        let explicit = [&scylla[..], &["--batch-rows", "5"]].concat();
        assert_eq!(batch_rows(&explicit), 5);
    }
}
