//! Timestamps as PD's TSO hands them out and every request carries them:
//! `physical_ms << LOGICAL_BITS | logical`. Only the physical part means time; lock TTLs
//! are compared on it (TiKV's `TimeStamp::physical`), never on the logical counter. This is
//! the one definition of the layout: PD, the stores, the transaction layer and the client
//! all read it from here.

/// Bits of the logical counter in a TSO timestamp.
pub const LOGICAL_BITS: u32 = 18;

/// The milliseconds (physical part) of timestamp `ts`.
pub fn physical_ms(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// The timestamp with physical part `physical_ms` and logical counter `logical` (which
/// must be below `1 << LOGICAL_BITS`).
pub fn compose(physical_ms: u64, logical: u64) -> u64 {
    assert!(
        logical < 1 << LOGICAL_BITS,
        "logical part {logical} does not fit {LOGICAL_BITS} bits"
    );
    physical_ms << LOGICAL_BITS | logical
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_part_is_the_high_bits() {
        let ts = compose(1_700_000_000_000, 5);
        assert_eq!(physical_ms(ts), 1_700_000_000_000);
        assert_eq!(ts & ((1 << LOGICAL_BITS) - 1), 5);
        assert!(compose(10, (1 << LOGICAL_BITS) - 1) < compose(11, 0));
    }
}
