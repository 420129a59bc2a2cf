//! The commit protocol of one transaction, once its mutations are fixed: 1PC when every
//! key lies in one region, else 2PC (Percolator's prewrite and commit, TiKV's
//! `twoPhaseCommitter`).
//!
//! Steps and the invariant each keeps:
//! 1. Cut the keys by region. One region (and `try_one_pc`): one prewrite with
//!    `try_one_pc`; the store commits in the same step at a ts of its choosing (above
//!    every ts it served a read at) and answers it. A store that declines answers no
//!    commit ts, and the transaction goes on as 2PC with its locks in place.
//!
//! Async commit (several regions, at most [`ASYNC_COMMIT_MAX_KEYS`] keys, and
//! `async_commit`): every prewrite carries `use_async_commit`, the primary's lists every
//! secondary, and each region's leader chooses its locks' `min_commit_ts` above every read
//! it served (as for 1PC). Once every prewrite succeeded the transaction is committed, at
//! the largest `min_commit_ts` answered: the client answers after that one round and
//! commits the keys in the background. A reader that meets a lock of it whose TTL ran
//! out decides from the locks alone (`resolve.rs`: all present → committed at their
//! largest `min_commit_ts`; any missing → rolled back). An unanswered prewrite leaves the
//! outcome unknown ([`Error::CommitUndetermined`]).
//! 2. 2PC prewrite: every region's part in parallel, the primary's included, each
//!    resolving the locks it meets; a split re-cuts a part (`EpochNotMatch` refreshes the
//!    region cache). Any other failure ends the commit: nothing is committed, and the
//!    caller rolls the locks back.
//! 3. `commit_ts` from the TSO, after every prewrite answered, and at least every part's
//!    `min_commit_ts` and (pessimistic) above the `for_update_ts`: so every reader that could have read a key unlocked has a smaller
//!    ts, and every later reader meets the lock or the commit.
//! 4. Commit the primary: the commit point. `CommitTsExpired` (a reader pushed the lock)
//!    is retried with a newer ts; a lost answer is [`Error::CommitUndetermined`].
//! 5. Commit the secondaries in the background, after answering: a reader that meets one
//!    first resolves it from the committed primary.

use super::resolve::run_resolving;
use super::rpc::{call, call_grouped, failure, group_by_region, key_error};
use super::Shared;
use crate::error::{Error, Result};
use regatta_proto::txnpb::{CommitRequest, Mutation, PrewriteRequest, ReadVersion, TxnRequest};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// What to commit.
pub(crate) struct CommitPlan {
    pub primary: Vec<u8>,
    /// Every key at most once, the primary among them.
    pub mutations: Vec<Mutation>,
    pub start_ts: u64,
    /// Pessimistic: the largest `for_update_ts` of the transaction's locks (0: optimistic).
    pub for_update_ts: u64,
    pub lock_ttl_ms: u64,
    pub try_one_pc: bool,
    /// Commit by async commit when the keys span several regions and are at most
    /// [`ASYNC_COMMIT_MAX_KEYS`] (see the module doc).
    pub async_commit: bool,
    /// OCC: the version each read key was read at (each key also a mutation), validated
    /// by the prewrite of its region. Empty for Percolator transactions.
    pub read_versions: HashMap<Vec<u8>, u64>,
}

/// Async commit only for transactions of at most this many keys (TiKV's default
/// `async-commit.keys-limit`): the primary's lock lists them all, and a resolver checks
/// them all.
pub(crate) const ASYNC_COMMIT_MAX_KEYS: usize = 256;

/// How the transaction committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Committed {
    pub commit_ts: u64,
    pub one_pc: bool,
    /// The log index of the commit entry: the 1PC prewrite's, or the primary's commit's
    /// (0 when the store did not say).
    pub log_index: u64,
}

/// Runs the protocol of the module doc. On `Err` other than
/// [`Error::CommitUndetermined`] the transaction did not commit; its prewrite locks, if
/// any, are left for the caller to roll back. `prewrote` is set when a prewrite of some
/// part succeeded without committing (it left locks); a failed prewrite writes nothing,
/// so while it stays false no lock of the attempt exists.
pub(crate) async fn commit(
    shared: &Arc<Shared>,
    plan: CommitPlan,
    prewrote: &mut bool,
) -> Result<Committed> {
    let keys: Vec<Vec<u8>> = plan
        .mutations
        .iter()
        .map(|m| m.get_key().to_vec())
        .collect();
    let total = keys.len();
    let route_deadline = Instant::now() + shared.client.config().op_timeout;
    let regions = group_by_region(&shared.client, keys.clone(), route_deadline)
        .await?
        .len();
    let one_pc = plan.try_one_pc && regions == 1;
    let async_commit =
        plan.async_commit && !one_pc && regions > 1 && total <= ASYNC_COMMIT_MAX_KEYS;
    let secondaries: Arc<Vec<Vec<u8>>> = Arc::new(
        keys.iter()
            .filter(|k| **k != plan.primary)
            .cloned()
            .collect(),
    );
    let all_secondaries = secondaries.clone();

    // Step 1/2: prewrite (with 1PC when every key went in one request).
    let by_key: Arc<HashMap<Vec<u8>, Mutation>> = Arc::new(
        plan.mutations
            .iter()
            .map(|m| (m.get_key().to_vec(), m.clone()))
            .collect(),
    );
    let (primary, start_ts) = (plan.primary.clone(), plan.start_ts);
    let (ttl, for_update_ts) = (plan.lock_ttl_ms, plan.for_update_ts);
    let read_versions = Arc::new(plan.read_versions);
    let build = Arc::new(move |part: &[Vec<u8>]| {
        let mut p = PrewriteRequest::new();
        for k in part {
            if let Some(m) = by_key.get(k) {
                p.mut_mutations().push(m.clone());
            }
            if let Some(v) = read_versions.get(k) {
                let mut r = ReadVersion::new();
                r.set_key(k.clone());
                r.set_version(*v);
                p.mut_read_versions().push(r);
            }
        }
        p.set_primary(primary.clone());
        p.set_start_ts(start_ts);
        p.set_lock_ttl_ms(ttl);
        p.set_for_update_ts(for_update_ts);
        // A part re-cut by a split no longer holds every key: plain 2PC for it.
        p.set_try_one_pc(one_pc && part.len() == total);
        if async_commit {
            p.set_use_async_commit(true);
            if part.contains(&primary) {
                p.set_secondaries(all_secondaries.to_vec().into());
            }
        }
        let mut cmd = TxnRequest::new();
        cmd.set_prewrite(p);
        cmd
    });
    let mut min_commit_ts = 0;
    let mut one_pc_commit_ts = 0;
    let mut one_pc_log_index = 0;
    let mut prewrite_log_index = 0;
    // An async-commit prewrite answered 0 found its keys committed already (resolvers
    // decided the transaction while an answer was lost): the commit goes on by 2PC, whose
    // commit of the primary answers the ts it was committed at.
    let mut async_fell_back = false;
    let prewritten = run_resolving(
        shared,
        "prewrite",
        keys.clone(),
        start_ts,
        &plan.primary,
        build,
        |_, resp| {
            let p = resp.get_prewrite();
            min_commit_ts = min_commit_ts.max(p.get_min_commit_ts());
            prewrite_log_index = prewrite_log_index.max(p.get_log_index());
            async_fell_back |= async_commit && p.get_min_commit_ts() == 0;
            if p.get_one_pc_commit_ts() != 0 {
                one_pc_commit_ts = p.get_one_pc_commit_ts();
                one_pc_log_index = p.get_log_index();
            } else {
                *prewrote = true;
            }
        },
    )
    .await;
    match prewritten {
        Ok(()) => {}
        // A 1PC prewrite is a commit: one sent and not answered may have committed.
        Err(Error::Timeout { last_error, .. }) if one_pc => {
            return Err(Error::CommitUndetermined {
                start_ts,
                reason: format!("the 1PC prewrite went unanswered: {last_error}"),
            })
        }
        // With async commit, every prewrite having landed is the commit.
        Err(Error::Timeout { last_error, .. }) if async_commit => {
            return Err(Error::CommitUndetermined {
                start_ts,
                reason: format!("an async-commit prewrite went unanswered: {last_error}"),
            })
        }
        Err(e) => return Err(e),
    }
    if one_pc_commit_ts != 0 {
        return Ok(Committed {
            commit_ts: one_pc_commit_ts,
            one_pc: true,
            log_index: one_pc_log_index,
        });
    }
    if async_commit && !async_fell_back {
        // Committed: every lock is in place, each above every read its leader served.
        // The keys are committed in the background, in any order; a reader that meets a
        // lock first decides the same ts from the locks (`resolve.rs`).
        let commit_ts = min_commit_ts;
        commit_in_background(shared, start_ts, commit_ts, keys);
        return Ok(Committed {
            commit_ts,
            one_pc: false,
            log_index: prewrite_log_index,
        });
    }

    // Step 3/4: commit the primary at a ts from the TSO.
    let deadline = Instant::now() + shared.client.config().op_timeout;
    // A pessimistic transaction commits above its for_update_ts (its locks may sit at
    // another transaction's commit ts, after a hand-over); its prewrite locks say so too.
    let mut floor = if for_update_ts > 0 {
        min_commit_ts.max(for_update_ts.saturating_add(1))
    } else {
        min_commit_ts
    };
    let (commit_ts, log_index) = loop {
        let mut commit_ts = shared.timestamp().await?;
        while commit_ts < floor {
            if Instant::now() >= deadline {
                return Err(Error::CommitTsExpired {
                    start_ts,
                    commit_ts,
                    min_commit_ts: floor,
                });
            }
            commit_ts = shared.timestamp().await?;
        }
        let mut c = CommitRequest::new();
        c.mut_keys().push(plan.primary.clone());
        c.set_start_ts(start_ts);
        c.set_commit_ts(commit_ts);
        let mut cmd = TxnRequest::new();
        cmd.set_commit(c);
        let resp = match call(&shared.client, "commit", &plan.primary, cmd).await {
            Ok(resp) => resp,
            Err(Error::Timeout { last_error, .. }) => {
                return Err(Error::CommitUndetermined {
                    start_ts,
                    reason: format!("the primary's commit went unanswered: {last_error}"),
                })
            }
            Err(e) => return Err(e),
        };
        match failure(&resp) {
            // The store's word wins: an earlier attempt (a 1PC whose answer was lost,
            // retried here as 2PC) may have committed the keys at another ts.
            None => match resp.get_commit().get_commit_ts() {
                0 => break (commit_ts, resp.get_commit().get_log_index()),
                at => break (at, resp.get_commit().get_log_index()),
            },
            Some(e) if e.get_commit_ts_expired_min() != 0 && Instant::now() < deadline => {
                floor = e.get_commit_ts_expired_min();
            }
            Some(e) => return Err(key_error(e, start_ts, &plan.primary)),
        }
    };

    // Step 5: the secondaries, in the background; a failure there is left to resolvers.
    commit_in_background(shared, start_ts, commit_ts, secondaries.to_vec());
    Ok(Committed {
        commit_ts,
        one_pc: false,
        log_index,
    })
}

/// Commits `keys` of a committed transaction at `commit_ts`, region by region, on a
/// background task; a failure there is left to resolvers.
fn commit_in_background(shared: &Arc<Shared>, start_ts: u64, commit_ts: u64, keys: Vec<Vec<u8>>) {
    if keys.is_empty() {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let build = Arc::new(move |part: &[Vec<u8>]| {
            let mut c = CommitRequest::new();
            c.set_keys(part.to_vec().into());
            c.set_start_ts(start_ts);
            c.set_commit_ts(commit_ts);
            let mut cmd = TxnRequest::new();
            cmd.set_commit(c);
            cmd
        });
        let _ = call_grouped(&shared.client, "commit_in_background", keys, build).await;
    });
}
