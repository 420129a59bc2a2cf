//! Commit (Percolator step 2 of 2PC) and resolve_lock.
//!
//! Commit turns the transaction's lock on each key into a write record at `commit_ts` and
//! removes the lock, in one batch; committing the primary is the transaction's commit
//! point. It is idempotent (a key already committed by the transaction is left alone) and
//! refuses what cannot be committed: a key with neither the lock nor a record of the
//! transaction ([`Error::TxnLockNotFound`] — the lock was never written, or cleaned up and
//! its record collected), a rolled-back transaction ([`Error::AlreadyRolledBack`]), a
//! commit ts below the lock's `min_commit_ts` ([`Error::CommitTsExpired`]).
//!
//! resolve_lock is what a reader (or GC) does once it knows the fate of a transaction from
//! its primary: commit or roll back that transaction's locks on the given keys. Keys that
//! no longer hold its lock are skipped, so resolving twice is harmless.

use super::{commit_lock, delete_lock, ensure_distinct, rollback_lock};
use crate::error::{Error, Result};
use crate::reader::{MvccReader, TxnCommitRecord};
use crate::record::LockKind;
use regatta_engine::{Snapshot, WriteBatch};

/// Commits transaction `start_ts` at `commit_ts` on `keys`. Returns the ts the keys are
/// committed at: `commit_ts`, unless a key was already committed by the transaction at
/// another ts (an earlier attempt: a 1PC whose answer was lost), whose ts it returns.
/// On `Err` discard the batch.
pub fn commit<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    keys: &[Vec<u8>],
    start_ts: u64,
    commit_ts: u64,
) -> Result<u64> {
    ensure_distinct(keys.iter().map(Vec::as_slice))?;
    if commit_ts <= start_ts {
        return Err(Error::InvalidRequest(format!(
            "commit ts {commit_ts} not after start ts {start_ts}"
        )));
    }
    let reader = MvccReader::new(snap);
    let mut committed_at = commit_ts;
    for key in keys {
        match reader.load_lock(key)? {
            Some(lock) if lock.start_ts == start_ts => {
                commit_lock(&reader, wb, key, lock, commit_ts)?;
            }
            // No lock of ours: a repeated commit, or something went wrong.
            _ => match reader.txn_commit_record(key, start_ts)? {
                TxnCommitRecord::Committed { commit_ts: at } => committed_at = at,
                TxnCommitRecord::RolledBack => {
                    return Err(Error::AlreadyRolledBack {
                        key: key.clone(),
                        start_ts,
                    })
                }
                TxnCommitRecord::None => {
                    return Err(Error::TxnLockNotFound {
                        key: key.clone(),
                        start_ts,
                    })
                }
            },
        }
    }
    Ok(committed_at)
}

/// Resolves the locks of transaction `start_ts` on `keys`: commits them at `commit_ts`,
/// or rolls them back when `commit_ts` is 0. When committing, a pessimistic lock the
/// transaction never prewrote is removed without a record. Returns how many locks it resolved. On `Err`
/// discard the batch.
pub fn resolve_lock<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    keys: &[Vec<u8>],
    start_ts: u64,
    commit_ts: u64,
) -> Result<usize> {
    ensure_distinct(keys.iter().map(Vec::as_slice))?;
    if commit_ts != 0 && commit_ts <= start_ts {
        return Err(Error::InvalidRequest(format!(
            "resolve commit ts {commit_ts} not after start ts {start_ts}"
        )));
    }
    let reader = MvccReader::new(snap);
    let mut resolved = 0;
    for key in keys {
        let lock = match reader.load_lock(key)? {
            Some(lock) if lock.start_ts == start_ts => lock,
            _ => continue,
        };
        if commit_ts == 0 {
            rollback_lock(&reader, wb, key, &lock)?;
        } else if lock.kind == LockKind::Pessimistic {
            // Locked but never prewritten: the committed transaction did not write this
            // key (a statement retried after a conflict), so the lock just goes. TiKV
            // leaves such locks behind; dropping them spares a second resolve.
            delete_lock(wb, key);
        } else {
            commit_lock(&reader, wb, key, lock, commit_ts)?;
        }
        resolved += 1;
    }
    Ok(resolved)
}
