//! The client's error type: what an application can act on.
//!
//! Inside an operation the client retries whatever may pass (routing changes, a busy or
//! unreachable store, a lost answer) until the operation's deadline, and stops at once on
//! what retrying cannot fix. [`Error::is_retryable`] says which of the errors it returns
//! are worth calling again later.

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request itself is bad (empty or oversized key or value, bad config, a follower
    /// bound under 1 ms); retrying cannot help. The operation did not take effect.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The deadline passed while the cluster kept answering with retryable errors or not
    /// at all. For a write the outcome is **unknown**: it may or may not have been applied.
    #[error("{operation} timed out after {elapsed_ms} ms; last error: {last_error}")]
    Timeout {
        /// The operation (`put`, `get`, `connect`, ...).
        operation: &'static str,
        /// How long it tried.
        elapsed_ms: u64,
        /// The last retryable error seen.
        last_error: String,
    },
    /// The store the operation was routed to could not be connected to (down, moved, not
    /// listening), on every attempt until the deadline: no request of the operation ever
    /// left the client, so it **did not take effect**. Retryable: the client already
    /// retried it (re-resolving the store's address, trying other replicas); calling again
    /// later may succeed. Once a request was sent, a later deadline is a
    /// [`Error::Timeout`] instead.
    #[error("cannot connect to store at {addr}: {reason}")]
    Connection {
        /// The store's address.
        addr: String,
        /// Why the connection failed.
        reason: String,
    },
    /// PD could not be reached or refused the request. Retryable.
    #[error("placement driver: {0}")]
    Pd(String),
    /// A store answered with an error that retrying does not fix: a storage failure on
    /// that request (an I/O error or a corrupt record), a refused stale session sequence,
    /// an answer of the wrong kind, an untyped error (a server-side bug). Not retried.
    #[error("server error: {0}")]
    Server(String),
}

impl Error {
    /// Whether calling the operation again later may succeed: `true` for
    /// [`Error::Connection`], [`Error::Pd`] and [`Error::Timeout`], `false` for
    /// [`Error::InvalidArgument`] and [`Error::Server`]. A write that timed out may already
    /// have been applied, so calling it again may apply it twice: a new call is a new
    /// write, with a session of its own.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connection { .. } | Error::Pd(_) | Error::Timeout { .. } => true,
            Error::InvalidArgument(_) | Error::Server(_) => false,
        }
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_of_reach_or_time_are_retryable() {
        let retryable = [
            Error::Connection {
                addr: "127.0.0.1:1".into(),
                reason: "connection refused".into(),
            },
            Error::Pd("no PD reachable".into()),
            Error::Timeout {
                operation: "put",
                elapsed_ms: 20_000,
                last_error: "server is busy".into(),
            },
        ];
        for e in retryable {
            assert!(e.is_retryable(), "{e}");
        }
        for e in [
            Error::InvalidArgument("empty key".into()),
            Error::Server("stale sequence".into()),
        ] {
            assert!(!e.is_retryable(), "{e}");
        }
    }

    #[test]
    fn a_connection_error_names_the_store_address() {
        let e = Error::Connection {
            addr: "127.0.0.1:20160".into(),
            reason: "connection refused".into(),
        };
        assert!(e.to_string().contains("127.0.0.1:20160"));
    }
}
