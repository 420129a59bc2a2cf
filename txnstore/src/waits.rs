//! Pessimistic lock waits on the leader: a `pessimistic_lock` with `wait_timeout_ms > 0`
//! that meets another transaction's lock waits in the key's [`LockWaitQueue`] instead of
//! being answered `locked`; when the lock is released the head waiter's request is
//! proposed again in the same step, with its answer channel (no retry round trip).
//!
//! The path of a waiting request:
//! - arrival (`RegionObserver::on_write`): if a key of the request already has a queue whose holder is
//!   another transaction, it queues behind that key's waiters at once, never proposed
//!   (no overtaking); otherwise it is proposed, remembering its [`WaitSlot`];
//! - apply answers it `locked` (another transaction's lock): the leader queues it behind
//!   that lock's transaction instead of answering, and reports the wait to PD's deadlock
//!   detector ([`crate::detector`]) without waiting for PD;
//! - an applied command removes the holder's lock (a `Released` note of the applier): the head
//!   waiter is handed the key and its request proposed at once with
//!   `allow_lock_with_conflict` (the holder's write does not fail it; the lock is taken at
//!   that write's commit ts), the others' waits are reported again against the new holder;
//! - the hand-over's answer is the waiter's answer; a hand-over that fails passes the key
//!   on to the next waiter, and one that meets yet another lock waits again;
//! - PD refuses a wait that closes a cycle: the waiter is answered `deadlock` (unless it
//!   was handed the key meanwhile); a wait past its deadline is answered
//!   `lock_wait_timeout`, with the lock it waited for, which the client resolves (a dead
//!   holder's lock is rolled back once its TTL ran out; see `client/src/txn/resolve.rs`);
//! - stepping down, a split and a fence answer every waiter (`NotLeader`,
//!   `EpochNotMatch`, `StorePoisoned`): the client retries, nothing hangs.
//!
//! Requests that do not wait (`wait_timeout_ms` 0, prewrites) are never queued; one that
//! lands while a key is being handed over (between the release and the hand-over's apply)
//! can take it first, and the hand-over then waits again, at the tail. Followers queue
//! nothing.

use super::cmd::key_error_response;
use super::detector::deadlock_error;
use super::lock_wait::{Left, LockWaitQueue, Waiter};
use super::TxnObserver;
use regatta_proto::kvrpcpb::{KvResponse, Request, Request_oneof_cmd};
use regatta_proto::pdpb::WaitRefused;
use regatta_proto::raft_serverpb::RaftCmd;
use regatta_proto::txnpb::{KeyError, PessimisticLockRequest, TxnRequest_oneof_cmd as Cmd};
use regatta_raftstore::coprocessor::ObserverCx;
use regatta_raftstore::Error;
use regatta_raftstore::Responder;
use std::time::{Duration, Instant};

/// A waiting request: what to propose when it is handed its key, and where to answer.
pub(crate) struct LockWaiter {
    cmd: RaftCmd,
    tx: Responder,
    /// The key it waits for.
    key: Vec<u8>,
}

/// The leader's lock waits.
pub(crate) type LockWaits = LockWaitQueue<LockWaiter>;

/// A proposed pessimistic lock request that may wait: kept beside its proposal until
/// apply answers it.
pub(crate) struct WaitSlot {
    /// The command, to queue (and propose again) if apply answers `locked`.
    cmd: RaftCmd,
    /// When its wait ends.
    deadline: Instant,
    /// The key it was handed, if this proposal is a hand-over.
    granted: Option<Vec<u8>>,
}

/// The pessimistic lock request inside a command, if it is one.
fn lock_request(cmd: &RaftCmd) -> Option<&PessimisticLockRequest> {
    match &cmd.get_request().cmd {
        Some(Request_oneof_cmd::txn(t)) => match &t.cmd {
            Some(Cmd::pessimistic_lock(p)) => Some(p),
            _ => None,
        },
        _ => None,
    }
}

/// What apply's answer to a lock request means for its wait.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LockAnswer {
    /// Locked: the request's answer is final.
    Granted,
    /// Another transaction (`holder`) holds `key`: wait for it.
    Blocked { key: Vec<u8>, holder: u64 },
    /// Failed for another reason (or a store error): answer it as it is.
    Failed,
}

/// Classifies apply's answer `resp` to a lock request of transaction `own_ts`.
pub(crate) fn classify(resp: &KvResponse, own_ts: u64) -> LockAnswer {
    if resp.has_error() || !resp.get_response().has_txn() {
        return LockAnswer::Failed;
    }
    let t = resp.get_response().get_txn();
    if !t.has_key_error() {
        return LockAnswer::Granted;
    }
    let ke = t.get_key_error();
    if ke.has_locked() && ke.get_locked().get_start_ts() != own_ts {
        let l = ke.get_locked();
        return LockAnswer::Blocked {
            key: l.get_key().to_vec(),
            holder: l.get_start_ts(),
        };
    }
    LockAnswer::Failed
}

impl TxnObserver {
    /// The deadline of `request`'s lock wait, if it is a pessimistic lock that may wait.
    pub(super) fn lock_wait_deadline(&self, request: &Request, now: Instant) -> Option<Instant> {
        let Some(Request_oneof_cmd::txn(t)) = &request.cmd else {
            return None;
        };
        let Some(Cmd::pessimistic_lock(p)) = &t.cmd else {
            return None;
        };
        let ms = p
            .get_wait_timeout_ms()
            .min(self.shared.cfg.max_lock_wait_ms);
        (ms > 0).then(|| now + Duration::from_millis(ms))
    }

    /// Queues a lock request that may wait: behind the waiters of the first of its keys
    /// that another transaction holds as the queue knows it, or else for the turn's
    /// proposal (with its slot, so apply's `locked` queues it).
    pub(super) fn propose_waiting(
        &mut self,
        cx: &mut ObserverCx,
        cmd: RaftCmd,
        tx: Responder,
        deadline: Instant,
    ) {
        let Some(p) = lock_request(&cmd) else {
            self.queue_keys(&cmd);
            return cx.propose(cmd, tx, None);
        };
        let own = p.get_start_ts();
        let ahead = p.get_keys().iter().find_map(|k| {
            self.lock_waits
                .holder_of(k)
                .filter(|h| *h != own)
                .map(|h| (k.clone(), h))
        });
        match ahead {
            Some((key, holder)) => {
                let waiter = Waiter {
                    start_ts: own,
                    deadline,
                    request: LockWaiter {
                        cmd,
                        tx,
                        key: key.clone(),
                    },
                };
                self.start_wait(cx, key, holder, waiter, None);
            }
            None => {
                let slot = WaitSlot {
                    cmd: cmd.clone(),
                    deadline,
                    granted: None,
                };
                self.propose_with_slot(cx, cmd, tx, slot);
            }
        }
    }

    /// Queues `waiter` behind `holder` on `key` and reports the wait to PD; a wait the
    /// queue refuses (full, or the transaction already waits here) is answered `answer`
    /// (apply's `locked`), or else with the key's lock or `ServerIsBusy`.
    fn start_wait(
        &mut self,
        cx: &mut ObserverCx,
        key: Vec<u8>,
        holder: u64,
        waiter: Waiter<LockWaiter>,
        answer: Option<KvResponse>,
    ) {
        let waiter_ts = waiter.start_ts;
        match self.lock_waits.wait(&key, holder, waiter) {
            Ok(()) => {
                // The edge goes to the waiter ahead (the holder for the head): the queue
                // waits for the holder through it.
                let ahead = self.lock_waits.ahead_of(waiter_ts).unwrap_or(holder);
                if let Some(mb) = cx.mailbox {
                    self.shared
                        .detector
                        .wait(waiter_ts, ahead, &key, mb.clone());
                }
            }
            Err((why, w)) => {
                slog::debug!(self.logger, "lock wait refused"; "reason" => ?why,
                    "start_ts" => waiter_ts, "holder_ts" => holder);
                let resp = answer.unwrap_or_else(|| self.lock_answer(cx, &key, waiter_ts, false));
                let _ = w.request.tx.send(resp);
            }
        }
    }

    /// The answer for a wait that ends without the key: `locked` with the key's current
    /// lock of another transaction (plus `lock_wait_timeout` when `timed_out`), so the
    /// client can resolve it; without such a lock, `lock_wait_timeout` alone or
    /// `ServerIsBusy`.
    fn lock_answer(&self, cx: &ObserverCx, key: &[u8], own_ts: u64, timed_out: bool) -> KvResponse {
        let live = cx.engine.dyn_live();
        let lock = regatta_txn::MvccReader::new(&live)
            .load_lock(key)
            .ok()
            .flatten()
            .filter(|l| l.start_ts != own_ts);
        let mut ke = KeyError::new();
        if let Some(l) = lock {
            ke.set_locked(super::cmd::lock_info(key, &l));
        } else if !timed_out {
            return Error::ServerIsBusy(format!(
                "region {}: the lock-wait queue of a key is full",
                self.region_id
            ))
            .into_response();
        }
        ke.set_lock_wait_timeout(timed_out);
        key_error_response(ke)
    }

    /// Apply answered a lock request that may wait: queue it if another transaction holds
    /// its key and its deadline has not passed, else answer it. A hand-over that did not
    /// get its key passes the key on.
    pub(super) fn on_lock_answer(
        &mut self,
        cx: &mut ObserverCx,
        slot: WaitSlot,
        tx: Responder,
        resp: KvResponse,
    ) {
        let Some(own) = lock_request(&slot.cmd).map(|p| p.get_start_ts()) else {
            let _ = tx.send(resp);
            return;
        };
        let answer = classify(&resp, own);
        // A hand-over beaten to its key by a request that did not wait keeps its turn
        // (below); any other hand-over that did not get its key passes it on.
        let keeps_turn = matches!((&slot.granted, &answer),
            (Some(granted), LockAnswer::Blocked { key, .. }) if granted == key)
            && cx.leader
            && cx.now < slot.deadline;
        if let Some(key) = &slot.granted {
            if answer != LockAnswer::Granted && !keeps_turn {
                self.pass_on(cx, key, own);
            }
        }
        match answer {
            LockAnswer::Granted => {
                // The lock's `locked_with_conflict_ts` (the holder's commit ts) does not
                // go into max_ts: max_ts takes only read timestamps, and a 1PC holder's
                // commit ts may be above anything the TSO handed out. The waiter itself
                // commits above it (its prewrite's `min_commit_ts`, `txn` crate).
                let _ = tx.send(resp);
            }
            LockAnswer::Blocked { key, holder } if cx.leader => {
                if cx.now >= slot.deadline {
                    let mut ke = resp.get_response().get_txn().get_key_error().clone();
                    ke.set_lock_wait_timeout(true);
                    let _ = tx.send(key_error_response(ke));
                    return;
                }
                let waiter = Waiter {
                    start_ts: own,
                    deadline: slot.deadline,
                    request: LockWaiter {
                        cmd: slot.cmd,
                        tx,
                        key: key.clone(),
                    },
                };
                if keeps_turn {
                    self.wait_first(cx, key, holder, waiter, resp);
                } else {
                    self.start_wait(cx, key, holder, waiter, Some(resp));
                }
            }
            LockAnswer::Blocked { .. } | LockAnswer::Failed => {
                let _ = tx.send(resp);
            }
        }
    }

    /// Proposals that never reached apply (timed out, superseded): a hand-over among them
    /// passes its key on.
    pub(super) fn abandon_slots(&mut self, cx: &mut ObserverCx, slots: Vec<WaitSlot>) {
        for slot in slots {
            if let (Some(key), Some(p)) = (&slot.granted, lock_request(&slot.cmd)) {
                let own = p.get_start_ts();
                self.pass_on(cx, key, own);
            }
        }
    }

    /// `released` lost their locks in an applied entry: each key's head waiter, if any, is
    /// handed it.
    pub(super) fn on_released(&mut self, cx: &mut ObserverCx, released: Vec<(Vec<u8>, u64)>) {
        if !cx.leader || cx.fenced {
            return; // only a leader hands keys over; its waiters were (or are being) drained
        }
        for (key, holder) in released {
            if let Some(w) = self.lock_waits.release(&key, holder) {
                self.hand_over(cx, key, holder, w);
            }
        }
    }

    /// Puts the granted `waiter` back at the head of `key`'s queue, which now waits for
    /// `holder` (and tells the detector); if the queue moved on meanwhile, the key is passed
    /// on and the waiter queues anew, answered `answer` if it cannot.
    fn wait_first(
        &mut self,
        cx: &mut ObserverCx,
        key: Vec<u8>,
        holder: u64,
        waiter: Waiter<LockWaiter>,
        answer: KvResponse,
    ) {
        let own = waiter.start_ts;
        match self.lock_waits.wait_first(&key, holder, waiter) {
            Ok(()) => {
                // The rest still wait behind it.
                if let Some(mb) = cx.mailbox {
                    self.shared.detector.wait(own, holder, &key, mb.clone());
                }
            }
            Err(w) => {
                self.pass_on(cx, &key, own);
                self.start_wait(cx, key, holder, w, Some(answer));
            }
        }
    }

    /// The head waiters of the keys `request` releases when it succeeds (a commit, a
    /// rollback, a 1PC prewrite of the key's holder), taken from their queues: the caller
    /// proposes `request` and then their hand-overs, in that order. Apply runs the release
    /// first and the hand-over finds the key free, so a waiter gets its lock one raft round
    /// after the holder's commit instead of two. Should the release fail after all, the
    /// hand-over meets the holder's lock and keeps its turn (`on_lock_answer`).
    pub(super) fn early_hand_overs(
        &mut self,
        request: &Request,
    ) -> Vec<(Vec<u8>, u64, Waiter<LockWaiter>)> {
        let Some(Request_oneof_cmd::txn(t)) = &request.cmd else {
            return Vec::new();
        };
        let Some((holder, keys)) = super::cmd::releasing(t) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for k in keys {
            let waited = self.lock_waits.holder_of(k) == Some(holder)
                && !self.lock_waits.waiters_of(k).is_empty();
            if let Some(w) = waited.then(|| self.lock_waits.release(k, holder)).flatten() {
                out.push((k.to_vec(), holder, w));
            }
        }
        out
    }

    /// The hand-over to `holder` of `key` failed: the next waiter gets it.
    fn pass_on(&mut self, cx: &mut ObserverCx, key: &[u8], holder: u64) {
        if !cx.leader || cx.fenced {
            return; // as in `on_released`
        }
        if let Some(w) = self.lock_waits.pass_on(key, holder) {
            self.hand_over(cx, key.to_vec(), holder, w);
        }
    }

    /// Proposes waiter `w`'s lock request now (its wait for `from` ended); the key's other
    /// waiters now wait for `w`'s transaction.
    pub(super) fn hand_over(
        &mut self,
        cx: &mut ObserverCx,
        key: Vec<u8>,
        from: u64,
        w: Waiter<LockWaiter>,
    ) {
        // The next waiter waited behind `w` and now waits for it as the holder: the same
        // edge, so only `w`'s own ends (one report per hand-over, whatever the queue's
        // length).
        self.shared.detector.done(w.start_ts, from, &key);
        let LockWaiter { mut cmd, tx, .. } = w.request;
        // The region may have changed version since it arrived (keys are checked again at
        // apply); the holder's write must not fail the hand-over.
        cmd.set_region_epoch(cx.region.get_region_epoch().clone());
        // A new attempt of an idempotent command: were it proposed under its session, apply
        // would answer it from the session's cached answer, the `locked` it waited on.
        cmd.set_client_id(0);
        cmd.set_seq(0);
        if let Some(Request_oneof_cmd::txn(t)) = &mut cmd.mut_request().cmd {
            if let Some(Cmd::pessimistic_lock(p)) = &mut t.cmd {
                p.set_allow_lock_with_conflict(true);
            }
        }
        let slot = WaitSlot {
            cmd: cmd.clone(),
            deadline: w.deadline,
            granted: Some(key),
        };
        self.propose_with_slot(cx, cmd, tx, slot);
    }

    /// Answers the waits whose deadline passed `lock_wait_timeout` (with the lock they
    /// waited for, for the client to resolve).
    pub(super) fn expire_lock_waits(&mut self, cx: &mut ObserverCx) {
        for left in self.lock_waits.expire(cx.now) {
            self.left(cx, &left);
            let w = left.waiter;
            let resp = self.lock_answer(cx, &w.request.key, w.start_ts, true);
            let _ = w.request.tx.send(resp);
        }
    }

    /// A waiter left its queue: its edge ends, and the one behind it now waits for the one
    /// it waited for.
    fn left(&self, cx: &ObserverCx, left: &Left<LockWaiter>) {
        let key = &left.waiter.request.key;
        self.shared
            .detector
            .done(left.waiter.start_ts, left.ahead, key);
        if let (Some(behind), Some(mb)) = (left.behind, cx.mailbox) {
            self.shared
                .detector
                .wait(behind, left.ahead, key, mb.clone());
        }
    }

    /// PD refused a wait: it would close a cycle. The waiter is answered `deadlock`,
    /// unless it was handed its key meanwhile or now waits for another transaction (whose
    /// report PD judges on its own).
    pub(super) fn on_wait_refused(&mut self, cx: &ObserverCx, refused: WaitRefused) {
        let waiter = refused.get_waiter_ts();
        let Some(key) = self.lock_waits.key_of(waiter).map(<[u8]>::to_vec) else {
            return;
        };
        if self.lock_waits.ahead_of(waiter) != Some(refused.get_holder_ts()) {
            return;
        }
        if let Some(left) = self.lock_waits.cancel(waiter) {
            // PD never added the refused edge, but this wait may be another region's
            // report of the same (waiter, holder) that PD accepted: its end is reported
            // (a no-op for an edge PD does not have), or it would linger until its TTL.
            self.shared.detector.done(waiter, left.ahead, &key);
            // The one behind now waits for `ahead`.
            if let (Some(behind), Some(mb)) = (left.behind, cx.mailbox) {
                self.shared
                    .detector
                    .wait(behind, left.ahead, &key, mb.clone());
            }
            let w = left.waiter;
            slog::debug!(self.logger, "lock wait refused: deadlock"; "start_ts" => waiter,
                "holder_ts" => refused.get_holder_ts(), "cycle" => ?refused.get_cycle());
            let _ = w
                .request
                .tx
                .send(key_error_response(deadlock_error(&key, &refused)));
        }
    }

    /// Answers every waiter `e` (stepped down, split, fenced): their clients retry.
    pub(super) fn drain_lock_waits(&mut self, e: &Error) {
        for left in self.lock_waits.drain() {
            let key = &left.waiter.request.key;
            self.shared
                .detector
                .done(left.waiter.start_ts, left.ahead, key);
            let _ = left.waiter.request.tx.send(e.clone().into_response());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regatta_proto::txnpb::{LockInfo, PessimisticLockResponse, TxnResponse};

    fn txn_answer(set: impl FnOnce(&mut TxnResponse)) -> KvResponse {
        let mut t = TxnResponse::new();
        set(&mut t);
        let mut resp = KvResponse::new();
        resp.mut_response().set_txn(t);
        resp
    }

    fn locked_by(ts: u64) -> KvResponse {
        let mut l = LockInfo::new();
        l.set_key(b"k".to_vec());
        l.set_start_ts(ts);
        let mut ke = KeyError::new();
        ke.set_locked(l);
        key_error_response(ke)
    }

    #[test]
    fn only_another_transactions_lock_makes_a_lock_request_wait() {
        let ok = txn_answer(|t| t.set_pessimistic_lock(PessimisticLockResponse::new()));
        assert_eq!(classify(&ok, 7), LockAnswer::Granted);
        assert_eq!(
            classify(&locked_by(3), 7),
            LockAnswer::Blocked {
                key: b"k".to_vec(),
                holder: 3
            }
        );
        assert_eq!(classify(&locked_by(7), 7), LockAnswer::Failed, "its own");
        let mut conflict = KeyError::new();
        conflict.set_already_rolled_back(true);
        assert_eq!(
            classify(&key_error_response(conflict), 7),
            LockAnswer::Failed
        );
        let store_error = Error::ServerIsBusy("x".into()).into_response();
        assert_eq!(classify(&store_error, 7), LockAnswer::Failed);
    }

    #[test]
    fn only_pessimistic_lock_commands_have_a_lock_request() {
        let mut p = PessimisticLockRequest::new();
        p.set_start_ts(9);
        let mut t = regatta_proto::txnpb::TxnRequest::new();
        t.set_pessimistic_lock(p);
        let mut cmd = RaftCmd::new();
        cmd.mut_request().set_txn(t);
        assert_eq!(lock_request(&cmd).map(|p| p.get_start_ts()), Some(9));
        let mut raw = RaftCmd::new();
        raw.mut_request().set_get(Default::default());
        assert!(lock_request(&raw).is_none());
    }
}
