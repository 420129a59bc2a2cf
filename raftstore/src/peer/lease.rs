//! The leader's clock lease (docs/CLOCKS.md), as data.
//!
//! A leader that knows a quorum acknowledged a message it sent at `t` in its term knows no
//! other leader can be elected before `t + election timeout - drift`; the lease is that
//! bound, `t + lease_ms` (config checks `lease_ms + max_clock_drift_ms <= (election_ticks -
//! 1) * tick`). Invariants kept here:
//! - a lease belongs to one term and is never valid in another;
//! - renewing only moves the end forward within a term;
//! - after a leader transfer starts, no round started before the transfer could end (one
//!   election timeout) renews it: the transferee may win without waiting out the
//!   followers' election timers.
//!
//! The caller (the peer) decides whether this replica may hold a lease at all (leader,
//! lease on, no transfer in flight, the term's first entry applied); this type only keeps
//! the times.

use super::Peer;
use regatta_engine::Engine;
use std::time::{Duration, Instant};

/// A leader's lease: valid in `term` until `until`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Lease {
    until: Option<Instant>,
    term: u64,
    /// No renewal from rounds started before this, nor until then (leader transfer).
    blocked_until: Option<Instant>,
}

impl Lease {
    /// Whether the lease holds at `now` in `term`.
    pub(crate) fn valid(&self, now: Instant, term: u64) -> bool {
        self.term == term && self.until.is_some_and(|t| now < t)
    }

    /// The lease's end if it belongs to `term`.
    pub(crate) fn until_in(&self, term: u64) -> Option<Instant> {
        (self.term == term).then_some(self.until).flatten()
    }

    /// Whether the lease ends (or has ended) by `t`; no lease counts as ended.
    pub(crate) fn ends_by(&self, t: Instant) -> bool {
        self.until.is_none_or(|u| u <= t)
    }

    /// A quorum acknowledged a message sent at `sent_at` in `term`: the lease runs to
    /// `sent_at + lease`, unless a leader transfer blocks it.
    pub(crate) fn renew(&mut self, sent_at: Instant, now: Instant, term: u64, lease: Duration) {
        if self.blocked_until.is_some_and(|b| sent_at < b || now < b) {
            return;
        }
        let until = sent_at + lease;
        if self.term != term {
            self.term = term;
            self.until = Some(until);
        } else {
            self.until = Some(self.until.map_or(until, |u| u.max(until)));
        }
    }

    /// A leader transfer is in flight: drop the lease, and take none from rounds started
    /// before `now + election_timeout` (by then the transferee may lead).
    pub(crate) fn withdraw_for_transfer(&mut self, now: Instant, election_timeout: Duration) {
        self.until = None;
        self.blocked_until = Some(now + election_timeout);
    }

    /// The replica stepped down: the lease is gone.
    pub(crate) fn clear(&mut self) {
        self.until = None;
    }
}

impl<E: Engine> Peer<E> {
    /// Whether this leader's lease holds at `now` (docs/CLOCKS.md). Never across a term
    /// change, after stepping down, or while a leader transfer is in flight.
    pub(super) fn lease_valid(&mut self, now: Instant) -> bool {
        if self.ctx.lease_ms() == 0 || !self.is_leader() {
            return false;
        }
        if self.raw.raft.lead_transferee.is_some() {
            // The transferee may be elected without waiting out the followers' election
            // timers: no lease now, and none from rounds started before it could end.
            let timeout = Duration::from_millis(self.ctx.cfg.min_election_timeout_ms());
            self.lease.withdraw_for_transfer(now, timeout);
            return false;
        }
        self.lease.valid(now, self.raw.raft.term)
    }

    /// A quorum acknowledged a message this leader sent at `sent_at` in term `term`.
    pub(super) fn renew_lease(&mut self, sent_at: Instant, term: u64) {
        if self.ctx.lease_ms() == 0
            || !self.is_leader()
            || term != self.raw.raft.term
            || self.raw.raft.lead_transferee.is_some()
        {
            return;
        }
        let now = self.ctx.clock.now();
        let lease = Duration::from_millis(self.ctx.lease_ms());
        self.lease.renew(sent_at, now, term, lease);
    }

    /// A leader whose lease is about to lapse starts a ReadIndex round with no reads: its
    /// confirmation renews the lease, so lease reads and follower-read freshness (leader
    /// stamps need the lease) keep working without a read paying for the round trip.
    pub(super) fn keep_lease_warm(&mut self, now: Instant) {
        if self.hibernation.is_hibernating()
            || self.ctx.lease_ms() == 0
            || !self.is_leader()
            || !self.raw.raft.commit_to_current_term()
            || self.reads.renewal_in_flight()
        {
            return;
        }
        let margin = self.ctx.cfg.tick_interval() * (self.ctx.cfg.heartbeat_ticks as u32 + 1);
        if !self.lease_valid(now) || self.lease.ends_by(now + margin) {
            self.start_round(Vec::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const LEASE: Duration = Duration::from_millis(400);

    #[test]
    fn a_renewed_lease_holds_until_sent_at_plus_lease_and_not_after() {
        let clock = ManualClock::new();
        let mut l = Lease::default();
        let sent = clock.now();
        assert!(!l.valid(sent, 1), "no lease before any renewal");
        clock.advance_ms(10);
        l.renew(sent, clock.now(), 1, LEASE);
        assert!(l.valid(clock.now(), 1));
        clock.advance_ms(389);
        assert!(
            l.valid(clock.now(), 1),
            "399 ms after the send it still holds"
        );
        clock.advance_ms(1);
        assert!(!l.valid(clock.now(), 1), "at sent + lease it has ended");
    }

    #[test]
    fn a_lease_is_never_valid_in_another_term() {
        let clock = ManualClock::new();
        let mut l = Lease::default();
        l.renew(clock.now(), clock.now(), 3, LEASE);
        assert!(l.valid(clock.now(), 3));
        assert!(!l.valid(clock.now(), 4));
        assert_eq!(l.until_in(4), None);
        assert!(l.until_in(3).is_some());
    }

    #[test]
    fn an_older_round_never_shortens_the_lease_but_a_new_term_restarts_it() {
        let clock = ManualClock::new();
        let mut l = Lease::default();
        let early = clock.now();
        clock.advance_ms(100);
        let late = clock.now();
        l.renew(late, late, 1, LEASE);
        l.renew(early, late, 1, LEASE); // an older round confirmed after a newer one
        assert_eq!(l.until_in(1), Some(late + LEASE));
        // A new term starts from its own round, even an earlier-sent one.
        l.renew(early, late, 2, LEASE);
        assert_eq!(l.until_in(2), Some(early + LEASE));
    }

    #[test]
    fn a_leader_transfer_blocks_rounds_started_before_it_could_end() {
        let clock = ManualClock::new();
        let mut l = Lease::default();
        let before = clock.now();
        l.renew(before, before, 1, LEASE);
        let timeout = Duration::from_millis(500);
        l.withdraw_for_transfer(clock.now(), timeout);
        assert!(!l.valid(clock.now(), 1), "withdrawn at once");
        clock.advance_ms(100);
        l.renew(before, clock.now(), 1, LEASE);
        assert!(
            !l.valid(clock.now(), 1),
            "a round from before the transfer renews nothing"
        );
        let during = clock.now();
        l.renew(during, clock.now(), 1, LEASE);
        assert!(
            !l.valid(clock.now(), 1),
            "nor one started while the block lasts"
        );
        clock.advance_ms(450);
        l.renew(during, clock.now(), 1, LEASE);
        assert!(
            !l.valid(clock.now(), 1),
            "even when it is confirmed after the block"
        );
        let fresh = clock.now();
        l.renew(fresh, fresh, 1, LEASE);
        assert!(
            l.valid(clock.now(), 1),
            "a round started after the block renews again"
        );
        assert_eq!(l.until_in(1), Some(fresh + LEASE));
    }

    #[test]
    fn stepping_down_clears_the_lease() {
        let clock = ManualClock::new();
        let mut l = Lease::default();
        l.renew(clock.now(), clock.now(), 1, LEASE);
        l.clear();
        assert!(!l.valid(clock.now(), 1));
        assert!(l.ends_by(clock.now()));
    }
}
