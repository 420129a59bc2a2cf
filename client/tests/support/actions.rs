//! The fake store's commands: each runs through the transactional layer's own mapping and
//! execution (`regatta_txnstore::direct`, the code a store runs at apply and on reads) on
//! the in-memory engine, so the fake answers as a store does.

use super::cluster::{next_ts, State};
use regatta_proto::metapb::Region;
use regatta_proto::txnpb::{TxnRequest, TxnRequest_oneof_cmd as Cmd, TxnResponse};

/// A command's name, for the fake's counts and mutes.
fn name(cmd: &Cmd) -> &'static str {
    match cmd {
        Cmd::get(_) => "get",
        Cmd::batch_get(_) => "batch_get",
        Cmd::scan(_) => "scan",
        Cmd::prewrite(p) if p.get_try_one_pc() => "prewrite_1pc",
        Cmd::prewrite(_) => "prewrite",
        Cmd::commit(_) => "commit",
        Cmd::rollback(_) => "rollback",
        Cmd::cleanup(_) => "cleanup",
        Cmd::check_txn_status(_) => "check_txn_status",
        Cmd::resolve_lock(_) => "resolve_lock",
        Cmd::heartbeat(_) => "heartbeat",
        Cmd::pessimistic_lock(_) => "pessimistic_lock",
        Cmd::pessimistic_rollback(_) => "pessimistic_rollback",
        Cmd::scan_lock(_) => "scan_lock",
        Cmd::check_secondary_locks(_) => "check_secondary_locks",
    }
}

/// Runs one command on the engine; returns its name for the counts and its answer, or
/// the store error a store would answer instead.
pub(super) fn run(
    s: &mut State,
    region: &Region,
    mut cmd: Cmd,
) -> (&'static str, Result<TxnResponse, regatta_raftstore::Error>) {
    let name = name(&cmd);
    // A lock the test asked to be handed over is taken as a leader hands a lock to its
    // waiter: at the newest commit ts, conflict or not.
    if let Cmd::pessimistic_lock(l) = &mut cmd {
        if std::mem::take(&mut s.hand_over_next_lock) {
            l.set_allow_lock_with_conflict(true);
        }
    }
    // The leader's 1PC commit ts or async-commit floor: above every read the fake
    // served, the next TSO ts.
    let one_pc_commit_ts = match &cmd {
        Cmd::prewrite(p) if p.get_try_one_pc() || p.get_use_async_commit() => next_ts(s, 1),
        _ => 0,
    };
    let mut req = TxnRequest::new();
    req.cmd = Some(cmd);
    let answer = regatta_txnstore::direct::execute(&s.engine, region, &req, one_pc_commit_ts);
    (name, answer)
}
