//! Store errors, classified so the flusher knows what a retry can fix.

/// Why a store call failed. `Clone`, so one failed read-through answers every
/// request that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store may succeed later: timeouts, overload, lost connections, a busy or
    /// full disk. The flusher keeps the batch dirty and retries with backoff (I4).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The call took longer than the configured store timeout.
    #[error("store timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The store is unusable until an operator acts (a corrupt file, a schema this
    /// version does not know). Still retried, since dropping data is never the answer,
    /// but logged as an error and reported by `/readyz`.
    #[error("store failed: {0}")]
    Fatal(String),
}

impl StoreError {
    /// Short label for the `progressd_store_errors_total{kind=…}` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Timeout(_) => "timeout",
            StoreError::Fatal(_) => "fatal",
        }
    }
}
