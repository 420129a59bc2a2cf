//! The timestamp oracle: `physical_ms << 18 | logical`, strictly increasing across calls
//! and across PD restarts.
//!
//! Allocation is batched (one call hands out `count` consecutive timestamps) and never
//! touches the disk on the hot path: PD persists a *high-water* physical time, a window
//! (`TSO_WINDOW_MS`) ahead of what it hands out, and only hands out physical times below
//! it. After a restart it starts above the persisted high water, so it never goes back,
//! even if the wall clock did.

pub use regatta_proto::ts::{compose, LOGICAL_BITS};

/// Timestamps per physical millisecond.
pub const MAX_LOGICAL: u64 = 1 << LOGICAL_BITS;
/// How far ahead of the handed-out physical time the persisted high water runs.
pub const TSO_WINDOW_MS: u64 = 3_000;
/// The most timestamps one request may take.
pub const MAX_TSO_BATCH: u32 = 1 << 16;

/// The oracle's in-memory state.
#[derive(Debug, Clone)]
pub struct Tso {
    physical: u64,
    logical: u64,
    high_water: u64,
}

/// Splits a timestamp into `(physical_ms, logical)`.
pub fn split(ts: u64) -> (u64, u64) {
    (ts >> LOGICAL_BITS, ts & (MAX_LOGICAL - 1))
}

impl Tso {
    /// An oracle that resumes after a persisted high water (0 on first start).
    pub fn resume(high_water_ms: u64) -> Tso {
        Tso {
            physical: high_water_ms,
            logical: MAX_LOGICAL, // the next call moves to a later millisecond
            high_water: high_water_ms,
        }
    }

    /// The persisted high water.
    pub fn high_water(&self) -> u64 {
        self.high_water
    }

    /// Hands out `count` consecutive timestamps at wall time `now_ms`; returns the first.
    /// When the high water must move first, returns the new value to persist *before* the
    /// timestamps are used: the caller persists it, then calls [`Tso::commit_high_water`].
    pub fn next(&mut self, count: u32, now_ms: u64) -> Result<(u64, Option<u64>), String> {
        if count == 0 || count > MAX_TSO_BATCH {
            return Err(format!(
                "a TSO request takes 1..={MAX_TSO_BATCH} timestamps, not {count}"
            ));
        }
        let count = u64::from(count);
        let (mut physical, mut logical) = (self.physical, self.logical);
        if now_ms > physical {
            physical = now_ms;
            logical = 0;
        }
        if logical + count > MAX_LOGICAL {
            // This millisecond is used up: borrow the next one (the clock catches up).
            physical += 1;
            logical = 0;
        }
        let first = compose(physical, logical);
        let new_high_water = (physical >= self.high_water).then_some(physical + TSO_WINDOW_MS);
        self.physical = physical;
        self.logical = logical + count;
        Ok((first, new_high_water))
    }

    /// Records that the high water `hw` is durable.
    pub fn commit_high_water(&mut self, hw: u64) {
        self.high_water = self.high_water.max(hw);
    }

    /// Undoes [`Tso::commit_high_water`] when persisting it failed.
    pub fn restore_high_water(&mut self, hw: u64) {
        self.high_water = hw;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_increase_within_and_across_milliseconds_and_restarts() {
        let mut t = Tso::resume(0);
        let (a, hw) = t.next(10, 1_000).unwrap();
        assert_eq!(split(a), (1_000, 0));
        let hw = hw.expect("first use moves the high water");
        t.commit_high_water(hw);
        let (b, none) = t.next(1, 1_000).unwrap();
        assert_eq!(b, a + 10, "a batch takes consecutive timestamps");
        assert!(none.is_none(), "within the window nothing is persisted");
        // The wall clock goes back: timestamps still increase.
        let (c, _) = t.next(1, 500).unwrap();
        assert!(c > b);
        // A millisecond runs out of logical values: the next one is borrowed.
        let (d, _) = t.next(MAX_TSO_BATCH, 1_000).unwrap();
        let (e, _) = t.next(MAX_TSO_BATCH, 1_000).unwrap();
        let (f, _) = t.next(MAX_TSO_BATCH, 1_000).unwrap();
        let (g, _) = t.next(MAX_TSO_BATCH, 1_000).unwrap();
        assert!(d > c && e > d && f > e && g > f);
        assert_eq!(split(g).0, 1_001);
        // A restart resumes after the persisted high water, even with a clock behind it.
        let mut r = Tso::resume(t.high_water());
        let (h, hw) = r.next(1, 900).unwrap();
        assert!(h > g);
        assert!(
            hw.is_some(),
            "the resumed oracle persists a new window first"
        );
        assert!(t.next(0, 1_000).is_err());
        assert!(t.next(MAX_TSO_BATCH + 1, 1_000).is_err());
    }
}
