//! Regatta's transaction layer: Percolator over the engine seam, as TiKV builds it.
//!
//! This crate owns the MVCC data in the `x` key space of the data column families —
//! the key encoding ([`key`]), the records ([`Lock`], [`Write`]), the reader
//! ([`MvccReader`]: get and scan at a timestamp) — and the transaction actions (prewrite,
//! commit, rollback, check_txn_status, resolve_lock, pessimistic locks, async-commit
//! checks, 1PC, GC) as pure functions over a `&impl Snapshot` and a `&mut impl
//! WriteBatch`. It depends on `regatta-engine` only, and knows nothing of raft, actors,
//! networks or clocks: timestamps come in as arguments (TSO format, see [`ts`]).
//!
//! The raftstore runs an action at apply time on a snapshot of the store, and writes the
//! batch with the entry's apply state; the lock-wait queue, the concurrency manager
//! (`max_ts`) and deadlock handling stay above, in the raftstore.
//!
//! ```
//! use regatta_engine::{Engine, MemEngine};
//! use regatta_txn::{commit, prewrite, Mutation, MvccReader, PrewriteRequest};
//!
//! let engine = MemEngine::new();
//! let req = PrewriteRequest {
//!     primary: b"k".to_vec(),
//!     start_ts: 10,
//!     lock_ttl_ms: 3000,
//!     for_update_ts: 0,
//!     min_commit_ts: 0,
//!     async_commit_secondaries: None,
//!     read_versions: vec![],
//!     mutations: vec![Mutation::put(b"k".to_vec(), b"v".to_vec())],
//! };
//! let mut wb = engine.write_batch();
//! prewrite(&engine.snapshot(), &mut wb, &req)?;
//! engine.write(wb, false)?;
//!
//! let snap = engine.snapshot();
//! assert!(MvccReader::new(&snap).get(b"k", 20).unwrap_err().is_retryable(), "locked");
//!
//! let mut wb = engine.write_batch();
//! commit(&engine.snapshot(), &mut wb, &[b"k".to_vec()], 10, 15)?;
//! engine.write(wb, false)?;
//! let snap = engine.snapshot();
//! let reader = MvccReader::new(&snap);
//! assert_eq!(reader.get(b"k", 20)?, Some(b"v".to_vec()));
//! assert_eq!(reader.get(b"k", 14)?, None, "a read below the commit ts");
//! # Ok::<(), regatta_txn::Error>(())
//! ```
//!
//! Invariants it keeps (each module says how):
//! - snapshot isolation for readers: a read at `ts` sees exactly the writes committed at
//!   or below `ts`, or fails with `KeyIsLocked` where a lock could still commit below it;
//! - a transaction's fate is decided once, on its primary: committed (write record) or
//!   rolled back (protected rollback record); no action reverses it;
//! - every stored record decodes or is reported `Corrupt`, never mis-read;
//! - one action per key per batch (see the `actions` module doc).
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod actions;
mod error;
mod gc;
pub mod key;
mod reader;
mod record;
pub mod ts;

pub use actions::{
    acquire_pessimistic_lock, acquire_pessimistic_lock_at, acquire_pessimistic_lock_with_conflict,
    check_secondary_locks, check_txn_status, cleanup, commit, one_pc, pessimistic_rollback,
    prewrite, resolve_lock, rollback, txn_heartbeat, Mutation, OnePcOutcome, Op,
    PessimisticLockRequest, PrewriteOutcome, PrewriteRequest, SecondaryLocksStatus, TxnStatus,
};
pub use error::{Error, Result};
pub use gc::gc;
pub use reader::{MvccReader, VersionedPair};
pub use record::{Lock, LockKind, Write, WriteKind, SHORT_VALUE_MAX_LEN};

#[cfg(test)]
mod tests;
