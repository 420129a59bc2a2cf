//! Hibernation (docs/ARCHITECTURE.md, "Hibernation"): a quiet region slows its raft clock
//! so thousands of idle regions cost little.
//!
//! A leader idle for `hibernate_after_ms` whose followers have matched its last index,
//! with nothing pending, hibernates and stamps `hibernate` on its messages; followers that
//! hear it slow down too. Any client request, or any message without the stamp, wakes a
//! replica; a woken follower wakes every other replica of the region, so if the leader
//! died they all tick at full pace and elect another one within an election timeout.
//! Slowing the clock only lengthens elections, so leases stay safe (a hibernating leader
//! does not renew its lease).

use super::effects::Effect;
use super::Peer;
use regatta_engine::Engine;
use regatta_proto::metapb::Peer as PeerMeta;
use slog::debug;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A replica's raft clock pace, as data.
#[derive(Debug)]
pub(crate) struct Hibernation {
    hibernating: bool,
    last_active: Instant,
    /// The pace changed: the actor must re-arm its clock.
    pace_changed: bool,
}

impl Hibernation {
    /// Awake, last active at `now`.
    pub(crate) fn new(now: Instant) -> Hibernation {
        Hibernation {
            hibernating: false,
            last_active: now,
            pace_changed: false,
        }
    }

    /// Whether the region ticks slowly.
    pub(crate) fn is_hibernating(&self) -> bool {
        self.hibernating
    }

    /// Work arrived at `now`; returns whether the replica was hibernating (and so must
    /// wake its peers, if it follows).
    pub(crate) fn touch(&mut self, now: Instant) -> bool {
        self.last_active = now;
        let was = self.hibernating;
        self.set(false);
        was
    }

    /// Sets the pace (a follower following its leader, or a leader going to sleep).
    pub(crate) fn set(&mut self, on: bool) {
        if self.hibernating != on {
            self.hibernating = on;
            self.pace_changed = true;
        }
    }

    /// Whether an awake leader has been idle long enough to hibernate at `now`
    /// (`after` zero: never).
    pub(crate) fn idle_long_enough(&self, now: Instant, after: Duration) -> bool {
        !self.hibernating
            && !after.is_zero()
            && now.saturating_duration_since(self.last_active) >= after
    }

    /// Whether the pace changed since the last call (clears the flag).
    pub(crate) fn take_pace_changed(&mut self) -> bool {
        std::mem::take(&mut self.pace_changed)
    }
}

impl<E: Engine> Peer<E> {
    /// The raft clock period now: slow while the region hibernates.
    pub fn tick_interval(&self) -> Duration {
        if self.hibernation.is_hibernating() {
            Duration::from_millis(self.ctx.cfg.hibernated_tick_interval_ms)
        } else {
            self.ctx.cfg.tick_interval()
        }
    }

    /// Whether the actor must reschedule its clock (the pace changed); clears the flag.
    pub fn take_tick_changed(&mut self) -> bool {
        self.hibernation.take_pace_changed()
    }

    /// Whether nothing is in flight: every follower matched the last index, all of it is
    /// committed and applied, and no proposal, read, write, snapshot, split or transfer
    /// is pending.
    fn is_quiet(&self) -> bool {
        let raft = &self.raw.raft;
        let last = raft.raft_log.last_index();
        raft.raft_log.committed == last
            && self.raw.store().applied().0 == last
            && raft.prs().iter().all(|(_, p)| p.matched == last)
            && raft.lead_transferee.is_none()
            && self.proposals.is_empty()
            && self.batch.is_empty()
            && self.reads.is_idle()
            && self.ryw_waiting.is_empty()
            && self.observer.is_idle()
            && self.inflight_writes == 0
            && self.pending_snapshot.is_none()
            && self.splits.progress == super::split::SplitProgress::Idle
            && !self.splits.checking
    }

    /// A leader with nothing to do and every follower caught up hibernates.
    pub(super) fn maybe_hibernate(&mut self, now: Instant) {
        let after = Duration::from_millis(self.ctx.cfg.hibernate_after_ms);
        if !self.is_leader() || !self.hibernation.idle_long_enough(now, after) {
            return;
        }
        if self.is_quiet() {
            debug!(self.logger, "hibernating");
            self.hibernation.set(true);
            // Tell the followers now rather than at the next heartbeat.
            self.raw.ping();
        }
    }

    /// Work arrived: tick at full pace again; a follower also wakes its leader.
    pub(super) fn wake(&mut self) {
        let now = self.ctx.clock.now();
        if !self.hibernation.touch(now) {
            return;
        }
        debug!(self.logger, "waking up");
        if !self.is_leader() {
            // Wake the leader (and the other followers: if the leader is gone, they must
            // all tick at full pace to elect another one soon).
            let others: Vec<PeerMeta> = self
                .region()
                .get_peers()
                .iter()
                .filter(|p| p.get_id() != self.peer_id)
                .cloned()
                .collect();
            for to in others {
                let mut rm = self.envelope(to);
                rm.set_wake(true);
                self.effects.push(Effect::Send(rm));
                self.ctx
                    .metrics
                    .raft_messages_sent
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const AFTER: Duration = Duration::from_millis(500);

    #[test]
    fn an_idle_replica_may_hibernate_only_after_the_quiet_period() {
        let clock = ManualClock::new();
        let mut h = Hibernation::new(clock.now());
        clock.advance_ms(499);
        assert!(!h.idle_long_enough(clock.now(), AFTER));
        clock.advance_ms(1);
        assert!(h.idle_long_enough(clock.now(), AFTER));
        assert!(
            !h.idle_long_enough(clock.now(), Duration::ZERO),
            "0 turns hibernation off"
        );
        h.set(true);
        assert!(h.is_hibernating());
        assert!(h.take_pace_changed(), "the actor must slow its clock");
        assert!(!h.take_pace_changed(), "once");
        assert!(
            !h.idle_long_enough(clock.now(), AFTER),
            "already hibernating"
        );
    }

    #[test]
    fn work_wakes_a_hibernating_replica_and_restarts_the_quiet_period() {
        let clock = ManualClock::new();
        let mut h = Hibernation::new(clock.now());
        h.set(true);
        h.take_pace_changed();
        clock.advance_ms(10_000);
        assert!(h.touch(clock.now()), "it was hibernating: wake the peers");
        assert!(!h.is_hibernating());
        assert!(h.take_pace_changed(), "the actor must speed its clock up");
        assert!(!h.touch(clock.now()), "an awake replica wakes no one");
        clock.advance_ms(499);
        assert!(!h.idle_long_enough(clock.now(), AFTER));
        clock.advance_ms(1);
        assert!(h.idle_long_enough(clock.now(), AFTER));
    }

    #[test]
    fn setting_the_same_pace_again_is_no_change() {
        let clock = ManualClock::new();
        let mut h = Hibernation::new(clock.now());
        h.set(false);
        assert!(!h.take_pace_changed());
        h.set(true);
        h.set(true);
        assert!(h.take_pace_changed());
        assert!(!h.take_pace_changed());
    }
}
