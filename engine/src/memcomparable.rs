//! Memcomparable encoding of byte strings: the encoding TiKV and TiDB use for MVCC keys
//! (`codec::bytes::encode_bytes`), written here from its definition.
//!
//! The key is cut into groups of 8 bytes; each group is written in full (the last one
//! padded with zeros) and followed by a marker byte: `0xFF` if more groups follow, else
//! `0xFF - pad` where `pad` (1..=8) is the number of padding zeros. A key whose length is a
//! multiple of 8 therefore ends with a group of 8 zeros and marker `0xF7`.
//!
//! Invariants (checked by the tests below):
//! - order: `a < b` (bytewise) iff `encode(a) < encode(b)`;
//! - prefix-free: no encoding is a proper prefix of another, so anything appended to
//!   `encode(a)` (a timestamp) still sorts between `encode(a)` and the encoding of the next
//!   key, and the versions of different keys never interleave;
//! - the last byte of an encoding is a final marker (`0xF7..=0xFE`), never `0xFF`, so
//!   bumping it gives the exclusive end of "everything starting with `encode(a)`".

use crate::error::{Error, Result};

const GROUP: usize = 8;
const MARKER_MORE: u8 = 0xFF;

/// Length of the encoding of a key of `len` bytes.
pub fn encoded_len(len: usize) -> usize {
    (len / GROUP + 1) * (GROUP + 1)
}

/// Appends the encoding of `key` to `out`.
pub fn encode_bytes(key: &[u8], out: &mut Vec<u8>) {
    out.reserve(encoded_len(key.len()));
    let mut chunks = key.chunks_exact(GROUP);
    for group in &mut chunks {
        out.extend_from_slice(group);
        out.push(MARKER_MORE);
    }
    let rest = chunks.remainder();
    let pad = GROUP - rest.len();
    out.extend_from_slice(rest);
    out.extend(std::iter::repeat_n(0u8, pad));
    out.push(MARKER_MORE - pad as u8);
}

/// Decodes one encoded key from the front of `data`: the key and the bytes after it. A
/// malformed encoding (truncated, bad marker, non-zero padding) is [`Error::Corrupt`].
pub fn decode_bytes(data: &[u8]) -> Result<(Vec<u8>, &[u8])> {
    let mut key = Vec::with_capacity(data.len() / (GROUP + 1) * GROUP);
    let mut rest = data;
    loop {
        if rest.len() < GROUP + 1 {
            return Err(corrupt(format!(
                "truncated: {} bytes left of a {}-byte group",
                rest.len(),
                GROUP + 1
            )));
        }
        let (group, tail) = rest.split_at(GROUP + 1);
        rest = tail;
        let marker = group[GROUP];
        if marker == MARKER_MORE {
            key.extend_from_slice(&group[..GROUP]);
            continue;
        }
        let pad = usize::from(MARKER_MORE - marker);
        if pad > GROUP {
            return Err(corrupt(format!("bad marker {marker:#04x}")));
        }
        let (bytes, padding) = group[..GROUP].split_at(GROUP - pad);
        if padding.iter().any(|&b| b != 0) {
            return Err(corrupt("non-zero padding".to_string()));
        }
        key.extend_from_slice(bytes);
        return Ok((key, rest));
    }
}

fn corrupt(detail: String) -> Error {
    Error::Corrupt {
        what: "memcomparable key",
        region_id: 0,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(key: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_bytes(key, &mut out);
        out
    }

    /// Every byte string of length <= 3 over a small alphabet that includes the bytes
    /// next to the markers and padding.
    fn small_keys() -> Vec<Vec<u8>> {
        let alphabet = [0x00u8, 0x01, 0xF7, 0xFF];
        let mut keys = vec![Vec::new()];
        let mut layer = vec![Vec::new()];
        for _ in 0..3 {
            let mut next = Vec::new();
            for k in &layer {
                for &b in &alphabet {
                    let mut k2: Vec<u8> = k.clone();
                    k2.push(b);
                    next.push(k2);
                }
            }
            keys.extend(next.iter().cloned());
            layer = next;
        }
        // Lengths around the group boundary.
        for len in [7usize, 8, 9, 15, 16, 17] {
            keys.push(vec![0; len]);
            keys.push(vec![0xFF; len]);
            keys.push((0..len as u8).collect());
        }
        keys
    }

    #[test]
    fn encoding_round_trips_and_has_the_predicted_length() {
        for k in small_keys() {
            let e = enc(&k);
            assert_eq!(e.len(), encoded_len(k.len()));
            let (back, rest) = decode_bytes(&e).unwrap();
            assert_eq!(back, k);
            assert!(rest.is_empty());
            let mut with_suffix = e.clone();
            with_suffix.extend_from_slice(b"tail");
            assert_eq!(
                decode_bytes(&with_suffix).unwrap(),
                (k.clone(), &b"tail"[..])
            );
        }
    }

    #[test]
    fn encoding_keeps_order_and_is_prefix_free_exhaustively() {
        let keys = small_keys();
        for a in &keys {
            let ea = enc(a);
            assert_ne!(*ea.last().unwrap(), MARKER_MORE);
            for b in &keys {
                let eb = enc(b);
                assert_eq!(a.cmp(b), ea.cmp(&eb), "{a:?} vs {b:?}");
                if a != b {
                    assert!(!eb.starts_with(&ea), "{a:?} encodes to a prefix of {b:?}");
                }
            }
        }
    }

    #[test]
    fn malformed_encodings_are_corrupt_not_panics() {
        let good = enc(b"abcdefghij");
        for cut in 0..good.len() {
            assert!(decode_bytes(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_marker = enc(b"ab");
        *bad_marker.last_mut().unwrap() = 0x10;
        assert!(matches!(
            decode_bytes(&bad_marker),
            Err(Error::Corrupt { .. })
        ));
        let mut bad_pad = enc(b"ab");
        bad_pad[5] = 1;
        assert!(decode_bytes(&bad_pad).is_err());
    }
}
