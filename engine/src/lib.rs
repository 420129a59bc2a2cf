//! Regatta's storage layer: one RocksDB per store, shared by every region replica on it.
//!
//! This crate owns the bytes on disk: the column families ([`Cf`]: `raft`, `default`,
//! `write`, `lock`), the key layout ([`keys`]), raw KV records ([`RawValue`]), the raft log
//! storage of each region ([`PeerStorage`], a `raft::Storage`), and region snapshots
//! ([`snapshot`]). It depends on no workspace crate but `regatta-proto`, and knows
//! nothing of actors, networks or the placement driver.
//!
//! The layers above read and write through a seam of three small traits: an [`Engine`]
//! opens a point-in-time [`Snapshot`] (get, seek, scan per column family) and writes a
//! [`WriteBatch`] atomically. [`RocksEngine`] is the store's RocksDB (its `lock` column
//! family also kept in memory for the live view's reads); [`MemEngine`] is its
//! in-memory twin (an ordered map per column family), and one conformance suite runs
//! against both. Apply is written against the traits, so it is unit-tested on memory.
//!
//! ```
//! use regatta_engine::{Cf, Engine, MemEngine, Snapshot, WriteBatch};
//!
//! let engine = MemEngine::new();
//! let before = engine.snapshot();
//! let mut wb = engine.write_batch();
//! wb.put(Cf::Default, b"k", b"v");
//! engine.write(wb, false)?;
//! assert_eq!(engine.snapshot().get(Cf::Default, b"k")?, Some(b"v".to_vec()));
//! assert_eq!(before.get(Cf::Default, b"k")?, None, "a snapshot is point-in-time");
//! # Ok::<(), regatta_engine::Error>(())
//! ```
//!
//! Invariants it keeps (see each module for detail):
//! - a region's applied data and its apply state are written in one batch;
//! - only the LogWriter writes synced batches (log entries + HardState), and the applied
//!   index never exceeds the durable log (raft-rs caps committed entries at the persisted
//!   index), so the WAL order makes every recovered state consistent;
//! - a snapshot's `(index, term)` is exactly the state of the data it carries.
#![deny(missing_docs)]

mod erased;
mod error;
pub mod keys;
mod lock_mirror;
mod mem;
pub mod memcomparable;
mod overlay;
mod raw;
mod rocks;
pub mod snapshot;
mod storage;
mod traits;

pub use erased::{DynEngine, DynSnapshot, DynWriteBatch, ScanVisitor};
pub use error::{Error, Result};
pub use mem::{MemEngine, MemSnapshot, MemWriteBatch};
pub use overlay::{OpBatch, Overlay, OverlayOp};
pub use raw::{decode_raw_value, encode_raw_value, RawPair, RawValue};
pub use rocks::{EngineConfig, RocksEngine, RocksLive, RocksSnapshot, RocksWriteBatch};
pub use storage::{
    bootstrap_region, initial_region, read_gc_safe_point, write_apply_state, write_gc_safe_point,
    write_initial_state, LogWrite, PeerStorage, RAFT_INIT_LOG_INDEX, RAFT_INIT_LOG_TERM,
};
pub use traits::{decode_msg, Cf, Engine, Snapshot, WriteBatch};

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod lock_mirror_tests;
