//! The ReadIndex queue (Raft thesis 6.4): linearizable reads on the leader without a log
//! write, as data.
//!
//! A read moves through four places:
//! 1. `new`: taken this turn;
//! 2. `waiting_term`: the leader has not committed an entry of its term yet (raft-rs would
//!    drop the `read_index` request silently, so the reads wait for it here);
//! 3. a round in flight: one `read_index` request (one heartbeat broadcast) per turn with
//!    a unique context, for every read of the turn;
//! 4. `ready`: the round's index is known (or, for a lease read, the commit index); the
//!    read is served once the applied index reaches it.
//!
//! Invariants: a read leaves the queue exactly once (served, expired, or refused when
//! the replica steps down); a read is served only at or after its index; reads whose
//! round was confirmed stay linearizable after a step-down (their index is fixed), so
//! only unconfirmed ones are refused then. A round without reads only renews the lease;
//! it is dropped after the read timeout so a lost one never blocks the next.

use super::{Peer, Responder};
use regatta_engine::Engine;
use regatta_proto::kvrpcpb::{ReadInfo, Request};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A read waiting to be served.
pub(crate) struct ReadReq {
    pub(crate) req: Request,
    pub(crate) tx: Responder,
    pub(crate) deadline: Instant,
    pub(crate) started: Instant,
    /// Filled in as the read is routed (lease, round trips), completed when served.
    pub(crate) info: ReadInfo,
    /// The region's epoch version when the read was accepted; a split before it is served
    /// sends it back with `EpochNotMatch` (its key may have moved to another region).
    pub(crate) version: u64,
    /// Served only once this index is applied too (a transactional read: the last 1PC or
    /// async-commit entry proposed before it arrived; 0 otherwise).
    pub(crate) floor: u64,
    /// Whether its consistency lets the leader's lease serve it (a lease read that found
    /// no lease yet: a new leader's first commit may bring one before its round starts).
    pub(crate) allows_lease: bool,
}

/// A ReadIndex round in flight: its reads, and when and in which term it started (a
/// confirmed round renews the lease from its start).
struct ReadRound {
    started: Instant,
    term: u64,
    reads: Vec<ReadReq>,
}

/// The leader's reads, from arrival to service.
#[derive(Default)]
pub(crate) struct ReadIndexQueue {
    new: Vec<ReadReq>,
    waiting_term: Vec<ReadReq>,
    inflight: HashMap<u64, ReadRound>,
    ready: VecDeque<(u64, Vec<ReadReq>)>,
    next_id: u64,
}

impl ReadIndexQueue {
    /// Takes a read that needs a round.
    pub(crate) fn push(&mut self, read: ReadReq) {
        self.new.push(read);
    }

    /// Takes a read whose index is already known (a lease read at the commit index).
    pub(crate) fn push_ready(&mut self, index: u64, read: ReadReq) {
        let index = index.max(read.floor);
        self.ready.push_back((index, vec![read]));
    }

    /// Whether reads wait for a round.
    pub(crate) fn has_unstarted(&self) -> bool {
        !self.new.is_empty() || !self.waiting_term.is_empty()
    }

    /// Every read waiting for a round, oldest first.
    pub(crate) fn take_unstarted(&mut self) -> Vec<ReadReq> {
        let mut reads = std::mem::take(&mut self.waiting_term);
        reads.append(&mut self.new);
        reads
    }

    /// Puts reads back to wait until the leader commits an entry of its term.
    pub(crate) fn wait_for_term(&mut self, reads: Vec<ReadReq>) {
        self.waiting_term = reads;
    }

    /// Starts a round for `reads` (none: a lease renewal) at `now` in `term`; returns the
    /// round's unique context for `RawNode::read_index`.
    pub(crate) fn start_round(&mut self, reads: Vec<ReadReq>, now: Instant, term: u64) -> Vec<u8> {
        self.next_id += 1;
        let id = self.next_id;
        self.inflight.insert(
            id,
            ReadRound {
                started: now,
                term,
                reads,
            },
        );
        id.to_be_bytes().to_vec()
    }

    /// Whether a round with no reads (a lease renewal) is in flight.
    pub(crate) fn renewal_in_flight(&self) -> bool {
        self.inflight.values().any(|r| r.reads.is_empty())
    }

    /// raft-rs confirmed the round of `ctx` at `index`: its reads become servable once
    /// `index` is applied. Returns when and in which term the round started (a quorum
    /// heard from the leader after that), or `None` for an unknown context.
    pub(crate) fn confirm(&mut self, ctx: &[u8], index: u64) -> Option<(Instant, u64)> {
        let id = ctx.try_into().map(u64::from_be_bytes).ok()?;
        let round = self.inflight.remove(&id)?;
        if !round.reads.is_empty() {
            let index = round.reads.iter().map(|r| r.floor).fold(index, u64::max);
            self.ready.push_back((index, round.reads));
        }
        Some((round.started, round.term))
    }

    /// The reads whose index is applied (`<= applied`), with the index each is served at.
    pub(crate) fn take_servable(&mut self, applied: u64) -> Vec<(u64, Vec<ReadReq>)> {
        let mut out = Vec::new();
        while self.ready.front().is_some_and(|(idx, _)| *idx <= applied) {
            if let Some(r) = self.ready.pop_front() {
                out.push(r);
            }
        }
        out
    }

    /// Removes and returns the reads past their deadline that still wait for a round or
    /// its confirmation; drops renewal rounds older than `read_timeout`.
    pub(crate) fn expire(&mut self, now: Instant, read_timeout: Duration) -> Vec<ReadReq> {
        let mut dead = Vec::new();
        let mut split = |reads: &mut Vec<ReadReq>| {
            let (d, live): (Vec<_>, Vec<_>) = reads.drain(..).partition(|r| r.deadline <= now);
            *reads = live;
            dead.extend(d);
        };
        split(&mut self.waiting_term);
        for round in self.inflight.values_mut() {
            split(&mut round.reads);
        }
        self.inflight.retain(|_, r| {
            !r.reads.is_empty() || now.saturating_duration_since(r.started) < read_timeout
        });
        dead
    }

    /// The replica stepped down: removes and returns the reads not yet confirmed (they
    /// must go to the new leader). Confirmed reads stay: their index is fixed.
    pub(crate) fn take_unconfirmed(&mut self) -> Vec<ReadReq> {
        let mut out: Vec<ReadReq> = self.inflight.drain().flat_map(|(_, r)| r.reads).collect();
        out.append(&mut self.waiting_term);
        out
    }

    /// Removes and returns every read in the queue (the replica stops serving).
    pub(crate) fn take_all(&mut self) -> Vec<ReadReq> {
        let mut out = self.take_unconfirmed();
        out.append(&mut self.new);
        for (_, reads) in self.ready.drain(..) {
            out.extend(reads);
        }
        out
    }

    /// Whether no read is anywhere in the queue (renewal rounds do not count).
    pub(crate) fn is_idle(&self) -> bool {
        self.new.is_empty()
            && self.waiting_term.is_empty()
            && self.inflight.values().all(|r| r.reads.is_empty())
            && self.ready.is_empty()
    }
}

impl<E: Engine> Peer<E> {
    /// Starts one round for the turn's reads (or refuses them when not leader).
    pub(super) fn start_reads(&mut self) {
        if !self.reads.has_unstarted() {
            return;
        }
        let reads = self.reads.take_unstarted();
        if !self.is_leader() {
            let e = self.not_leader();
            for r in reads {
                let _ = r.tx.send(e.clone().into_response());
            }
            return;
        }
        // raft-rs drops read_index silently until the leader committed an entry of its
        // term; the reads wait until that entry is applied too, whose commit renews the
        // lease (see `ready.rs`): lease reads that waited for it are then served from the
        // lease, without a round of their own (any read is served only once that entry is
        // applied, so the wait costs none of them anything).
        if !self.first_entry_applied() {
            self.reads.wait_for_term(reads);
            return;
        }
        let now = self.ctx.clock.now();
        let lease = !self.splits.progress.blocks_lease() && self.lease_valid(now);
        let (by_lease, reads): (Vec<ReadReq>, Vec<ReadReq>) =
            reads.into_iter().partition(|r| lease && r.allows_lease);
        let index = self.raw.raft.raft_log.committed;
        for mut r in by_lease {
            r.info.set_lease_used(true);
            r.info.set_network_round_trips(0);
            self.reads.push_ready(index, r);
        }
        if !reads.is_empty() {
            self.start_round(reads);
        }
    }

    /// Whether this leader has applied an entry of its term (see `start_reads`).
    pub(super) fn first_entry_applied(&self) -> bool {
        self.raw.raft.commit_to_current_term() && self.leader_since.is_none()
    }

    /// Starts one ReadIndex round (a heartbeat broadcast) for `reads`.
    pub(super) fn start_round(&mut self, reads: Vec<ReadReq>) {
        let now = self.ctx.clock.now();
        let ctx = self.reads.start_round(reads, now, self.raw.raft.term);
        self.raw.read_index(ctx);
    }

    /// Serves the reads whose index is applied.
    pub(super) fn serve_reads(&mut self) {
        let applied = self.raw.store().applied().0;
        for (index, reads) in self.reads.take_servable(applied) {
            for r in reads {
                self.finish_read(r, index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use regatta_proto::kvrpcpb::KvResponse;
    use tokio::sync::oneshot;

    fn read(clock: &ManualClock, timeout_ms: u64) -> (ReadReq, oneshot::Receiver<KvResponse>) {
        let (tx, rx) = oneshot::channel();
        let now = clock.now();
        let r = ReadReq {
            req: Request::new(),
            tx,
            deadline: now + Duration::from_millis(timeout_ms),
            started: now,
            info: ReadInfo::new(),
            version: 1,
            floor: 0,
            allows_lease: false,
        };
        (r, rx)
    }

    #[test]
    fn reads_of_a_round_are_served_only_once_its_index_is_applied() {
        let clock = ManualClock::new();
        let mut q = ReadIndexQueue::default();
        let (a, _ra) = read(&clock, 1000);
        let (b, _rb) = read(&clock, 1000);
        q.push(a);
        q.push(b);
        let reads = q.take_unstarted();
        assert_eq!(reads.len(), 2);
        let ctx = q.start_round(reads, clock.now(), 7);
        assert!(!q.is_idle());
        assert!(q.take_servable(100).is_empty(), "not confirmed yet");
        assert_eq!(q.confirm(&ctx, 42), Some((clock.now(), 7)));
        assert!(q.take_servable(41).is_empty(), "applied 41 < read index 42");
        let served = q.take_servable(42);
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].0, 42);
        assert_eq!(served[0].1.len(), 2);
        assert!(q.is_idle());
    }

    #[test]
    fn a_read_with_a_floor_waits_for_it_past_its_round_or_lease_index() {
        // A transactional read must not be served before the last 1PC entry proposed
        // before it arrived is applied, whatever its round (or lease) index says.
        let clock = ManualClock::new();
        let mut q = ReadIndexQueue::default();
        let (mut a, _ra) = read(&clock, 1000);
        a.floor = 50;
        let (b, _rb) = read(&clock, 1000);
        let ctx = q.start_round(vec![a, b], clock.now(), 3);
        q.confirm(&ctx, 42);
        assert!(
            q.take_servable(49).is_empty(),
            "the floor 50 is not applied"
        );
        assert_eq!(q.take_servable(50)[0].0, 50);
        let (mut lease, _rl) = read(&clock, 1000);
        lease.floor = 60;
        q.push_ready(55, lease);
        assert!(q.take_servable(59).is_empty());
        assert_eq!(q.take_servable(60)[0].0, 60);
    }

    #[test]
    fn each_round_has_a_unique_context_and_unknown_ones_are_ignored() {
        let clock = ManualClock::new();
        let mut q = ReadIndexQueue::default();
        let c1 = q.start_round(Vec::new(), clock.now(), 1);
        let c2 = q.start_round(Vec::new(), clock.now(), 1);
        assert_ne!(c1, c2);
        assert!(q.renewal_in_flight());
        assert!(q.confirm(b"junk", 5).is_none());
        assert!(q.confirm(&99u64.to_be_bytes(), 5).is_none());
        assert!(q.confirm(&c1, 5).is_some());
        assert!(q.confirm(&c1, 5).is_none(), "a round is confirmed once");
        assert!(q.is_idle(), "renewal rounds hold no reads");
    }

    #[test]
    fn reads_past_their_deadline_expire_and_lost_renewals_are_dropped() {
        let clock = ManualClock::new();
        let mut q = ReadIndexQueue::default();
        let (short, _r1) = read(&clock, 100);
        let (long, _r2) = read(&clock, 1000);
        let ctx = q.start_round(vec![short, long], clock.now(), 1);
        let _renewal = q.start_round(Vec::new(), clock.now(), 1);
        let timeout = Duration::from_millis(500);
        clock.advance_ms(99);
        assert!(q.expire(clock.now(), timeout).is_empty());
        clock.advance_ms(1);
        assert_eq!(
            q.expire(clock.now(), timeout).len(),
            1,
            "the 100 ms read expires"
        );
        assert!(q.renewal_in_flight());
        clock.advance_ms(400);
        assert!(q.expire(clock.now(), timeout).is_empty());
        assert!(
            !q.renewal_in_flight(),
            "a renewal older than the read timeout is dropped"
        );
        assert!(
            q.confirm(&ctx, 3).is_some(),
            "the round with a live read stays"
        );
        assert_eq!(q.take_servable(3)[0].1.len(), 1);
    }

    #[test]
    fn reads_wait_for_the_terms_first_commit_in_order() {
        let clock = ManualClock::new();
        let mut q = ReadIndexQueue::default();
        let (a, _ra) = read(&clock, 1000);
        q.push(a);
        let first = q.take_unstarted();
        q.wait_for_term(first);
        let (b, _rb) = read(&clock, 1000);
        q.push(b);
        assert!(q.has_unstarted());
        let all = q.take_unstarted();
        assert_eq!(all.len(), 2);
        assert!(all[0].started <= all[1].started);
        assert!(!q.has_unstarted());
    }

    #[test]
    fn stepping_down_refuses_unconfirmed_reads_and_keeps_confirmed_ones() {
        let clock = ManualClock::new();
        let mut q = ReadIndexQueue::default();
        let (a, _ra) = read(&clock, 1000);
        let (b, _rb) = read(&clock, 1000);
        let (c, _rc) = read(&clock, 1000);
        let confirmed = q.start_round(vec![a], clock.now(), 1);
        q.confirm(&confirmed, 10);
        q.start_round(vec![b], clock.now(), 1);
        q.wait_for_term(vec![c]);
        assert_eq!(q.take_unconfirmed().len(), 2);
        assert_eq!(
            q.take_servable(10).len(),
            1,
            "the confirmed read is still served"
        );
        assert!(q.is_idle());
    }
}
