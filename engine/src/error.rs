//! The engine's error type.

/// Errors of the storage layer. Every variant names the operation and, where there is
/// one, the region.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB failed (I/O error, corruption, ...). Writes after this are refused by the
    /// store: it never retries a failed sync.
    #[error("rocksdb {op}: {source}")]
    Rocks {
        /// What we were doing.
        op: &'static str,
        /// The RocksDB error.
        #[source]
        source: rocksdb::Error,
    },
    /// A stored record does not decode: the data on disk is corrupt.
    #[error("corrupt {what} of region {region_id}: {detail}")]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// Its region (0 if not region-scoped).
        region_id: u64,
        /// Why it does not decode.
        detail: String,
    },
    /// An earlier sync of the WAL failed: what it should have made durable may be visible
    /// but is not known to be on disk, so the engine refuses every later write until it is
    /// opened again (as RocksDB does after a failed synced write).
    #[error("write refused: an earlier sync of the WAL failed: {reason}")]
    SyncFailed {
        /// The failed sync's error.
        reason: String,
    },
    /// A fault injected for a test or drill ([`crate::RocksEngine::fail_writes`]); handled
    /// like a RocksDB I/O error.
    #[error("{op}: injected fault: {reason}")]
    Injected {
        /// What was refused.
        op: &'static str,
        /// The error it stands for.
        reason: String,
    },
    /// A read failed where it could not be reported (an [`Overlay`](crate::Overlay)'s
    /// `delete_range` scanning its base: a batch operation cannot fail); every later read
    /// of that overlay fails with this, so the failure is never lost.
    #[error("{op} failed earlier: {detail}")]
    Deferred {
        /// What failed.
        op: &'static str,
        /// The original error.
        detail: String,
    },
    /// A snapshot sent by a peer does not decode or does not fit this region.
    #[error("bad snapshot for region {region_id}: {detail}")]
    BadSnapshot {
        /// The region.
        region_id: u64,
        /// What is wrong.
        detail: String,
    },
}

/// Result alias of the engine.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn rocks(op: &'static str) -> impl FnOnce(rocksdb::Error) -> Error {
        move |source| Error::Rocks { op, source }
    }
}
