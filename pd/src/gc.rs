//! The GC safe point PD keeps: a TSO timestamp `life_time` behind PD's wall clock, which
//! never moves backwards (across restarts too: it is persisted before it is handed out).
//!
//! Stores learn it from their heartbeat answers, record it per region through raft, refuse
//! reads below it and prewrites at or below it, and drop the MVCC versions no read at or
//! above it needs (docs/ARCHITECTURE.md, "MVCC GC").
//!
//! It moves in steps of a tenth of the life time (at most 10 s), so PD rewrites its state
//! file at most that often for it, however often stores ask.
//!
//! It never passes a transaction lock a region leader reported ([`GcSafePoint::lock_bound`]):
//! a lock left by a client that died stays decidable (its primary's commit or rollback
//! record is kept) until a reader resolves it; until then it holds GC back.
//!
//! Assumption (as TiKV's `tikv_gc_life_time`): no transaction runs longer than the life
//! time; one that does is refused at its next prewrite or read, never served wrong data.

use crate::tso;
use std::time::Duration;

/// The least life time PD accepts: a shorter one would refuse the reads and prewrites of
/// ordinary transactions.
pub const MIN_GC_LIFE_TIME: Duration = Duration::from_secs(1);
/// The default life time (TiKV's `tikv_gc_life_time`).
pub const DEFAULT_GC_LIFE_TIME: Duration = Duration::from_secs(600);
/// The largest step the safe point moves by.
const MAX_STEP_MS: u64 = 10_000;

/// PD's GC safe point.
#[derive(Debug, Clone)]
pub struct GcSafePoint {
    life_time_ms: u64,
    step_ms: u64,
    current: u64,
}

impl GcSafePoint {
    /// Resumes from the persisted safe point (0: none yet) with `life_time`.
    pub fn resume(persisted: u64, life_time: Duration) -> GcSafePoint {
        let life_time_ms = u64::try_from(life_time.as_millis()).unwrap_or(u64::MAX);
        GcSafePoint {
            life_time_ms,
            step_ms: (life_time_ms / 10).clamp(1, MAX_STEP_MS),
            current: persisted,
        }
    }

    /// The safe point handed out now (0: none yet).
    pub fn current(&self) -> u64 {
        self.current
    }

    /// The new safe point to persist at wall time `now_ms`, when it is due to move: at
    /// least one step above the current one, and `life_time` behind `now_ms`. The caller
    /// persists it, then calls [`GcSafePoint::commit`].
    pub fn due(&self, now_ms: u64) -> Option<u64> {
        let physical = now_ms.checked_sub(self.life_time_ms)?;
        let (current_ms, _) = tso::split(self.current);
        if self.current != 0 && physical < current_ms.saturating_add(self.step_ms) {
            return None;
        }
        let candidate = tso::compose(physical, 0);
        (candidate > self.current).then_some(candidate)
    }

    /// The highest safe point the regions' lock reports allow: below every reported lock
    /// (GC must keep what deciding its transaction needs: its primary's commit or
    /// rollback record) and `life_time` behind each report's scan (a lock that landed
    /// after the scan belongs to a transaction younger than the life time, so it starts
    /// above that). `reports` has one entry per region, `(oldest lock start ts or 0,
    /// scanned at ms)`, `None` for a region that has not reported: then 0 (hold).
    pub fn lock_bound(&self, reports: impl IntoIterator<Item = Option<(u64, u64)>>) -> u64 {
        let mut bound = u64::MAX;
        for report in reports {
            let Some((oldest, scanned_at_ms)) = report else {
                return 0;
            };
            let by_time = tso::compose(scanned_at_ms.saturating_sub(self.life_time_ms), 0);
            let by_lock = oldest.checked_sub(1).unwrap_or(u64::MAX);
            bound = bound.min(by_time).min(by_lock);
        }
        bound
    }

    /// Records that `safe_point` is durable; a lower one changes nothing.
    pub fn commit(&mut self, safe_point: u64) {
        self.current = self.current.max(safe_point);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_safe_point_trails_the_clock_by_the_life_time_in_steps() {
        let mut gc = GcSafePoint::resume(0, Duration::from_secs(10));
        assert_eq!(gc.due(5_000), None, "the clock is not a life time old yet");
        let first = gc.due(100_000).expect("due on first use");
        assert_eq!(tso::split(first), (90_000, 0), "now minus the life time");
        gc.commit(first);
        assert_eq!(gc.current(), first);
        // Steps of a tenth of the life time: nothing within one step.
        assert_eq!(gc.due(100_999), None);
        let next = gc.due(101_000).expect("one step later");
        assert_eq!(tso::split(next).0, 91_000);
        gc.commit(next);
        // Every value handed out is at least the life time behind the clock that made it.
        for now in [101_000u64, 150_000, 150_500, 400_000] {
            if let Some(sp) = gc.due(now) {
                assert!(tso::split(sp).0 + 10_000 <= now);
                gc.commit(sp);
            }
        }
        assert_eq!(tso::split(gc.current()).0, 390_000);
    }

    #[test]
    fn the_safe_point_never_moves_backwards() {
        let mut gc = GcSafePoint::resume(tso::compose(500_000, 0), Duration::from_secs(10));
        // A clock that went back (or a PD restarted with a longer life time) proposes
        // nothing lower.
        assert_eq!(gc.due(300_000), None);
        assert_eq!(gc.due(509_999), None);
        gc.commit(tso::compose(1, 0));
        assert_eq!(
            gc.current(),
            tso::compose(500_000, 0),
            "commit never lowers it"
        );
        // Resumed from disk with a longer life time: it stays until the clock catches up.
        let longer = GcSafePoint::resume(gc.current(), Duration::from_secs(600));
        assert_eq!(longer.due(600_000), None);
        assert_eq!(tso::split(longer.due(1_110_000).expect("due")).0, 510_000);
    }

    #[test]
    fn reported_locks_and_stale_or_missing_reports_hold_the_safe_point() {
        let gc = GcSafePoint::resume(0, Duration::from_secs(10));
        let at = |ms| tso::compose(ms, 0);
        // No locks, fresh reports: only the life time behind each scan bounds it.
        assert_eq!(
            gc.lock_bound([Some((0, 100_000)), Some((0, 90_000))]),
            at(80_000)
        );
        // A lock holds it just below the lock's start ts.
        let lock = at(85_000) + 7;
        assert_eq!(
            gc.lock_bound([Some((lock, 100_000)), Some((0, 100_000))]),
            lock - 1
        );
        // A region that never reported holds it at 0.
        assert_eq!(gc.lock_bound([Some((0, 100_000)), None]), 0);
        // No regions (not bootstrapped): nothing holds it.
        assert_eq!(gc.lock_bound([]), u64::MAX);
    }

    #[test]
    fn long_life_times_step_at_most_ten_seconds() {
        let gc = GcSafePoint::resume(tso::compose(1_000_000, 0), DEFAULT_GC_LIFE_TIME);
        assert_eq!(gc.due(1_609_999), None);
        assert!(gc.due(1_610_000).is_some());
    }
}
