//! Split checks: how many keys and bytes a region holds, and where to cut it.
//!
//! A region's data lives in two key spaces (see `regatta_engine::keys`): raw pairs (`r`
//! in `default`) and MVCC data (`x` in `lock`, `write`, `default`: a key's lock, its
//! commit records and its large values). Both are counted. The split key is always a
//! *user* key, taken from whichever record passes the middle; a region cut at user key
//! `k` has every raw pair and every MVCC record of a user key on one side, because the
//! `x` space is `x` + memcomparable(user key) + `!ts` (order-preserving and prefix-free:
//! all versions and the lock of one user key sort between `enc(k)` and the next user
//! key's), so a split never separates a key's lock from its versions.

use crate::error::Error;
use regatta_engine::{keys, Cf, Engine, Snapshot};
use regatta_proto::metapb::Region;

/// What a split check found: the region's keys and bytes, and where to split it.
#[derive(Debug, Clone, Default)]
pub struct SplitCheck {
    /// Records in the region (raw pairs and MVCC locks, versions and large values).
    pub keys: u64,
    /// Bytes of their keys and values.
    pub size: u64,
    /// Where to split (`None`: within both limits).
    pub split_key: Option<Vec<u8>>,
}

/// One key space of a region's data: a column family, a data-key range, and how to get
/// the user key back from a data key.
struct Space {
    cf: Cf,
    lo: Vec<u8>,
    hi: Vec<u8>,
    raw: bool,
}

fn spaces(region: &Region) -> [Space; 4] {
    let (s, e) = (region.get_start_key(), region.get_end_key());
    let (rlo, rhi) = keys::raw_data_range(s, e);
    let (xlo, xhi) = keys::txn_data_range(s, e);
    let x = |cf| Space {
        cf,
        lo: xlo.clone(),
        hi: xhi.clone(),
        raw: false,
    };
    [
        Space {
            cf: Cf::Default,
            lo: rlo,
            hi: rhi,
            raw: true,
        },
        x(Cf::Lock),
        x(Cf::Write),
        x(Cf::Default),
    ]
}

fn user_key(space: &Space, data_key: &[u8]) -> Option<Vec<u8>> {
    if space.raw {
        keys::raw_user_key(data_key).map(<[u8]>::to_vec)
    } else {
        regatta_txn::key::user_key(data_key).ok()
    }
}

/// Scans `region` for [`SplitCheck`]: its records and bytes, and — if it holds more than
/// `max_keys` records or `max_size` bytes — the user key to split it at, where the count
/// or the size (whichever limit it passed) crosses the middle. Two streaming passes over
/// one snapshot (so both see the same records), nothing buffered.
pub fn split_check<E: Engine>(
    engine: &E,
    region: &Region,
    max_size: u64,
    max_keys: u64,
) -> Result<SplitCheck, Error> {
    let snap = engine.snapshot();
    let spaces = spaces(region);
    let (mut count, mut size) = (0u64, 0u64);
    for sp in &spaces {
        snap.scan(sp.cf, &sp.lo, &sp.hi, |k, v| {
            count += 1;
            size += (k.len() + v.len()) as u64;
            Ok(true)
        })?;
    }
    let mut check = SplitCheck {
        keys: count,
        size,
        split_key: None,
    };
    if count < 2 || (count <= max_keys && size <= max_size) {
        return Ok(check);
    }
    let by_keys = count > max_keys;
    let (mut seen_keys, mut seen_size) = (0u64, 0u64);
    for sp in &spaces {
        let mut found = None;
        snap.scan(sp.cf, &sp.lo, &sp.hi, |k, v| {
            seen_keys += 1;
            seen_size += (k.len() + v.len()) as u64;
            let past_middle = if by_keys {
                seen_keys > count / 2
            } else {
                seen_size > size / 2
            };
            if past_middle {
                if let Some(user) =
                    user_key(sp, k).filter(|u| u.as_slice() > region.get_start_key())
                {
                    found = Some(user);
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        if found.is_some() {
            check.split_key = found;
            break;
        }
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regatta_engine::{MemEngine, WriteBatch};

    #[test]
    fn transactional_versions_are_counted_and_the_split_key_is_a_user_key() {
        // Goal: a region holding only MVCC data still splits, at a user key, so that
        // every version and the lock of a key stay on one side. Method: 10 user keys with
        // 3 versions each and a lock on one, no raw data; check with a low key limit.
        let e = MemEngine::new();
        let mut wb = e.write_batch();
        for i in 0..10u8 {
            let key = [b'k', i];
            for ts in 1..=3u64 {
                wb.put(
                    Cf::Write,
                    &regatta_txn::key::version_key(&key, ts * 10),
                    b"w",
                );
            }
        }
        wb.put(Cf::Lock, &regatta_txn::key::lock_key(&[b'k', 4]), b"l");
        e.write(wb, false).expect("write");
        let region = Region::new(); // the whole key space
        let check = split_check(&e, &region, u64::MAX, 10).expect("check");
        assert_eq!(check.keys, 31);
        let key = check.split_key.expect("over the key limit");
        assert!(
            key.starts_with(b"k") && key.len() == 2,
            "a user key: {key:?}"
        );
        // Every record of a user key is on one side of the cut.
        let (lo, _) = keys::txn_data_range(&key, b"");
        for i in 0..10u8 {
            let k = [b'k', i];
            let sides: Vec<bool> = (1..=3u64)
                .map(|ts| regatta_txn::key::version_key(&k, ts * 10) >= lo)
                .chain([regatta_txn::key::lock_key(&k) >= lo])
                .collect();
            assert!(sides.iter().all(|s| *s == sides[0]), "key {k:?} cut apart");
        }
    }
}
