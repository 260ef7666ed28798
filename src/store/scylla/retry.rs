//! What a failed write means and when to try it again: the retry *logic* (which
//! errors a retry can fix) kept apart from the *mechanism* (jittered backoff).
//!
//! Protects I4: timeouts, overload and lost connections are retried a bounded number
//! of times and then fail the whole flush, so the engine keeps the rows dirty and
//! tries later; a row the cluster refuses as invalid is a poison row, set aside so it
//! never blocks the rest. Retrying is always safe because every write carries its
//! timestamp (see `timestamp`).

use std::time::Duration;

use scylla::errors::{DbError, ExecutionError, RequestAttemptError};

use super::metrics::ErrorKind;
use crate::store::StoreError;

/// Longest wait between two attempts of one row.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Classifies a failed request.
pub fn classify(err: &ExecutionError) -> ErrorKind {
    match err {
        ExecutionError::RequestTimeout(_) => ErrorKind::Timeout,
        ExecutionError::LastAttemptError(attempt) => classify_attempt(attempt),
        ExecutionError::EmptyPlan
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::PrepareError(_) => ErrorKind::Connection,
        ExecutionError::BadQuery(_) => ErrorKind::Invalid,
        _ => ErrorKind::Fatal,
    }
}

fn classify_attempt(err: &RequestAttemptError) -> ErrorKind {
    match err {
        RequestAttemptError::DbError(db, _) => classify_db(db),
        RequestAttemptError::BrokenConnectionError(_)
        | RequestAttemptError::UnableToAllocStreamId => ErrorKind::Connection,
        RequestAttemptError::SerializationError(_)
        | RequestAttemptError::CqlRequestSerialization(_) => ErrorKind::Invalid,
        _ => ErrorKind::Fatal,
    }
}

fn classify_db(err: &DbError) -> ErrorKind {
    match err {
        DbError::WriteTimeout { .. } | DbError::ReadTimeout { .. } => ErrorKind::Timeout,
        DbError::Overloaded | DbError::RateLimitReached { .. } => ErrorKind::Overloaded,
        DbError::Unavailable { .. }
        | DbError::IsBootstrapping
        | DbError::WriteFailure { .. }
        | DbError::ReadFailure { .. }
        | DbError::ServerError
        | DbError::TruncateError
        | DbError::Unprepared { .. } => ErrorKind::Unavailable,
        DbError::Invalid | DbError::FunctionFailure { .. } => ErrorKind::Invalid,
        _ => ErrorKind::Fatal,
    }
}

/// The store error a failed request becomes when it is given up on.
pub fn store_error(err: &ExecutionError, kind: ErrorKind) -> StoreError {
    match (err, kind) {
        (ExecutionError::RequestTimeout(d), _) => StoreError::Timeout(*d),
        (_, ErrorKind::Fatal) => StoreError::Fatal(err.to_string()),
        _ => StoreError::Unavailable(err.to_string()),
    }
}

/// Delay before attempt `retry + 1` (`retry` counts from 0): exponential from `base`,
/// capped at [`MAX_BACKOFF`], with "equal jitter": half the delay is fixed so retries
/// stay spaced, half is spread by `jitter` in `[0, 1)` so that many writers failing
/// together do not return together.
pub fn backoff(base: Duration, retry: u32, jitter: f64) -> Duration {
    let exp = base
        .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF);
    let half = exp / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use scylla::errors::{BrokenConnectionErrorKind, WriteType};

    fn db(err: DbError) -> ExecutionError {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(err, "msg".into()))
    }

    #[test]
    fn i4_timeouts_overload_and_lost_connections_are_retried() {
        let retriable = [
            ExecutionError::RequestTimeout(Duration::from_secs(2)),
            db(DbError::WriteTimeout {
                consistency: scylla::statement::Consistency::LocalQuorum,
                received: 1,
                required: 2,
                write_type: WriteType::Simple,
            }),
            db(DbError::Overloaded),
            db(DbError::IsBootstrapping),
            db(DbError::ServerError),
            ExecutionError::LastAttemptError(RequestAttemptError::BrokenConnectionError(
                BrokenConnectionErrorKind::ChannelError.into(),
            )),
            ExecutionError::LastAttemptError(RequestAttemptError::UnableToAllocStreamId),
            ExecutionError::EmptyPlan,
        ];
        for err in retriable {
            assert!(classify(&err).is_retriable(), "{err}");
        }
        assert_eq!(classify(&db(DbError::Overloaded)), ErrorKind::Overloaded);
    }

    #[test]
    fn i4_an_invalid_row_is_poison_and_schema_trouble_is_fatal() {
        assert_eq!(classify(&db(DbError::Invalid)), ErrorKind::Invalid);
        assert_eq!(classify(&db(DbError::SyntaxError)), ErrorKind::Fatal);
        assert_eq!(classify(&db(DbError::Unauthorized)), ErrorKind::Fatal);
        assert!(!ErrorKind::Invalid.is_retriable());
        assert!(!ErrorKind::Fatal.is_retriable());
    }

    #[test]
    fn given_up_errors_map_to_the_store_error_the_engine_expects() {
        let timeout = ExecutionError::RequestTimeout(Duration::from_millis(5));
        assert!(matches!(
            store_error(&timeout, ErrorKind::Timeout),
            StoreError::Timeout(d) if d == Duration::from_millis(5)
        ));
        let overloaded = db(DbError::Overloaded);
        assert!(matches!(
            store_error(&overloaded, ErrorKind::Overloaded),
            StoreError::Unavailable(_)
        ));
        let syntax = db(DbError::SyntaxError);
        assert!(matches!(
            store_error(&syntax, ErrorKind::Fatal),
            StoreError::Fatal(_)
        ));
    }

    #[test]
    fn backoff_doubles_is_jittered_and_capped() {
        let base = Duration::from_millis(50);
        assert_eq!(backoff(base, 0, 0.0), Duration::from_millis(25));
        assert_eq!(backoff(base, 0, 1.0), Duration::from_millis(50));
        assert_eq!(backoff(base, 1, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(base, 3, 0.5), Duration::from_millis(300));
        for retry in [6, 10, 31, 32, 1000] {
            let d = backoff(base, retry, 1.0);
            assert!(d <= MAX_BACKOFF, "{retry}: {d:?}");
            assert!(d >= MAX_BACKOFF / 2, "{retry}: {d:?}");
        }
    }
}
