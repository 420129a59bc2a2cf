//! Raw KV records: data key `r` + user key -> `version (u64 BE) | value`, where version is
//! the log index of the write that produced the value (what OCC validates against).

use crate::engine::{Cf, Engine, EngineSnapshot};
use crate::error::{Error, Result};
use crate::keys;

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

impl Engine {
    /// Reads raw user key `key`.
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<RawValue>> {
        self.get(Cf::Default, &keys::raw_data_key(key))?
            .map(|b| decode_raw_value(&b))
            .transpose()
    }

    /// Raw pairs with user key in `[start, end)` (empty end = unbounded), at most `limit`.
    pub fn scan_raw(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<RawPair>> {
        let (lo, hi) = keys::raw_data_range(start, end);
        let mut out = Vec::new();
        self.scan(Cf::Default, &lo, &hi, |k, v| {
            let key = keys::raw_user_key(k).unwrap_or_default().to_vec();
            out.push(RawPair {
                key,
                value: decode_raw_value(v)?,
            });
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }
}

impl EngineSnapshot<'_> {
    /// Reads raw user key `key` at the snapshot.
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<RawValue>> {
        self.get(Cf::Default, &keys::raw_data_key(key))?
            .map(|b| decode_raw_value(&b))
            .transpose()
    }
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
