//! The transaction messages of the JSON-lines node (`docs/PROTOCOL.md`,
//! "Transactions"). Served so far: the **versioned registers** `mvcc_put` / `mvcc_get`.
//!
//! A register holds versions at timestamps the caller picks (not TSO timestamps), so they
//! live in the raw key space under a reserved prefix, apart from the transactional `x`
//! keys. Layout per register key `k` (its JSON text, which never holds a `\0` byte):
//!
//! | raw key | value |
//! |---|---|
//! | `P` k `\0` | the newest version: ts (8 bytes BE), version (8 bytes BE), value |
//! | `P` k `\1` `!ts` (8 bytes BE) | a superseded version: version (8 bytes BE), value |
//!
//! `P` starts with `\0`, which no JSON text does, so registers never meet `read`/`write`
//! keys. Invariants: a put changes the newest record only by a compare-and-swap from the
//! bytes it read, so puts on one key are ordered and "timestamp above the newest" is
//! checked atomically with the write; the record of the version it supersedes is written
//! (idempotently: its bytes are fixed by the newest record) *before* that swap, so every
//! version but the newest has its record once superseded. `!ts` sorts newer first: a
//! `mvcc_get` below the newest timestamp is one scan with limit 1.

use super::fields::{field, key, num};
use super::{enc, error_code, request, Fail, Node};
use regatta_proto::kvrpcpb::{CasRequest, ScanRequest};
use serde_json::{json, Value};
use std::sync::Arc;

/// The raw-key prefix of the versioned registers.
const PREFIX: &[u8] = b"\0mvcc\0";

/// Tries of one `mvcc_put` against racing puts on the same key before giving up (each
/// lost race means another put of that key committed).
const MAX_PUT_RACES: usize = 64;

/// The newest version of a register.
#[derive(Debug, Clone, PartialEq)]
struct Newest {
    ts: u64,
    version: u64,
    value: Vec<u8>,
}

impl Newest {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + self.value.len());
        b.extend_from_slice(&self.ts.to_be_bytes());
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&self.value);
        b
    }

    fn decode(b: &[u8]) -> Result<Newest, Fail> {
        let (ts, rest) = split_u64(b)?;
        let (version, value) = split_u64(rest)?;
        Ok(Newest {
            ts,
            version,
            value: value.to_vec(),
        })
    }

    /// The record this version leaves once superseded.
    fn record(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + self.value.len());
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&self.value);
        b
    }
}

fn split_u64(b: &[u8]) -> Result<(u64, &[u8]), Fail> {
    let head: [u8; 8] = b
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| Fail(13, "a versioned register's record is truncated".into()))?;
    Ok((u64::from_be_bytes(head), &b[8..]))
}

fn newest_key(k: &[u8]) -> Vec<u8> {
    [PREFIX, k, b"\0"].concat()
}

fn record_key(k: &[u8], ts: u64) -> Vec<u8> {
    [PREFIX, k, b"\x01", &(!ts).to_be_bytes()].concat()
}

/// The end (exclusive) of `k`'s superseded records.
fn records_end(k: &[u8]) -> Vec<u8> {
    [PREFIX, k, b"\x02"].concat()
}

impl Node {
    /// The first pair of `[start, end)`, following region boundaries (bounded).
    async fn raw_first(&self, start: Vec<u8>, end: Vec<u8>) -> Result<Option<Vec<u8>>, Fail> {
        let mut from = start;
        for _ in 0..64 {
            let (s, e) = (from.clone(), end.clone());
            let mut resp = self
                .execute(request(|r| {
                    let mut sc = ScanRequest::new();
                    sc.set_start_key(s);
                    sc.set_end_key(e);
                    sc.set_limit(1);
                    r.set_scan(sc);
                }))
                .await?;
            if resp.has_error() {
                return Err(error_code(&resp));
            }
            let mut sc = resp.mut_response().take_scan();
            if let Some(p) = sc.mut_pairs().first_mut() {
                return Ok(Some(p.take_value()));
            }
            let next = sc.take_scanned_end();
            if next.is_empty() || next >= end || next <= from {
                return Ok(None);
            }
            from = next; // the region ended first: go on in the next one
        }
        Err(Fail(0, "scan crossed too many regions".into()))
    }

    /// Swaps `key` from `from` (`None`: absent) to `to`; whether it swapped.
    async fn raw_cas(
        &self,
        key: Vec<u8>,
        from: Option<Vec<u8>>,
        to: Vec<u8>,
    ) -> Result<bool, Fail> {
        let mut resp = self
            .execute(request(|r| {
                let mut c = CasRequest::new();
                c.set_key(key);
                match from {
                    Some(f) => c.set_expected(f),
                    None => c.set_expect_absent(true),
                }
                c.set_new_value(to);
                r.set_cas(c);
            }))
            .await?;
        if resp.has_error() {
            return Err(error_code(&resp));
        }
        Ok(resp.mut_response().take_cas().get_succeeded())
    }
}

/// `mvcc_put {key, value, timestamp}`: a new version of the register `key` at
/// `timestamp`, which must be above the register's newest; answers its version (1, 2, ...).
async fn mvcc_put(node: &Node, body: &Value) -> Result<Value, Fail> {
    let k = key(body, "key")?;
    let value = enc(field(body, "value")?);
    let ts = num(body, "timestamp")?;
    let nk = newest_key(&k);
    for _ in 0..MAX_PUT_RACES {
        let old = node.raw_get(nk.clone()).await?;
        let prev = old.as_deref().map(Newest::decode).transpose()?;
        if let Some(p) = &prev {
            if ts <= p.ts {
                return Err(Fail(
                    22,
                    format!(
                        "timestamp {ts} is not above the key's newest version's timestamp {} \
                         (version {}); not written",
                        p.ts, p.version
                    ),
                ));
            }
            node.raw_put(record_key(&k, p.ts), p.record()).await?;
        }
        let next = Newest {
            ts,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: value.clone(),
        };
        if node.raw_cas(nk.clone(), old, next.encode()).await? {
            return Ok(json!({
                "type": "mvcc_put_ok",
                "version": next.version,
                "timestamp": ts,
            }));
        }
        // Another put of this key committed in between: judge against it.
    }
    Err(Fail(
        11,
        "the key's newest version kept changing; not written".into(),
    ))
}

/// `mvcc_get {key, read_timestamp}`: the register's newest version at or below
/// `read_timestamp` (value null, version 0 when there is none).
async fn mvcc_get(node: &Node, body: &Value) -> Result<Value, Fail> {
    let k = key(body, "key")?;
    let read_ts = num(body, "read_timestamp")?;
    let answer = |value: Value, version: u64| {
        json!({
            "type": "mvcc_get_ok",
            "value": value,
            "version": version,
            "as_of_timestamp": read_ts,
        })
    };
    let Some(newest) = node.raw_get(newest_key(&k)).await? else {
        return Ok(answer(Value::Null, 0));
    };
    let newest = Newest::decode(&newest)?;
    if newest.ts <= read_ts {
        return Ok(answer(super::dec(&newest.value), newest.version));
    }
    // Older than the newest: the first superseded record at or below read_ts (`!ts`
    // ascending = timestamps descending). Records of versions above the newest never exist.
    let first = node
        .raw_first(record_key(&k, read_ts), records_end(&k))
        .await?;
    match first {
        None => Ok(answer(Value::Null, 0)),
        Some(rec) => {
            let (version, value) = split_u64(&rec)?;
            Ok(answer(super::dec(value), version))
        }
    }
}

/// Handles one transaction message.
pub(super) async fn handle(node: &Arc<Node>, kind: &str, body: &Value) -> Result<Value, Fail> {
    match kind {
        "mvcc_put" => mvcc_put(node, body).await,
        "mvcc_get" => mvcc_get(node, body).await,
        other => Err(Fail(10, format!("message type {other:?} is not supported"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_keys_sort_newer_versions_first_and_stay_apart_from_other_keys() {
        let k = enc(&json!("k"));
        assert!(record_key(&k, 9) < record_key(&k, 3));
        assert!(newest_key(&k) < record_key(&k, u64::MAX));
        assert!(record_key(&k, 0) < records_end(&k));
        // A longer key with the same start never falls into k's record range.
        let kk = enc(&json!("kk"));
        let r = record_key(&kk, 5);
        assert!(!(r >= record_key(&k, u64::MAX) && r < records_end(&k)));
        // No JSON text starts with `\0`.
        assert!(enc(&json!(0)) > PREFIX.to_vec() && enc(&json!("")) > PREFIX.to_vec());
    }

    #[test]
    fn newest_records_round_trip_and_truncation_is_an_error() {
        let n = Newest {
            ts: 7,
            version: 2,
            value: b"\"v\"".to_vec(),
        };
        assert_eq!(Newest::decode(&n.encode()).ok(), Some(n.clone()));
        assert_eq!(split_u64(&n.record()).ok().map(|(v, _)| v), Some(2));
        assert!(matches!(Newest::decode(&[0; 12]), Err(Fail(13, _))));
    }
}
