//! Transactional writes at apply: each command runs its `regatta-txn` action on every
//! replica, over the same state, so every replica ends in the same state and the answer
//! comes from apply.
//!
//! Several commands of one apply call see each other's writes through an [`Overlay`]
//! (the batch's transactional writes layered over the apply snapshot): an action reads
//! the overlay and writes into an [`OpBatch`] of its own; on success its operations are
//! added to the overlay and to the real batch, on failure they are dropped. That keeps
//! `regatta-txn`'s rule "one action per key per batch" without flushing the batch between
//! commands. Timestamps that decide anything (`current_ts` of cleanup and
//! check_txn_status, the 1PC commit ts) come from the command, never a local clock.

use super::wire::{failure, lock_info, prewrite_request, Failure};
use regatta_engine::{Cf, OpBatch, Overlay, OverlayOp, Snapshot, WriteBatch};
use regatta_proto::metapb::Region;
use regatta_proto::raft_serverpb::CarriedLock;
use regatta_proto::region::key_in_range;
use regatta_proto::txnpb::{
    CheckSecondaryLocksResponse, CheckTxnStatusResponse, CleanupResponse, CommitResponse,
    PessimisticLockRequest, PessimisticLockResponse, PessimisticRollbackResponse, PrewriteResponse,
    ResolveLockResponse, RollbackResponse, TxnHeartbeatResponse, TxnRequest,
    TxnRequest_oneof_cmd as Cmd, TxnResponse, TxnStatusKind, TxnValue,
};
use regatta_raftstore::Error;
use regatta_txn::{SecondaryLocksStatus, TxnStatus};

/// The keys a write command touches in its region (to check them against the region as
/// of apply: a split may have moved some out).
pub(crate) fn keys_of(req: &TxnRequest) -> Vec<&[u8]> {
    match &req.cmd {
        Some(Cmd::prewrite(p)) => p.get_mutations().iter().map(|m| m.get_key()).collect(),
        Some(Cmd::commit(c)) => slices(c.get_keys()),
        Some(Cmd::rollback(r)) => slices(r.get_keys()),
        Some(Cmd::cleanup(c)) => vec![c.get_key()],
        Some(Cmd::check_txn_status(c)) => vec![c.get_primary()],
        Some(Cmd::resolve_lock(r)) => slices(r.get_keys()),
        Some(Cmd::heartbeat(h)) => vec![h.get_primary()],
        Some(Cmd::pessimistic_lock(p)) => slices(p.get_keys()),
        Some(Cmd::pessimistic_rollback(p)) => slices(p.get_keys()),
        Some(Cmd::check_secondary_locks(c)) => slices(c.get_keys()),
        Some(Cmd::get(g)) => vec![g.get_key()],
        Some(Cmd::batch_get(b)) => slices(b.get_keys()),
        Some(Cmd::scan(_)) | Some(Cmd::scan_lock(_)) | None => Vec::new(),
    }
}

/// The transaction whose locks a command may remove (each action touches only the locks
/// of the transaction it names).
fn lock_owner_ts(req: &TxnRequest) -> u64 {
    match &req.cmd {
        Some(Cmd::prewrite(p)) => p.get_start_ts(),
        Some(Cmd::commit(c)) => c.get_start_ts(),
        Some(Cmd::rollback(r)) => r.get_start_ts(),
        Some(Cmd::cleanup(c)) => c.get_start_ts(),
        Some(Cmd::check_txn_status(c)) => c.get_lock_ts(),
        Some(Cmd::resolve_lock(r)) => r.get_start_ts(),
        Some(Cmd::pessimistic_rollback(p)) => p.get_start_ts(),
        Some(Cmd::heartbeat(h)) => h.get_start_ts(),
        Some(Cmd::pessimistic_lock(p)) => p.get_start_ts(),
        Some(Cmd::check_secondary_locks(c)) => c.get_start_ts(),
        Some(Cmd::get(_))
        | Some(Cmd::batch_get(_))
        | Some(Cmd::scan(_))
        | Some(Cmd::scan_lock(_))
        | None => 0,
    }
}

/// The keys whose locks `req` removes when it succeeds, with their transaction: a commit,
/// a rollback (pessimistic too), a resolve, or a 1PC prewrite (which the leader may still
/// turn into a plain prewrite, keeping the locks). `None` for the rest. The leader hands
/// such keys to their waiters in the same proposal, behind `req`.
pub(crate) fn releasing(req: &TxnRequest) -> Option<(u64, Vec<&[u8]>)> {
    match &req.cmd {
        Some(Cmd::prewrite(p)) if p.get_try_one_pc() => {}
        Some(Cmd::commit(_))
        | Some(Cmd::rollback(_))
        | Some(Cmd::pessimistic_rollback(_))
        | Some(Cmd::resolve_lock(_)) => {}
        _ => return None,
    }
    Some((lock_owner_ts(req), keys_of(req)))
}

/// Where a transactional write applies, as of its entry.
pub(crate) struct TxnWrite<'a> {
    /// The region.
    pub region: &'a Region,
    /// The commit ts the leader chose for a 1PC prewrite (0: a plain prewrite).
    pub one_pc_commit_ts: u64,
    /// The floor of an async-commit prewrite's `min_commit_ts` the leader chose (0: none;
    /// the prewrite is refused with `ServerIsBusy`).
    pub async_commit_ts: u64,
    /// The region's GC safe point.
    pub gc_safe_point: u64,
    /// The entry's log index, answered by prewrites and commits (`log_index`).
    pub index: u64,
}

/// The start ts of a command that writes a lock (prewrite, pessimistic lock): one at or
/// below the GC safe point is refused, since the write records and rollback records its
/// checks rely on (a conflict at `start_ts`, its own rollback) may be gone. A commit or
/// rollback of a lock already there is not refused: the lock was checked when it landed.
fn lock_start_ts(req: &TxnRequest) -> Option<u64> {
    match &req.cmd {
        Some(Cmd::prewrite(p)) => Some(p.get_start_ts()),
        Some(Cmd::pessimistic_lock(p)) => Some(p.get_start_ts()),
        _ => None,
    }
}

/// Applies transactional write `req` (see [`TxnWrite`]) over `overlay` (the earlier
/// commands' transactional writes of this apply call), adding its writes to `overlay` and
/// `wb` if it succeeds. Every key whose lock the command removed (commit, rollback,
/// cleanup, a resolve, a 1PC over pessimistic locks, ...) is added to `released` with the
/// start ts of the lock's transaction: the leader hands such keys to their lock waiters.
///
/// Returns `Ok(Ok(answer))` (which may carry a `key_error`), `Ok(Err(e))` for a store
/// error to answer (a key no longer in the region), and `Err` for corruption or an engine
/// failure, which stops the replica.
pub(crate) fn apply_txn<S: Snapshot + ?Sized, W: WriteBatch + ?Sized>(
    overlay: &mut Overlay<'_, S>,
    wb: &mut W,
    at: &TxnWrite<'_>,
    req: &TxnRequest,
    released: &mut Vec<(Vec<u8>, u64)>,
) -> Result<Result<TxnResponse, Error>, Error> {
    let (region, one_pc_commit_ts, index) = (at.region, at.one_pc_commit_ts, at.index);
    if let Some(k) = keys_of(req).into_iter().find(|k| !key_in_range(region, k)) {
        return Ok(Err(Error::key_not_in_region(region, k)));
    }
    if let Some(ts) = lock_start_ts(req).filter(|ts| *ts <= at.gc_safe_point) {
        return Ok(Ok(super::read::below_gc_safe_point(ts, at.gc_safe_point)));
    }
    let mut ops = OpBatch::default();
    let mut resp = TxnResponse::new();
    let snap = &*overlay;
    let b = &mut ops;
    let (result, primary): (regatta_txn::Result<()>, &[u8]) = match &req.cmd {
        Some(Cmd::prewrite(p)) => {
            let mut tr = prewrite_request(p);
            if p.get_use_async_commit() {
                // The commit ts of an async-commit transaction is the largest
                // min_commit_ts of its locks, decided when the last prewrite lands: each
                // must be above every read its leader served (`max_ts.rs`).
                if at.async_commit_ts == 0 {
                    return Ok(Err(Error::ServerIsBusy(
                        "async commit: the leader has not synced max_ts with the TSO yet".into(),
                    )));
                }
                tr.min_commit_ts = tr.min_commit_ts.max(at.async_commit_ts);
            }
            let one_pc = if p.get_try_one_pc() && one_pc_commit_ts != 0 {
                match regatta_txn::one_pc(snap, b, &tr, one_pc_commit_ts) {
                    // A pessimistic lock of this transaction was handed over at a newer
                    // commit ts than the request knew: no 1PC at the leader's ts; a
                    // plain prewrite, committed by 2PC above that lock.
                    Err(regatta_txn::Error::CommitTsExpired { .. }) if tr.for_update_ts > 0 => {
                        b.ops.clear();
                        None
                    }
                    r => Some(r),
                }
            } else {
                None
            };
            let r = if let Some(one_pc) = one_pc {
                one_pc.map(|outcome| {
                    let mut r = PrewriteResponse::new();
                    match outcome {
                        regatta_txn::OnePcOutcome::Committed(at) => r.set_one_pc_commit_ts(at),
                        // An earlier attempt landed as a plain prewrite: the client goes
                        // on by 2PC.
                        regatta_txn::OnePcOutcome::Prewritten { min_commit_ts } => {
                            r.set_min_commit_ts(min_commit_ts)
                        }
                    }
                    r.set_log_index(index);
                    resp.set_prewrite(r);
                })
            } else {
                regatta_txn::prewrite(snap, b, &tr).map(|o| {
                    let mut r = PrewriteResponse::new();
                    r.set_min_commit_ts(o.min_commit_ts);
                    r.set_log_index(index);
                    resp.set_prewrite(r);
                })
            };
            (r, p.get_primary())
        }
        Some(Cmd::commit(c)) => (
            regatta_txn::commit(snap, b, c.get_keys(), c.get_start_ts(), c.get_commit_ts()).map(
                |committed_at| {
                    let mut r = CommitResponse::new();
                    r.set_commit_ts(committed_at);
                    r.set_log_index(index);
                    resp.set_commit(r)
                },
            ),
            &[],
        ),
        Some(Cmd::rollback(r)) => (
            regatta_txn::rollback(snap, b, r.get_keys(), r.get_start_ts())
                .map(|()| resp.set_rollback(RollbackResponse::new())),
            &[],
        ),
        Some(Cmd::cleanup(c)) => (
            regatta_txn::cleanup(snap, b, c.get_key(), c.get_start_ts(), c.get_current_ts())
                .map(|()| resp.set_cleanup(CleanupResponse::new())),
            &[],
        ),
        Some(Cmd::check_txn_status(c)) => (
            regatta_txn::check_txn_status(
                snap,
                b,
                c.get_primary(),
                c.get_lock_ts(),
                c.get_caller_start_ts(),
                c.get_current_ts(),
                c.get_rollback_if_not_exist(),
            )
            .map(|st| resp.set_check_txn_status(status_response(c.get_primary(), st))),
            &[],
        ),
        Some(Cmd::resolve_lock(r)) => (
            regatta_txn::resolve_lock(snap, b, r.get_keys(), r.get_start_ts(), r.get_commit_ts())
                .map(|n| {
                    let mut out = ResolveLockResponse::new();
                    out.set_resolved(n as u32);
                    resp.set_resolve_lock(out);
                }),
            &[],
        ),
        Some(Cmd::heartbeat(h)) => (
            regatta_txn::txn_heartbeat(
                snap,
                b,
                h.get_primary(),
                h.get_start_ts(),
                h.get_advise_ttl_ms(),
            )
            .map(|ttl| {
                let mut out = TxnHeartbeatResponse::new();
                out.set_lock_ttl_ms(ttl);
                resp.set_heartbeat(out);
            }),
            &[],
        ),
        Some(Cmd::pessimistic_lock(p)) => {
            // A conflicting lock is answered `locked`, whatever `wait_timeout_ms` says: the
            // leader queues the request on that answer (see `peer/waits.rs`).
            let tr = pessimistic_lock_request(p);
            let locked = if p.get_allow_lock_with_conflict() {
                regatta_txn::acquire_pessimistic_lock_with_conflict(snap, b, &tr)
            } else {
                regatta_txn::acquire_pessimistic_lock_at(snap, b, &tr)
            };
            let r = locked.map(|(values, for_update_ts)| {
                resp.set_pessimistic_lock(pessimistic_lock_response(p, values, for_update_ts))
            });
            (r, p.get_primary())
        }
        Some(Cmd::pessimistic_rollback(p)) => (
            regatta_txn::pessimistic_rollback(
                snap,
                b,
                p.get_keys(),
                p.get_start_ts(),
                p.get_for_update_ts(),
            )
            .map(|_| resp.set_pessimistic_rollback(PessimisticRollbackResponse::new())),
            &[],
        ),
        Some(Cmd::check_secondary_locks(c)) => (
            regatta_txn::check_secondary_locks(snap, b, c.get_keys(), c.get_start_ts()).map(|st| {
                let mut out = CheckSecondaryLocksResponse::new();
                match st {
                    SecondaryLocksStatus::Locked(locks) => {
                        for (k, l) in c.get_keys().iter().zip(&locks) {
                            out.mut_locks().push(lock_info(k, l));
                        }
                    }
                    SecondaryLocksStatus::Committed { commit_ts } => out.set_commit_ts(commit_ts),
                    SecondaryLocksStatus::RolledBack => out.set_rolled_back(true),
                }
                resp.set_check_secondary_locks(out);
            }),
            &[],
        ),
        Some(Cmd::get(_))
        | Some(Cmd::batch_get(_))
        | Some(Cmd::scan(_))
        | Some(Cmd::scan_lock(_))
        | None => {
            return Ok(Err(Error::InvalidArgument(
                "not a transactional write".into(),
            )))
        }
    };
    match result {
        Ok(()) => {
            let owner = lock_owner_ts(req);
            for k in keys_of(req) {
                let lock_key = regatta_txn::key::lock_key(k);
                let removed = ops
                    .ops
                    .iter()
                    .any(|op| matches!(op, OverlayOp::Delete(Cf::Lock, key) if *key == lock_key));
                if removed {
                    released.push((k.to_vec(), owner));
                }
            }
            for op in &ops.ops {
                op.replay(wb);
            }
            overlay.extend(&ops.ops);
            Ok(Ok(resp))
        }
        Err(e) => match failure(e, region.get_id(), primary) {
            Failure::Key(ke) => {
                let mut r = TxnResponse::new();
                r.set_key_error(ke);
                Ok(Ok(r))
            }
            Failure::Store(e) => Err(e),
        },
    }
}

/// The `regatta-txn` request of a `pessimistic_lock` command.
pub(crate) fn pessimistic_lock_request(
    p: &PessimisticLockRequest,
) -> regatta_txn::PessimisticLockRequest {
    regatta_txn::PessimisticLockRequest {
        primary: p.get_primary().to_vec(),
        start_ts: p.get_start_ts(),
        for_update_ts: p.get_for_update_ts(),
        lock_ttl_ms: p.get_lock_ttl_ms(),
        need_value: p.get_return_values(),
        keys: p.get_keys().to_vec(),
    }
}

/// The answer to `pessimistic_lock` command `p` that locked at `for_update_ts` and read
/// `values` (one per key, when `p` asked for them).
pub(crate) fn pessimistic_lock_response(
    p: &PessimisticLockRequest,
    values: Vec<Option<Vec<u8>>>,
    for_update_ts: u64,
) -> PessimisticLockResponse {
    let mut out = PessimisticLockResponse::new();
    if for_update_ts > p.get_for_update_ts() {
        out.set_locked_with_conflict_ts(for_update_ts);
    }
    if p.get_return_values() {
        for v in values {
            let mut tv = TxnValue::new();
            if let Some(v) = v {
                tv.set_found(true);
                tv.set_value(v);
            }
            out.mut_values().push(tv);
        }
    }
    out
}

/// Writes the locks a leader held in memory and a command carries (`RaftCmd.leader_locks`,
/// `AdminCmd.leader_locks`) into the lock CF, before the command runs: each where its key
/// is in `region` and has no lock. The leader granted each on a key no earlier entry of
/// the log touched after its check, so none is there (the checks keep apply the same on
/// every replica whatever happened).
pub(crate) fn install_leader_locks<S: Snapshot + ?Sized, W: WriteBatch + ?Sized>(
    overlay: &mut Overlay<'_, S>,
    wb: &mut W,
    region: &Region,
    locks: &[CarriedLock],
) -> Result<(), Error> {
    for carried in locks {
        if !key_in_range(region, carried.get_key()) {
            continue;
        }
        let lock_key = regatta_txn::key::lock_key(carried.get_key());
        if overlay.get(Cf::Lock, &lock_key)?.is_none() {
            wb.put(Cf::Lock, &lock_key, carried.get_lock());
            overlay.put(Cf::Lock, &lock_key, carried.get_lock());
        }
    }
    Ok(())
}

fn status_response(primary: &[u8], st: TxnStatus) -> CheckTxnStatusResponse {
    let mut r = CheckTxnStatusResponse::new();
    match st {
        TxnStatus::Alive {
            lock,
            min_commit_ts_pushed,
        } => {
            r.set_status(TxnStatusKind::ALIVE);
            r.set_lock(lock_info(primary, &lock));
            r.set_min_commit_ts_pushed(min_commit_ts_pushed);
        }
        TxnStatus::Committed { commit_ts } => {
            r.set_status(TxnStatusKind::COMMITTED);
            r.set_commit_ts(commit_ts);
        }
        TxnStatus::AsyncCommitUndecided { lock } => {
            r.set_status(TxnStatusKind::ASYNC_COMMIT_UNDECIDED);
            r.set_lock(lock_info(primary, &lock));
        }
        TxnStatus::RolledBack => r.set_status(TxnStatusKind::ROLLED_BACK),
        TxnStatus::TtlExpiredRolledBack => r.set_status(TxnStatusKind::TTL_EXPIRED_ROLLED_BACK),
        TxnStatus::NotFoundRolledBack => r.set_status(TxnStatusKind::NOT_FOUND_ROLLED_BACK),
    }
    r
}

fn slices(ks: &[Vec<u8>]) -> Vec<&[u8]> {
    ks.iter().map(Vec::as_slice).collect()
}
