//! One HTTP/1.1 keep-alive connection to the target, as plain as hyper allows.
//!
//! Each load task owns one [`Conn`] (no pool, no lock, no pipelining): a request is
//! written, its answer read whole, and the next request follows. Bodies are `Bytes`
//! built by the caller, so the hot loop decides its own buffer reuse. A request that
//! fails or times out poisons the connection: the caller drops it and reconnects, the
//! way a real player would.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request line: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// An answered request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    /// Bytes of the response body (headers are not counted).
    pub len: usize,
}

/// One open connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    timeout: Duration,
}

static JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Conn {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|source| ClientError::Connect { addr, source })?;
        stream
            .set_nodelay(true)
            .map_err(|source| ClientError::Connect { addr, source })?;
        let (sender, conn) = handshake(TokioIo::new(stream)).await?;
        // The connection future ends when the connection closes; its error, if any,
        // surfaces on the next request through `sender`.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = HeaderValue::from_str(&addr.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Ok(Conn {
            sender,
            host,
            timeout,
        })
    }

    /// POSTs a JSON body to `path` (path and query).
    pub async fn post(&mut self, path: &str, body: Bytes) -> Result<Answer, ClientError> {
        let len = HeaderValue::from(body.len());
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, &JSON)
            .header(CONTENT_LENGTH, len)
            .body(Full::new(body))?;
        self.send(req).await
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer, ClientError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(HOST, &self.host)
            .body(Full::new(Bytes::new()))?;
        self.send(req).await
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, ClientError> {
        let exchange = async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, ClientError>(Answer {
                status,
                len: body.len(),
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }
}

/// GETs `path` on a fresh connection: for the few requests outside the load loop
/// (`/metrics`, verification).
pub async fn get_once(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<Answer, ClientError> {
    Conn::connect(addr, timeout).await?.get(path).await
}
