//! One HTTP/1.1 keep-alive connection to the target, as lean as the load loop needs.
//!
//! Each load task owns one [`Conn`] (no pool, no lock, no pipelining): a request is
//! written, its answer read whole, and the next request follows. A request that fails,
//! times out or is answered with `Connection: close` leaves the connection unusable
//! ([`Conn::reusable`]): the caller drops it and reconnects, the way a real player would.
//!
//! Why not hyper's client: the generator shares two cores with the server it measures,
//! so every microsecond it spends is taken from the server. hyper's client connection
//! moves each request through a channel to a connection future, builds a `HeaderMap`
//! each way and streams the body through another channel: about half of loadgen's user
//! CPU per request (docs/performance.md, "Is loadgen the bottleneck?"). A load
//! generator needs much less. The request head is formatted into a reused buffer and
//! leaves with its body in one write; the answer's head is parsed by `httparse` (the
//! parser under hyper) and its body read by `Content-Length`. What progressd never
//! sends — chunked bodies, interim 1xx answers, bytes beyond the answer — is a protocol
//! error, not something guessed at.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer head accepted; progressd's are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// Largest answer body accepted (a learner listing is the biggest answer).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Headers parsed per answer; progressd sends four or five.
const MAX_HEADERS: usize = 32;

/// Why a request got no usable HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed answer: {0}")]
    Protocol(String),
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

/// One open connection and its reused buffers.
pub struct Conn {
    stream: TcpStream,
    /// `Host` and `Authorization` lines, the same for every request.
    fixed_headers: Vec<u8>,
    out: Vec<u8>,
    inp: BytesMut,
    timeout: Duration,
    /// False from the start of an exchange until it ends cleanly on a kept-alive
    /// connection: a dropped (timed out) or failed exchange leaves it false.
    reusable: bool,
}

/// What the head of an answer says about its body.
struct Head {
    status: StatusCode,
    head_len: usize,
    body_len: usize,
    close: bool,
}

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
        let mut fixed_headers = format!("Host: {addr}\r\n").into_bytes();
        if let Some(auth) = &ep.auth {
            fixed_headers.extend_from_slice(b"Authorization: ");
            fixed_headers.extend_from_slice(auth.as_bytes());
            fixed_headers.extend_from_slice(b"\r\n");
        }
        Ok(Conn {
            stream,
            fixed_headers,
            out: Vec::with_capacity(1024),
            inp: BytesMut::with_capacity(4096),
            timeout,
            reusable: true,
        })
    }

    /// May another request go out on this connection?
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// POSTs a JSON body to `path` (path and query).
    pub async fn post(&mut self, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
        self.out.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(self.out, "POST {path} HTTP/1.1\r\n");
        self.out.extend_from_slice(&self.fixed_headers);
        let _ = write!(
            self.out,
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.out.extend_from_slice(body);
        self.send().await
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer, ClientError> {
        self.out.clear();
        let _ = write!(self.out, "GET {path} HTTP/1.1\r\n");
        self.out.extend_from_slice(&self.fixed_headers);
        self.out.extend_from_slice(b"\r\n");
        self.send().await
    }

    /// Sends the request in `out` and reads its answer, within the timeout.
    async fn send(&mut self) -> Result<Answer, ClientError> {
        if !self.reusable {
            return Err(ClientError::Closed);
        }
        self.reusable = false;
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.exchange())
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn exchange(&mut self) -> Result<Answer, ClientError> {
        self.stream.write_all(&self.out).await?;
        self.inp.clear();
        let head = loop {
            if let Some(head) = parse_head(&self.inp)? {
                break head;
            }
            if self.inp.len() >= MAX_HEAD {
                return Err(ClientError::Protocol(format!(
                    "answer head longer than {MAX_HEAD} bytes"
                )));
            }
            self.fill().await?;
        };
        let end = head.head_len + head.body_len;
        while self.inp.len() < end {
            self.fill().await?;
        }
        if self.inp.len() > end {
            return Err(ClientError::Protocol(
                "bytes beyond the answer (the client never pipelines)".into(),
            ));
        }
        // A copy (tens of bytes) keeps the read buffer whole for the next answer.
        let body = Bytes::copy_from_slice(&self.inp[head.head_len..end]);
        self.reusable = !head.close;
        Ok(Answer {
            status: head.status,
            len: body.len(),
            body,
        })
    }

    /// Reads more of the answer; the server closing first is an error.
    async fn fill(&mut self) -> Result<(), ClientError> {
        self.inp.reserve(4096);
        match self.stream.read_buf(&mut self.inp).await? {
            0 => Err(ClientError::Closed),
            _ => Ok(()),
        }
    }
}

/// Parses an answer head; `None` until all of it has arrived.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ClientError::Protocol(e.to_string())),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .ok()
        .filter(|s| !s.is_informational())
        .ok_or_else(|| ClientError::Protocol(format!("unexpected status {code}")))?;
    let mut body_len = None;
    let mut close = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&n| n <= MAX_BODY)
                .ok_or_else(|| ClientError::Protocol("bad Content-Length".into()))?;
            body_len = Some(len);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ClientError::Protocol(
                "Transfer-Encoding answers are not supported".into(),
            ));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let body_len = match (body_len, status) {
        (Some(n), _) => n,
        (None, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) => 0,
        (None, _) => {
            return Err(ClientError::Protocol(
                "answer without Content-Length".into(),
            ))
        }
    };
    Ok(Some(Head {
        status,
        head_len,
        body_len,
        close,
    }))
}

/// GETs `path` on a fresh connection: for the few requests outside the load loop
/// (`/metrics`, verification).
pub async fn get_once(ep: &Endpoint, path: &str) -> Result<Answer, ClientError> {
    Conn::connect(ep).await?.get(path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head>, ClientError> {
        parse_head(raw.as_bytes())
    }

    #[test]
    fn a_complete_head_gives_status_and_body_length() {
        let raw = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n{\"applied\":true}";
        let h = head(raw).ok().flatten().expect("complete head");
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(
            (h.head_len, h.body_len, h.close),
            (raw.len() - 16, 17, false)
        );
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        assert!(matches!(head("HTTP/1.1 200 OK\r\ncontent-le"), Ok(None)));
    }

    #[test]
    fn connection_close_is_noticed() {
        let h = head(
            "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\ncontent-length: 0\r\n\r\n",
        )
        .ok()
        .flatten()
        .expect("complete head");
        assert!(h.close);
    }

    #[test]
    fn answers_it_cannot_frame_are_protocol_errors() {
        for raw in [
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(
                matches!(head(raw), Err(ClientError::Protocol(_))),
                "{raw:?}"
            );
        }
    }
}
