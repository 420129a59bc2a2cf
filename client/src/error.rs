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
    /// PD did not serve a request; [`PdError`] says why (unreachable, the cluster not
    /// bootstrapped yet, refused). Retryable: the client retries PD until the operation's
    /// deadline, and PD's view may catch up (a region it has not heard of yet just after a
    /// split, the last initial store registering).
    #[error("placement driver: {0}")]
    Pd(PdError),
    /// A store's storage failed on this request (an I/O error or a corrupt record: the
    /// store's `StorageError`). That replica did not serve it; retrying it there at once
    /// does not help, so the client does not. Not retryable.
    #[error("storage error on the store: {0}")]
    Storage(String),
    /// A store answered with something no caller can act on but report: a refused stale
    /// session sequence, an answer of the wrong kind, an untyped error (a server-side
    /// bug). Not retried.
    #[error("server error: {0}")]
    Server(String),
    /// A transaction met a write to `key` committed by another transaction after it
    /// started (optimistic), or after its lock's `for_update_ts` (pessimistic). The
    /// transaction did not commit. Retryable: run it again with a new start ts.
    #[error(
        "write conflict on {key:?}: txn {start_ts} meets txn {conflict_start_ts} committed at {conflict_commit_ts}"
    )]
    WriteConflict {
        /// The key written by both.
        key: Vec<u8>,
        /// This transaction's primary key.
        primary: Vec<u8>,
        /// This transaction's start ts.
        start_ts: u64,
        /// The transaction that committed first.
        conflict_start_ts: u64,
        /// Its commit ts.
        conflict_commit_ts: u64,
    },
    /// OCC: a key the transaction read at version `expected` is now at `actual`; nothing
    /// was committed. [`crate::OccTxn::commit`] answers it as an abort
    /// ([`crate::OccOutcome`]), not as this error. Retryable from the reads.
    #[error("version of {key:?} changed: read at {expected}, now {actual}")]
    OccVersionMismatch {
        /// The key that changed.
        key: Vec<u8>,
        /// The version read.
        expected: u64,
        /// Its version at validation.
        actual: u64,
    },
    /// `key` is locked by another transaction that stayed alive (its TTL kept running, or
    /// it kept heartbeating) until this operation's deadline. Retryable: the lock goes
    /// once that transaction ends or its TTL runs out.
    #[error("key {key:?} is locked by txn {lock_ts} (primary {primary:?}, ttl {ttl_ms} ms)")]
    KeyIsLocked {
        /// The locked key.
        key: Vec<u8>,
        /// The lock holder's primary key.
        primary: Vec<u8>,
        /// The lock holder's start ts.
        lock_ts: u64,
        /// The lock's time to live in milliseconds.
        ttl_ms: u64,
    },
    /// Waiting for a pessimistic lock on `key` would have closed a cycle of waiting
    /// transactions; this transaction was chosen to give up. Retryable.
    #[error("deadlock: txn {start_ts} waiting on {key:?} for txn {blocker_start_ts}")]
    Deadlock {
        /// The key this transaction waited for.
        key: Vec<u8>,
        /// This transaction's start ts.
        start_ts: u64,
        /// The transaction it waited for.
        blocker_start_ts: u64,
    },
    /// A pessimistic lock on `key` was not granted within the lock-wait timeout.
    /// Retryable.
    #[error("lock wait on {key:?} by txn {start_ts} timed out")]
    LockWaitTimeout {
        /// The key.
        key: Vec<u8>,
        /// This transaction's start ts.
        start_ts: u64,
    },
    /// The transaction's primary holds neither its lock nor a record of it: it was never
    /// prewritten there, or was cleaned up. Retryable: run the transaction again.
    #[error("txn {start_ts} not found on its primary {primary:?}")]
    TxnNotFound {
        /// The transaction.
        start_ts: u64,
        /// Its primary key.
        primary: Vec<u8>,
    },
    /// A commit found neither the transaction's lock nor its record on `key`: another
    /// client rolled it back and the record is gone. The transaction did not commit.
    /// Retryable: run it again.
    #[error("txn {start_ts} has no lock on {key:?} to commit")]
    TxnLockNotFound {
        /// The transaction.
        start_ts: u64,
        /// The key.
        key: Vec<u8>,
    },
    /// The commit ts is below a lock's `min_commit_ts`. The client retries this itself
    /// with a newer ts; it surfaces only when that fails too. Retryable.
    #[error("commit ts {commit_ts} of txn {start_ts} is below min_commit_ts {min_commit_ts}")]
    CommitTsExpired {
        /// The transaction.
        start_ts: u64,
        /// The commit ts tried.
        commit_ts: u64,
        /// The smallest allowed.
        min_commit_ts: u64,
    },
    /// The transaction was rolled back (by this client, or by another that found its
    /// locks expired); it can never commit. Retryable: run it again.
    #[error("txn {start_ts} was rolled back (met on {key:?})")]
    AlreadyRolledBack {
        /// The transaction.
        start_ts: u64,
        /// Where the rollback was met.
        key: Vec<u8>,
    },
    /// A pessimistic transaction's lock on `key` was gone at prewrite (another client
    /// rolled it back, or the leader that held it in memory was lost). Nothing of the
    /// transaction is committed. Retryable: run the transaction again.
    #[error("txn {start_ts} lost its pessimistic lock on {key:?}")]
    PessimisticLockNotFound {
        /// The transaction.
        start_ts: u64,
        /// The key.
        key: Vec<u8>,
    },
    /// The transaction is already committed at `commit_ts`, so it cannot be rolled back.
    /// Not retryable: it is the answer.
    #[error("txn {start_ts} is already committed at {commit_ts}")]
    AlreadyCommitted {
        /// The transaction.
        start_ts: u64,
        /// Its commit ts.
        commit_ts: u64,
    },
    /// A read at `read_ts` below the region's GC safe point (the versions it needs may be
    /// gone), or a prewrite or pessimistic lock of a transaction whose start ts
    /// (`read_ts`) is at or below it. Not retryable at that ts: read at a newer one, or
    /// run the transaction again (a new start ts).
    #[error(
        "ts {read_ts} is below the GC safe point {safe_point}: the versions it needs may \
         have been garbage-collected; use a newer timestamp"
    )]
    BelowGcSafePoint {
        /// The read's ts.
        read_ts: u64,
        /// The safe point.
        safe_point: u64,
    },
    /// A timestamp given by the caller (a snapshot's or `--read-ts`) is beyond what PD's
    /// TSO has handed out, or a store refused a command whose timestamp is beyond what
    /// the TSO handed out plus its drift allowance (`limit`). Reading there would not be
    /// a snapshot (later commits could land below it), and a store that served it would
    /// have to commit every later write above it. Nothing was done. Not retryable: use a
    /// timestamp from the TSO ([`crate::TxnClient::current_timestamp`]).
    #[error(
        "timestamp {ts} is beyond what PD's timestamp oracle has handed out (limit {limit}); \
         use a timestamp from the TSO"
    )]
    TimestampTooFarAhead {
        /// The refused timestamp.
        ts: u64,
        /// The largest accepted when it was refused.
        limit: u64,
    },
    /// The commit of the primary key was sent but its answer never came (deadline, lost
    /// connection): the transaction **may or may not have committed**. Not retryable,
    /// since running it again could apply it twice; read the data to find out.
    #[error("commit of txn {start_ts} is undetermined: {reason}")]
    CommitUndetermined {
        /// The transaction.
        start_ts: u64,
        /// What happened to the commit request.
        reason: String,
    },
}

/// Why PD did not serve a request: the kinds a caller can tell apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PdError {
    /// No PD answered: down, not listening at any of the addresses, or an answer lost or
    /// late. Try again later, or check the addresses.
    #[error("no answer: {0}")]
    Unreachable(String),
    /// PD answered that the cluster is not bootstrapped yet: it bootstraps once its initial
    /// stores have registered. Nothing is wrong with the request; wait for the stores.
    #[error("the cluster is not bootstrapped yet: {0}")]
    NotBootstrapped(String),
    /// PD answered with an error, or with something that is not an answer to the request
    /// (its message says which).
    #[error("refused: {0}")]
    Refused(String),
}

impl Error {
    /// Whether calling the operation again later may succeed: `true` for
    /// [`Error::Connection`], [`Error::Pd`] and [`Error::Timeout`], `false` for
    /// [`Error::InvalidArgument`], [`Error::Storage`] and [`Error::Server`]. A write that timed out may already
    /// have been applied, so calling it again may apply it twice: a new call is a new
    /// write, with a session of its own.
    ///
    /// For a transaction, `true` means running the whole transaction again, with a new
    /// start ts, may succeed (what [`crate::TxnClient::run`] does): conflicts, locks, lock
    /// waits, deadlocks, and a transaction rolled back by someone else.
    /// [`Error::CommitUndetermined`], [`Error::AlreadyCommitted`],
    /// [`Error::BelowGcSafePoint`] and [`Error::TimestampTooFarAhead`] are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connection { .. }
            | Error::Pd(_)
            | Error::Timeout { .. }
            | Error::WriteConflict { .. }
            | Error::OccVersionMismatch { .. }
            | Error::KeyIsLocked { .. }
            | Error::Deadlock { .. }
            | Error::LockWaitTimeout { .. }
            | Error::TxnNotFound { .. }
            | Error::TxnLockNotFound { .. }
            | Error::CommitTsExpired { .. }
            | Error::AlreadyRolledBack { .. }
            | Error::PessimisticLockNotFound { .. } => true,
            Error::InvalidArgument(_)
            | Error::Storage(_)
            | Error::Server(_)
            | Error::AlreadyCommitted { .. }
            | Error::BelowGcSafePoint { .. }
            | Error::TimestampTooFarAhead { .. }
            | Error::CommitUndetermined { .. } => false,
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
            Error::Pd(PdError::Unreachable("no PD reachable".into())),
            Error::Pd(PdError::NotBootstrapped("1 of 3 stores".into())),
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
            Error::Storage("corrupt record".into()),
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
