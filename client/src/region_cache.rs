//! The client's region cache: start key -> region and its believed leader. Entries are
//! dropped when a store says they are wrong, and refilled from PD on the next lookup.

use regatta_proto::metapb::{Peer, Region};
use regatta_proto::region::key_in_range;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

/// A cached region and its believed leader.
#[derive(Debug, Clone)]
pub(crate) struct CachedRegion {
    pub region: Region,
    pub leader: Option<Peer>,
}

/// Regions by start key; never two overlapping entries. A lookup hands out a shared
/// reference (every request looks one up; copying the region's keys and peers each time
/// showed in profiles).
#[derive(Default)]
pub(crate) struct RegionCache {
    by_start: BTreeMap<Vec<u8>, Arc<CachedRegion>>,
    /// Region id -> its entry's start key (leader hints and evictions come by id).
    by_id: HashMap<u64, Vec<u8>>,
}

impl RegionCache {
    /// The cached region holding `key`.
    pub fn get(&self, key: &[u8]) -> Option<Arc<CachedRegion>> {
        self.by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(_, c)| c)
            .filter(|c| key_in_range(&c.region, key))
            .cloned()
    }

    /// Caches `region`, evicting every entry it overlaps. Entries never overlap, so the
    /// ones `region` overlaps are the one starting at or before its start (if it reaches
    /// past that start) and those starting inside it: a range lookup, not a walk over the
    /// whole cache (a client of a 10k-region cluster fills its cache 10k times).
    pub fn insert(&mut self, region: Region, leader: Option<Peer>) {
        let (start, end) = (
            region.get_start_key().to_vec(),
            region.get_end_key().to_vec(),
        );
        let mut overlapping: Vec<Vec<u8>> = Vec::new();
        if let Some((k, c)) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(&start[..])))
            .next_back()
        {
            let e = c.region.get_end_key();
            if e.is_empty() || e > &start[..] {
                overlapping.push(k.clone());
            }
        }
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(&end[..])
        };
        overlapping.extend(
            self.by_start
                .range::<[u8], _>((Bound::Excluded(&start[..]), upper))
                .map(|(k, _)| k.clone()),
        );
        for k in overlapping {
            if let Some(old) = self.by_start.remove(&k) {
                self.by_id.remove(&old.region.get_id());
            }
        }
        if let Some(stale) = self.by_id.insert(region.get_id(), start.clone()) {
            // The same region cached under another start key (an older range of it).
            if stale != start {
                self.by_start.remove(&stale);
            }
        }
        self.by_start
            .insert(start, Arc::new(CachedRegion { region, leader }));
    }

    /// Records that `leader` leads region `region_id` (if cached and a member).
    pub fn set_leader(&mut self, region_id: u64, leader: Option<Peer>) {
        let Some(start) = self.by_id.get(&region_id) else {
            return;
        };
        if let Some(c) = self.by_start.get_mut(start) {
            let leader = leader.and_then(|l| {
                c.region
                    .get_peers()
                    .iter()
                    .find(|p| p.get_id() == l.get_id())
                    .cloned()
            });
            Arc::make_mut(c).leader = leader;
        }
    }

    /// Forgets region `region_id`.
    pub fn evict(&mut self, region_id: u64) {
        if let Some(start) = self.by_id.remove(&region_id) {
            self.by_start.remove(&start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The overlap rule, by brute force: what `insert` must evict.
    fn overlaps(a: &Region, b: &Region) -> bool {
        let a_before_b = !a.get_end_key().is_empty() && a.get_end_key() <= b.get_start_key();
        let b_before_a = !b.get_end_key().is_empty() && b.get_end_key() <= a.get_start_key();
        !a_before_b && !b_before_a
    }

    #[test]
    fn a_region_cached_again_under_another_range_keeps_only_the_new_one() {
        let mut c = RegionCache::default();
        c.insert(region(5, b"a", b"c"), None);
        c.insert(region(5, b"x", b""), None);
        assert!(c.get(b"b").is_none());
        assert_eq!(c.get(b"y").unwrap().region.get_id(), 5);
        c.evict(5);
        assert!(c.get(b"y").is_none() && c.by_start.is_empty() && c.by_id.is_empty());
    }

    #[test]
    fn insert_evicts_exactly_the_overlapping_entries() {
        // Every range over a small alphabet, inserted in a scrambled order; after each
        // insert the cache holds the new region plus every old entry it does not overlap.
        let bounds: Vec<&[u8]> = vec![b"", b"b", b"d", b"f", b"h"];
        let mut ranges = Vec::new();
        for (i, s) in bounds.iter().enumerate() {
            for e in bounds.iter().skip(i + 1).chain(std::iter::once(&&b""[..])) {
                ranges.push((s.to_vec(), e.to_vec()));
            }
        }
        let mut c = RegionCache::default();
        for step in 0..ranges.len() * 3 {
            let (s, e) = &ranges[(step * 7) % ranges.len()];
            let new = region(step as u64 + 1, s, e);
            let mut expected: Vec<u64> = c
                .by_start
                .values()
                .filter(|old| !overlaps(&old.region, &new))
                .map(|old| old.region.get_id())
                .collect();
            expected.push(new.get_id());
            expected.sort_unstable();
            c.insert(new, None);
            let mut got: Vec<u64> = c.by_start.values().map(|x| x.region.get_id()).collect();
            got.sort_unstable();
            assert_eq!(got, expected, "after inserting [{s:?}, {e:?})");
            assert_eq!(c.by_id.len(), c.by_start.len());
            for (start, entry) in &c.by_start {
                assert_eq!(c.by_id.get(&entry.region.get_id()), Some(start));
            }
        }
    }

    fn region(id: u64, start: &[u8], end: &[u8]) -> Region {
        let mut r = Region::new();
        r.set_id(id);
        r.set_start_key(start.to_vec());
        r.set_end_key(end.to_vec());
        let mut p = Peer::new();
        p.set_id(id * 10);
        p.set_store_id(1);
        r.mut_peers().push(p);
        r
    }

    #[test]
    fn lookup_respects_ranges_and_newer_entries_evict_overlaps() {
        let mut c = RegionCache::default();
        c.insert(region(1, b"", b"m"), None);
        c.insert(region(2, b"m", b""), None);
        assert_eq!(c.get(b"a").unwrap().region.get_id(), 1);
        assert_eq!(c.get(b"m").unwrap().region.get_id(), 2);
        assert_eq!(c.get(b"zzz").unwrap().region.get_id(), 2);
        // A split of region 2 at "t" evicts the wide entry.
        c.insert(region(3, b"t", b""), None);
        assert!(c.get(b"n").is_none());
        assert_eq!(c.get(b"u").unwrap().region.get_id(), 3);
        c.set_leader(1, Some(region(1, b"", b"").get_peers()[0].clone()));
        assert_eq!(c.get(b"a").unwrap().leader.as_ref().unwrap().get_id(), 10);
        let mut stranger = Peer::new();
        stranger.set_id(99);
        c.set_leader(1, Some(stranger));
        assert!(
            c.get(b"a").unwrap().leader.is_none(),
            "a non-member is never the leader"
        );
        c.evict(1);
        assert!(c.get(b"a").is_none());
    }
}
