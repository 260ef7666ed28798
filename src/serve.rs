//! `progressd serve`: startup, the running server, and a clean stop; and
//! `progressd migrate`, which prepares a ScyllaDB keyspace before the first serve.
//!
//! Startup validates everything (flags, secret, store) before binding, so a bad value
//! fails with one line and nothing listens. Shutdown on SIGTERM/SIGINT runs in order:
//! stop accepting → finish in-flight requests (the flusher keeps running, so
//! `ack=durable` requests complete) → drain every dirty key to the store → exit 0 (I2).
//! If the store cannot take the drain within the shutdown timeout, the exit code is 1
//! and the log says how many keys were not made durable.

use std::process::ExitCode;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::{MigrateArgs, ServeArgs, StoreUrl};
use crate::engine::{run_flusher, Engine};
use crate::http::server::{serve, ServerLimits};
use crate::http::{auth::Auth, App};
use crate::metrics::{new_registry, Metrics};
use crate::store::scylla::ScyllaConfig;
use crate::store::{self, Store};

/// Entry point of `progressd serve`.
pub fn main(args: ServeArgs) -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(message),
    }
}

/// Entry point of `progressd migrate`: creates the ScyllaDB keyspace and table.
pub fn migrate(args: MigrateArgs) -> ExitCode {
    init_logging();
    let StoreUrl::Scylla(url) = &args.store else {
        return fail(format!(
            "--store {}: only scylla:// stores need migrate (SQLite creates its schema on open)",
            path_display(&args.store)
        ));
    };
    let config = match args.scylla.config() {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(store::scylla::migrate(url, &config)) {
        Ok(()) => {
            tracing::info!(%url, "keyspace and table are in place");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("--store {url}: {e}")),
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("progressd: {message}");
    ExitCode::FAILURE
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROGRESSD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(args: ServeArgs) -> Result<(), String> {
    let secret = args.auth_secret()?;
    let scylla = args.scylla.config().map_err(|e| e.to_string())?;
    let mut registry = new_registry();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let store = open_store(&args, &scylla, &mut registry).await?;
    tracing::info!(store = %store.describe(), "store open");
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;

    let engine = Engine::new(store, args.engine_config(&scylla), metrics.clone());
    let (drain_tx, drain_rx) = oneshot::channel::<()>();
    let flusher = tokio::spawn(run_flusher(engine.clone(), async {
        let _ = drain_rx.await;
    }));
    let auth = secret.as_deref().map(Auth::new).transpose()?;
    let app = Arc::new(App {
        engine: engine.clone(),
        metrics,
        registry,
        auth,
        body_timeout: args.request_timeout,
    });
    let limits = ServerLimits {
        max_connections: args.max_connections,
        header_timeout: args.request_timeout,
    };
    tracing::info!(%local, auth = app.auth.is_some(), flush_interval = ?args.flush_interval, "listening on {local}");

    serve(listener, app, limits, shutdown_signal()).await;
    tracing::info!(
        dirty = engine.dirty_keys(),
        "requests finished; flushing to the store"
    );
    let _ = drain_tx.send(());
    let drained = tokio::time::timeout(args.shutdown_timeout, flusher).await;
    let left = engine.dirty_keys();
    match drained {
        Ok(Ok(())) if left == 0 => {
            tracing::info!("every accepted heartbeat is in the store; bye");
            Ok(())
        }
        _ => Err(format!(
            "stopped with {left} keys not durable: the store did not take the final flush within {:?}",
            args.shutdown_timeout
        )),
    }
}

async fn open_store(
    args: &ServeArgs,
    scylla: &ScyllaConfig,
    registry: &mut Registry,
) -> Result<Arc<dyn Store>, String> {
    let options = store::sqlite::SqliteOptions {
        cache_mib: args.sqlite_cache_mib as u32,
        ..Default::default()
    };
    match &args.store {
        StoreUrl::Memory => {
            tracing::warn!("memory:// store: nothing is durable, everything is lost at exit (tests and benches only)");
            Ok(Arc::new(store::memory::MemoryStore::new()))
        }
        StoreUrl::Sqlite(path) => {
            let path = path.clone();
            let opened = tokio::task::spawn_blocking(move || {
                store::sqlite::SqliteStore::open(&path, &options)
            })
            .await
            .map_err(|e| e.to_string())?;
            Ok(Arc::new(opened.map_err(|e| {
                format!("--store {}: {e}", path_display(&args.store))
            })?))
        }
        StoreUrl::Scylla(url) => {
            let opened = store::scylla::open(url, scylla, registry).await;
            Ok(Arc::new(opened.map_err(|e| format!("--store {url}: {e}"))?))
        }
    }
}

fn path_display(url: &StoreUrl) -> String {
    match url {
        StoreUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
        StoreUrl::Scylla(u) => u.to_string(),
        StoreUrl::Memory => "memory://".into(),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
}
