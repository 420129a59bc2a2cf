//! [`Clock`]: the seam through which the raftstore reads time.
//!
//! Leases, ReadIndex deadlines, follower safe times, hibernation and the pace of periodic
//! work all depend on time. Reading it through this trait lets their logic be tested as
//! data with a [`ManualClock`] that only moves when a test moves it, instead of with
//! sleeps. Production uses [`SystemClock`].
//!
//! Contract: [`Clock::now`] never goes backwards (it is a monotonic instant, like
//! `Instant::now`); [`Clock::wall_ms`] is the wall clock in ms since the Unix epoch, which
//! may jump (NTP) and is used only where every replica must agree on a value written into
//! the log (the proposer's time stamped into an entry), never to order events locally.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the raftstore reads time.
pub trait Clock: Send + Sync + 'static {
    /// A monotonic instant: never earlier than any instant this clock returned before.
    fn now(&self) -> Instant;

    /// Milliseconds since the Unix epoch (wall clock; may jump).
    fn wall_ms(&self) -> u64;
}

/// The machine's clocks: `Instant::now` and `SystemTime::now`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told to ([`ManualClock::advance`]), for tests.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    wall_base_ms: u64,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl ManualClock {
    /// A clock standing at the moment it is made (wall time 1,700,000,000,000 ms).
    pub fn new() -> ManualClock {
        ManualClock {
            base: Instant::now(),
            wall_base_ms: 1_700_000_000_000,
            offset: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().expect("clock lock is never poisoned") += by;
    }

    /// Moves both clocks forward by `ms` milliseconds.
    pub fn advance_ms(&self, ms: u64) {
        self.advance(Duration::from_millis(ms));
    }

    fn offset(&self) -> Duration {
        *self.offset.lock().expect("clock lock is never poisoned")
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.offset()
    }

    fn wall_ms(&self) -> u64 {
        self.wall_base_ms + self.offset().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new();
        let (t0, w0) = (c.now(), c.wall_ms());
        assert_eq!(c.now(), t0);
        c.advance_ms(250);
        assert_eq!(c.now() - t0, Duration::from_millis(250));
        assert_eq!(c.wall_ms() - w0, 250);
    }

    #[test]
    fn system_clock_is_monotonic_and_near_the_wall() {
        let c = SystemClock;
        let a = c.now();
        assert!(c.now() >= a);
        // 2020-01-01 in ms: any sane machine clock is past it.
        assert!(c.wall_ms() > 1_577_836_800_000);
    }
}
