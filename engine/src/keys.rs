//! Key layout of the shared RocksDB (see `docs/ARCHITECTURE.md`, "Storage layout").
//!
//! `raft` CF, per region (region id big-endian so one region's keys are contiguous):
//! - `0x01 rid 0x01 index` -> `eraftpb::Entry`
//! - `0x01 rid 0x02`       -> `RaftLocalState` (HardState + last index)
//! - `0x01 rid 0x03`       -> `RaftApplyState` (written with the applied data)
//! - `0x01 rid 0x04`       -> `RaftTruncatedState` (log compacted through)
//! - `0x01 rid 0x06 cid`   -> `DedupEntry` (at-most-once session of client `cid`)
//! - `0x01 rid 0x07`       -> `RegionGcState` (the region's applied GC safe point)
//! - `0x02 rid`            -> `RegionLocalState` (a separate prefix so listing regions
//!   never walks the logs)
//! - `0x03 "wal-prefill"`  -> never written, only deleted when an opened database fills
//!   its WAL files (see `EngineConfig::wal_prefill_bytes`)
//!
//! Data CFs: user keys behind a mode byte, `r` for raw KV (`r` + user key), `x` for
//! transactional (MVCC) data (`x` + memcomparable(user key), see [`memcomparable`]; the
//! MVCC layer, `regatta-txn`, appends the version timestamp). The memcomparable encoding
//! keeps the versions of one key contiguous and in key order, so a user-key range maps to
//! one data-key range in both modes.
//!
//! [`memcomparable`]: crate::memcomparable

use crate::memcomparable;

/// Prefix of all per-region raft keys.
const REGION_RAFT_PREFIX: u8 = 0x01;
/// Prefix of region-state keys.
const REGION_STATE_PREFIX: u8 = 0x02;

/// The key an opened database deletes (twice) to switch its memtables while it fills its
/// WAL files; nothing writes it, so no read ever sees it.
pub const WAL_PREFILL_KEY: &[u8] = b"\x03wal-prefill";

const ENTRY_SUFFIX: u8 = 0x01;
const RAFT_STATE_SUFFIX: u8 = 0x02;
const APPLY_STATE_SUFFIX: u8 = 0x03;
const TRUNCATED_STATE_SUFFIX: u8 = 0x04;
const DEDUP_SUFFIX: u8 = 0x06;
const GC_STATE_SUFFIX: u8 = 0x07;

/// Mode byte of raw KV data keys.
pub const RAW_PREFIX: u8 = b'r';
/// Mode byte of transactional (MVCC) data keys.
pub const TXN_PREFIX: u8 = b'x';

fn region_key(region_id: u64, suffix: u8, extra: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + extra.len());
    k.push(REGION_RAFT_PREFIX);
    k.extend_from_slice(&region_id.to_be_bytes());
    k.push(suffix);
    k.extend_from_slice(extra);
    k
}

/// Key of log entry `index` of `region_id`.
pub fn entry_key(region_id: u64, index: u64) -> Vec<u8> {
    region_key(region_id, ENTRY_SUFFIX, &index.to_be_bytes())
}

/// Parses the index out of an entry key of `region_id`.
pub fn entry_index(region_id: u64, key: &[u8]) -> Option<u64> {
    let prefix = region_key(region_id, ENTRY_SUFFIX, &[]);
    let rest = key.strip_prefix(prefix.as_slice())?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// Key of the `RaftLocalState` of `region_id`.
pub fn raft_state_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, RAFT_STATE_SUFFIX, &[])
}

/// Key of the `RaftApplyState` of `region_id`.
pub fn apply_state_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, APPLY_STATE_SUFFIX, &[])
}

/// Key of the `RaftTruncatedState` of `region_id`.
pub fn truncated_state_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, TRUNCATED_STATE_SUFFIX, &[])
}

/// Key of the dedup session of `client_id` in `region_id`.
pub fn dedup_key(region_id: u64, client_id: u64) -> Vec<u8> {
    region_key(region_id, DEDUP_SUFFIX, &client_id.to_be_bytes())
}

/// Key of the `RegionGcState` (applied GC safe point) of `region_id`.
pub fn gc_state_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, GC_STATE_SUFFIX, &[])
}

/// `[start, end)` of all dedup sessions of `region_id`.
pub fn dedup_range(region_id: u64) -> (Vec<u8>, Vec<u8>) {
    (
        region_key(region_id, DEDUP_SUFFIX, &[]),
        region_key(region_id, DEDUP_SUFFIX + 1, &[]),
    )
}

/// `[start, end)` of every raft-CF key of `region_id` except its region state.
pub fn region_raft_range(region_id: u64) -> (Vec<u8>, Vec<u8>) {
    let mut start = vec![REGION_RAFT_PREFIX];
    start.extend_from_slice(&region_id.to_be_bytes());
    let mut end = vec![REGION_RAFT_PREFIX];
    match region_id.checked_add(1) {
        Some(next) => end.extend_from_slice(&next.to_be_bytes()),
        None => end = vec![REGION_RAFT_PREFIX + 1],
    }
    (start, end)
}

/// `[start, end)` of the log entries of `region_id` with index in `[from, to)`.
pub fn entry_range(region_id: u64, from: u64, to: u64) -> (Vec<u8>, Vec<u8>) {
    (entry_key(region_id, from), entry_key(region_id, to))
}

/// Key of the `RegionLocalState` of `region_id`.
pub fn region_state_key(region_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(REGION_STATE_PREFIX);
    k.extend_from_slice(&region_id.to_be_bytes());
    k
}

/// `[start, end)` of all region-state keys.
pub fn region_state_range() -> (Vec<u8>, Vec<u8>) {
    (vec![REGION_STATE_PREFIX], vec![REGION_STATE_PREFIX + 1])
}

/// Data key of raw user key `key`.
pub fn raw_data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(RAW_PREFIX);
    k.extend_from_slice(key);
    k
}

/// The user key inside a raw data key.
pub fn raw_user_key(data_key: &[u8]) -> Option<&[u8]> {
    data_key.strip_prefix(&[RAW_PREFIX])
}

/// `[start, end)` of the raw data keys of the user-key range `[start, end)` (empty end =
/// unbounded).
pub fn raw_data_range(start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let lo = raw_data_key(start);
    let hi = if end.is_empty() {
        vec![RAW_PREFIX + 1]
    } else {
        raw_data_key(end)
    };
    (lo, hi)
}

/// Transactional data key of user key `key`: `x` + memcomparable(`key`). It is the key of
/// `key`'s lock (`lock` CF) and the prefix of all its versions (`default`, `write` CFs).
pub fn txn_data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + memcomparable::encoded_len(key.len()) + 8);
    k.push(TXN_PREFIX);
    memcomparable::encode_bytes(key, &mut k);
    k
}

/// Splits a transactional data key into its user key and what follows the encoded user
/// key (a version key's timestamp). A key without the `x` prefix or with a malformed
/// encoding is [`Error::Corrupt`](crate::Error::Corrupt).
pub fn txn_user_key(data_key: &[u8]) -> crate::Result<(Vec<u8>, &[u8])> {
    match data_key.strip_prefix(&[TXN_PREFIX]) {
        Some(rest) => memcomparable::decode_bytes(rest),
        None => Err(crate::Error::Corrupt {
            what: "transactional data key",
            region_id: 0,
            detail: format!("no 'x' prefix: {data_key:?}"),
        }),
    }
}

/// `[start, end)` of the transactional data keys (every version included) of the user-key
/// range `[start, end)` (empty end = unbounded).
pub fn txn_data_range(start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let lo = txn_data_key(start);
    let hi = if end.is_empty() {
        vec![TXN_PREFIX + 1]
    } else {
        txn_data_key(end)
    };
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_sort_by_region_then_index() {
        let mut keys = [
            entry_key(2, 1),
            entry_key(1, 300),
            entry_key(1, 2),
            raft_state_key(1),
            entry_key(1, u64::MAX),
        ];
        keys.sort();
        assert_eq!(keys[0], entry_key(1, 2));
        assert_eq!(keys[1], entry_key(1, 300));
        assert_eq!(keys[2], entry_key(1, u64::MAX));
        assert_eq!(keys[3], raft_state_key(1));
        assert_eq!(keys[4], entry_key(2, 1));
        assert_eq!(entry_index(1, &entry_key(1, 300)), Some(300));
        assert_eq!(entry_index(2, &entry_key(1, 300)), None);
    }

    #[test]
    fn region_range_covers_all_its_keys_and_no_other() {
        let (lo, hi) = region_raft_range(7);
        for k in [
            entry_key(7, 0),
            entry_key(7, u64::MAX),
            raft_state_key(7),
            apply_state_key(7),
            truncated_state_key(7),
            dedup_key(7, u64::MAX),
        ] {
            assert!(lo <= k && k < hi);
        }
        for k in [entry_key(8, 0), entry_key(6, u64::MAX), region_state_key(7)] {
            assert!(!(lo <= k && k < hi));
        }
        let (lo, hi) = region_raft_range(u64::MAX);
        assert!(lo <= dedup_key(u64::MAX, 9) && dedup_key(u64::MAX, 9) < hi);
    }

    #[test]
    fn raw_ranges_respect_unbounded_end() {
        let (lo, hi) = raw_data_range(b"b", b"");
        assert!(lo <= raw_data_key(b"zzzz") && raw_data_key(b"zzzz") < hi);
        assert!(raw_data_key(b"a") < lo);
        let (lo, hi) = raw_data_range(b"", b"m");
        assert!(lo <= raw_data_key(b"") && raw_data_key(b"l\xff") < hi);
        assert!(raw_data_key(b"m") >= hi);
        assert_eq!(raw_user_key(&raw_data_key(b"abc")), Some(&b"abc"[..]));
    }

    #[test]
    fn txn_ranges_hold_every_version_of_their_keys_and_no_other() {
        let version = |k: &[u8], suffix: &[u8]| {
            let mut d = txn_data_key(k);
            d.extend_from_slice(suffix);
            d
        };
        let (lo, hi) = txn_data_range(b"b", b"d");
        for k in [
            &b"b"[..],
            b"b\x00",
            b"c\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            for suffix in [&[0u8; 8][..], &[0xFF; 8]] {
                let d = version(k, suffix);
                assert!(lo <= d && d < hi, "{k:?}");
                assert_eq!(txn_user_key(&d).unwrap(), (k.to_vec(), suffix));
            }
        }
        for k in [&b"a\xff"[..], b"d", b"d\x00"] {
            assert!(!(lo <= version(k, &[0; 8]) && version(k, &[0; 8]) < hi));
        }
        let (lo, hi) = txn_data_range(b"", b"");
        assert!(lo <= txn_data_key(b"") && version(&[0xFF; 20], &[0xFF; 8]) < hi);
        assert!(
            raw_data_key(&[0xFF; 4]) < lo,
            "raw keys sort before every txn key"
        );
        assert!(txn_user_key(&raw_data_key(b"a")).is_err());
    }
}
