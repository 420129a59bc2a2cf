//! The transaction layer's error type: one enum whose variants a caller can act on. Each
//! names the key and the transaction (`start_ts`) it is about, and says whether trying
//! again can succeed ([`Error::is_retryable`]). Deadlocks are not here: they belong to the
//! lock-wait queue of the raftstore.

use crate::record::Lock;

/// Errors of the MVCC reader and the Percolator actions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `key` is locked by another transaction whose commit may be visible to the caller.
    /// Retryable once the lock is resolved (`check_txn_status` on its primary, then
    /// `resolve_lock`) or after waiting for it.
    #[error("key {key:?} is locked by txn {} (primary {:?})", lock.start_ts, lock.primary)]
    KeyIsLocked {
        /// The locked key.
        key: Vec<u8>,
        /// The lock met (boxed: the error stays small).
        lock: Box<Lock>,
    },
    /// A write of another transaction committed after `start_ts` (or after the
    /// `for_update_ts` of a pessimistic lock): the transaction must restart with a newer
    /// timestamp. Retryable by restarting.
    #[error("write conflict on {key:?}: txn {start_ts} meets txn {conflict_start_ts} committed at {conflict_commit_ts}")]
    WriteConflict {
        /// The key.
        key: Vec<u8>,
        /// The caller's transaction.
        start_ts: u64,
        /// The conflicting transaction.
        conflict_start_ts: u64,
        /// Its commit timestamp.
        conflict_commit_ts: u64,
    },
    /// Neither the transaction's lock nor its commit or rollback record is on `key`: the
    /// lock was never written or was cleaned up. Not retryable.
    #[error("txn {start_ts} has no lock and no write on {key:?}")]
    TxnLockNotFound {
        /// The key.
        key: Vec<u8>,
        /// The transaction.
        start_ts: u64,
    },
    /// `check_txn_status` found no lock and no record of the transaction and was told not
    /// to roll it back. Not retryable (the caller decides whether to roll it back).
    #[error("txn {start_ts} not found on its primary {primary:?}")]
    TxnNotFound {
        /// The primary key checked.
        primary: Vec<u8>,
        /// The transaction.
        start_ts: u64,
    },
    /// The transaction is already committed at `commit_ts`, so it cannot be rolled back
    /// (or lock anew). Not retryable: it is the answer.
    #[error("txn {start_ts} is committed at {commit_ts} on {key:?}")]
    Committed {
        /// The key.
        key: Vec<u8>,
        /// The transaction.
        start_ts: u64,
        /// Its commit timestamp.
        commit_ts: u64,
    },
    /// The transaction was rolled back on `key`, so it cannot prewrite, lock or commit
    /// there. Not retryable.
    #[error("txn {start_ts} is rolled back on {key:?}")]
    AlreadyRolledBack {
        /// The key.
        key: Vec<u8>,
        /// The transaction.
        start_ts: u64,
    },
    /// A pessimistic prewrite expected its own pessimistic lock on `key` and found none
    /// (it was rolled back or never acquired). Not retryable.
    #[error("txn {start_ts} has no pessimistic lock on {key:?}")]
    PessimisticLockNotFound {
        /// The key.
        key: Vec<u8>,
        /// The transaction.
        start_ts: u64,
    },
    /// The commit timestamp is below the lock's `min_commit_ts` (a reader pushed it).
    /// Retryable with a commit timestamp of at least `min_commit_ts`.
    #[error(
        "commit ts {commit_ts} of txn {start_ts} is below min_commit_ts {min_commit_ts} on {key:?}"
    )]
    CommitTsExpired {
        /// The key.
        key: Vec<u8>,
        /// The transaction.
        start_ts: u64,
        /// The commit timestamp asked for.
        commit_ts: u64,
        /// The smallest allowed.
        min_commit_ts: u64,
    },
    /// OCC: a key the transaction read at version `expected` is now at `actual` (the
    /// commit ts of its newest `Put`/`Delete`, 0 if none), or the reader was wrong about
    /// it; nothing was written. Retryable by reading again.
    #[error("version of {key:?} changed: read at {expected}, now {actual}")]
    VersionMismatch {
        /// The key.
        key: Vec<u8>,
        /// The version the transaction read.
        expected: u64,
        /// The key's version at validation.
        actual: u64,
    },
    /// The request itself is wrong (a key twice in one action, a commit ts not after the
    /// start ts, ...). Not retryable.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A stored MVCC record or key does not decode: the data is corrupt. Fatal.
    #[error("corrupt {what} at {key:?}: {detail}")]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// Its data key.
        key: Vec<u8>,
        /// Why it does not decode.
        detail: String,
    },
    /// The engine failed. Fatal for the store (see the engine's poisoning).
    #[error(transparent)]
    Engine(#[from] regatta_engine::Error),
}

impl Error {
    /// Whether the operation can succeed if tried again (after resolving a lock, waiting,
    /// restarting the transaction or choosing a larger commit ts, as each variant says).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::KeyIsLocked { .. }
            | Error::WriteConflict { .. }
            | Error::CommitTsExpired { .. }
            | Error::VersionMismatch { .. } => true,
            Error::TxnLockNotFound { .. }
            | Error::TxnNotFound { .. }
            | Error::Committed { .. }
            | Error::AlreadyRolledBack { .. }
            | Error::PessimisticLockNotFound { .. }
            | Error::InvalidRequest(_)
            | Error::Corrupt { .. }
            | Error::Engine(_) => false,
        }
    }
}

/// Result alias of the transaction layer.
pub type Result<T> = std::result::Result<T, Error>;
