//! MVCC keys in the data column families, under the engine's `x` mode prefix
//! (`regatta_engine::keys::txn_data_key`: `x` + memcomparable(user key)):
//!
//! | CF | key | value |
//! |---|---|---|
//! | `lock` | `x` + enc(key) | [`Lock`](crate::Lock) |
//! | `write` | `x` + enc(key) + `!commit_ts` | [`Write`](crate::Write) |
//! | `default` | `x` + enc(key) + `!start_ts` | the value, when over 255 bytes |
//!
//! Invariant: the timestamp is stored inverted (`!ts`, big-endian), so the versions of a
//! key sort newest first and "the newest version at or below `ts`" is a seek from
//! `version_key(key, ts)` bounded by [`versions_end`]. The memcomparable encoding is
//! prefix-free, so the versions of different keys never interleave (TiKV's `Key::
//! append_ts`).

use crate::error::{Error, Result};
use regatta_engine::keys;

const TS_LEN: usize = 8;

/// The `lock` CF key of user key `key` (also the prefix of its versions).
pub fn lock_key(key: &[u8]) -> Vec<u8> {
    keys::txn_data_key(key)
}

/// The `write` / `default` CF key of version `ts` of user key `key`.
pub fn version_key(key: &[u8], ts: u64) -> Vec<u8> {
    let mut k = keys::txn_data_key(key);
    k.extend_from_slice(&(!ts).to_be_bytes());
    k
}

/// The exclusive end of every version of `key`: its encoded prefix with the last byte (a
/// final memcomparable marker, never `0xFF`) bumped.
pub fn versions_end(key: &[u8]) -> Vec<u8> {
    let mut k = keys::txn_data_key(key);
    let last = k.last_mut().expect("an encoded key is never empty");
    *last += 1;
    k
}

/// Splits a version key into the encoded-key prefix (equal for every version of one user
/// key) and the timestamp.
pub fn split_version_key(data_key: &[u8]) -> Result<(&[u8], u64)> {
    if data_key.len() < 1 + TS_LEN {
        return Err(Error::Corrupt {
            what: "version key",
            key: data_key.to_vec(),
            detail: format!("{} bytes, too short for a timestamp", data_key.len()),
        });
    }
    let (prefix, ts) = data_key.split_at(data_key.len() - TS_LEN);
    let mut b = [0u8; TS_LEN];
    b.copy_from_slice(ts);
    Ok((prefix, !u64::from_be_bytes(b)))
}

/// The user key of a lock or version key (the timestamp, if any, is ignored).
pub fn user_key(data_key: &[u8]) -> Result<Vec<u8>> {
    keys::txn_user_key(data_key)
        .map(|(k, _)| k)
        .map_err(|e| Error::Corrupt {
            what: "mvcc key",
            key: data_key.to_vec(),
            detail: e.to_string(),
        })
}

/// `[start, end)` of the lock / version keys of user keys in `[start, end)` (empty end =
/// unbounded).
pub fn data_range(start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    keys::txn_data_range(start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_newest_first_and_keys_never_interleave() {
        let mut ks = vec![
            version_key(b"a", 5),
            version_key(b"a", 9),
            version_key(b"a\x00", u64::MAX),
            version_key(b"a\x00", 0),
            version_key(b"", 3),
            version_key(&[b'a'; 8], 1),
        ];
        ks.sort();
        assert_eq!(
            ks,
            vec![
                version_key(b"", 3),
                version_key(b"a", 9),
                version_key(b"a", 5),
                version_key(b"a\x00", u64::MAX),
                version_key(b"a\x00", 0),
                version_key(&[b'a'; 8], 1),
            ]
        );
        for k in [&b"a"[..], b"", &[0xFF; 9]] {
            let end = versions_end(k);
            assert!(lock_key(k) < version_key(k, u64::MAX));
            assert!(version_key(k, 0) < end);
            assert!(end <= lock_key(&[k, b"\x00"].concat()));
        }
    }

    #[test]
    fn version_keys_split_back_into_prefix_and_ts() {
        let k = version_key(b"key", 42);
        let (prefix, ts) = split_version_key(&k).unwrap();
        assert_eq!((prefix, ts), (&lock_key(b"key")[..], 42));
        assert_eq!(user_key(&k).unwrap(), b"key");
        assert!(matches!(
            split_version_key(b"x1"),
            Err(Error::Corrupt { .. })
        ));
        assert!(user_key(b"r-raw").is_err());
    }
}
