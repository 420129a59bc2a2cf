//! The client's error type: what an application can act on.

/// Why an operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request itself is bad (empty or oversized key or value, bad config); retrying
    /// cannot help. The operation did not take effect.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The deadline passed while the cluster kept answering with retryable errors or not
    /// at all. For a write the outcome is **unknown**: it may or may not have been applied.
    #[error("{operation} timed out after {elapsed_ms} ms; last error: {last_error}")]
    Timeout {
        /// The operation (`put`, `get`, ...).
        operation: &'static str,
        /// How long it tried.
        elapsed_ms: u64,
        /// The last retryable error seen.
        last_error: String,
    },
    /// PD could not be reached or refused the request.
    #[error("placement driver: {0}")]
    Pd(String),
    /// A store answered with an error that retrying does not fix (e.g. a store that
    /// poisoned itself after a failed fsync, or a server-side bug).
    #[error("server error: {0}")]
    Server(String),
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;
