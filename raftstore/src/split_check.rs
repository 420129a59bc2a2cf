//! Split checks: how many keys and bytes a region holds, and where to cut it.
//!
//! A region's data lives in key spaces (see `regatta_engine::keys`): raw pairs (`r` in
//! `default`), the raftstore's own, and those of the layer above (see
//! [`crate::coprocessor::KeySpace`]). All are counted. The split key is always a *user*
//! key, taken from whichever record passes the middle; each space maps its data keys back
//! to user keys in order, so a region cut at user key `k` has every record of a user key
//! on one side.

use crate::coprocessor::KeySpace;
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

/// The raw key space of `region` (`r` in `default`): the raftstore's own.
fn raw_space(region: &Region) -> KeySpace {
    let (lo, hi) = keys::raw_data_range(region.get_start_key(), region.get_end_key());
    KeySpace {
        cf: Cf::Default,
        lo,
        hi,
        user_key: |k| keys::raw_user_key(k).map(<[u8]>::to_vec),
    }
}

/// Scans `region` for [`SplitCheck`]: its records and bytes, and — if it holds more than
/// `max_keys` records or `max_size` bytes — the user key to split it at, where the count
/// or the size (whichever limit it passed) crosses the middle. Two streaming passes over
/// one snapshot (so both see the same records), nothing buffered. `others` are the key
/// spaces of the layer above (see [`crate::coprocessor::Coprocessor::key_spaces`]),
/// counted after the raw one.
pub fn split_check<E: Engine>(
    engine: &E,
    region: &Region,
    max_size: u64,
    max_keys: u64,
    others: &[KeySpace],
) -> Result<SplitCheck, Error> {
    let snap = engine.snapshot();
    let raw = [raw_space(region)];
    let spaces: Vec<&KeySpace> = raw.iter().chain(others).collect();
    let (mut count, mut size) = (0u64, 0u64);
    for sp in spaces.iter() {
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
    for sp in spaces.iter() {
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
                    (sp.user_key)(k).filter(|u| u.as_slice() > region.get_start_key())
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
