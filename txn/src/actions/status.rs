//! What a transaction's fate is, asked on its primary (`check_txn_status`), on the keys of
//! an async-commit transaction (`check_secondary_locks`), and how a live transaction keeps
//! its locks alive (`txn_heartbeat`) — TiKV's commands of the same names.
//!
//! Invariant: an answer is final once given. A transaction reported committed or rolled
//! back stays so, because a lock found expired (TTL on the physical part of the TSO) or a
//! primary found with nothing on it is rolled back in the same batch, leaving a protected
//! rollback record that a late prewrite or commit meets.

use super::{ensure_distinct, put_lock, put_rollback, rollback_lock};
use crate::error::{Error, Result};
use crate::reader::{MvccReader, TxnCommitRecord};
use crate::record::{Lock, LockKind};
use regatta_engine::{Snapshot, WriteBatch};

/// The fate of a transaction, from its primary key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnStatus {
    /// The primary lock lives; the lock as it is now (its `min_commit_ts` possibly pushed
    /// above the caller's start ts).
    Alive {
        /// The primary's lock after the check.
        lock: Lock,
        /// Whether this check pushed `min_commit_ts`: the caller may read past the lock.
        min_commit_ts_pushed: bool,
    },
    /// Committed at `commit_ts`.
    Committed {
        /// The commit timestamp.
        commit_ts: u64,
    },
    /// An async-commit primary whose TTL ran out. It is not rolled back here: the
    /// transaction committed if every prewrite landed, so its fate is decided by its
    /// secondaries ([`check_secondary_locks`] on `lock.secondaries`), as in TiKV.
    AsyncCommitUndecided {
        /// The primary's lock.
        lock: Lock,
    },
    /// Rolled back before this check.
    RolledBack,
    /// The primary lock's TTL ran out; this check rolled it back.
    TtlExpiredRolledBack,
    /// No lock and no record on the primary; this check left a protected rollback record.
    NotFoundRolledBack,
}

/// Checks transaction `lock_ts` on its `primary` at `current_ts` (TiKV's
/// `check_txn_status`): rolls back an expired lock (except an async-commit one, see
/// [`TxnStatus::AsyncCommitUndecided`]); pushes a live lock's `min_commit_ts`
/// above `caller_start_ts` (0: no push) so the caller's read need not wait, except for
/// async-commit and pessimistic locks; with nothing on the key, rolls back if
/// `rollback_if_not_exist`, else [`Error::TxnNotFound`]. On `Err` discard the batch.
pub fn check_txn_status<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    primary: &[u8],
    lock_ts: u64,
    caller_start_ts: u64,
    current_ts: u64,
    rollback_if_not_exist: bool,
) -> Result<TxnStatus> {
    let reader = MvccReader::new(snap);
    if let Some(mut lock) = reader.load_lock(primary)? {
        if lock.start_ts == lock_ts {
            if lock.is_expired(current_ts) && lock.use_async_commit {
                return Ok(TxnStatus::AsyncCommitUndecided { lock });
            }
            if lock.is_expired(current_ts) {
                rollback_lock(&reader, wb, primary, &lock)?;
                return Ok(TxnStatus::TtlExpiredRolledBack);
            }
            let push = caller_start_ts != 0
                && caller_start_ts != u64::MAX
                && !lock.use_async_commit
                && lock.kind != LockKind::Pessimistic
                && lock.min_commit_ts <= caller_start_ts;
            if push {
                lock.min_commit_ts = (caller_start_ts + 1).max(current_ts);
                put_lock(wb, primary, &lock);
            }
            return Ok(TxnStatus::Alive {
                lock,
                min_commit_ts_pushed: push,
            });
        }
    }
    match reader.txn_commit_record(primary, lock_ts)? {
        TxnCommitRecord::Committed { commit_ts } => Ok(TxnStatus::Committed { commit_ts }),
        TxnCommitRecord::RolledBack => Ok(TxnStatus::RolledBack),
        TxnCommitRecord::None if rollback_if_not_exist => {
            put_rollback(&reader, wb, primary, lock_ts, true)?;
            Ok(TxnStatus::NotFoundRolledBack)
        }
        TxnCommitRecord::None => Err(Error::TxnNotFound {
            primary: primary.to_vec(),
            start_ts: lock_ts,
        }),
    }
}

/// Extends the TTL of transaction `start_ts`'s lock on `primary` to `advise_ttl_ms` (never
/// shortens it); returns the TTL now in force. [`Error::TxnLockNotFound`] if the lock is
/// gone. On `Err` discard the batch.
pub fn txn_heartbeat<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    primary: &[u8],
    start_ts: u64,
    advise_ttl_ms: u64,
) -> Result<u64> {
    let reader = MvccReader::new(snap);
    match reader.load_lock(primary)? {
        Some(mut lock) if lock.start_ts == start_ts => {
            if advise_ttl_ms > lock.ttl_ms {
                lock.ttl_ms = advise_ttl_ms;
                put_lock(wb, primary, &lock);
            }
            Ok(lock.ttl_ms)
        }
        _ => Err(Error::TxnLockNotFound {
            key: primary.to_vec(),
            start_ts,
        }),
    }
}

/// The state of an async-commit transaction's secondary keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecondaryLocksStatus {
    /// Every key holds its prewrite lock: the transaction may commit at the largest
    /// `min_commit_ts` of these locks.
    Locked(Vec<Lock>),
    /// A key is committed (so all are, at this commit ts).
    Committed {
        /// The commit timestamp.
        commit_ts: u64,
    },
    /// A key is rolled back (possibly by this check): the whole transaction is.
    RolledBack,
}

/// Checks transaction `start_ts` on the secondary `keys` of an async-commit transaction
/// (TiKV's `check_secondary_locks`). A key with no lock and no record gets a protected
/// rollback record, and a key still holding only a pessimistic lock is rolled back: in
/// both cases its prewrite has not landed, so the transaction cannot have committed. Stops
/// at the first committed or rolled-back key. On `Err` discard the batch.
pub fn check_secondary_locks<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    keys: &[Vec<u8>],
    start_ts: u64,
) -> Result<SecondaryLocksStatus> {
    ensure_distinct(keys.iter().map(Vec::as_slice))?;
    let reader = MvccReader::new(snap);
    let mut locks = Vec::with_capacity(keys.len());
    for key in keys {
        match reader.load_lock(key)? {
            Some(lock) if lock.start_ts == start_ts && lock.kind == LockKind::Pessimistic => {
                rollback_lock(&reader, wb, key, &lock)?;
                return Ok(SecondaryLocksStatus::RolledBack);
            }
            Some(lock) if lock.start_ts == start_ts => locks.push(lock),
            _ => match reader.txn_commit_record(key, start_ts)? {
                TxnCommitRecord::Committed { commit_ts } => {
                    return Ok(SecondaryLocksStatus::Committed { commit_ts })
                }
                TxnCommitRecord::RolledBack => return Ok(SecondaryLocksStatus::RolledBack),
                TxnCommitRecord::None => {
                    put_rollback(&reader, wb, key, start_ts, true)?;
                    return Ok(SecondaryLocksStatus::RolledBack);
                }
            },
        }
    }
    Ok(SecondaryLocksStatus::Locked(locks))
}
