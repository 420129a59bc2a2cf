//! Driving raft-rs: propose the turn's commands, drain `Ready` (send, persist through the
//! LogWriter, apply), take persistence notices, and answer proposals.
//!
//! Async ready (raft-rs 0.7): leader messages go out at once (Raft thesis 10.2.1);
//! entries, HardState and snapshot go to the LogWriter as one `WriteTask` with the
//! messages that must wait for them, which the LogWriter sends right after its sync, then
//! reports `Persisted`. Committed entries are never beyond the durable log (raft-rs caps
//! them at the persisted index).
//!
//! Invariants: a proposal is answered once; success means its entry was applied;
//! `StaleCommand` means it never will be; `Timeout` means unknown.

use super::effects::Effect;
use super::{Peer, Proposal};
use crate::apply::{self, AppliedEntry};
use crate::error::Error;
use crate::log_writer::Persisted;
use protobuf::Message as _;
use raft::eraftpb::Entry;
use regatta_engine::Engine;
use regatta_engine::LogWrite;
use regatta_proto::kvrpcpb::ReadInfo;
use regatta_proto::raft_serverpb::{RaftCmdBatch, RaftMessage};
use slog::info;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl<E: Engine> Peer<E> {
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
            if self.is_fenced() || self.batch.is_empty() {
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
        if self.batch.is_empty() {
            return;
        }
        let super::batch::Taken {
            mut cmds,
            tokens,
            waited,
        } = self.batch.take(self.ctx.clock.now());
        if !self.is_leader() {
            // Queued while leading, or by a hook after this turn's Ready stepped the
            // replica down: never proposed here (and never forwarded: an entry of another
            // leader at the index this replica would record could be taken for it).
            let e = self.not_leader();
            for (_, tx) in cmds {
                let _ = tx.send(e.clone().into_response());
            }
            self.abandon_tokens(tokens);
            return;
        }
        // Chosen now, after every read of this turn reached the observer.
        let marked = self.observe(|o, cx| {
            let mut marked = false;
            for (cmd, _) in cmds.iter_mut() {
                marked |= o.pre_propose(cmd, cx);
            }
            marked
        });
        let n = cmds.len() as u64;
        let mut batch = RaftCmdBatch::new();
        batch.set_propose_time_ms(self.ctx.clock.wall_ms());
        let mut responders = Vec::with_capacity(cmds.len());
        for (cmd, tx) in cmds {
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
                self.observer
                    .post_propose(self.raw.raft.raft_log.last_index(), marked);
                self.proposals.push_back(Proposal {
                    index: self.raw.raft.raft_log.last_index(),
                    term: self.raw.raft.term,
                    proposed_at: now,
                    persisted_after: None,
                    timed: true,
                    responders,
                    tokens,
                    deadline: now + Duration::from_millis(self.ctx.cfg.proposal_timeout_ms),
                });
                let m = &self.ctx.metrics;
                m.proposed_cmds.fetch_add(n, Ordering::Relaxed);
                m.proposed_entries.fetch_add(1, Ordering::Relaxed);
                m.stages.cmds.fetch_add(n, Ordering::Relaxed);
                m.stages
                    .wait_us
                    .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                let e = self.not_leader();
                for tx in responders {
                    let _ = tx.send(e.clone().into_response());
                }
                self.abandon_tokens(tokens);
            }
        }
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
                    // The snapshot replaces the sessions with the leader's.
                    self.sessions.clear();
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
            // Sent by whoever makes the write durable, right after it (one hop less on
            // every follower's acknowledgement than a trip back through this replica).
            let then_send = self.envelopes(persisted_msgs);
            self.inflight_writes += 1;
            self.submit(w, number, last_index, then_send);
            // (An apply that fences the replica strips the acknowledgements from the
            // outbox: see `Peer::fence`.)
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

    /// Asks the shell to hand a write to the store's LogWriter, to be reported back to
    /// this peer.
    fn submit(
        &mut self,
        write: LogWrite<E::WriteBatch>,
        ready_number: u64,
        last_index: u64,
        then_send: Vec<RaftMessage>,
    ) {
        self.effects.push(Effect::Persist {
            write,
            ready_number,
            last_index,
            then_send,
        });
    }

    /// Sends a write that needs no Ready of its own (compaction) through the LogWriter
    /// queue, so it stays ordered with log appends.
    pub(super) fn submit_extra_write(&mut self, wb: E::WriteBatch) {
        let write = LogWrite {
            region_id: self.region_id,
            extra: Some(wb),
            ..LogWrite::default()
        };
        self.submit(write, 0, 0, Vec::new());
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        if self.is_fenced() {
            return; // never apply past a failed apply
        }
        let Some((last, last_term)) = entries.last().map(|e| (e.index, e.term)) else {
            return;
        };
        let ttl = self.ctx.cfg.dedup_session_ttl_ms;
        let cop = self.ctx.coprocessor.clone();
        let started = self.ctx.clock.now();
        let env = apply::ApplyEnv {
            session_ttl_ms: ttl,
            cop: &*cop,
            logger: &self.logger,
        };
        match apply::apply_committed(self.raw.mut_store(), entries, env, &mut self.sessions) {
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
                for mut a in applied {
                    if let Some((_, right)) = &a.split {
                        self.on_split_applied(a.index, right);
                    }
                    let notes = std::mem::take(&mut a.notes);
                    self.answer(a, started);
                    if !notes.is_empty() {
                        self.observe(|o, cx| o.on_applied(notes, cx));
                    }
                }
            }
            Err(e) => {
                // Applying later entries over a hole would diverge: stop the replica. A
                // failed write means the disk is bad for every region: poison the store.
                let reason = format!("apply failed: {e}");
                if matches!(&e, Error::Engine(inner) if !matches!(**inner, regatta_engine::Error::Corrupt { .. }))
                {
                    self.effects.push(Effect::PoisonStore(reason.clone()));
                }
                self.fence(reason);
            }
        }
    }

    /// Answers the proposal of applied entry `a`, whose apply started at `applied_from`.
    fn answer(&mut self, a: AppliedEntry, applied_from: Instant) {
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
                let now = self.ctx.clock.now();
                let waited = now.saturating_duration_since(p.proposed_at);
                // Timed by the leader that proposed it, in its term (an entry of a deposed
                // leader that commits later would count the election in).
                if p.timed && self.is_leader() && p.term == self.raw.raft.term {
                    let committed_after = applied_from.saturating_duration_since(p.proposed_at);
                    let stages = &self.ctx.metrics.stages;
                    let us = |d: Duration| d.as_micros() as u64;
                    stages.entries.fetch_add(1, Ordering::Relaxed);
                    // A leader commits only what it persisted (raft-rs caps its committed
                    // entries at its persisted index), so the notice came first; were it
                    // ever missing, the commit bounds it.
                    stages.persist_us.fetch_add(
                        us(p.persisted_after.unwrap_or(committed_after)),
                        Ordering::Relaxed,
                    );
                    stages
                        .commit_us
                        .fetch_add(us(committed_after), Ordering::Relaxed);
                    stages.apply_us.fetch_add(
                        us(now.saturating_duration_since(applied_from)),
                        Ordering::Relaxed,
                    );
                }
                let mut tokens = p.tokens.into_iter().peekable();
                for (i, (tx, mut resp)) in p.responders.into_iter().zip(a.responses).enumerate() {
                    if let Some((_, token)) = tokens.next_if(|(at, _)| *at == i) {
                        self.observe(|o, cx| o.on_answer(token, tx, resp, cx));
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
            self.abandon_tokens(p.tokens);
        }
    }

    pub(super) fn on_role_change(&mut self) {
        let leader = self.is_leader();
        if leader && !self.was_leader {
            info!(self.logger, "became leader"; "term" => self.raw.raft.term);
            self.report_to_pd();
            self.observe(|o, cx| o.on_role_change(cx));
        }
        if !leader && self.was_leader {
            info!(self.logger, "stepped down"; "term" => self.raw.raft.term);
            self.leader_since = None;
            self.lease.clear();
            self.observe(|o, cx| o.on_role_change(cx));
            self.splits.progress.stepped_down();
            let e = self.not_leader();
            for r in self.reads.take_unconfirmed() {
                let _ = r.tx.send(e.clone().into_response());
            }
            // Reads whose index was confirmed while leader are still linearizable once applied.
        }
        self.was_leader = leader;
    }

    /// Notes when the leader's own write of its proposals up to `last_index` became
    /// durable (the write stages of [`crate::metrics::StageCounters`]).
    fn time_persisted(&mut self, last_index: u64) {
        let now = self.ctx.clock.now();
        for p in self.proposals.iter_mut() {
            if p.index > last_index {
                break;
            }
            if p.persisted_after.is_none() {
                p.persisted_after = Some(now.saturating_duration_since(p.proposed_at));
            }
        }
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
            self.time_persisted(p.last_index);
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
            tokens: Vec::new(),
            deadline: now,
            proposed_at: now,
            persisted_after: None,
            timed: true,
        }
    }

    fn applied(index: u64, term: u64, responses: usize) -> AppliedEntry {
        AppliedEntry {
            index,
            term,
            responses: vec![KvResponse::new(); responses],
            split: None,
            notes: Vec::new(),
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
