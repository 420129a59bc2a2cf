//! Raw KV records: data key `r` + user key -> `version (u64 BE) | value`, where version is
//! the log index of the write that produced the value (what OCC validates against). Read
//! them with [`Snapshot::get_raw`](crate::Snapshot::get_raw) and
//! [`Snapshot::scan_raw`](crate::Snapshot::scan_raw).

use crate::error::{Error, Result};

/// A raw value with its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawValue {
    /// Log index of the write that produced it.
    pub version: u64,
    /// The user value.
    pub value: Vec<u8>,
}

/// Encodes a raw record.
pub fn encode_raw_value(version: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(value);
    v
}

/// Decodes a raw record; `key` names it in a corruption error.
pub fn decode_raw_value(bytes: &[u8]) -> Result<RawValue> {
    if bytes.len() < 8 {
        return Err(Error::Corrupt {
            what: "raw value",
            region_id: 0,
            detail: format!("{} bytes, need at least 8", bytes.len()),
        });
    }
    let (ver, value) = bytes.split_at(8);
    Ok(RawValue {
        version: u64::from_be_bytes(ver.try_into().expect("split at 8")),
        value: value.to_vec(),
    })
}

/// A raw pair returned by scans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPair {
    /// The user key.
    pub key: Vec<u8>,
    /// Its value and version.
    pub value: RawValue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_value_round_trips_and_rejects_short_records() {
        let enc = encode_raw_value(42, b"hello");
        assert_eq!(
            decode_raw_value(&enc).unwrap(),
            RawValue {
                version: 42,
                value: b"hello".to_vec()
            }
        );
        assert!(decode_raw_value(b"short").is_err());
        assert_eq!(
            decode_raw_value(&encode_raw_value(1, b"")).unwrap().value,
            b""
        );
    }
}
