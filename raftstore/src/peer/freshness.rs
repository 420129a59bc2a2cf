//! Follower freshness (bounded-staleness reads), as data, and the follower read paths.
//!
//! Raft messages carry `seq` (the sender's numbering) and `echo_seq` (the newest `seq` the
//! sender got from the receiver). A leader holding its lease stamps its commit index
//! (`leader_commit`) on what it sends. When a follower receives a stamp echoing its
//! message `s`, sent at local time `t`, the leader had received `s` before stamping, so
//! every write acknowledged before `t` is at or below the stamp. Once the follower has
//! applied the stamp, its *safe time* is `t`: a read at `now` is at most `now - t` stale.
//!
//! Invariants: the safe time never goes backwards; it moves only over stamps that are
//! applied; an echo of a message this incarnation never sent (a base of its own numbers each
//! incarnation) proves nothing.

use super::read_index::ReadReq;
use super::{Peer, Responder};
use regatta_engine::Engine;
use regatta_proto::kvrpcpb::{Context, ReadConsistency, ReadInfo, Request};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Messages whose send time a replica remembers, for the freshness echo.
const SENT_TIMES_KEPT: usize = 4096;

/// What a replica knows about how fresh its applied state is.
pub(crate) struct Freshness {
    /// This replica's message numbering.
    out_seq: u64,
    /// When each recent message was sent, by `seq`.
    sent_times: VecDeque<(u64, Instant)>,
    /// Newest `seq` received from each peer.
    seq_from: HashMap<u64, u64>,
    /// Leader stamps not yet applied: (leader commit index, local anchor time).
    pending: VecDeque<(u64, Instant)>,
    /// Every write acknowledged before this local instant is in the applied state.
    safe_time: Option<Instant>,
}

impl Freshness {
    /// Numbering starts at `base` (distinct per incarnation, so echoes meant for an
    /// earlier one match nothing).
    pub(crate) fn new(base: u64) -> Freshness {
        Freshness {
            out_seq: base,
            sent_times: VecDeque::new(),
            seq_from: HashMap::new(),
            pending: VecDeque::new(),
            safe_time: None,
        }
    }

    /// Numbers a message to `to` sent at `now`: returns its `(seq, echo_seq)`.
    pub(crate) fn on_send(&mut self, to: u64, now: Instant) -> (u64, u64) {
        self.out_seq += 1;
        self.sent_times.push_back((self.out_seq, now));
        if self.sent_times.len() > SENT_TIMES_KEPT {
            self.sent_times.pop_front();
        }
        (self.out_seq, self.seq_from.get(&to).copied().unwrap_or(0))
    }

    /// A message from `from` numbered `seq`, stamped `leader_commit` (0: none) after the
    /// sender got our message `echo_seq`.
    pub(crate) fn on_receive(&mut self, from: u64, seq: u64, leader_commit: u64, echo_seq: u64) {
        if seq != 0 {
            let newest = self.seq_from.entry(from).or_insert(0);
            *newest = (*newest).max(seq);
        }
        if leader_commit == 0 {
            return;
        }
        // `sent_times` holds consecutive seqs: the echo's place is a subtraction.
        let first = self.sent_times.front().map_or(0, |(s, _)| *s);
        let at = echo_seq
            .checked_sub(first)
            .and_then(|i| self.sent_times.get(usize::try_from(i).ok()?))
            .filter(|(s, _)| *s == echo_seq)
            .map(|(_, at)| *at);
        if let Some(at) = at {
            let newer = self.pending.back().is_none_or(|(_, t)| at > *t);
            if newer && self.safe_time.is_none_or(|t| at > t) {
                self.pending.push_back((leader_commit, at));
                if self.pending.len() > SENT_TIMES_KEPT {
                    self.pending.pop_front();
                }
            }
        }
    }

    /// The applied index reached `applied`: the safe time moves over the stamps it covers.
    pub(crate) fn on_applied(&mut self, applied: u64) {
        while self.pending.front().is_some_and(|(c, _)| *c <= applied) {
            if let Some((_, at)) = self.pending.pop_front() {
                self.safe_time = Some(self.safe_time.map_or(at, |t| t.max(at)));
            }
        }
    }

    /// Every write acknowledged before this instant is applied here.
    pub(crate) fn safe_time(&self) -> Option<Instant> {
        self.safe_time
    }

    /// How stale the applied state may be at `now` (`None`: no proof of freshness).
    pub(crate) fn staleness(&self, now: Instant) -> Option<Duration> {
        self.safe_time.map(|t| now.saturating_duration_since(t))
    }
}

impl<E: Engine> Peer<E> {
    /// A read that reached a follower: served here when its consistency allows it and this
    /// replica is fresh enough, else redirected to the leader (`NotLeader`).
    pub(super) fn follower_read(&mut self, req: Request, ctx: &Context, tx: Responder) {
        let now = self.ctx.clock.now();
        let mut read = ReadReq {
            req,
            tx,
            deadline: now,
            started: now,
            info: ReadInfo::new(),
            version: self.region().get_region_epoch().get_version(),
            floor: 0,
            allows_lease: false,
        };
        match ctx.get_consistency() {
            ReadConsistency::FOLLOWER if ctx.get_max_staleness_ms() > 0 => {
                let bound = Duration::from_millis(ctx.get_max_staleness_ms());
                if let Some(staleness) = self.freshness.staleness(now) {
                    if staleness <= bound {
                        read.info.set_staleness_us(staleness.as_micros() as u64);
                        let applied = self.raw.store().applied().0;
                        self.finish_read(read, applied);
                        return;
                    }
                }
            }
            ReadConsistency::READ_YOUR_WRITES => {
                let want = ctx.get_min_applied_index();
                let applied = self.raw.store().applied().0;
                if applied >= want {
                    self.finish_read(read, applied);
                } else {
                    read.deadline = now + Duration::from_millis(self.ctx.cfg.ryw_wait_ms);
                    self.ryw_waiting.push((read, want));
                }
                return;
            }
            _ => {}
        }
        if matches!(
            ctx.get_consistency(),
            ReadConsistency::FOLLOWER | ReadConsistency::READ_YOUR_WRITES
        ) {
            self.ctx
                .metrics
                .follower_redirects
                .fetch_add(1, Ordering::Relaxed);
        }
        let _ = read.tx.send(self.not_leader().into_response());
    }

    /// Serves read-your-writes reads whose index is now applied; redirects those that
    /// waited too long.
    pub(super) fn serve_ryw(&mut self, now: Instant) {
        if self.ryw_waiting.is_empty() {
            return;
        }
        let applied = self.raw.store().applied().0;
        let waiting = std::mem::take(&mut self.ryw_waiting);
        for (read, want) in waiting {
            if applied >= want {
                self.finish_read(read, applied);
            } else if read.deadline <= now || self.is_leader() {
                self.ctx
                    .metrics
                    .follower_redirects
                    .fetch_add(1, Ordering::Relaxed);
                let _ = read.tx.send(self.not_leader().into_response());
            } else {
                self.ryw_waiting.push((read, want));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const LEADER: u64 = 1;

    #[test]
    fn the_safe_time_moves_only_once_the_stamped_index_is_applied() {
        let clock = ManualClock::new();
        let mut f = Freshness::new(100);
        let sent_at = clock.now();
        let (seq, _) = f.on_send(LEADER, sent_at);
        clock.advance_ms(30);
        // The leader got our message `seq`, then stamped its commit index 50.
        f.on_receive(LEADER, 7, 50, seq);
        assert_eq!(f.safe_time(), None, "stamp 50 not applied yet");
        f.on_applied(49);
        assert_eq!(f.safe_time(), None);
        f.on_applied(50);
        assert_eq!(
            f.safe_time(),
            Some(sent_at),
            "anchored at our send, not at receipt"
        );
        clock.advance_ms(20);
        assert_eq!(f.staleness(clock.now()), Some(Duration::from_millis(50)));
    }

    #[test]
    fn an_echo_of_a_message_never_sent_proves_nothing() {
        let clock = ManualClock::new();
        let mut f = Freshness::new(100);
        f.on_send(LEADER, clock.now());
        f.on_receive(LEADER, 1, 10, 5); // seq 5 was never ours (we are at 101)
        f.on_applied(10);
        assert_eq!(f.safe_time(), None);
        assert_eq!(f.staleness(clock.now()), None);
    }

    #[test]
    fn the_safe_time_never_goes_backwards() {
        let clock = ManualClock::new();
        let mut f = Freshness::new(0);
        let (old, _) = f.on_send(LEADER, clock.now());
        let t_old = clock.now();
        clock.advance_ms(10);
        let (new, _) = f.on_send(LEADER, clock.now());
        let t_new = clock.now();
        f.on_receive(LEADER, 1, 20, new);
        f.on_applied(20);
        assert_eq!(f.safe_time(), Some(t_new));
        // A late stamp echoing the older message is ignored.
        f.on_receive(LEADER, 2, 25, old);
        f.on_applied(25);
        assert_eq!(f.safe_time(), Some(t_new));
        assert!(t_old < t_new);
    }

    #[test]
    fn an_echo_finds_its_send_time_in_a_full_window_and_not_beyond_it() {
        let clock = ManualClock::new();
        let mut f = Freshness::new(1000);
        let mut sent = Vec::new();
        for _ in 0..SENT_TIMES_KEPT + 10 {
            clock.advance_ms(1);
            sent.push((f.on_send(LEADER, clock.now()).0, clock.now()));
        }
        // The oldest ten fell out of the window: their echoes prove nothing.
        f.on_receive(LEADER, 1, 5, sent[9].0);
        f.on_applied(5);
        assert_eq!(f.safe_time(), None);
        // The oldest still kept is found, at its own send time; so is a later one.
        let (seq, at) = sent[10];
        f.on_receive(LEADER, 2, 5, seq);
        f.on_applied(5);
        assert_eq!(f.safe_time(), Some(at));
        let (seq, at) = sent[SENT_TIMES_KEPT];
        f.on_receive(LEADER, 2, 6, seq);
        f.on_applied(6);
        assert_eq!(f.safe_time(), Some(at));
        // Past the newest: nothing.
        f.on_receive(LEADER, 3, 7, sent.last().unwrap().0 + 1);
        f.on_applied(7);
        assert_eq!(f.safe_time(), Some(at));
    }

    #[test]
    fn outgoing_messages_echo_the_newest_seq_received_from_their_peer() {
        let clock = ManualClock::new();
        let mut f = Freshness::new(0);
        assert_eq!(f.on_send(2, clock.now()), (1, 0));
        f.on_receive(2, 9, 0, 0);
        f.on_receive(2, 4, 0, 0); // reordered: an older one
        assert_eq!(f.on_send(2, clock.now()), (2, 9));
        assert_eq!(f.on_send(3, clock.now()), (3, 0));
    }
}
