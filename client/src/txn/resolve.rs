//! Lock resolution: what a reader or writer does when it meets another transaction's lock
//! (Percolator's "lock cleanup", as TiKV client-go's `LockResolver`).
//!
//! The fate of a transaction is decided on its primary key only. So for a lock met on
//! any key the client asks the primary (`check_txn_status`, with `current_ts` from the
//! TSO so the store can judge the TTL on the physical part of the timestamps), then:
//! - committed: commits the met lock at the primary's commit ts (`resolve_lock`), so the
//!   secondaries of a committed transaction become visible;
//! - rolled back (or found expired and rolled back by the check itself): rolls the met
//!   lock back (`resolve_lock` with commit ts 0);
//! - alive: nothing; the caller waits with backoff and retries, until its deadline
//!   ([`Error::KeyIsLocked`]).
//!
//! A primary with no lock and no record may be one whose prewrite has not landed yet:
//! the check rolls it back (`rollback_if_not_exist`) only once the met lock's TTL ran
//! out, as client-go does; before that it counts as alive.
//!
//! An async-commit primary whose TTL ran out is undecided on its own (the transaction
//! committed if every prewrite landed): the client asks every secondary
//! (`check_secondary_locks`, which rolls back a key whose prewrite has not landed, so it
//! never can). Every key locked: committed at the largest `min_commit_ts` of the locks
//! (the ts the writer answered); a key committed: at its ts; a key rolled back: rolled
//! back. The primary is resolved first, so the decision is on it for every later check.

use super::rpc::{call, call_grouped, failure, key_error, Builder};
use super::Shared;
use crate::error::{Error, Result};
use rand::Rng;
use regatta_proto::ts::physical_ms;
use regatta_proto::txnpb::{
    CheckSecondaryLocksRequest, CheckTxnStatusRequest, LockInfo, ResolveLockRequest, TxnRequest,
    TxnResponse, TxnStatusKind,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs a command over `keys` (cut by region, regions in parallel, see
/// `rpc::call_grouped`) on behalf of transaction `start_ts` with primary `primary`,
/// resolving the locks the parts meet and sending those parts again, with backoff while
/// a lock's owner is alive, until the client's operation deadline. `on_ok` gets each part
/// that succeeded. Any other key error ends it, typed (`rpc::key_error`).
pub(crate) async fn run_resolving(
    shared: &Shared,
    op: &'static str,
    keys: Vec<Vec<u8>>,
    start_ts: u64,
    primary: &[u8],
    build: Builder,
    mut on_ok: impl FnMut(&[Vec<u8>], TxnResponse),
) -> Result<()> {
    let cfg = shared.client.config();
    let deadline = Instant::now() + cfg.op_timeout;
    let mut backoff = cfg.backoff_base;
    let mut pending = keys;
    loop {
        let parts = call_grouped(&shared.client, op, pending, build.clone()).await?;
        pending = Vec::new();
        let mut locks = Vec::new();
        let mut timed_out = Vec::new();
        let mut error = None;
        for (keys, resp) in parts {
            match failure(&resp) {
                None => on_ok(&keys, resp),
                // The store queued the request and the wait ran out: resolve what it
                // waited for once (a dead holder's lock is then gone), else give up.
                Some(e) if e.get_lock_wait_timeout() => {
                    if e.has_locked() {
                        timed_out.push(e.get_locked().clone());
                    } else {
                        error = error.or(Some(key_error(e, start_ts, primary)));
                    }
                    pending.extend(keys);
                }
                Some(e) if e.has_locked() => {
                    locks.push(e.get_locked().clone());
                    pending.extend(keys);
                }
                Some(e) => error = error.or(Some(key_error(e, start_ts, primary))),
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        if pending.is_empty() {
            return Ok(());
        }
        if let Some(alive) = resolve_locks(shared, &timed_out).await? {
            return Err(Error::LockWaitTimeout {
                key: alive.get_key().to_vec(),
                start_ts,
            });
        }
        if let Some(lock) = resolve_locks(shared, &locks).await? {
            backoff = wait(shared, &lock, deadline, backoff).await?;
        }
    }
}

/// Sleeps a jittered `backoff` (at most until `deadline`) because `lock` is alive, and
/// returns the next backoff; at the deadline, [`Error::KeyIsLocked`] instead.
pub(crate) async fn wait(
    shared: &Shared,
    lock: &LockInfo,
    deadline: Instant,
    backoff: Duration,
) -> Result<Duration> {
    let now = Instant::now();
    if now >= deadline {
        return Err(Error::KeyIsLocked {
            key: lock.get_key().to_vec(),
            primary: lock.get_primary().to_vec(),
            lock_ts: lock.get_start_ts(),
            ttl_ms: lock.get_ttl_ms(),
        });
    }
    let jitter = rand::thread_rng().gen_range(0..=backoff.as_micros() as u64 / 2);
    tokio::time::sleep((backoff + Duration::from_micros(jitter)).min(deadline - now)).await;
    Ok((backoff * 2).min(shared.client.config().backoff_max))
}

/// Resolves every lock of `locks` whose transaction is decided (or found expired); returns
/// one whose transaction is still alive, if any (the caller waits before retrying).
pub(crate) async fn resolve_locks(shared: &Shared, locks: &[LockInfo]) -> Result<Option<LockInfo>> {
    // Per transaction: `None` alive, `Some(0)` rolled back, `Some(ts)` committed at ts.
    let mut fate: HashMap<u64, Option<u64>> = HashMap::new();
    let mut alive = None;
    for lock in locks {
        let decided = match fate.get(&lock.get_start_ts()) {
            Some(f) => *f,
            None => {
                let f = txn_fate(shared, lock).await?;
                fate.insert(lock.get_start_ts(), f);
                f
            }
        };
        match decided {
            None => alive = alive.or_else(|| Some(lock.clone())),
            Some(commit_ts) => resolve_lock(shared, lock, commit_ts).await?,
        }
    }
    Ok(alive)
}

/// The fate of `lock`'s transaction, asked on its primary.
async fn txn_fate(shared: &Shared, lock: &LockInfo) -> Result<Option<u64>> {
    let current_ts = shared.timestamp().await?;
    let expired = physical_ms(lock.get_start_ts()).saturating_add(lock.get_ttl_ms())
        <= physical_ms(current_ts);
    let mut check = CheckTxnStatusRequest::new();
    check.set_primary(lock.get_primary().to_vec());
    check.set_lock_ts(lock.get_start_ts());
    check.set_current_ts(current_ts);
    check.set_rollback_if_not_exist(expired);
    let mut cmd = TxnRequest::new();
    cmd.set_check_txn_status(check);
    let mut resp = call(&shared.client, "check_txn_status", lock.get_primary(), cmd).await?;
    if let Some(e) = failure(&resp) {
        // The primary's prewrite may still be on its way: alive until the TTL runs out.
        if e.get_txn_not_found() && !expired {
            return Ok(None);
        }
        return Err(key_error(e, lock.get_start_ts(), lock.get_primary()));
    }
    let mut status = resp.take_check_txn_status();
    Ok(match status.get_status() {
        TxnStatusKind::ASYNC_COMMIT_UNDECIDED => {
            let primary_lock = status.take_lock();
            let fate = async_commit_fate(shared, &primary_lock).await?;
            resolve_lock(shared, &primary_lock, fate).await?;
            Some(fate)
        }
        TxnStatusKind::ALIVE => None,
        TxnStatusKind::COMMITTED => Some(status.get_commit_ts()),
        TxnStatusKind::ROLLED_BACK
        | TxnStatusKind::TTL_EXPIRED_ROLLED_BACK
        | TxnStatusKind::NOT_FOUND_ROLLED_BACK => Some(0),
    })
}

/// The fate of an async-commit transaction whose primary lock is `primary` (its TTL ran
/// out), from its secondaries: the commit ts, or 0 for rolled back (see the module doc).
async fn async_commit_fate(shared: &Shared, primary: &LockInfo) -> Result<u64> {
    let start_ts = primary.get_start_ts();
    let secondaries = primary.get_secondaries().to_vec();
    let mut commit_ts = primary.get_min_commit_ts();
    if secondaries.is_empty() {
        return Ok(commit_ts);
    }
    let build = Arc::new(move |part: &[Vec<u8>]| {
        let mut c = CheckSecondaryLocksRequest::new();
        c.set_keys(part.to_vec().into());
        c.set_start_ts(start_ts);
        let mut cmd = TxnRequest::new();
        cmd.set_check_secondary_locks(c);
        cmd
    });
    let parts = call_grouped(&shared.client, "check_secondary_locks", secondaries, build).await?;
    for (_, resp) in parts {
        if let Some(e) = failure(&resp) {
            return Err(key_error(e, start_ts, primary.get_primary()));
        }
        let r = resp.get_check_secondary_locks();
        if r.get_rolled_back() {
            return Ok(0);
        }
        if r.get_commit_ts() != 0 {
            return Ok(r.get_commit_ts());
        }
        for l in r.get_locks() {
            commit_ts = commit_ts.max(l.get_min_commit_ts());
        }
    }
    Ok(commit_ts)
}

/// Commits (`commit_ts` > 0) or rolls back the transaction's lock on the met key.
async fn resolve_lock(shared: &Shared, lock: &LockInfo, commit_ts: u64) -> Result<()> {
    let mut r = ResolveLockRequest::new();
    r.mut_keys().push(lock.get_key().to_vec());
    r.set_start_ts(lock.get_start_ts());
    r.set_commit_ts(commit_ts);
    let mut cmd = TxnRequest::new();
    cmd.set_resolve_lock(r);
    let resp = call(&shared.client, "resolve_lock", lock.get_key(), cmd).await?;
    match failure(&resp) {
        None => Ok(()),
        Some(e) => Err(key_error(e, lock.get_start_ts(), lock.get_primary())),
    }
}
