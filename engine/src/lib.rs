//! Regatta's storage layer: one RocksDB per store, shared by every region replica on it.
//!
//! This crate owns the bytes on disk: the column families (`raft`, `default`, `write`,
//! `lock`), the key layout ([`keys`]), raw KV records ([`RawValue`]), the raft log storage
//! of each region ([`PeerStorage`], a `raft::Storage`), and region snapshots
//! ([`snapshot`]). It depends on no workspace crate but `regatta-proto`, and knows
//! nothing of actors, networks or the placement driver.
//!
//! Invariants it keeps (see each module for detail):
//! - a region's applied data and its apply state are written in one batch;
//! - only the LogWriter writes synced batches (log entries + HardState), and the applied
//!   index never exceeds the durable log (raft-rs caps committed entries at the persisted
//!   index), so the WAL order makes every recovered state consistent;
//! - a snapshot's `(index, term)` is exactly the state of the data it carries.
#![deny(missing_docs)]

mod engine;
mod error;
pub mod keys;
mod raw;
pub mod snapshot;
mod storage;

pub use engine::{decode_msg, Cf, Engine, EngineConfig, EngineSnapshot, WriteBatch};
pub use error::{Error, Result};
pub use raw::{decode_raw_value, encode_raw_value, RawPair, RawValue};
pub use storage::{
    bootstrap_region, write_initial_state, LogWrite, PeerStorage, RAFT_INIT_LOG_INDEX,
    RAFT_INIT_LOG_TERM,
};
