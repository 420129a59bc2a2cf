//! Prewrite (Percolator step 1 of 2PC) and 1PC.
//!
//! Prewrite puts a lock naming the primary on every key and stores large values in
//! `default` at `key + start_ts`. It fails on a lock of another transaction
//! ([`Error::KeyIsLocked`]) and on a write of another transaction committed after
//! `start_ts` ([`Error::WriteConflict`]; in a pessimistic transaction only after
//! `for_update_ts`, as TiKV). A write committed exactly at `start_ts` is no conflict: the
//! transaction's snapshot holds it (an async-commit or 1PC commit ts can equal a ts the
//! TSO hands out later, and no read at that ts was served before that commit). It is idempotent: a key that already holds this
//! transaction's prewrite lock, or its commit record, is left alone; a key with its
//! rollback record fails ([`Error::AlreadyRolledBack`]) — the protected rollback is what
//! stops a late prewrite. A pessimistic prewrite turns the transaction's own pessimistic
//! lock into a prewrite lock without a conflict check (holding the lock excluded writers).
//!
//! OCC (optimistic concurrency control with read versions): a prewrite may carry the
//! versions its transaction read ([`PrewriteRequest::read_versions`]; a key's version is
//! the commit ts of its newest `Put`/`Delete`, 0 if it has none). Each read key must be
//! one of the mutations (a key read and not written is a `Lock` mutation), and before it
//! is locked its version must still be the one read: else [`Error::VersionMismatch`] and
//! nothing is written. Validated and locked in one step, a read key stays unchanged from
//! the read to the commit: a writer that committed before the validation changed its
//! version, and one that comes after meets the lock.
//!
//! 1PC (TiKV's `try_one_pc`) runs the same checks and writes the write records at the
//! given commit ts at once, with no lock left behind: for transactions whose keys all lie
//! in one region and go in one batch.

use super::{delete_lock, ensure_distinct, put_commit_write, put_lock};
use crate::error::{Error, Result};
use crate::key;
use crate::reader::{MvccReader, TxnCommitRecord};
use crate::record::{Lock, LockKind, Write, WriteKind, SHORT_VALUE_MAX_LEN};
use regatta_engine::{Cf, Snapshot, WriteBatch};
use std::collections::{HashMap, HashSet};

/// What a transaction does to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write this value.
    Put(Vec<u8>),
    /// Delete the key.
    Delete,
    /// Lock the key without changing it (a read the transaction depends on).
    Lock,
}

/// One key's part of a prewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    /// The user key.
    pub key: Vec<u8>,
    /// What to do to it.
    pub op: Op,
    /// Whether the transaction holds a pessimistic lock on the key that this prewrite
    /// must find (TiKV's `is_pessimistic_lock`).
    pub pessimistic: bool,
}

impl Mutation {
    /// Writes `value` at `key`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Mutation {
        Mutation {
            key: key.into(),
            op: Op::Put(value.into()),
            pessimistic: false,
        }
    }

    /// Deletes `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Mutation {
        Mutation {
            key: key.into(),
            op: Op::Delete,
            pessimistic: false,
        }
    }

    /// Locks `key` without changing it.
    pub fn lock(key: impl Into<Vec<u8>>) -> Mutation {
        Mutation {
            key: key.into(),
            op: Op::Lock,
            pessimistic: false,
        }
    }

    /// The same mutation over the transaction's pessimistic lock on the key.
    pub fn pessimistic(self) -> Mutation {
        Mutation {
            pessimistic: true,
            ..self
        }
    }
}

/// A prewrite (or 1PC) of some of a transaction's keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrewriteRequest {
    /// The transaction's primary key (named in every lock).
    pub primary: Vec<u8>,
    /// The transaction's start timestamp.
    pub start_ts: u64,
    /// Lock time to live in milliseconds.
    pub lock_ttl_ms: u64,
    /// A pessimistic transaction's `for_update_ts`; 0 for optimistic ones.
    pub for_update_ts: u64,
    /// Floor of the commit ts: the caller's `max_ts + 1` (concurrency manager) for async
    /// commit and 1PC; may be 0 otherwise.
    pub min_commit_ts: u64,
    /// Async commit: every secondary key, stored in the primary's lock. `None`: 2PC.
    pub async_commit_secondaries: Option<Vec<Vec<u8>>>,
    /// The keys and what to do to each (each key at most once).
    pub mutations: Vec<Mutation>,
    /// OCC: `(key, version)` for each key the transaction read, validated before it is
    /// locked (see the module doc); each key must be one of `mutations`. Empty for
    /// Percolator transactions.
    pub read_versions: Vec<(Vec<u8>, u64)>,
}

/// What a successful prewrite tells the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrewriteOutcome {
    /// The largest `min_commit_ts` of the transaction's locks on these keys (written now
    /// or by an earlier attempt): the commit ts must be at least this (async commit
    /// commits at the maximum over all its prewrites). 0 when no lock has a floor.
    pub min_commit_ts: u64,
}

/// What a key already holds for this transaction.
enum Prior {
    Nothing,
    OwnPessimisticLock(Lock),
    OwnPrewriteLock(Lock),
    /// Committed by this transaction, at this ts.
    Committed(u64),
}

fn check<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    req: &PrewriteRequest,
    m: &Mutation,
    read_version: Option<u64>,
) -> Result<Prior> {
    if let Some(lock) = reader.load_lock(&m.key)? {
        if lock.start_ts != req.start_ts {
            return Err(Error::KeyIsLocked {
                key: m.key.clone(),
                lock: Box::new(lock),
            });
        }
        return Ok(match lock.kind {
            LockKind::Pessimistic => Prior::OwnPessimisticLock(lock),
            _ => Prior::OwnPrewriteLock(lock),
        });
    }
    let since = reader.writes_since(&m.key, req.start_ts)?;
    match since.own {
        TxnCommitRecord::Committed { commit_ts } => return Ok(Prior::Committed(commit_ts)),
        TxnCommitRecord::RolledBack => {
            return Err(Error::AlreadyRolledBack {
                key: m.key.clone(),
                start_ts: req.start_ts,
            })
        }
        TxnCommitRecord::None => {}
    }
    if let Some(expected) = read_version {
        // OCC validation, after the lock check (a lock of another transaction is
        // `KeyIsLocked`: resolved, the caller sends the prewrite again) and before the
        // write-conflict check, so a read key that changed says so.
        let actual = reader.newest_version(&m.key)?;
        if actual != expected {
            return Err(Error::VersionMismatch {
                key: m.key.clone(),
                expected,
                actual,
            });
        }
    }
    if m.pessimistic {
        return Err(Error::PessimisticLockNotFound {
            key: m.key.clone(),
            start_ts: req.start_ts,
        });
    }
    if let Some((commit_ts, conflict_start_ts)) = since.newest_other {
        // `newest_other` is committed at or after start_ts. The transaction read at
        // start_ts (a pessimistic one at for_update_ts), and a write committed at that ts
        // is in its snapshot: only later commits conflict.
        let read_ts = if req.for_update_ts == 0 {
            req.start_ts
        } else {
            req.for_update_ts
        };
        if commit_ts > read_ts {
            return Err(Error::WriteConflict {
                key: m.key.clone(),
                start_ts: req.start_ts,
                conflict_start_ts,
                conflict_commit_ts: commit_ts,
            });
        }
    }
    Ok(Prior::Nothing)
}

/// The read versions of `req` by key, once each key is checked to be a mutation.
fn read_versions(req: &PrewriteRequest) -> Result<HashMap<&[u8], u64>> {
    let mut out = HashMap::with_capacity(req.read_versions.len());
    if req.read_versions.is_empty() {
        return Ok(out);
    }
    let written: HashSet<&[u8]> = req.mutations.iter().map(|m| m.key.as_slice()).collect();
    for (key, version) in &req.read_versions {
        if !written.contains(key.as_slice()) {
            return Err(Error::InvalidRequest(format!(
                "read version of {key:?}, which is not one of the prewrite's mutations"
            )));
        }
        if out.insert(key.as_slice(), *version).is_some() {
            return Err(Error::InvalidRequest(format!(
                "read version of {key:?} given twice"
            )));
        }
    }
    Ok(out)
}

/// Stores a large value in `default`; returns the short value to inline, if any.
fn store_value(wb: &mut impl WriteBatch, key: &[u8], start_ts: u64, op: &Op) -> Option<Vec<u8>> {
    match op {
        Op::Put(v) if v.len() <= SHORT_VALUE_MAX_LEN => Some(v.clone()),
        Op::Put(v) => {
            wb.put(Cf::Default, &key::version_key(key, start_ts), v);
            None
        }
        Op::Delete | Op::Lock => None,
    }
}

fn lock_kind(op: &Op) -> LockKind {
    match op {
        Op::Put(_) => LockKind::Put,
        Op::Delete => LockKind::Delete,
        Op::Lock => LockKind::Lock,
    }
}

/// Prewrites `req.mutations`: see the module doc. On `Err` discard the batch.
pub fn prewrite<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    req: &PrewriteRequest,
) -> Result<PrewriteOutcome> {
    ensure_distinct(req.mutations.iter().map(|m| m.key.as_slice()))?;
    let versions = read_versions(req)?;
    let reader = MvccReader::new(snap);
    let async_commit = req.async_commit_secondaries.is_some();
    // A pessimistic transaction commits above its `for_update_ts` (client-go's
    // `minCommitTS`): its locks may have been taken at another transaction's commit ts
    // (a hand-over), and a commit ts at or below it would replace that version or hide
    // under it. The lock says so, and a commit below is `CommitTsExpired`.
    let lock_min_commit_ts = if async_commit {
        req.min_commit_ts
            .max(req.start_ts.saturating_add(1))
            .max(req.for_update_ts.saturating_add(1))
    } else if req.for_update_ts > 0 {
        req.min_commit_ts.max(req.for_update_ts.saturating_add(1))
    } else {
        req.min_commit_ts
    };
    let mut outcome = PrewriteOutcome { min_commit_ts: 0 };
    for m in &req.mutations {
        // A pessimistic lock handed over at a newer commit ts than the request says (a
        // client that missed `locked_with_conflict_ts`) still commits above it.
        let (ttl_ms, locked_at) =
            match check(&reader, req, m, versions.get(m.key.as_slice()).copied())? {
                Prior::Committed(_) => continue,
                // A retry: its answer names the lock's floor again (a lost first
                // answer must not lose it).
                Prior::OwnPrewriteLock(lock) => {
                    outcome.min_commit_ts = outcome.min_commit_ts.max(lock.min_commit_ts);
                    continue;
                }
                Prior::OwnPessimisticLock(lock) => {
                    (req.lock_ttl_ms.max(lock.ttl_ms), lock.for_update_ts)
                }
                Prior::Nothing => (req.lock_ttl_ms, 0),
            };
        if async_commit && locked_at > req.for_update_ts {
            // The commit ts of an async commit is its locks' floor, answered without a
            // TSO wait: a floor above a hand-over's commit ts (which a 1PC may have
            // chosen above anything the TSO handed out) could pass the TSO. The client
            // goes on once the TSO is past it, with that for_update_ts.
            return Err(Error::CommitTsExpired {
                key: m.key.clone(),
                start_ts: req.start_ts,
                commit_ts: req.min_commit_ts,
                min_commit_ts: locked_at.saturating_add(1),
            });
        }
        let mut lock = Lock::new(lock_kind(&m.op), req.primary.clone(), req.start_ts, ttl_ms);
        lock.for_update_ts = req.for_update_ts.max(locked_at);
        lock.min_commit_ts = lock_min_commit_ts;
        if locked_at > req.for_update_ts {
            lock.min_commit_ts = lock.min_commit_ts.max(locked_at.saturating_add(1));
        }
        // The answer names the highest floor of the locks it wrote.
        outcome.min_commit_ts = outcome.min_commit_ts.max(lock.min_commit_ts);
        lock.short_value = store_value(wb, &m.key, req.start_ts, &m.op);
        if let Some(secondaries) = &req.async_commit_secondaries {
            lock.use_async_commit = true;
            if m.key == req.primary {
                lock.secondaries = secondaries.clone();
            }
            outcome.min_commit_ts = outcome.min_commit_ts.max(lock_min_commit_ts);
        }
        put_lock(wb, &m.key, &lock);
    }
    Ok(outcome)
}

/// What a 1PC prewrite did ([`one_pc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnePcOutcome {
    /// The transaction committed at this ts.
    Committed(u64),
    /// An earlier attempt of the same prewrite landed as a plain prewrite (it was
    /// proposed when 1PC was not possible, and its answer was lost): its locks stand and
    /// nothing was written; the client commits by 2PC at a ts of at least `min_commit_ts`.
    Prewritten {
        /// The locks' floor for the commit ts (0: none beyond the start ts).
        min_commit_ts: u64,
    },
}

/// Prewrites and commits `req.mutations` at `commit_ts` in one step (1PC): the checks of
/// [`prewrite`], then write records at `commit_ts` (and large values at `start_ts`), and
/// the transaction's pessimistic locks removed. Returns the ts the transaction committed
/// at: `commit_ts`, or, for a retried 1PC that finds every key already committed by this
/// transaction, the ts of that earlier commit (nothing is written; a retry must not
/// report a commit ts the data does not carry); a retry that finds every key locked by
/// an earlier plain prewrite of this transaction writes nothing and says so
/// ([`OnePcOutcome::Prewritten`]). On `Err` discard the batch.
pub fn one_pc<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    req: &PrewriteRequest,
    commit_ts: u64,
) -> Result<OnePcOutcome> {
    ensure_distinct(req.mutations.iter().map(|m| m.key.as_slice()))?;
    if commit_ts <= req.start_ts || commit_ts <= req.for_update_ts {
        return Err(Error::InvalidRequest(format!(
            "1PC commit ts {commit_ts} not after start ts {} / for_update_ts {}",
            req.start_ts, req.for_update_ts
        )));
    }
    let versions = read_versions(req)?;
    let reader = MvccReader::new(snap);
    let mut earlier: Option<u64> = None;
    let mut fresh = 0;
    // Keys an earlier plain prewrite of this transaction locked, and their floor.
    let (mut prewritten, mut floor) = (0, 0);
    for m in &req.mutations {
        match check(&reader, req, m, versions.get(m.key.as_slice()).copied())? {
            Prior::Committed(ts) => {
                earlier = Some(ts);
                continue;
            }
            Prior::OwnPrewriteLock(lock) => {
                prewritten += 1;
                floor = floor.max(lock.min_commit_ts);
                continue;
            }
            // Handed over at a commit ts at or above this one: the 1PC would hide under
            // the version it read (the caller prewrites instead and commits by 2PC).
            Prior::OwnPessimisticLock(lock) if commit_ts <= lock.for_update_ts => {
                return Err(Error::CommitTsExpired {
                    key: m.key.clone(),
                    start_ts: req.start_ts,
                    commit_ts,
                    min_commit_ts: lock.for_update_ts.saturating_add(1),
                })
            }
            Prior::OwnPessimisticLock(_) => delete_lock(wb, &m.key),
            Prior::Nothing => {}
        }
        if commit_ts < req.min_commit_ts {
            return Err(Error::CommitTsExpired {
                key: m.key.clone(),
                start_ts: req.start_ts,
                commit_ts,
                min_commit_ts: req.min_commit_ts,
            });
        }
        let kind = match m.op {
            Op::Put(_) => WriteKind::Put,
            Op::Delete => WriteKind::Delete,
            Op::Lock => WriteKind::Lock,
        };
        let short = store_value(wb, &m.key, req.start_ts, &m.op);
        put_commit_write(
            &reader,
            wb,
            &m.key,
            commit_ts,
            Write::new(kind, req.start_ts, short),
        )?;
        fresh += 1;
    }
    // A prewrite writes all its keys in one step: a retry finds all or none of them
    // committed, or all or none locked.
    if prewritten > 0 {
        if prewritten == req.mutations.len() {
            return Ok(OnePcOutcome::Prewritten {
                min_commit_ts: floor,
            });
        }
        return Err(Error::InvalidRequest(format!(
            "1PC of txn {} finds its own prewrite lock on some keys and not on others",
            req.start_ts
        )));
    }
    match earlier {
        None => Ok(OnePcOutcome::Committed(commit_ts)),
        Some(ts) if fresh == 0 => Ok(OnePcOutcome::Committed(ts)),
        Some(ts) => Err(Error::InvalidRequest(format!(
            "1PC of txn {} finds some keys committed (at {ts}) and others not",
            req.start_ts
        ))),
    }
}
