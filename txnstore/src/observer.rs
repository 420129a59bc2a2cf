//! [`TxnObserver`]: the transactional layer's part of one region replica, driven by the
//! raftstore at the seam's hooks (see [`regatta_raftstore::coprocessor`]).
//!
//! It owns, per replica:
//! - `max_ts` and the read floor (see `max_ts.rs`): transactional reads raise `max_ts`, a
//!   1PC prewrite gets its commit ts above it at propose time, and reads arriving after it
//!   wait for its entry;
//! - the leader's lock waits (see `waits.rs`), answered on step-down, split and fence;
//! - GC (see `gc.rs`): PD's safe point proposed into the log, passes queued on the worker;
//! - the leader's in-memory pessimistic locks (see `leader_locks.rs`).
//!
//! Invariants: only a leader queues waits or chooses 1PC timestamps; a new leader chooses
//! none until `max_ts` was synced with a TSO timestamp fetched in its term; every waiter
//! is answered exactly once (granted, refused, timed out or drained); locks held in memory
//! belong to one term of one leader and are dropped with it.

use super::cmd;
use super::gc::GcState;
use super::max_ts::MaxTs;
use super::mem_locks::MemLocks;
use super::waits::{LockWaits, WaitSlot};
use super::{Released, SafePointRaised, Shared};
use regatta_proto::kvrpcpb::{KvResponse, Request, Request_oneof_cmd};
use regatta_proto::pdpb::{LockReport, RegionHeartbeatRequest, WaitRefused};
use regatta_proto::raft_serverpb::{AdminCmd, RaftCmd};
use regatta_proto::txnpb::TxnRequest_oneof_cmd;
use regatta_raftstore::coprocessor::{Gate, Note, ObserverCx, RegionObserver};
use regatta_raftstore::Error;
use regatta_raftstore::Responder;
use slog::Logger;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// `RegionStatus::observed` name: pessimistic lock requests waiting in this leader's queues.
pub const LOCK_WAITERS: &str = "lock_waiters";
/// `RegionStatus::observed` name: the region's applied GC safe point (0: none yet); reads
/// below it are refused.
pub const GC_SAFE_POINT: &str = "gc_safe_point";
/// `RegionStatus::observed` name: PD's GC safe point as this store last heard it (0: not
/// yet); its leaders bring it into their regions' logs at the GC interval.
pub const PD_GC_SAFE_POINT: &str = "pd_gc_safe_point";
/// `RegionStatus::observed` name: the safe point of this replica's last completed GC pass.
pub const GC_COLLECTED_SAFE_POINT: &str = "gc_collected_safe_point";
/// `RegionStatus::observed` name: pessimistic locks this leader holds in memory, not yet
/// in the log.
pub const IN_MEMORY_LOCKS: &str = "in_memory_locks";

/// The transactional layer's part of one replica (see the module doc).
pub struct TxnObserver {
    pub(super) region_id: u64,
    pub(super) shared: Arc<Shared>,
    pub(super) logger: Logger,
    pub(super) max_ts: MaxTs,
    /// The index of the last entry this leader proposed with a 1PC prewrite: a
    /// transactional read is served only once that is applied, so it cannot miss a commit
    /// whose ts was chosen below its own before it arrived.
    read_floor: u64,
    /// Pessimistic lock requests waiting for keys other transactions hold (leader only).
    pub(super) lock_waits: LockWaits,
    /// Proposed lock requests that may wait, by token, until apply answers them.
    pub(super) slots: HashMap<u64, WaitSlot>,
    next_token: u64,
    pub(super) gc: GcState,
    /// Pessimistic locks granted in memory, and the keys of unapplied entries (leader
    /// only; see `leader_locks.rs`).
    pub(super) mem_locks: MemLocks,
}

impl TxnObserver {
    pub(super) fn new(region_id: u64, shared: Arc<Shared>, logger: Logger) -> TxnObserver {
        let max_per_key = shared.cfg.max_lock_waiters_per_key;
        TxnObserver {
            region_id,
            shared,
            logger,
            max_ts: MaxTs::default(),
            read_floor: 0,
            lock_waits: LockWaits::new(max_per_key),
            slots: HashMap::new(),
            next_token: 1,
            gc: GcState::default(),
            mem_locks: MemLocks::default(),
        }
    }

    /// Proposes `cmd` with `slot` (its answer comes back to [`Self::on_answer`]).
    pub(super) fn propose_with_slot(
        &mut self,
        cx: &mut ObserverCx,
        cmd: RaftCmd,
        tx: Responder,
        slot: WaitSlot,
    ) {
        let token = self.next_token;
        self.next_token += 1;
        self.slots.insert(token, slot);
        self.queue_keys(&cmd);
        cx.propose(cmd, tx, Some(token));
    }

    /// Fetches a TSO timestamp for the term just won and raises `max_ts` with it (see
    /// `max_ts.rs`): until it arrives the leader does no 1PC. Retried with backoff while
    /// PD does not answer, and given up once the replica is no longer leader of the term.
    fn sync_max_ts(&self, cx: &ObserverCx) {
        let Some(me) = cx.mailbox else {
            return;
        };
        let (shared, max_ts, term, logger) = (
            self.shared.clone(),
            self.max_ts.clone(),
            cx.term,
            self.logger.clone(),
        );
        me.spawn(Box::pin(async move {
            let mut backoff = Duration::from_millis(50);
            while max_ts.leader_term() == term {
                match shared.pd.get_ts().await {
                    Ok(ts) => {
                        shared.ts_limit.observe_tso(ts);
                        max_ts.synced(term, ts);
                        return;
                    }
                    Err(e) => {
                        slog::warn!(logger, "cannot sync max_ts with the TSO"; "term" => term,
                            "error" => %e);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }));
    }
}

impl RegionObserver for TxnObserver {
    fn on_request(&mut self, req: &Request, cx: &mut ObserverCx) -> Result<Gate, Error> {
        let Some(Request_oneof_cmd::txn(t)) = &req.cmd else {
            return Ok(Gate::default());
        };
        // Transactional commands are served by the leader only (ReadIndex or lease for
        // reads), never by a follower nor through the log: the leader's max_ts must see
        // every read.
        if !cx.leader {
            return Err(cx.not_leader());
        }
        // A timestamp beyond what the TSO handed out (plus the drift allowance) never
        // reaches max_ts nor the region's data (see `ts_limit.rs`).
        let limit = self.shared.ts_limit.limit(cx.wall_ms);
        if let Some(ts) = super::ts_limit::beyond(t, limit) {
            return Err(cmd::ts_too_far_ahead(self.region_id, ts, limit));
        }
        if let Some(ts) = cmd::read_ts(t) {
            self.max_ts.observe(ts);
        }
        // An async-commit prewrite needs a min_commit_ts above every read of this and
        // earlier leaders (`max_ts.rs`): none until this term's TSO sync. Refused before
        // it is proposed (apply refuses one whose ts could not be chosen, too).
        if matches!(&t.cmd, Some(TxnRequest_oneof_cmd::prewrite(p)) if p.get_use_async_commit())
            && !self.max_ts.ready(cx.term)
        {
            return Err(Error::ServerIsBusy(
                "async commit: the new leader has not synced max_ts with the TSO yet".into(),
            ));
        }
        Ok(Gate {
            linearizable: cmd::is_txn_read(t),
            read_floor: self.read_floor,
        })
    }

    fn on_write(&mut self, cmd: RaftCmd, tx: Responder, cx: &mut ObserverCx) {
        if let Some(answer) = self
            .lock_in_memory(&cmd, cx)
            .or_else(|| self.heartbeat_in_memory(&cmd, cx))
        {
            let _ = tx.send(answer);
            return;
        }
        if let Some(deadline) = self.lock_wait_deadline(cmd.get_request(), cx.now) {
            self.propose_waiting(cx, cmd, tx, deadline);
            return;
        }
        let early = self.early_hand_overs(cmd.get_request());
        self.queue_keys(&cmd);
        cx.propose(cmd, tx, None);
        for (key, holder, waiter) in early {
            self.hand_over(cx, key, holder, waiter);
        }
    }

    /// A 1PC prewrite gets its commit ts above `max_ts` (see `max_ts.rs`); it stays a
    /// plain prewrite while `max_ts` is not synced in this term, or when that ts would
    /// pass the store's timestamp limit (the client then commits it by 2PC at a TSO
    /// timestamp). An async-commit prewrite gets the floor of its locks' `min_commit_ts`
    /// by the same rule; when none can be chosen it is refused at apply
    /// (`ServerIsBusy`), writing nothing.
    fn pre_propose(&mut self, raft_cmd: &mut RaftCmd, cx: &ObserverCx) -> bool {
        self.carry_locks(raft_cmd, cx);
        let Some(Request_oneof_cmd::txn(t)) = &mut raft_cmd.mut_request().cmd else {
            return false;
        };
        let Some(TxnRequest_oneof_cmd::prewrite(p)) = &mut t.cmd else {
            return false;
        };
        let async_commit = p.get_use_async_commit();
        if !p.get_try_one_pc() && !async_commit {
            return false;
        }
        let limit = self.shared.ts_limit.limit(cx.wall_ms);
        let commit_ts = self.max_ts.one_pc_commit_ts(
            cx.term,
            p.get_start_ts(),
            p.get_for_update_ts(),
            p.get_min_commit_ts(),
            limit,
        );
        match commit_ts {
            Some(ts) if async_commit => {
                raft_cmd.set_async_commit_ts(ts);
                true
            }
            Some(ts) => {
                raft_cmd.set_one_pc_commit_ts(ts);
                true
            }
            None => false,
        }
    }

    fn post_propose(&mut self, index: u64, marked: bool) {
        self.mem_locks.proposed(index);
        if marked {
            self.read_floor = index;
        }
    }

    fn post_propose_admin(&mut self, admin: &AdminCmd, index: u64) {
        let keys = admin.get_leader_locks().iter().map(|c| c.get_key());
        self.mem_locks.proposed_admin(index, keys);
    }

    fn before_hand_over(&mut self, cx: &mut ObserverCx) {
        self.propose_all_locks(cx);
    }

    fn on_answer(&mut self, token: u64, tx: Responder, resp: KvResponse, cx: &mut ObserverCx) {
        match self.slots.remove(&token) {
            Some(slot) => self.on_lock_answer(cx, slot, tx, resp),
            None => {
                let _ = tx.send(resp);
            }
        }
    }

    fn on_abandoned(&mut self, tokens: Vec<u64>, cx: &mut ObserverCx) {
        let slots = tokens
            .into_iter()
            .filter_map(|t| self.slots.remove(&t))
            .collect();
        self.abandon_slots(cx, slots);
    }

    fn on_applied(&mut self, notes: Vec<Note>, cx: &mut ObserverCx) {
        let mut gc_moved = false;
        for note in notes {
            let note = match note.downcast::<Released>() {
                Ok(released) => {
                    self.on_released(cx, released.0);
                    continue;
                }
                Err(other) => other,
            };
            gc_moved |= note.downcast::<SafePointRaised>().is_ok();
        }
        if gc_moved {
            self.start_gc_pass(cx);
        }
    }

    fn on_role_change(&mut self, cx: &mut ObserverCx) {
        // Granted by this replica in an earlier term, or not its to keep: gone (their
        // owners' prewrites answer `PessimisticLockNotFound`).
        self.mem_locks.drop_locks();
        if cx.leader {
            self.max_ts.set_leader_term(cx.term);
            self.sync_max_ts(cx);
            // 1PC entries of an earlier term of this replica are either committed (every
            // read of this term waits for the term's first commit, which follows them)
            // or gone; their index may not even be in this log any more, so a floor kept
            // from then could hold reads until some later write fills it.
            self.read_floor = 0;
        } else {
            self.max_ts.set_leader_term(0);
            self.drain(&cx.not_leader());
        }
    }

    fn drain(&mut self, why: &Error) {
        self.drain_lock_waits(why);
        self.mem_locks.drop_locks();
    }

    fn on_tick(&mut self, cx: &mut ObserverCx) {
        self.mem_locks.applied(cx.applied.0);
        self.propose_expired_locks(cx);
        self.expire_lock_waits(cx);
        self.maybe_gc(cx);
    }

    fn on_message(&mut self, msg: Note, cx: &mut ObserverCx) {
        if let Ok(refused) = msg.downcast::<WaitRefused>() {
            self.on_wait_refused(cx, *refused);
        }
    }

    /// The region's oldest lock, for PD's GC safe point (usually no lock at all: one seek
    /// of the lock CF) — only once this leader applied an entry of its term, so every lock
    /// committed before it is in the state scanned (a new leader may still be applying an
    /// earlier term's prewrites).
    fn on_heartbeat(&self, hb: &mut RegionHeartbeatRequest, cx: &ObserverCx) {
        if cx.applied.1 != cx.term {
            return;
        }
        match super::oldest_lock(&cx.engine.dyn_live(), cx.region) {
            Ok(oldest) => {
                // 0: no lock in the lock CF.
                let oldest = match self.mem_locks().oldest_start_ts() {
                    Some(m) if oldest == 0 || m < oldest => m,
                    _ => oldest,
                };
                let mut locks = LockReport::new();
                locks.set_oldest_start_ts(oldest);
                locks.set_scanned_at_ms(cx.wall_ms);
                hb.set_locks(locks);
            }
            Err(e) => {
                slog::warn!(self.logger, "scanning the region's locks failed"; "error" => %e)
            }
        }
    }

    fn is_idle(&self) -> bool {
        // A lock held in memory keeps the clock running: its TTL must be seen to end.
        self.lock_waits.is_empty() && self.mem_locks.is_empty()
    }

    fn status(&self, cx: &ObserverCx) -> Vec<(&'static str, u64)> {
        vec![
            (LOCK_WAITERS, self.lock_waits.len() as u64),
            (GC_SAFE_POINT, self.applied_safe_point(cx)),
            (
                PD_GC_SAFE_POINT,
                self.shared.pd_gc_safe_point.load(Ordering::Acquire),
            ),
            (GC_COLLECTED_SAFE_POINT, self.gc.collected()),
            (IN_MEMORY_LOCKS, self.mem_locks.len() as u64),
        ]
    }
}
