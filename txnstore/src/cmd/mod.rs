//! Transactional commands (`txnpb`, Percolator) on a store: validation, reads from
//! the applied state, and writes executed at apply by `regatta-txn`'s actions.
//!
//! The path of a command:
//! - validated with the region (`validate`: sizes, keys inside the region, ts nonzero,
//!   no key twice);
//! - a read (get, batch get, scan at `start_ts`) is served by the leader like a
//!   linearizable raw read — ReadIndex or its lease — from an engine snapshot through
//!   `MvccReader` (`read`), after the leader raised its `max_ts` to `start_ts`;
//! - a write is proposed as a raft command (the 1PC commit ts chosen by the leader at
//!   propose time rides in `RaftCmd.one_pc_commit_ts`) and executed at apply on every
//!   replica, over the apply snapshot overlaid with the earlier commands of the same
//!   apply call (`write`), under the same region-epoch check as raw writes;
//! - below the region's GC safe point (raised through the log, see `apply.rs`), a read is
//!   answered `key_error.below_gc_safe_point` and so is a prewrite or pessimistic lock
//!   whose start ts is at or below it: the versions and rollback records it would be
//!   checked against may be gone;
//! - a failure the transaction decides is the answer's `key_error` (`wire`); store
//!   errors stay in `kvrpcpb.Error`.
//!
//! Commands on the same keys never interleave: the log orders them and apply runs them
//! one after the other, each seeing the ones before.

mod read;
mod validate;
mod wire;
mod write;

pub(crate) use read::{check_read_keys, is_txn_read, read_ts, read_txn};
pub(crate) use validate::validate_txn;
pub(crate) use wire::{key_error_response, lock_info, ts_too_far_ahead};
pub(crate) use write::{
    apply_txn, install_leader_locks, keys_of, pessimistic_lock_request, pessimistic_lock_response,
    releasing, TxnWrite,
};

#[cfg(test)]
mod tests;
