//! The commit protocol of one transaction, once its mutations are fixed: 1PC when every
//! key lies in one region, else 2PC (Percolator's prewrite and commit, TiKV's
//! `twoPhaseCommitter`).
//!
//! Steps and the invariant each keeps:
//! 1. Cut the keys by region. One region (and `try_one_pc`): one prewrite with
//!    `try_one_pc`; the store commits in the same step at a ts of its choosing (above
//!    every ts it served a read at) and answers it. A store that declines answers no
//!    commit ts, and the transaction goes on as 2PC with its locks in place.
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
    /// OCC: the version each read key was read at (each key also a mutation), validated
    /// by the prewrite of its region. Empty for Percolator transactions.
    pub read_versions: HashMap<Vec<u8>, u64>,
}

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
    let one_pc = plan.try_one_pc
        && group_by_region(&shared.client, keys.clone(), route_deadline)
            .await?
            .len()
            == 1;

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
        let mut cmd = TxnRequest::new();
        cmd.set_prewrite(p);
        cmd
    });
    let mut min_commit_ts = 0;
    let mut one_pc_commit_ts = 0;
    let mut one_pc_log_index = 0;
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
        Err(e) => return Err(e),
    }
    if one_pc_commit_ts != 0 {
        return Ok(Committed {
            commit_ts: one_pc_commit_ts,
            one_pc: true,
            log_index: one_pc_log_index,
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
    let secondaries: Vec<Vec<u8>> = keys.into_iter().filter(|k| *k != plan.primary).collect();
    if !secondaries.is_empty() {
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
            let _ = call_grouped(&shared.client, "commit_secondaries", secondaries, build).await;
        });
    }
    Ok(Committed {
        commit_ts,
        one_pc: false,
        log_index,
    })
}
