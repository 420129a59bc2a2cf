//! The Percolator actions as pure functions: each reads through one `&impl Snapshot` (via
//! [`MvccReader`]) and adds its writes to one `&mut impl WriteBatch`; it performs no I/O of
//! its own, so it is tested as data on `MemEngine`.
//!
//! Batch discipline (the engine's batches cannot be read back): an action reads only the
//! snapshot and writes each key at most once, so
//! - **one action per key per batch**: the caller writes the batch (or opens a new snapshot
//!   that sees it) before running another action on any of the same keys; actions on
//!   disjoint keys may share a batch and a snapshot;
//! - a key may appear only once in one action's key list ([`Error::InvalidRequest`]
//!   otherwise);
//! - when an action returns `Err`, the batch may hold part of its writes: discard it.
//!
//! The shared steps below (write a lock, commit a lock, roll a lock back, leave a rollback
//! record) are the only places that touch the data CFs, so every action keeps the record
//! invariants of `record/`.

mod commit;
mod pessimistic;
mod prewrite;
mod rollback;
mod status;

pub use commit::{commit, resolve_lock};
pub use pessimistic::{
    acquire_pessimistic_lock, acquire_pessimistic_lock_at, acquire_pessimistic_lock_with_conflict,
    pessimistic_rollback, PessimisticLockRequest,
};
pub use prewrite::{
    one_pc, prewrite, Mutation, OnePcOutcome, Op, PrewriteOutcome, PrewriteRequest,
};
pub use rollback::{cleanup, rollback};
pub use status::{
    check_secondary_locks, check_txn_status, txn_heartbeat, SecondaryLocksStatus, TxnStatus,
};

use crate::error::{Error, Result};
use crate::key;
use crate::reader::MvccReader;
use crate::record::{Lock, LockKind, Write, WriteKind};
use regatta_engine::{Cf, Snapshot, WriteBatch};
use std::collections::HashSet;

/// Refuses a key list with a key twice (see the batch discipline above).
fn ensure_distinct<'k>(keys: impl IntoIterator<Item = &'k [u8]>) -> Result<()> {
    let mut seen = HashSet::new();
    for k in keys {
        if !seen.insert(k) {
            return Err(Error::InvalidRequest(format!(
                "key {k:?} appears twice in one action"
            )));
        }
    }
    Ok(())
}

fn put_lock(wb: &mut impl WriteBatch, key: &[u8], lock: &Lock) {
    wb.put(Cf::Lock, &key::lock_key(key), &lock.encode());
}

fn delete_lock(wb: &mut impl WriteBatch, key: &[u8]) {
    wb.delete(Cf::Lock, &key::lock_key(key));
}

fn put_write(wb: &mut impl WriteBatch, key: &[u8], commit_ts: u64, write: &Write) {
    wb.put(
        Cf::Write,
        &key::version_key(key, commit_ts),
        &write.encode(),
    );
}

/// Writes `write` at `key + commit_ts`, keeping a rollback record already in that slot
/// (another transaction started at our commit ts and was rolled back) as the overlapped
/// rollback flag, as TiKV's commit does.
fn put_commit_write<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    wb: &mut impl WriteBatch,
    key: &[u8],
    commit_ts: u64,
    mut write: Write,
) -> Result<()> {
    if let Some(existing) = reader.write_at(key, commit_ts)? {
        if existing.kind == WriteKind::Rollback || existing.overlapped_rollback {
            write.overlapped_rollback = true;
        }
    }
    put_write(wb, key, commit_ts, &write);
    Ok(())
}

/// Commits `lock` (held by the transaction on `key`) at `commit_ts`: Percolator's commit
/// step — the write record becomes visible and the lock goes, in one batch.
fn commit_lock<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    wb: &mut impl WriteBatch,
    key: &[u8],
    lock: Lock,
    commit_ts: u64,
) -> Result<()> {
    let kind = match WriteKind::from_lock(lock.kind) {
        Some(kind) => kind,
        // TiKV: a pessimistic lock that was never prewritten cannot commit.
        None => {
            return Err(Error::TxnLockNotFound {
                key: key.to_vec(),
                start_ts: lock.start_ts,
            })
        }
    };
    if commit_ts < lock.min_commit_ts {
        return Err(Error::CommitTsExpired {
            key: key.to_vec(),
            start_ts: lock.start_ts,
            commit_ts,
            min_commit_ts: lock.min_commit_ts,
        });
    }
    let write = Write::new(kind, lock.start_ts, lock.short_value);
    put_commit_write(reader, wb, key, commit_ts, write)?;
    delete_lock(wb, key);
    Ok(())
}

/// Leaves the rollback record of transaction `start_ts` on `key` (at `key + start_ts`).
/// If another transaction's commit record holds that slot, a protected rollback marks it
/// `overlapped_rollback` and an unprotected one is dropped, as in TiKV. A late prewrite of
/// the transaction on this key may then land again (a commit at exactly its start ts is no
/// write conflict): an orphan lock that nothing can commit, since an unprotected rollback
/// is a secondary's and the transaction's fate is its primary's protected record, and that
/// resolvers roll back again.
fn put_rollback<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    wb: &mut impl WriteBatch,
    key: &[u8],
    start_ts: u64,
    protected: bool,
) -> Result<()> {
    match reader.write_at(key, start_ts)? {
        None => put_write(wb, key, start_ts, &Write::rollback(start_ts, protected)),
        Some(existing) if existing.start_ts == start_ts => {} // our rollback is there
        Some(mut existing) => {
            if protected && !existing.overlapped_rollback {
                existing.overlapped_rollback = true;
                put_write(wb, key, start_ts, &existing);
            }
        }
    }
    Ok(())
}

/// Rolls back `lock` of its transaction on `key`: drops its large value, leaves a rollback
/// record (protected on the primary and for pessimistic transactions, as TiKV's
/// `rollback_lock`), removes the lock.
fn rollback_lock<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    wb: &mut impl WriteBatch,
    key: &[u8],
    lock: &Lock,
) -> Result<()> {
    if lock.kind == LockKind::Put && lock.short_value.is_none() {
        wb.delete(Cf::Default, &key::version_key(key, lock.start_ts));
    }
    let protected = lock.primary == key || lock.for_update_ts > 0;
    put_rollback(reader, wb, key, lock.start_ts, protected)?;
    delete_lock(wb, key);
    Ok(())
}
