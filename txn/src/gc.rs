//! GC of the MVCC versions of one key range below a safe point (TiKV's `GcRunner` per key,
//! without its compaction filter).
//!
//! Invariant: every read at a timestamp `>= safe_point` answers as before. For each key,
//! the versions committed above the safe point stay; at or below it only the newest
//! `Put` stays (what a reader at the safe point sees) — a newest `Delete` goes with
//! everything older, since "nothing" reads the same as "deleted" — and `Lock` / `Rollback`
//! records go, readers skip them anyway. Large values of dropped `Put`s leave `default`.
//!
//! Contract with the caller (PD's safe point, TiKV's): the safe point is below the start
//! ts of every transaction still running, and the locks below it were resolved first
//! (GC reads no locks). Dropping rollback records is then safe: no prewrite with a
//! start ts below the safe point can still arrive.

use crate::error::{Error, Result};
use crate::key;
use crate::reader::decode_write;
use crate::record::WriteKind;
use regatta_engine::{Cf, Snapshot, WriteBatch};

/// Deletes the versions of keys in `[start, end)` (empty end = unbounded) that no read at
/// or after `safe_point` needs; returns how many write records it deleted. The batch holds
/// one delete per record (bound the range to bound the batch).
pub fn gc<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    start: &[u8],
    end: &[u8],
    safe_point: u64,
) -> Result<usize> {
    let (lo, hi) = key::data_range(start, end);
    // The key whose newest data version at or below the safe point was already met.
    let mut kept_for: Option<Vec<u8>> = None;
    let mut deleted = 0;
    let mut failed: Option<Error> = None;
    snap.scan(Cf::Write, &lo, &hi, |k, v| {
        let decoded =
            key::split_version_key(k).and_then(|(p, ts)| Ok((p, ts, decode_write(k, v)?)));
        let (prefix, commit_ts, write) = match decoded {
            Ok(d) => d,
            Err(e) => {
                failed = Some(e);
                return Ok(false);
            }
        };
        if commit_ts > safe_point {
            return Ok(true);
        }
        let older_than_kept = kept_for.as_deref() == Some(prefix);
        let drop = match write.kind {
            WriteKind::Lock | WriteKind::Rollback => true,
            WriteKind::Put | WriteKind::Delete if older_than_kept => true,
            WriteKind::Put => {
                kept_for = Some(prefix.to_vec());
                false
            }
            WriteKind::Delete => {
                kept_for = Some(prefix.to_vec());
                true
            }
        };
        if drop {
            wb.delete(Cf::Write, k);
            if write.kind == WriteKind::Put && write.short_value.is_none() {
                let mut value_key = prefix.to_vec();
                value_key.extend_from_slice(&(!write.start_ts).to_be_bytes());
                wb.delete(Cf::Default, &value_key);
            }
            deleted += 1;
        }
        Ok(true)
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(deleted),
    }
}
