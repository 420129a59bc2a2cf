//! Pessimistic locks (TiKV's pessimistic transactions): `acquire_pessimistic_lock` takes a
//! lock as the transaction reads, at `for_update_ts`, so the later prewrite cannot meet a
//! write conflict; `pessimistic_rollback` drops such locks when the statement that took
//! them fails.
//!
//! Acquiring fails on another transaction's lock ([`Error::KeyIsLocked`]; the lock-wait
//! queue above decides whether to wait) and on a write of another transaction committed
//! after `for_update_ts` ([`Error::WriteConflict`]: the statement retries with a newer
//! `for_update_ts`). Acquiring again raises the lock's `for_update_ts`. A pessimistic lock
//! blocks writers but not readers, and leaves no record when rolled back.

use super::{delete_lock, ensure_distinct, put_lock};
use crate::error::{Error, Result};
use crate::reader::{MvccReader, TxnCommitRecord};
use crate::record::{Lock, LockKind};
use regatta_engine::{Snapshot, WriteBatch};

/// A request for pessimistic locks on some keys of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PessimisticLockRequest {
    /// The transaction's primary key.
    pub primary: Vec<u8>,
    /// The transaction's start timestamp.
    pub start_ts: u64,
    /// The statement's read timestamp: writes committed after it conflict.
    pub for_update_ts: u64,
    /// Lock time to live in milliseconds.
    pub lock_ttl_ms: u64,
    /// Whether to return each key's newest committed value.
    pub need_value: bool,
    /// The keys to lock (each at most once).
    pub keys: Vec<Vec<u8>>,
}

/// Locks `req.keys` for transaction `req.start_ts`. Returns, per key in order, its newest
/// committed value when `need_value` (else `None`s). On `Err` discard the batch.
pub fn acquire_pessimistic_lock<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    req: &PessimisticLockRequest,
) -> Result<Vec<Option<Vec<u8>>>> {
    acquire_pessimistic_lock_at(snap, wb, req).map(|(values, _)| values)
}

/// [`acquire_pessimistic_lock`], also returning the `for_update_ts` the keys are locked
/// at: the request's, or higher where a key already held this transaction's lock taken
/// at a higher one (an earlier attempt whose answer was lost was handed the key at a
/// conflict ts). The transaction must use it from then on, as after a hand-over.
pub fn acquire_pessimistic_lock_at<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    req: &PessimisticLockRequest,
) -> Result<(Vec<Option<Vec<u8>>>, u64)> {
    let mut locked_at = req.for_update_ts;
    ensure_distinct(req.keys.iter().map(Vec::as_slice))?;
    if req.for_update_ts < req.start_ts {
        return Err(Error::InvalidRequest(format!(
            "for_update_ts {} below start ts {}",
            req.for_update_ts, req.start_ts
        )));
    }
    let reader = MvccReader::new(snap);
    let mut values = Vec::with_capacity(req.keys.len());
    for key in &req.keys {
        match reader.load_lock(key)? {
            Some(lock) if lock.start_ts != req.start_ts => {
                return Err(Error::KeyIsLocked {
                    key: key.clone(),
                    lock: Box::new(lock),
                })
            }
            Some(mut lock) => {
                // Our own lock: while it is held no other transaction could commit here.
                locked_at = locked_at.max(lock.for_update_ts);
                if lock.kind == LockKind::Pessimistic && lock.for_update_ts < req.for_update_ts {
                    lock.for_update_ts = req.for_update_ts;
                    lock.ttl_ms = lock.ttl_ms.max(req.lock_ttl_ms);
                    put_lock(wb, key, &lock);
                }
            }
            None => {
                let since = reader.writes_since(key, req.start_ts)?;
                match since.own {
                    TxnCommitRecord::RolledBack => {
                        return Err(Error::AlreadyRolledBack {
                            key: key.clone(),
                            start_ts: req.start_ts,
                        })
                    }
                    TxnCommitRecord::Committed { commit_ts } => {
                        return Err(Error::Committed {
                            key: key.clone(),
                            start_ts: req.start_ts,
                            commit_ts,
                        })
                    }
                    TxnCommitRecord::None => {}
                }
                if let Some((commit_ts, conflict_start_ts)) = since.newest_other {
                    if commit_ts > req.for_update_ts {
                        return Err(Error::WriteConflict {
                            key: key.clone(),
                            start_ts: req.start_ts,
                            conflict_start_ts,
                            conflict_commit_ts: commit_ts,
                        });
                    }
                }
                let mut lock = Lock::new(
                    LockKind::Pessimistic,
                    req.primary.clone(),
                    req.start_ts,
                    req.lock_ttl_ms,
                );
                lock.for_update_ts = req.for_update_ts;
                put_lock(wb, key, &lock);
            }
        }
        values.push(if req.need_value {
            reader.committed_value(key, u64::MAX)?
        } else {
            None
        });
    }
    Ok((values, locked_at))
}

/// Locks `req.keys` as [`acquire_pessimistic_lock`] does, except that a write of another
/// transaction committed after `req.for_update_ts` is no conflict: the locks are taken at
/// the newest such commit ts instead (TiKV's "lock with conflict", from its fair locking).
/// Returns the values (newest committed, so including that write) and the
/// `for_update_ts` the locks were taken at, `>= req.for_update_ts`; the transaction must
/// use it from then on, so that it commits above the write it now read.
///
/// This is what the leader proposes for a waiter it hands a released key to: the holder
/// it waited for usually committed after the waiter's `for_update_ts`, and failing the
/// hand-over on that write would send the waiter back for another round trip (the
/// retries of tikv#13298). Other transactions' locks still fail it (`KeyIsLocked`).
pub fn acquire_pessimistic_lock_with_conflict<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    req: &PessimisticLockRequest,
) -> Result<(Vec<Option<Vec<u8>>>, u64)> {
    let reader = MvccReader::new(snap);
    let mut for_update_ts = req.for_update_ts;
    for key in &req.keys {
        if let Some((commit_ts, _)) = reader.writes_since(key, req.start_ts)?.newest_other {
            for_update_ts = for_update_ts.max(commit_ts);
        }
    }
    let raised = PessimisticLockRequest {
        for_update_ts,
        ..req.clone()
    };
    acquire_pessimistic_lock_at(snap, wb, &raised)
}

/// Removes transaction `start_ts`'s pessimistic locks on `keys` taken at or below
/// `for_update_ts` (a newer statement's locks stay). Prewrite locks and other
/// transactions' locks are left alone; nothing is recorded. Returns how many it removed.
pub fn pessimistic_rollback<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    keys: &[Vec<u8>],
    start_ts: u64,
    for_update_ts: u64,
) -> Result<usize> {
    ensure_distinct(keys.iter().map(Vec::as_slice))?;
    let reader = MvccReader::new(snap);
    let mut removed = 0;
    for key in keys {
        if let Some(lock) = reader.load_lock(key)? {
            if lock.start_ts == start_ts
                && lock.kind == LockKind::Pessimistic
                && lock.for_update_ts <= for_update_ts
            {
                delete_lock(wb, key);
                removed += 1;
            }
        }
    }
    Ok(removed)
}
