//! Reading a request body under a size cap and a deadline.
//!
//! The cap is enforced while reading (a `Content-Length` over it is refused before a
//! byte is read), so a client can never make the server buffer more than 1 MiB; the
//! deadline stops a client that trickles a body from pinning a connection.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use hyper::body::Incoming;
use hyper::StatusCode;

use super::error::ApiError;

/// Largest accepted body.
pub const BODY_LIMIT: usize = 1024 * 1024;

pub async fn read(body: Incoming, timeout: Duration) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {BODY_LIMIT} bytes"),
        )
    };
    if body.size_hint().lower() > BODY_LIMIT as u64 {
        return Err(too_large());
    }
    let collect = Limited::new(body, BODY_LIMIT).collect();
    match tokio::time::timeout(timeout, collect).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Ok(Err(e)) => Err(ApiError::bad_request(
            "bad_body",
            format!("request body could not be read: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("request body not received within {timeout:?}"),
        )),
    }
}
