//! In-memory pessimistic locks on the leader (TiKV's "in-memory pessimistic locks"): a
//! `pessimistic_lock` that meets nothing is answered from the leader's memory, with no
//! raft round; the lock enters the log with the next command on its key.
//!
//! - *Grant* (`on_write`): the leader has applied an entry of its term (so every earlier
//!   entry is applied), no split or leader transfer is under way, and no key of the
//!   request holds a lock in memory or in the lock CF, has a wait queue, or is touched by
//!   an entry proposed and not yet applied or a command queued for the turn's entry
//!   ([`MemLocks::busy`]). Then the request's action runs over the
//!   applied state as apply would run it; if it locks every key at the request's
//!   `for_update_ts`, its lock records stay here and its answer goes back at once.
//!   Anything else (a conflict, an own lock, a hand-over) is proposed as before, and
//!   apply decides.
//! - *Carry* (`pre_propose`): every transactional write proposed on a key with a lock in
//!   memory takes the lock into its command (`RaftCmd.leader_locks`); apply writes it
//!   before running the command. So another transaction's prewrite meets it (`locked`),
//!   the owner's prewrite converts it, a resolver's `check_txn_status` sees it alive.
//!   In log order, nothing touched the key between the grant's check and that entry.
//! - *Heartbeat*: the owner's heartbeat of a primary held in memory raises its TTL in
//!   memory (the same action apply runs, over the lock as it would be carried).
//! - *Move*: before a leader transfer or a split ([`RegionObserver::before_hand_over`]),
//!   and when a lock's TTL ran out (so resolvers and GC can find it), the locks are
//!   proposed alone (`AdminCmd.leader_locks`).
//! - *Lost*: on a leader change (a crash, a partition) the locks are gone, and so are
//!   those of a carrying command refused before the layer applies it (`EpochNotMatch`, a
//!   session's duplicate); the owner's prewrite then answers `PessimisticLockNotFound`
//!   and the transaction fails, safely: it committed nothing.
//!
//! Why a grant needs no lease: the entry that carries the lock is proposed in the grant's
//! term after it; by log matching, the entries before it are exactly those this leader
//! had, all applied or tracked when it checked. A deposed leader's grant is either never
//! committed (its owner's prewrite then fails) or committed behind those same entries.
//!
//! [`RegionObserver::before_hand_over`]: regatta_raftstore::coprocessor::RegionObserver::before_hand_over

use super::cmd;
use super::mem_locks::{MemLock, MemLocks};
use super::TxnObserver;
use regatta_engine::{Cf, OpBatch, Overlay, OverlayOp, Snapshot as _, WriteBatch as _};
use regatta_proto::kvrpcpb::{KvResponse, Request_oneof_cmd, Response};
use regatta_proto::raft_serverpb::{AdminCmd, CarriedLock, RaftCmd};
use regatta_proto::txnpb::{TxnHeartbeatResponse, TxnRequest_oneof_cmd as Cmd, TxnResponse};
use regatta_raftstore::coprocessor::{response, ObserverCx};
use std::sync::atomic::Ordering;

impl TxnObserver {
    /// Grants `cmd`'s pessimistic locks in memory when nothing stands in the way (see the
    /// module doc): returns the answer, or `None` to propose the command as usual.
    pub(super) fn lock_in_memory(&mut self, cmd: &RaftCmd, cx: &ObserverCx) -> Option<KvResponse> {
        let cfg = &self.shared.cfg;
        if !cfg.in_memory_pessimistic_locks {
            return None;
        }
        let Some(Request_oneof_cmd::txn(t)) = &cmd.get_request().cmd else {
            return None;
        };
        let Some(Cmd::pessimistic_lock(p)) = &t.cmd else {
            return None;
        };
        // A command under an at-most-once session is applied through the log, which
        // records its seq (a retry must find its answer there).
        if p.get_allow_lock_with_conflict()
            || cmd.get_client_id() != 0
            || !cx.leader
            || cx.fenced
            || cx.handing_over
            || cx.applied.1 != cx.term
            || cmd.get_region_epoch() != cx.region.get_region_epoch()
            || self.mem_locks.len() + p.get_keys().len() > cfg.max_in_memory_locks
        {
            return None;
        }
        self.mem_locks.applied(cx.applied.0);
        self.mem_locks.check_term(cx.term);
        let free = |k: &Vec<u8>| {
            !self.mem_locks.contains(k)
                && !self.mem_locks.busy(k)
                && self.lock_waits.holder_of(k).is_none()
        };
        // The safe point PD sent may be on its way into the log: apply would refuse the
        // lock then, so the grant waits for neither.
        let safe_point = self
            .applied_safe_point(cx)
            .max(self.shared.pd_gc_safe_point.load(Ordering::Acquire));
        if !p.get_keys().iter().all(free) || p.get_start_ts() <= safe_point {
            return None;
        }
        let snap = cx.engine.dyn_live();
        // A lock already there (the transaction's own, to raise its for_update_ts) is
        // changed through the log.
        for key in p.get_keys() {
            if snap
                .get(Cf::Lock, &regatta_txn::key::lock_key(key))
                .ok()?
                .is_some()
            {
                return None;
            }
        }
        let req = cmd::pessimistic_lock_request(p);
        let mut ops = OpBatch::default();
        let (values, locked_at) = regatta_txn::acquire_pessimistic_lock_at(&snap, &mut ops, &req)
            .ok()
            .filter(|(_, at)| *at == req.for_update_ts)?;
        // Exactly one new lock per key, in the request's order: nothing else to keep.
        if ops.ops.len() != req.keys.len() {
            return None;
        }
        let mut records = Vec::with_capacity(req.keys.len());
        for (key, op) in req.keys.iter().zip(&ops.ops) {
            match op {
                OverlayOp::Put(Cf::Lock, k, record) if *k == regatta_txn::key::lock_key(key) => {
                    records.push(record.clone())
                }
                _ => return None,
            }
        }
        let expires_ms = cx.wall_ms.saturating_add(p.get_lock_ttl_ms());
        for (key, record) in req.keys.into_iter().zip(records) {
            let lock = MemLock {
                record,
                start_ts: p.get_start_ts(),
                expires_ms,
            };
            self.mem_locks.insert(key, lock, cx.term);
        }
        let mut txn = TxnResponse::new();
        txn.set_pessimistic_lock(cmd::pessimistic_lock_response(p, values, locked_at));
        let mut resp = Response::new();
        resp.set_txn(txn);
        Some(response(resp))
    }

    /// A heartbeat of a primary held in memory raises its TTL there, as TiKV does: the
    /// lock stays out of the log while its transaction runs. Returns the answer, or `None`
    /// to propose the command as usual (apply then runs it over the carried lock).
    pub(super) fn heartbeat_in_memory(
        &mut self,
        cmd: &RaftCmd,
        cx: &ObserverCx,
    ) -> Option<KvResponse> {
        if !self.shared.cfg.in_memory_pessimistic_locks
            || cmd.get_client_id() != 0
            || !cx.leader
            || cx.handing_over
        {
            return None;
        }
        let Some(Request_oneof_cmd::txn(t)) = &cmd.get_request().cmd else {
            return None;
        };
        let Some(Cmd::heartbeat(h)) = &t.cmd else {
            return None;
        };
        self.mem_locks.check_term(cx.term);
        let primary = h.get_primary();
        let held = self.mem_locks.get(primary)?;
        // Apply's action, over the applied state with the lock as it would be carried.
        // No entry touched the key since its grant (it would have carried the lock away).
        let lock_key = regatta_txn::key::lock_key(primary);
        let snap = cx.engine.dyn_live();
        let mut overlay = Overlay::new(&*snap);
        overlay.put(Cf::Lock, &lock_key, &held.record);
        let mut ops = OpBatch::default();
        let ttl = regatta_txn::txn_heartbeat(
            &overlay,
            &mut ops,
            primary,
            h.get_start_ts(),
            h.get_advise_ttl_ms(),
        )
        .ok()?;
        let raised = match ops.ops.as_slice() {
            [] => None,
            [OverlayOp::Put(Cf::Lock, k, record)] if *k == lock_key => Some(record.clone()),
            _ => return None,
        };
        if let Some(record) = raised {
            let expires_ms = regatta_proto::ts::physical_ms(h.get_start_ts()).saturating_add(ttl);
            self.mem_locks.raise(primary, record, expires_ms);
        }
        let mut out = TxnHeartbeatResponse::new();
        out.set_lock_ttl_ms(ttl);
        let mut txn = TxnResponse::new();
        txn.set_heartbeat(out);
        let mut resp = Response::new();
        resp.set_txn(txn);
        Some(response(resp))
    }

    /// The entry being built holds `raft_cmd`: its keys are noted as touched, and the
    /// locks held in memory on them go into it.
    pub(super) fn carry_locks(&mut self, raft_cmd: &mut RaftCmd, cx: &ObserverCx) {
        if !self.shared.cfg.in_memory_pessimistic_locks {
            return;
        }
        self.mem_locks.applied(cx.applied.0);
        self.mem_locks.check_term(cx.term);
        let Some(Request_oneof_cmd::txn(t)) = &raft_cmd.get_request().cmd else {
            return;
        };
        if cmd::is_txn_read(t) {
            return;
        }
        let mut carried = Vec::new();
        for key in cmd::keys_of(t) {
            self.mem_locks.proposing(key);
            if let Some(lock) = self.mem_locks.take(key) {
                carried.push(carried_lock(key.to_vec(), lock));
            }
        }
        raft_cmd.mut_leader_locks().extend(carried);
    }

    /// Proposes every lock held in memory (`AdminCmd.leader_locks`), before a leader
    /// transfer or a split.
    pub(super) fn propose_all_locks(&mut self, cx: &mut ObserverCx) {
        self.mem_locks.check_term(cx.term);
        let all = self.mem_locks.take_all();
        self.propose_locks(cx, all);
    }

    /// Proposes the locks whose TTL ran out, so that resolvers find them (a dead client's
    /// lock would otherwise hold GC back for as long as this replica leads).
    pub(super) fn propose_expired_locks(&mut self, cx: &mut ObserverCx) {
        if !cx.leader {
            self.mem_locks.drop_locks();
            return;
        }
        self.mem_locks.check_term(cx.term);
        let expired = self.mem_locks.take_expired(cx.wall_ms);
        self.propose_locks(cx, expired);
    }

    /// Proposes `locks` alone in an admin entry (its keys are noted as touched by it in
    /// `post_propose_admin`; if it is never proposed, the locks are lost).
    fn propose_locks(&mut self, cx: &mut ObserverCx, locks: Vec<(Vec<u8>, MemLock)>) {
        if locks.is_empty() {
            return;
        }
        let mut admin = AdminCmd::new();
        admin.set_region_epoch(cx.region.get_region_epoch().clone());
        for (key, lock) in locks {
            admin.mut_leader_locks().push(carried_lock(key, lock));
        }
        cx.propose_admin(admin);
    }

    /// `cmd` was queued for the turn's entry: a lock request on its keys arriving later
    /// in the turn goes through the log behind it (fairness: a waiter handed a key keeps
    /// its turn).
    pub(super) fn queue_keys(&mut self, cmd: &RaftCmd) {
        if !self.shared.cfg.in_memory_pessimistic_locks {
            return;
        }
        if let Some(Request_oneof_cmd::txn(t)) = &cmd.get_request().cmd {
            for key in cmd::keys_of(t) {
                self.mem_locks.queueing(key);
            }
        }
    }

    /// Locks held in memory (for status pages and tests).
    pub(super) fn mem_locks(&self) -> &MemLocks {
        &self.mem_locks
    }
}

fn carried_lock(key: Vec<u8>, lock: MemLock) -> CarriedLock {
    let mut c = CarriedLock::new();
    c.set_key(key);
    c.set_lock(lock.record);
    c
}
