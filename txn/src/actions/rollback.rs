//! Rollback and cleanup: undo a transaction on some keys so it can never commit there.
//!
//! Each key ends with the transaction's rollback record at `key + start_ts` (or, where
//! another transaction committed at that very ts, the record's `overlapped_rollback` flag;
//! an unprotected one is then dropped: `actions::put_rollback`) and without its lock or
//! large value. The record is protected where the lock was the primary, the
//! transaction pessimistic, or no lock was there at all — in that last case a prewrite may
//! still be in flight, and the record is what makes it fail ([`Error::AlreadyRolledBack`]
//! in prewrite), Percolator's "write a rollback so a late prewrite cannot land".
//! Rolling back a committed transaction fails ([`Error::Committed`]); rolling back twice
//! is harmless.
//!
//! cleanup is the conditional form a reader uses on a transaction's primary key (TiKV's
//! `Cleanup`): it rolls back only if the lock's TTL has run out at `current_ts`, else
//! reports the lock. It refuses a secondary's lock ([`Error::InvalidRequest`]): only the
//! primary decides a transaction, and an expired secondary of a transaction whose primary
//! committed must be committed, not rolled back (resolve it through the primary with
//! `check_txn_status` and `resolve_lock`).

use super::{ensure_distinct, put_rollback, rollback_lock};
use crate::error::{Error, Result};
use crate::reader::{MvccReader, TxnCommitRecord};
use regatta_engine::{Snapshot, WriteBatch};

/// Rolls back transaction `start_ts` on `key`; with `current_ts` > 0, only if its lock has
/// expired by then (else [`Error::KeyIsLocked`]).
fn rollback_key<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    wb: &mut impl WriteBatch,
    key: &[u8],
    start_ts: u64,
    current_ts: u64,
) -> Result<()> {
    if let Some(lock) = reader.load_lock(key)? {
        if lock.start_ts == start_ts {
            if current_ts > 0 && !lock.is_expired(current_ts) {
                return Err(Error::KeyIsLocked {
                    key: key.to_vec(),
                    lock: Box::new(lock),
                });
            }
            return rollback_lock(reader, wb, key, &lock);
        }
    }
    match reader.txn_commit_record(key, start_ts)? {
        TxnCommitRecord::Committed { commit_ts } => Err(Error::Committed {
            key: key.to_vec(),
            start_ts,
            commit_ts,
        }),
        TxnCommitRecord::RolledBack => Ok(()),
        TxnCommitRecord::None => put_rollback(reader, wb, key, start_ts, true),
    }
}

/// Rolls back transaction `start_ts` on `keys`, whatever its locks' TTL. On `Err` discard
/// the batch.
pub fn rollback<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    keys: &[Vec<u8>],
    start_ts: u64,
) -> Result<()> {
    ensure_distinct(keys.iter().map(Vec::as_slice))?;
    let reader = MvccReader::new(snap);
    for key in keys {
        rollback_key(&reader, wb, key, start_ts, 0)?;
    }
    Ok(())
}

/// Rolls back transaction `start_ts` on its primary `key` if its lock there expired at
/// `current_ts` (or there is no lock); [`Error::KeyIsLocked`] while the lock lives,
/// [`Error::InvalidRequest`] when the lock is a secondary's. On `Err` discard the batch.
pub fn cleanup<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    key: &[u8],
    start_ts: u64,
    current_ts: u64,
) -> Result<()> {
    let reader = MvccReader::new(snap);
    if let Some(lock) = reader.load_lock(key)? {
        if lock.start_ts == start_ts && lock.primary != key {
            return Err(Error::InvalidRequest(format!(
                "cleanup of {key:?}, a secondary of txn {start_ts} (primary {:?}): resolve \
                 it through its primary",
                lock.primary
            )));
        }
        if lock.start_ts == start_ts && lock.use_async_commit {
            // Committed if every prewrite landed: only its secondaries can tell
            // (`check_txn_status`, then `check_secondary_locks`).
            return Err(Error::InvalidRequest(format!(
                "cleanup of {key:?}, the primary of async-commit txn {start_ts}: its fate is \
                 decided by check_secondary_locks"
            )));
        }
    }
    rollback_key(&reader, wb, key, start_ts, current_ts.max(1))
}
