//! Key ranges of regions: the one place that says what "inside a region" means.
//!
//! A region covers `[start_key, end_key)`: the start is inclusive, the end exclusive, and
//! an empty `end_key` means the range runs to the end of the key space (an empty
//! `start_key` is simply the smallest key). Every layer — the client's region cache, the
//! placement driver, the store's router, request validation and apply — decides with these
//! functions, so they cannot disagree on a boundary.
//!
//! ```
//! use regatta_proto::metapb::Region;
//! use regatta_proto::region::key_in_range;
//!
//! let mut r = Region::new();
//! r.set_start_key(b"b".to_vec());
//! r.set_end_key(b"m".to_vec());
//! assert!(key_in_range(&r, b"b"));
//! assert!(!key_in_range(&r, b"m"), "the end is exclusive");
//! r.set_end_key(Vec::new());
//! assert!(key_in_range(&r, b"zzz"), "an empty end is unbounded");
//! ```

use crate::metapb::Region;

/// Whether `key` lies in `region`'s range `[start_key, end_key)` (an empty `end_key`:
/// unbounded).
pub fn key_in_range(region: &Region, key: &[u8]) -> bool {
    key_in_bounds(region.get_start_key(), region.get_end_key(), key)
}

/// Whether `key` lies in `[start, end)` (an empty `end`: unbounded): [`key_in_range`] for a
/// range that is not held in a [`Region`].
pub fn key_in_bounds(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

/// `[start, end)` clipped to `region`'s range (an empty end, of either: unbounded).
pub fn clip_to_region(region: &Region, start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let lo = start.max(region.get_start_key()).to_vec();
    let hi = match (end.is_empty(), region.get_end_key().is_empty()) {
        (true, true) => Vec::new(),
        (true, false) => region.get_end_key().to_vec(),
        (false, true) => end.to_vec(),
        (false, false) => end.min(region.get_end_key()).to_vec(),
    };
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> Region {
        let mut r = Region::new();
        r.set_start_key(start.to_vec());
        r.set_end_key(end.to_vec());
        r
    }

    #[test]
    fn start_is_inclusive_end_exclusive_and_empty_end_unbounded() {
        let r = region(b"b", b"d");
        assert!(!key_in_range(&r, b"a"));
        assert!(!key_in_range(&r, b""));
        assert!(key_in_range(&r, b"b"));
        assert!(key_in_range(&r, b"c\xff\xff"));
        assert!(!key_in_range(&r, b"d"));
        assert!(!key_in_range(&r, b"d\x00"));
        let all = region(b"", b"");
        assert!(key_in_range(&all, b""));
        assert!(key_in_range(&all, b"\xff\xff"));
        let tail = region(b"m", b"");
        assert!(key_in_range(&tail, b"m") && key_in_range(&tail, b"\xff"));
        assert!(!key_in_range(&tail, b"l\xff"));
    }

    #[test]
    fn a_range_is_clipped_to_the_region_with_empty_ends_unbounded() {
        let r = region(b"b", b"d");
        assert_eq!(
            clip_to_region(&r, b"a", b"z"),
            (b"b".to_vec(), b"d".to_vec())
        );
        assert_eq!(
            clip_to_region(&r, b"c", b""),
            (b"c".to_vec(), b"d".to_vec())
        );
        assert_eq!(
            clip_to_region(&r, b"", b"c"),
            (b"b".to_vec(), b"c".to_vec())
        );
        let tail = region(b"m", b"");
        assert_eq!(
            clip_to_region(&tail, b"a", b""),
            (b"m".to_vec(), Vec::new())
        );
        assert_eq!(
            clip_to_region(&tail, b"n", b"p"),
            (b"n".to_vec(), b"p".to_vec())
        );
    }
}
