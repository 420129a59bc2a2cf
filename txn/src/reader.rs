//! [`MvccReader`]: reads of the MVCC data through one engine [`Snapshot`] — Percolator's
//! `Get` (step "read at start_ts") as TiKV's `PointGetter` / `MvccReader` do it.
//!
//! Invariants:
//! - a read at `ts` returns the value of the newest `Put` / `Delete` committed at or below
//!   `ts`; `Lock` and `Rollback` records are skipped;
//! - a read never returns a value while a lock that may commit at or below `ts` is on the
//!   key ([`Lock::blocks_read_at`]): it answers [`Error::KeyIsLocked`] instead, so a
//!   reader never misses a commit that lands below its timestamp. A pessimistic lock, a
//!   read lock, a lock started after `ts` or pushed above it does not block (TiKV).

use crate::error::{Error, Result};
use crate::key;
use crate::record::{Lock, Write, WriteKind};
use regatta_engine::{Cf, Snapshot};

/// What one key's write CF says about transaction `start_ts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TxnCommitRecord {
    /// Neither a commit nor a rollback record of the transaction.
    None,
    /// Committed at `commit_ts`.
    Committed {
        /// The commit timestamp.
        commit_ts: u64,
    },
    /// Rolled back (a `Rollback` record or an overlapped rollback flag).
    RolledBack,
}

/// The writes of one key at or above a transaction's start ts.
pub(crate) struct WritesSince {
    /// The transaction's own record, if any.
    pub(crate) own: TxnCommitRecord,
    /// The newest record of another transaction that is not a rollback: `(commit_ts,
    /// start_ts)`.
    pub(crate) newest_other: Option<(u64, u64)>,
}

/// A pair read at a timestamp with its version: `(user key, commit_ts, value)`.
pub type VersionedPair = (Vec<u8>, u64, Vec<u8>);

/// Reads MVCC data (locks, writes, values) through one snapshot.
pub struct MvccReader<'a, S: Snapshot> {
    snap: &'a S,
}

impl<'a, S: Snapshot> MvccReader<'a, S> {
    /// A reader over `snap`.
    pub fn new(snap: &'a S) -> Self {
        MvccReader { snap }
    }

    /// The lock on `key`, if any.
    pub fn load_lock(&self, key: &[u8]) -> Result<Option<Lock>> {
        let k = key::lock_key(key);
        match self.snap.get(Cf::Lock, &k)? {
            None => Ok(None),
            Some(b) => decode_lock(&k, &b).map(Some),
        }
    }

    /// The newest write record of `key` committed at or below `ts`, with its commit ts.
    pub fn seek_write(&self, key: &[u8], ts: u64) -> Result<Option<(u64, Write)>> {
        let start = key::version_key(key, ts);
        match self.snap.seek(Cf::Write, &start, &key::versions_end(key))? {
            None => Ok(None),
            Some((k, v)) => {
                let (_, commit_ts) = key::split_version_key(&k)?;
                Ok(Some((commit_ts, decode_write(&k, &v)?)))
            }
        }
    }

    /// OCC's version of `key`: the commit ts of its newest `Put` or `Delete`, 0 if it has
    /// none (never written, or GC dropped its last `Delete`). `Lock` and `Rollback`
    /// records change no value, so they are not versions. Ignores locks.
    pub fn newest_version(&self, key: &[u8]) -> Result<u64> {
        Ok(self.data_write(key, u64::MAX)?.map_or(0, |(ts, _)| ts))
    }

    /// The value of `key` as of `read_ts` and its version at `read_ts` (the commit ts of
    /// the newest `Put`/`Delete` at or below it, 0 if none; a `Delete` reads `None`):
    /// [`Error::KeyIsLocked`] as [`MvccReader::get`].
    pub fn get_with_version(&self, key: &[u8], read_ts: u64) -> Result<(Option<Vec<u8>>, u64)> {
        if let Some(lock) = self.load_lock(key)? {
            if lock.blocks_read_at(read_ts) {
                return Err(Error::KeyIsLocked {
                    key: key.to_vec(),
                    lock: Box::new(lock),
                });
            }
        }
        match self.data_write(key, read_ts)? {
            Some((commit_ts, w)) if w.kind == WriteKind::Put => {
                Ok((Some(self.load_value(key, &w)?), commit_ts))
            }
            Some((commit_ts, _)) => Ok((None, commit_ts)),
            None => Ok((None, 0)),
        }
    }

    /// The value of `key` as of `read_ts` (snapshot isolation): [`Error::KeyIsLocked`] if
    /// a lock that may commit at or below `read_ts` is on it.
    pub fn get(&self, key: &[u8], read_ts: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.get_versioned(key, read_ts)?.map(|(_, v)| v))
    }

    /// As [`MvccReader::get`], with the commit ts of the version read.
    pub fn get_versioned(&self, key: &[u8], read_ts: u64) -> Result<Option<(u64, Vec<u8>)>> {
        let (value, version) = self.get_with_version(key, read_ts)?;
        Ok(value.map(|v| (version, v)))
    }

    /// The value of the newest `Put`/`Delete` of `key` committed at or below `ts`,
    /// ignoring locks.
    pub(crate) fn committed_value(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.committed_version(key, ts)?.map(|(_, v)| v))
    }

    /// As [`MvccReader::committed_value`], with the commit ts.
    fn committed_version(&self, key: &[u8], ts: u64) -> Result<Option<(u64, Vec<u8>)>> {
        match self.data_write(key, ts)? {
            Some((commit_ts, w)) if w.kind == WriteKind::Put => {
                self.load_value(key, &w).map(|v| Some((commit_ts, v)))
            }
            _ => Ok(None),
        }
    }

    /// The newest `Put`/`Delete` record of `key` committed at or below `ts`.
    fn data_write(&self, key: &[u8], ts: u64) -> Result<Option<(u64, Write)>> {
        let start = key::version_key(key, ts);
        let mut found: Result<Option<(u64, Write)>> = Ok(None);
        self.snap
            .scan(Cf::Write, &start, &key::versions_end(key), |k, v| {
                match decode_write(k, v) {
                    Ok(w) if !w.is_data() => return Ok(true),
                    Ok(w) => {
                        found = key::split_version_key(k).map(|(_, commit_ts)| Some((commit_ts, w)))
                    }
                    Err(e) => found = Err(e),
                }
                Ok(false)
            })?;
        found
    }

    /// The value a `Put` record points at: inlined, or in `default` at `key + start_ts`.
    fn load_value(&self, key: &[u8], w: &Write) -> Result<Vec<u8>> {
        if let Some(v) = &w.short_value {
            return Ok(v.clone());
        }
        let k = key::version_key(key, w.start_ts);
        self.snap
            .get(Cf::Default, &k)?
            .ok_or_else(|| Error::Corrupt {
                what: "default value",
                key: k,
                detail: "a Put write record points at a missing value".into(),
            })
    }

    /// Up to `limit` `(key, value)` pairs of the keys in `[start, end)` (empty end =
    /// unbounded) as of `read_ts`, ascending; deleted keys are left out. Fails with
    /// [`Error::KeyIsLocked`] on the first key in the scanned part that a lock blocks.
    /// It walks every version in the range (TiKV's scanner seeks past old versions
    /// instead; worth doing once GC leaves long histories) and reads every lock of the
    /// range.
    pub fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        read_ts: u64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let pairs = self.scan_versioned(start, end, read_ts, limit)?;
        Ok(pairs.into_iter().map(|(k, _, v)| (k, v)).collect())
    }

    /// As [`MvccReader::scan`], with each value's commit ts: `(key, commit_ts, value)`.
    pub fn scan_versioned(
        &self,
        start: &[u8],
        end: &[u8],
        read_ts: u64,
        limit: usize,
    ) -> Result<Vec<VersionedPair>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (lo, hi) = key::data_range(start, end);
        // The first blocking lock of the range; whether it matters depends on how far the
        // scan below gets.
        let mut blocking: Option<(Vec<u8>, Lock)> = None;
        let mut failed: Option<Error> = None;
        self.snap.scan(Cf::Lock, &lo, &hi, |k, v| {
            match decode_lock(k, v) {
                Ok(l) if l.blocks_read_at(read_ts) => blocking = Some((k.to_vec(), l)),
                Ok(_) => return Ok(true),
                Err(e) => failed = Some(e),
            }
            Ok(false)
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        // Newest data write at or below read_ts of each key: (encoded prefix, write).
        let mut picked: Vec<(Vec<u8>, u64, Write)> = Vec::new();
        let mut done: Option<Vec<u8>> = None;
        self.snap.scan(Cf::Write, &lo, &hi, |k, v| {
            let (prefix, commit_ts) = match key::split_version_key(k) {
                Ok(p) => p,
                Err(e) => {
                    failed = Some(e);
                    return Ok(false);
                }
            };
            if commit_ts > read_ts || done.as_deref() == Some(prefix) {
                return Ok(true);
            }
            let w = match decode_write(k, v) {
                Ok(w) => w,
                Err(e) => {
                    failed = Some(e);
                    return Ok(false);
                }
            };
            if !w.is_data() {
                return Ok(true);
            }
            done = Some(prefix.to_vec());
            if w.kind == WriteKind::Put {
                picked.push((prefix.to_vec(), commit_ts, w));
            }
            Ok(picked.len() < limit)
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some((lock_key, lock)) = blocking {
            let covered = picked.len() < limit
                || picked
                    .last()
                    .is_some_and(|(last, _, _)| lock_key.as_slice() <= last.as_slice());
            if covered {
                return Err(Error::KeyIsLocked {
                    key: key::user_key(&lock_key)?,
                    lock: Box::new(lock),
                });
            }
        }
        picked
            .into_iter()
            .map(|(prefix, commit_ts, w)| {
                let user_key = key::user_key(&prefix)?;
                let value = self.load_value(&user_key, &w)?;
                Ok((user_key, commit_ts, value))
            })
            .collect()
    }

    /// Up to `limit` locks with `start_ts <= max_ts` on keys in `[start, end)` (empty end =
    /// unbounded), ascending by key: what a lock resolver (or GC, before it runs) visits.
    pub fn scan_locks(
        &self,
        start: &[u8],
        end: &[u8],
        max_ts: u64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Lock)>> {
        let (lo, hi) = key::data_range(start, end);
        let mut out = Vec::new();
        let mut failed = None;
        if limit == 0 {
            return Ok(out);
        }
        self.snap.scan(Cf::Lock, &lo, &hi, |k, v| {
            match decode_lock(k, v).and_then(|l| Ok((key::user_key(k)?, l))) {
                Ok((uk, l)) if l.start_ts <= max_ts => out.push((uk, l)),
                Ok(_) => {}
                Err(e) => {
                    failed = Some(e);
                    return Ok(false);
                }
            }
            Ok(out.len() < limit)
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The write records of `key` committed at or above `start_ts`, sorted into the
    /// transaction's own record and the newest non-rollback record of another one.
    pub(crate) fn writes_since(&self, key: &[u8], start_ts: u64) -> Result<WritesSince> {
        let lo = key::version_key(key, u64::MAX);
        let hi = match start_ts.checked_sub(1) {
            Some(below) => key::version_key(key, below),
            None => key::versions_end(key),
        };
        let mut out = WritesSince {
            own: TxnCommitRecord::None,
            newest_other: None,
        };
        let mut failed = None;
        self.snap.scan(Cf::Write, &lo, &hi, |k, v| {
            let decoded =
                key::split_version_key(k).and_then(|(_, ts)| Ok((ts, decode_write(k, v)?)));
            let (commit_ts, w) = match decoded {
                Ok(d) => d,
                Err(e) => {
                    failed = Some(e);
                    return Ok(false);
                }
            };
            if w.start_ts == start_ts {
                out.own = match w.kind {
                    WriteKind::Rollback => TxnCommitRecord::RolledBack,
                    _ => TxnCommitRecord::Committed { commit_ts },
                };
                return Ok(false);
            }
            if commit_ts == start_ts && w.overlapped_rollback {
                out.own = TxnCommitRecord::RolledBack;
                return Ok(false);
            }
            if w.kind != WriteKind::Rollback && out.newest_other.is_none() {
                out.newest_other = Some((commit_ts, w.start_ts));
            }
            Ok(true)
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The transaction's own commit or rollback record on `key`.
    pub(crate) fn txn_commit_record(&self, key: &[u8], start_ts: u64) -> Result<TxnCommitRecord> {
        Ok(self.writes_since(key, start_ts)?.own)
    }

    /// The write record stored exactly at `key + ts`, if any.
    pub(crate) fn write_at(&self, key: &[u8], ts: u64) -> Result<Option<Write>> {
        let k = key::version_key(key, ts);
        match self.snap.get(Cf::Write, &k)? {
            None => Ok(None),
            Some(v) => decode_write(&k, &v).map(Some),
        }
    }
}

/// Decodes the lock stored at data key `k`, naming `k` in a corruption error.
pub(crate) fn decode_lock(k: &[u8], v: &[u8]) -> Result<Lock> {
    Lock::decode(v).map_err(|e| with_key(e, k))
}

/// Decodes the write stored at data key `k`, naming `k` in a corruption error.
pub(crate) fn decode_write(k: &[u8], v: &[u8]) -> Result<Write> {
    Write::decode(v).map_err(|e| with_key(e, k))
}

fn with_key(e: Error, k: &[u8]) -> Error {
    match e {
        Error::Corrupt { what, detail, .. } => Error::Corrupt {
            what,
            key: k.to_vec(),
            detail,
        },
        other => other,
    }
}
