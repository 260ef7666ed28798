//! The server loop: accept, cap, serve, stop.
//!
//! - Backpressure on connections: a semaphore permit is taken *before* `accept` and
//!   moved into the connection's task, so at most `max_connections` are served and the
//!   rest wait in the kernel's accept queue instead of costing memory here.
//! - A client must send its headers within the request timeout (hyper's header read
//!   timeout) and its body within it again (see `body`), so slow or idle clients
//!   cannot pin a connection's resources.
//! - Shutdown: when `shutdown` resolves, the listener closes, idle keep-alive
//!   connections are closed, and in-flight requests run to completion; `serve` returns
//!   once every connection has finished (I2 starts here: nothing answered is cut off).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{routes, App};

pub struct ServerLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Serves until `shutdown` resolves, then waits for in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept(&listener, &permits) => accepted,
        };
        let Some((stream, permit)) = accepted else {
            continue;
        };
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(routes::handle(app, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> Option<(tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let permit = permits.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, _)) => {
            // Small request/response pairs: send each answer now, not after Nagle's delay.
            let _ = stream.set_nodelay(true);
            Some((stream, permit))
        }
        Err(e) => {
            // Out of file descriptors and the like: back off instead of spinning.
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}
