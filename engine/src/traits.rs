//! The engine seam: what the layers above read and write through — a point-in-time
//! [`Snapshot`], an atomic [`WriteBatch`], and the [`Engine`] that opens the one and writes
//! the other. Named after TiKV's `components/engine_traits` (`Snapshot` / `RocksSnapshot` /
//! `MemSnapshot`, ...), without its tower of supertraits.
//!
//! Two implementations keep the same contract, checked by one conformance suite
//! (`engine_tests.rs`) run against both: [`RocksEngine`](crate::RocksEngine), the store's
//! database, and [`MemEngine`](crate::MemEngine), one ordered map per column family, so the
//! apply logic and (later) MVCC are unit-tested without RocksDB.
//!
//! Keys compare as unsigned bytes, lexicographically (a proper prefix sorts first). Every
//! range is `[start, end)`: `start` inclusive, `end` exclusive, both required — an `end`
//! at or below `start` is an empty range, never "unbounded".
//!
//! The traits are used through generics (`fn f<S: Snapshot>`) on the raftstore's own
//! paths: apply runs per raft entry on the write path, and monomorphised calls cost what
//! direct calls did. A layer behind a `dyn` seam uses their object-safe faces
//! (`erased.rs`).

use crate::error::{Error, Result};
use crate::keys;
use crate::raw::{decode_raw_value, RawPair, RawValue};
use protobuf::Message;

/// The column families of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cf {
    /// Raft logs and per-region states.
    Raft,
    /// Values (raw KV, MVCC data).
    Default,
    /// MVCC commit records.
    Write,
    /// MVCC locks.
    Lock,
}

impl Cf {
    /// All column families.
    pub const ALL: [Cf; 4] = [Cf::Raft, Cf::Default, Cf::Write, Cf::Lock];
    /// The column families that hold region data (carried in snapshots).
    pub const DATA: [Cf; 3] = [Cf::Default, Cf::Write, Cf::Lock];

    /// The RocksDB name of the column family.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Raft => "raft",
            Cf::Default => "default",
            Cf::Write => "write",
            Cf::Lock => "lock",
        }
    }

    /// The column family with RocksDB name `name`.
    pub fn from_name(name: &str) -> Option<Cf> {
        Cf::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Position in [`Cf::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A consistent, point-in-time read view of an [`Engine`].
///
/// Contract:
/// - every read through one snapshot sees the same state: each batch written before the
///   snapshot was opened, whole, and nothing written after;
/// - an absent key is `Ok(None)`, an empty value is `Some(vec![])`: the two differ;
/// - an `Err` means the engine failed (I/O, corruption); it is never used for "not found".
pub trait Snapshot {
    /// The value of `key` in `cf`.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Calls `f` on every pair of `cf` with `start <= key < end`, in ascending key order,
    /// until `f` returns `Ok(false)` (stop, not an error) or an error (returned as is). The
    /// slices are valid only during the call. An `end <= start` visits nothing.
    fn scan<F>(&self, cf: Cf, start: &[u8], end: &[u8], f: F) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<bool>;

    /// The first pair of `cf` with `start <= key < end` (the smallest such key), or `None`.
    /// The bound matters to RocksDB: it stops the seek at `end` instead of walking
    /// tombstones past it (how an MVCC read finds the newest version at or below its
    /// timestamp: seek from `key + ts` to the end of `key`'s versions).
    fn seek(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut found = None;
        self.scan(cf, start, end, |k, v| {
            found = Some((k.to_vec(), v.to_vec()));
            Ok(false)
        })?;
        Ok(found)
    }

    /// The protobuf record at `key` of `cf`; `what`/`region_id` name it in a corruption
    /// error (a record that does not decode is [`Error::Corrupt`]).
    fn get_msg<M: Message>(
        &self,
        cf: Cf,
        key: &[u8],
        what: &'static str,
        region_id: u64,
    ) -> Result<Option<M>> {
        match self.get(cf, key)? {
            None => Ok(None),
            Some(bytes) => decode_msg(&bytes, what, region_id).map(Some),
        }
    }

    /// The raw KV record of user key `key`.
    fn get_raw(&self, key: &[u8]) -> Result<Option<RawValue>> {
        self.get(Cf::Default, &keys::raw_data_key(key))?
            .map(|b| decode_raw_value(&b))
            .transpose()
    }

    /// Raw pairs with user key in `[start, end)` (an empty `end`: unbounded), ascending, at
    /// most `limit`.
    fn scan_raw(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<RawPair>> {
        let (lo, hi) = keys::raw_data_range(start, end);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
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

/// A batch of writes, applied by [`Engine::write`] all at once or not at all.
///
/// Contract: operations take effect in the order they were added, so a later operation on
/// a key wins (a put after a delete or a `delete_range` covering the key leaves the put;
/// a delete after a put leaves nothing). Building a batch never fails and is invisible to
/// readers until the batch is written.
pub trait WriteBatch {
    /// Sets `key` to `value` in `cf`.
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]);

    /// Removes `key` from `cf` (absent keys included).
    fn delete(&mut self, cf: Cf, key: &[u8]);

    /// Removes every key of `cf` in `[start, end)`; an `end <= start` removes nothing.
    fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]);

    /// Number of operations added.
    fn count(&self) -> usize;

    /// Whether no operation was added.
    fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// Sets `key` to the encoding of `msg` in `cf`.
    fn put_msg<M: Message>(&mut self, cf: Cf, key: &[u8], msg: &M) {
        let bytes = msg
            .write_to_bytes()
            .expect("encoding an in-memory protobuf message cannot fail");
        self.put(cf, key, &bytes);
    }
}

/// A store's key-value engine: opens snapshots and writes batches atomically. Cloning is
/// cheap and every clone is the same engine.
pub trait Engine: Clone + Send + Sync + 'static {
    /// The engine's snapshot; it may borrow the engine.
    type Snapshot<'a>: Snapshot
    where
        Self: 'a;
    /// The engine's reader of its live state (see [`Engine::live`]).
    type Live<'a>: Snapshot
    where
        Self: 'a;
    /// The engine's write batch.
    type WriteBatch: WriteBatch + Send;

    /// A snapshot of the state as of now: it sees every batch whose `write` returned before
    /// this call and no batch written after. Never fails.
    fn snapshot(&self) -> Self::Snapshot<'_>;

    /// A reader of the live state, cheaper than a snapshot where the engine can do
    /// better: each `get` sees the latest write and each `scan` is consistent in itself,
    /// but two reads may see different states. For readers whose keys nothing else writes
    /// meanwhile (apply: only a region's replica writes its data). An engine may serve
    /// some reads from a copy that trails its own writes by a moment (`RocksEngine`'s
    /// lock mirror): a reader on the writer's thread always sees them.
    fn live(&self) -> Self::Live<'_>;

    /// A new, empty batch for this engine.
    fn write_batch(&self) -> Self::WriteBatch;

    /// Writes `batch` atomically: a snapshot opened after this returns `Ok` sees all of it,
    /// and no snapshot ever sees part of it. With `sync`, the batch is durable when this
    /// returns (RocksDB: the WAL is fsynced; memory: nothing to make durable); it may be
    /// visible to readers before then, and stays visible if the sync fails (RocksDB then
    /// refuses every later write: `Error::SyncFailed`). An `Err`
    /// leaves the engine's durability unknown: the caller must stop writing (a failed
    /// fsync is never retried, see the store's poisoning), not retry.
    fn write(&self, batch: Self::WriteBatch, sync: bool) -> Result<()>;
}

/// Decodes a stored protobuf record, turning failure into [`Error::Corrupt`].
pub fn decode_msg<M: Message>(bytes: &[u8], what: &'static str, region_id: u64) -> Result<M> {
    M::parse_from_bytes(bytes).map_err(|e| Error::Corrupt {
        what,
        region_id,
        detail: e.to_string(),
    })
}
