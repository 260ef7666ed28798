//! One HTTP/1.1 keep-alive connection to the target, as plain as hyper allows.
//!
//! Each load task owns one [`Conn`] (no pool, no lock, no pipelining): a request is
//! written, its answer read whole, and the next request follows. Bodies are `Bytes`
//! built by the caller, so the hot loop decides its own buffer reuse. A request that
//! fails or times out poisons the connection: the caller drops it and reconnects, the
//! way a real player would.
//!
//! Why the connection is not spawned as its own task (hyper's usual pattern): the
//! owning task polls hyper's connection future itself, beside the request. One task per
//! connection instead of two halves the wake-ups per request, which matters when the
//! generator shares two cores with the server it measures.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{handshake, Connection, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
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
    #[error("the server closed the connection")]
    Closed,
}

/// An answered request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    /// Bytes of the response body (headers are not counted).
    pub len: usize,
}

/// Where to connect and how: address, per-request timeout, optional bearer token.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub timeout: Duration,
    /// The whole `Authorization` header value (`Bearer …`), when the server wants one.
    pub auth: Option<HeaderValue>,
}

/// One open connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    conn: Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
    host: HeaderValue,
    auth: Option<HeaderValue>,
    timeout: Duration,
}

static JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Conn {
    pub async fn connect(ep: &Endpoint) -> Result<Conn, ClientError> {
        let (addr, timeout) = (ep.addr, ep.timeout);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|source| ClientError::Connect { addr, source })?;
        stream
            .set_nodelay(true)
            .map_err(|source| ClientError::Connect { addr, source })?;
        let (sender, conn) = handshake(TokioIo::new(stream)).await?;
        let host = HeaderValue::from_str(&addr.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Ok(Conn {
            sender,
            conn: Box::pin(conn),
            host,
            auth: ep.auth.clone(),
            timeout,
        })
    }

    /// POSTs a JSON body to `path` (path and query).
    pub async fn post(&mut self, path: &str, body: Bytes) -> Result<Answer, ClientError> {
        let len = HeaderValue::from(body.len());
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, &JSON)
            .header(CONTENT_LENGTH, len);
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth);
        }
        self.send(req.body(Full::new(body))?).await
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer, ClientError> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(HOST, &self.host);
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth);
        }
        self.send(req.body(Full::new(Bytes::new()))?).await
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, ClientError> {
        let Conn { sender, conn, .. } = self;
        let exchange = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, ClientError>(Answer {
                status,
                len: body.len(),
                body,
            })
        };
        // Drive the connection while the exchange runs; it only ends on close or error.
        let driven = async {
            tokio::select! {
                biased;
                answer = exchange => answer,
                closed = conn.as_mut() => Err(closed.err().map_or(ClientError::Closed, ClientError::Http)),
            }
        };
        tokio::time::timeout(self.timeout, driven)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }
}

/// GETs `path` on a fresh connection: for the few requests outside the load loop
/// (`/metrics`, verification).
pub async fn get_once(ep: &Endpoint, path: &str) -> Result<Answer, ClientError> {
    Conn::connect(ep).await?.get(path).await
}
