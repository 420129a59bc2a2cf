//! Driving raft-rs: propose the turn's commands, drain `Ready` (send, persist through the
//! LogWriter, apply), take persistence notices, and answer proposals.
//!
//! Async ready (raft-rs 0.7): leader messages go out at once (Raft thesis 10.2.1);
//! entries, HardState and snapshot go to the LogWriter as one `WriteTask`; after its sync
//! `Persisted` arrives and the messages held for that Ready are sent. Committed entries
//! are never beyond the durable log (raft-rs caps them at the persisted index).
//!
//! Invariants: a proposal is answered once; success means its entry was applied;
//! `StaleCommand` means it never will be; `Timeout` means unknown.

use super::{Peer, Proposal};
use crate::apply::{self, AppliedEntry};
use crate::error::Error;
use crate::log_writer::{Persisted, WriteTask};
use protobuf::Message as _;
use raft::eraftpb::Entry;
use regatta_engine::LogWrite;
use regatta_proto::kvrpcpb::ReadInfo;
use regatta_proto::raft_serverpb::{RaftCmd, RaftCmdBatch};
use slog::info;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Peer {
    /// Proposes the turn's commands, starts its reads and drains raft's Ready.
    pub fn flush(&mut self) {
        if self.is_fenced() {
            return;
        }
        self.propose_pending();
        self.start_reads();
        loop {
            while !self.is_fenced() && self.raw.has_ready() {
                self.handle_ready();
            }
            // A leader became known: the requests held for one go now (their reads need
            // starting, their proposals proposing). Reads that waited for this leader's
            // first commit start now too, not next turn (start_reads empties the queue
            // unless it still waits for that commit).
            let reads_can_start =
                self.reads.has_unstarted() && (!self.is_leader() || self.first_entry_applied());
            if self.release_leader_waits() || reads_can_start {
                self.start_reads();
                continue;
            }
            // Applying may have handed keys to lock waiters: propose their requests now,
            // not at the next turn.
            if self.is_fenced() || self.pending_cmds.is_empty() {
                break;
            }
            self.propose_pending();
        }
        for to in std::mem::take(&mut self.snapshot_reports) {
            self.raw.report_snapshot(to, raft::SnapshotStatus::Finish);
        }
        self.serve_reads();
        self.freshness.on_applied(self.raw.store().applied().0);
        self.serve_ryw(self.ctx.clock.now());
        self.publish_read_state();
    }

    /// Proposes the commands queued this turn as one log entry.
    pub(super) fn propose_pending(&mut self) {
        if self.pending_cmds.is_empty() {
            return;
        }
        let cmds = std::mem::take(&mut self.pending_cmds);
        let waits = std::mem::take(&mut self.pending_waits);
        self.pending_bytes = 0;
        let n = cmds.len() as u64;
        let mut batch = RaftCmdBatch::new();
        batch.set_propose_time_ms(self.ctx.clock.wall_ms());
        let mut responders = Vec::with_capacity(cmds.len());
        let mut floor_txn = false;
        for (mut cmd, tx) in cmds {
            // Chosen now, after every read of this turn raised max_ts (see max_ts.rs).
            floor_txn |= self.choose_txn_timestamps(&mut cmd);
            batch.mut_cmds().push(cmd);
            responders.push(tx);
        }
        let data = batch
            .write_to_bytes()
            .expect("encoding an in-memory command batch cannot fail");
        self.splits.written_since_check += data.len() as u64;
        match self.raw.propose(vec![], data) {
            Ok(()) => {
                let now = self.ctx.clock.now();
                if floor_txn {
                    self.txn_read_floor = self.raw.raft.raft_log.last_index();
                }
                self.proposals.push_back(Proposal {
                    index: self.raw.raft.raft_log.last_index(),
                    term: self.raw.raft.term,
                    proposed_at: now,
                    responders,
                    waits,
                    deadline: now + Duration::from_millis(self.ctx.cfg.proposal_timeout_ms),
                });
                let m = &self.ctx.metrics;
                m.proposed_cmds.fetch_add(n, Ordering::Relaxed);
                m.proposed_entries.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                let e = self.not_leader();
                for tx in responders {
                    let _ = tx.send(e.clone().into_response());
                }
                self.abandon_slots(waits.into_iter().map(|(_, s)| s).collect());
            }
        }
    }

    /// A 1PC prewrite gets its commit ts above `max_ts` (see `max_ts.rs`); it stays a
    /// plain prewrite while `max_ts` is not synced in this term, or when that ts would
    /// pass the store's timestamp limit. (Async-commit prewrites are refused at
    /// validation until async commit lands.) Returns whether reads arriving
    /// from now on must wait for this command's entry.
    fn choose_txn_timestamps(&mut self, cmd: &mut RaftCmd) -> bool {
        use regatta_proto::kvrpcpb::Request_oneof_cmd;
        use regatta_proto::txnpb::TxnRequest_oneof_cmd;
        let term = self.raw.raft.term;
        let Some(Request_oneof_cmd::txn(t)) = &mut cmd.mut_request().cmd else {
            return false;
        };
        let Some(TxnRequest_oneof_cmd::prewrite(p)) = &mut t.cmd else {
            return false;
        };
        let mut floor = false;
        if p.get_try_one_pc() {
            // Above the store's timestamp limit (see `ts_limit.rs`) the prewrite stays a
            // plain one: the client commits it by 2PC at a TSO timestamp.
            let limit = self.ctx.ts_limit.limit(self.ctx.clock.wall_ms());
            let commit_ts = self.max_ts.one_pc_commit_ts(
                term,
                p.get_start_ts(),
                p.get_for_update_ts(),
                p.get_min_commit_ts(),
                limit,
            );
            if let Some(ts) = commit_ts {
                cmd.set_one_pc_commit_ts(ts);
                floor = true;
            }
        }
        floor
    }

    fn handle_ready(&mut self) {
        let mut rd = self.raw.ready();
        let role_changed = rd.ss().is_some();
        // Before this Ready's messages go out (a new leader's first append among them).
        let sent_at = self.ctx.clock.now();
        self.send_messages(rd.take_messages());
        let mut w = LogWrite {
            region_id: self.region_id,
            ..LogWrite::default()
        };
        if !rd.snapshot().is_empty() {
            let meta = rd.snapshot().get_metadata();
            let (idx, term) = (meta.index, meta.term);
            match self.raw.mut_store().apply_snapshot(rd.snapshot(), &mut w) {
                Ok(()) => {
                    info!(self.logger, "installing snapshot"; "index" => idx, "term" => term);
                    self.pending_snapshot = Some((idx, term));
                }
                Err(e) => {
                    // A snapshot we cannot install (malformed, or not this region's):
                    // continuing would diverge. Stop this replica, not the whole store.
                    self.fence(format!(
                        "cannot install the snapshot at index {idx} term {term}: {e}"
                    ));
                    return;
                }
            }
        }
        if let Some(hs) = rd.hs() {
            let hs = hs.clone();
            self.raw.mut_store().set_hard_state(&hs, &mut w);
        }
        let entries = rd.take_entries();
        let last_index = entries.last().map_or(0, |e| e.index);
        self.raw.mut_store().append(entries, &mut w);
        for rs in rd.take_read_states() {
            if let Some((started, term)) = self.reads.confirm(&rs.request_ctx, rs.index) {
                // A quorum answered the heartbeat of this round, sent at its start.
                self.renew_lease(started, term);
            }
        }
        let committed = rd.take_committed_entries();
        let persisted_msgs = rd.take_persisted_messages();
        let number = rd.number();
        if w.is_empty() && self.inflight_writes == 0 && self.pending_snapshot.is_none() {
            self.send_messages(persisted_msgs);
            let mut light = self.raw.advance_append(rd);
            self.send_messages(light.take_messages());
            self.apply(committed);
            self.apply(light.take_committed_entries());
        } else {
            self.raw.advance_append_async(rd);
            self.persisted_msgs.push_back((number, persisted_msgs));
            self.inflight_writes += 1;
            self.submit(w, number, last_index);
            self.apply(committed);
        }
        if role_changed {
            let was_leader = self.was_leader;
            self.on_role_change();
            if self.is_leader() && !was_leader {
                self.leader_since = Some((sent_at, self.raw.raft.term));
            }
        }
    }

    /// Hands a write to the store's LogWriter, to be reported back to this peer.
    fn submit(&self, write: LogWrite, ready_number: u64, last_index: u64) {
        if let Some(sink) = &self.persisted_sink {
            self.ctx.log_writer.submit(WriteTask {
                write,
                ready_number,
                last_index,
                notify: sink.clone(),
            });
        }
    }

    /// Sends a write that needs no Ready of its own (compaction) through the LogWriter
    /// queue, so it stays ordered with log appends.
    pub(super) fn submit_extra_write(&mut self, wb: regatta_engine::RocksWriteBatch) {
        let write = LogWrite {
            region_id: self.region_id,
            extra: Some(wb),
            ..LogWrite::default()
        };
        self.submit(write, 0, 0);
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        if self.is_fenced() {
            return; // never apply past a failed apply
        }
        let Some((last, last_term)) = entries.last().map(|e| (e.index, e.term)) else {
            return;
        };
        let ttl = self.ctx.cfg.dedup_session_ttl_ms;
        match apply::apply_committed(self.raw.mut_store(), entries, ttl, &self.logger) {
            Ok(applied) => {
                self.raw.advance_apply_to(last);
                self.delegate.set_applied(last);
                // The term's first entry committed: a quorum took the append this leader
                // sent when it was elected, so the lease runs from then (as a proposal's
                // commit renews it from its proposal time). Lease reads need not wait for
                // a heartbeat round after an election.
                let term = self.raw.raft.term;
                if let Some((at, _)) = self
                    .leader_since
                    .take_if(|(_, won)| *won == term && last_term == term)
                {
                    self.renew_lease(at, term);
                }
                let mut gc_moved = false;
                for mut a in applied {
                    if let Some((_, right)) = &a.split {
                        self.on_split_applied(a.index, right);
                    }
                    gc_moved |= a.gc_safe_point.is_some();
                    let released = std::mem::take(&mut a.released);
                    self.answer(a);
                    self.on_released(released);
                }
                if gc_moved {
                    self.start_gc_pass();
                }
            }
            Err(e) => {
                // Applying later entries over a hole would diverge: stop the replica. A
                // failed write means the disk is bad for every region: poison the store.
                let reason = format!("apply failed: {e}");
                if matches!(&e, Error::Engine(inner) if !matches!(**inner, regatta_engine::Error::Corrupt { .. }))
                {
                    self.ctx.log_writer.poison(reason.clone());
                }
                self.fence(reason);
            }
        }
    }

    fn answer(&mut self, a: AppliedEntry) {
        while let Some(p) = self.proposals.front() {
            if p.index > a.index {
                break;
            }
            let Some(p) = self.proposals.pop_front() else {
                break;
            };
            if is_its_entry(&p, &a, self.region_id, self.peer_id) {
                // Committed: a quorum took an append sent after it was proposed.
                self.renew_lease(p.proposed_at, p.term);
                let waited = self
                    .ctx
                    .clock
                    .now()
                    .saturating_duration_since(p.proposed_at);
                let mut waits = p.waits.into_iter().peekable();
                for (i, (tx, mut resp)) in p.responders.into_iter().zip(a.responses).enumerate() {
                    if let Some((_, slot)) = waits.next_if(|(at, _)| *at == i) {
                        self.on_lock_answer(slot, tx, resp);
                        continue;
                    }
                    let r = resp.get_response();
                    let is_read = r.has_get() || r.has_scan() || r.has_batch_get();
                    if is_read && !resp.has_error() {
                        let mut info = ReadInfo::new();
                        info.set_linearizable(true);
                        info.set_network_round_trips(1); // the append of its entry
                        info.set_served_by_store(self.ctx.store_id);
                        info.set_read_index(a.index);
                        info.set_applied_index(a.index);
                        info.set_waited_us(waited.as_micros() as u64);
                        resp.set_read_info(info);
                    }
                    let _ = tx.send(resp);
                }
                return;
            }
            for tx in p.responders {
                let _ = tx.send(Error::StaleCommand.into_response());
            }
            self.abandon_slots(p.waits.into_iter().map(|(_, s)| s).collect());
        }
    }

    pub(super) fn on_role_change(&mut self) {
        let leader = self.is_leader();
        if leader && !self.was_leader {
            info!(self.logger, "became leader"; "term" => self.raw.raft.term);
            self.report_to_pd();
            self.max_ts.set_leader_term(self.raw.raft.term);
            self.sync_max_ts();
            // 1PC entries of an earlier term of this replica are either committed (every
            // read of this term waits for the term's first commit, which follows them)
            // or gone; their index may not even be in this log any more, so a floor kept
            // from then could hold reads until some later write fills it.
            self.txn_read_floor = 0;
        }
        if !leader && self.was_leader {
            info!(self.logger, "stepped down"; "term" => self.raw.raft.term);
            self.leader_since = None;
            self.lease.clear();
            self.max_ts.set_leader_term(0);
            self.splits.progress.stepped_down();
            let e = self.not_leader();
            for r in self.reads.take_unconfirmed() {
                let _ = r.tx.send(e.clone().into_response());
            }
            self.drain_lock_waits(&e);
            // Reads whose index was confirmed while leader are still linearizable once applied.
        }
        self.was_leader = leader;
    }

    /// Fetches a TSO timestamp for the term just won and raises `max_ts` with it (see
    /// `max_ts.rs`): until it arrives the leader does no 1PC. Retried with backoff while
    /// PD does not answer, and given up once the replica is no longer leader of the term.
    fn sync_max_ts(&self) {
        let Some(me) = self.mailbox.clone() else {
            return;
        };
        let (pd, max_ts, ts_limit, term, logger) = (
            self.ctx.pd.clone(),
            self.max_ts.clone(),
            self.ctx.ts_limit.clone(),
            self.raw.raft.term,
            self.logger.clone(),
        );
        me.spawn(Box::pin(async move {
            let mut backoff = Duration::from_millis(50);
            while max_ts.leader_term() == term {
                match pd.get_ts().await {
                    Ok(ts) => {
                        ts_limit.observe_tso(ts);
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

    /// The LogWriter made Readies through `ready_number` durable (or failed).
    pub fn on_persisted(&mut self, p: Persisted) {
        if let Err(reason) = p.result {
            self.fence(format!("raft log write failed: {reason}"));
            return;
        }
        if self.is_fenced() {
            return;
        }
        if p.ready_number == 0 {
            return; // a compaction
        }
        self.raw.on_persist_ready(p.ready_number);
        self.inflight_writes = self.inflight_writes.saturating_sub(1);
        if p.last_index > 0 {
            self.raw.mut_store().on_persisted(p.last_index);
        }
        if let Some((idx, _)) = self.pending_snapshot {
            if self.raw.raft.raft_log.persisted >= idx {
                self.raw.advance_apply_to(idx);
                self.delegate.set_applied(idx);
                self.pending_snapshot = None;
                if !self.peer_cache.is_empty() {
                    info!(self.logger, "initialized by snapshot"; "index" => idx,
                        "region" => ?self.region());
                    self.peer_cache.clear();
                }
                // A seeded sole voter elects itself again (see `Peer::seed`).
                self.on_started();
            }
        }
        while self
            .persisted_msgs
            .front()
            .is_some_and(|(n, _)| *n <= p.ready_number)
        {
            if let Some((_, msgs)) = self.persisted_msgs.pop_front() {
                self.send_messages(msgs);
            }
        }
    }
}

/// Whether applied entry `a` is the one proposal `p` made. Raft puts one entry at an index
/// per term, so matching index and term mean it is; apply answers one response per command
/// of the entry, so the counts must then agree. A mismatch is a broken invariant (responses
/// would reach the wrong callers), not staleness: it panics, naming the entry.
fn is_its_entry(p: &Proposal, a: &AppliedEntry, region_id: u64, peer_id: u64) -> bool {
    if (p.index, p.term) != (a.index, a.term) {
        return false;
    }
    assert_eq!(
        p.responders.len(),
        a.responses.len(),
        "region {region_id} peer {peer_id}: the entry at term {} index {} was proposed with \
         {} commands but applied with {} responses",
        a.term,
        a.index,
        p.responders.len(),
        a.responses.len(),
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use regatta_proto::kvrpcpb::KvResponse;
    use std::time::Instant;

    fn proposal(index: u64, term: u64, commands: usize) -> Proposal {
        let now = Instant::now();
        Proposal {
            index,
            term,
            responders: (0..commands)
                .map(|_| tokio::sync::oneshot::channel().0)
                .collect(),
            waits: Vec::new(),
            deadline: now,
            proposed_at: now,
        }
    }

    fn applied(index: u64, term: u64, responses: usize) -> AppliedEntry {
        AppliedEntry {
            index,
            term,
            responses: vec![KvResponse::new(); responses],
            split: None,
            released: Vec::new(),
            gc_safe_point: None,
        }
    }

    #[test]
    fn a_proposal_is_answered_by_the_entry_at_its_index_and_term_only() {
        assert!(is_its_entry(&proposal(7, 2, 3), &applied(7, 2, 3), 1, 11));
        // Another leader's entry took the index: the proposal is stale.
        assert!(!is_its_entry(&proposal(7, 2, 3), &applied(7, 3, 1), 1, 11));
        assert!(!is_its_entry(&proposal(6, 2, 3), &applied(7, 2, 3), 1, 11));
    }

    #[test]
    #[should_panic(
        expected = "region 1 peer 11: the entry at term 2 index 7 was proposed \
                               with 3 commands but applied with 2 responses"
    )]
    fn its_entry_with_another_count_of_responses_is_a_broken_invariant() {
        is_its_entry(&proposal(7, 2, 3), &applied(7, 2, 2), 1, 11);
    }
}
