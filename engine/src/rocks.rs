//! [`RocksEngine`]: the one RocksDB of a store, with its four column families, behind the
//! [`Engine`] seam ([`RocksSnapshot`], [`RocksWriteBatch`]).
//!
//! Writes go through batches; a batch is atomic, and `sync` decides whether the write
//! waits for `fsync` of the WAL. The store's LogWriter thread writes with `sync = true`
//! (raft log + HardState; so does a region's bootstrap); applied data follows unsynced,
//! after the log entries it came from are durable, so the WAL order makes a recovered
//! state a prefix of the log.

use crate::error::{Error, Result};
use crate::keys;
use crate::lock_mirror::{LockMirror, MirrorOp};
use crate::traits::{decode_msg, Cf, Engine, Snapshot, WriteBatch};
use protobuf::Message;
use regatta_proto::raft_serverpb::RegionLocalState;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, ReadOptions, WriteOptions, DB};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Tuning of the RocksDB instance.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Background flush/compaction threads.
    pub max_background_jobs: i32,
    /// Memtable size per column family, in bytes.
    pub write_buffer_size: usize,
    /// Obsolete WAL files kept for reuse (RocksDB's `recycle_log_file_num`; 0: none). A
    /// synced write into a reused file overwrites blocks the file already has, so its
    /// `fdatasync` has no file size to commit: ~90-100 µs against ~120-160 µs on the
    /// benchmark machine's disk (`docs/BENCHMARKS.md`).
    pub recycled_wal_files: usize,
    /// WAL bytes written (and synced) into each of two WAL files at every open, so the
    /// database starts on a reused file of this size, with another in reserve, instead
    /// of files that grow with every synced write until WALs of this run turn obsolete
    /// (RocksDB never reuses a previous run's; TiKV's raft-engine has
    /// `prefill-for-recycle`); 0: none. Needs `recycled_wal_files` ≥ 2 to keep both.
    pub wal_prefill_bytes: usize,
    /// Bytes the in-memory mirror of the `lock` column family may hold (its live locks;
    /// see `lock_mirror.rs`): point reads of locks through [`RocksEngine::live`] are
    /// answered from it instead of RocksDB's memtables. Past this the mirror turns itself
    /// off until the next open; 0: no mirror.
    pub lock_mirror_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_background_jobs: 2,
            write_buffer_size: 64 << 20,
            recycled_wal_files: 2,
            wal_prefill_bytes: 64 << 20,
            lock_mirror_bytes: 64 << 20,
        }
    }
}

impl EngineConfig {
    /// The defaults without the WAL prefill, for stores that live a short while (tests,
    /// the JSON node's test runs), which would pay its write at every start.
    pub fn short_lived() -> Self {
        EngineConfig {
            wal_prefill_bytes: 0,
            ..EngineConfig::default()
        }
    }
}

/// The RocksDB of one store, shared by all its regions. Cloning is cheap.
#[derive(Clone)]
pub struct RocksEngine {
    db: Arc<DB>,
    path: Arc<Path>,
    /// An injected write failure (see [`RocksEngine::fail_writes`]); `None` in production.
    write_fault: Arc<WriteFault>,
    /// An injected sync failure (see [`RocksEngine::fail_syncs`]); `None` in production.
    sync_fault: Arc<WriteFault>,
    /// Set by the first failed sync of the WAL: every later write is refused with it.
    sync_failed: Arc<OnceLock<String>>,
    /// Held across a sync and the recording of its failure, so that a sync that starts
    /// after another failed refuses instead of reporting a batch behind the hole durable.
    sync_lock: Arc<Mutex<()>>,
    /// The `lock` column family's live state in memory (see `lock_mirror.rs`).
    lock_mirror: Arc<LockMirror>,
    #[cfg(test)]
    pub(crate) test_hooks: Arc<crate::lock_mirror_tests::Hooks>,
}

/// An injected write failure: one atomic load per write when off.
#[derive(Default)]
struct WriteFault {
    on: AtomicBool,
    reason: Mutex<String>,
}

impl WriteFault {
    /// `Err` naming `op` while the fault is on.
    fn check(&self, op: &'static str) -> Result<()> {
        if !self.on.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(Error::Injected {
            op,
            reason: self
                .reason
                .lock()
                .expect("fault lock is never poisoned")
                .clone(),
        })
    }
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine")
            .field("path", &self.path)
            .finish()
    }
}

impl RocksEngine {
    /// Opens (or creates) the store's RocksDB at `path`.
    pub fn open(path: impl AsRef<Path>, config: &EngineConfig) -> Result<RocksEngine> {
        let path = path.as_ref().to_path_buf();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(config.max_background_jobs);
        // One write group's memtable inserts overlap the next group's WAL append. (Syncs
        // are kept out of the write queue altogether: see `write`.)
        opts.set_enable_pipelined_write(true);
        opts.set_recycle_log_file_num(config.recycled_wal_files);
        let cfs = Cf::ALL.iter().map(|cf| {
            let mut cf_opts = Options::default();
            cf_opts.set_write_buffer_size(config.write_buffer_size);
            ColumnFamilyDescriptor::new(cf.name(), cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(Error::rocks("open"))?;
        if config.recycled_wal_files > 0 && config.wal_prefill_bytes > 0 {
            prefill_wal(&db, config.wal_prefill_bytes).map_err(Error::rocks("prefill the WAL"))?;
        }
        let lock_mirror = load_lock_mirror(&db, config.lock_mirror_bytes)?;
        Ok(RocksEngine {
            db: Arc::new(db),
            path: path.into(),
            write_fault: Arc::default(),
            sync_fault: Arc::default(),
            sync_failed: Arc::default(),
            sync_lock: Arc::default(),
            lock_mirror: Arc::new(lock_mirror),
            #[cfg(test)]
            test_hooks: Arc::default(),
        })
    }

    /// Locks held by the in-memory mirror of the `lock` column family; `None` when it is
    /// off (configured so, or grown past `EngineConfig::lock_mirror_bytes`).
    pub fn lock_mirror_len(&self) -> Option<usize> {
        self.lock_mirror.len()
    }

    /// Fault injection for tests and drills: while `Some(reason)`, every write of this
    /// engine (and of its clones) fails with `reason` as RocksDB's I/O error would (e.g.
    /// `"IO error: No space left on device"`) and writes nothing; `None` lifts it. Reads
    /// are not affected, as with a full disk.
    pub fn fail_writes(&self, reason: Option<String>) {
        let f = &self.write_fault;
        let mut r = f.reason.lock().expect("fault lock is never poisoned");
        f.on.store(reason.is_some(), Ordering::Release);
        *r = reason.unwrap_or_default();
    }

    /// Fault injection for tests: while `Some(reason)`, a synced write of this engine (and
    /// of its clones) writes its batch, then fails its sync with `reason`, as an `fsync`
    /// error would; `None` lifts it (the failure it caused stays: see [`Engine::write`]).
    pub fn fail_syncs(&self, reason: Option<String>) {
        let f = &self.sync_fault;
        let mut r = f.reason.lock().expect("fault lock is never poisoned");
        f.on.store(reason.is_some(), Ordering::Release);
        *r = reason.unwrap_or_default();
    }

    /// `Err` after a failed sync: every later write is refused.
    fn refuse_after_failed_sync(&self) -> Result<()> {
        match self.sync_failed.get() {
            Some(reason) => Err(Error::SyncFailed {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// RocksDB's write of `batch` (or the injected write failure, where RocksDB's would
    /// be).
    fn db_write(&self, batch: rocksdb::WriteBatch) -> Result<()> {
        self.write_fault.check("write")?;
        self.db
            .write_opt(batch, &WriteOptions::default())
            .map_err(Error::rocks("write"))
    }

    /// Syncs the WAL; a failure is remembered, and refuses every later write.
    fn sync_wal(&self) -> Result<()> {
        let _one_at_a_time = self.sync_lock.lock().expect("sync lock is never poisoned");
        if let Some(reason) = self.sync_failed.get() {
            return Err(Error::SyncFailed {
                reason: reason.clone(),
            });
        }
        let synced = self.sync_fault.check("sync the WAL").and_then(|()| {
            self.db
                .flush_wal(true)
                .map_err(Error::rocks("sync the WAL"))
        });
        if let Err(e) = &synced {
            let _ = self.sync_failed.set(e.to_string());
        }
        synced
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A reader of the live database, without opening a snapshot (opening and releasing
    /// one takes RocksDB's DB mutex and allocates). Each `get` sees the latest write; each
    /// `scan` of a RocksDB column family is consistent in itself (its iterator pins an
    /// implicit snapshot; for `lock`, see below); two reads
    /// may see different states. Use it where nothing else writes the keys read
    /// meanwhile: apply (only a region's actor writes its data) and single requests served
    /// from the applied state; use [`Engine::snapshot`] where several reads must agree.
    ///
    /// Reads of the `lock` column family (point reads and scans) come from the in-memory
    /// mirror (`lock_mirror.rs`), which takes each batch a moment after RocksDB does: a
    /// reader on another thread than the batch's writer may see a batch through a
    /// snapshot and then miss it in a later lock read. A lock scan reads the mirror in
    /// chunks, so it is consistent in itself only while nothing writes its range: true of
    /// the region's actor, which writes those keys, except while the LogWriter installs
    /// a snapshot of the region. Lock reads are served only by leaders, which never do. Today every lock reader runs on the
    /// actor that writes those keys; a lock reader on another thread must use a snapshot.
    pub fn live(&self) -> RocksLive<'_> {
        RocksLive { engine: self }
    }

    fn handle(&self, cf: Cf) -> &ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("every column family is created at open")
    }

    /// Point read of the latest state, without opening a snapshot (the raft log storage's
    /// reads of its own states and entries, which nothing else writes concurrently).
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.live().get(cf, key)
    }

    /// [`RocksEngine::get`] of a protobuf record; see [`Snapshot::get_msg`].
    pub fn get_msg<M: Message>(
        &self,
        cf: Cf,
        key: &[u8],
        what: &'static str,
        region_id: u64,
    ) -> Result<Option<M>> {
        self.live().get_msg(cf, key, what, region_id)
    }

    /// All regions with a state on this store (tombstones included).
    pub fn region_states(&self) -> Result<Vec<RegionLocalState>> {
        let (start, end) = keys::region_state_range();
        let mut out = Vec::new();
        self.snapshot().scan(Cf::Raft, &start, &end, |k, v| {
            let region_id = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            out.push(decode_msg(v, "region state", region_id)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Approximate bytes stored in `cf` (RocksDB's estimate, for metrics).
    pub fn approximate_size(&self, cf: Cf) -> u64 {
        self.db
            .property_int_value_cf(self.handle(cf), "rocksdb.estimate-live-data-size")
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

impl Engine for RocksEngine {
    type Snapshot<'a> = RocksSnapshot<'a>;
    type Live<'a> = RocksLive<'a>;
    type WriteBatch = RocksWriteBatch;

    fn live(&self) -> RocksLive<'_> {
        RocksEngine::live(self)
    }

    fn snapshot(&self) -> RocksSnapshot<'_> {
        RocksSnapshot {
            engine: self,
            snap: self.db.snapshot(),
        }
    }

    fn write_batch(&self) -> RocksWriteBatch {
        RocksWriteBatch {
            engine: self.clone(),
            inner: rocksdb::WriteBatch::default(),
            lock_ops: Vec::new(),
        }
    }

    fn write(&self, batch: RocksWriteBatch, sync: bool) -> Result<()> {
        self.refuse_after_failed_sync()?;
        // A synced write is an unsynced one, then a sync of the WAL (RocksDB's `SyncWAL`),
        // not a write with `sync` set: in RocksDB's write queue an unsynced write that
        // arrives during a synced one's group waits for its fsync, so every apply write of
        // the store's replicas would wait behind the LogWriter's fsync. The batch is
        // visible before it is durable; the LogWriter reports it durable only after the
        // sync, and the raft log's readers read staged entries anyway.
        if batch.lock_ops.is_empty() {
            self.db_write(batch.inner)?;
        } else {
            // The mirror takes the batch right after RocksDB does (even if the sync below
            // fails: the batch is visible), in RocksDB's order.
            let _in_order = self.lock_mirror.write_order();
            self.db_write(batch.inner)?;
            #[cfg(test)]
            self.test_hooks.after_db_write();
            self.lock_mirror.apply(batch.lock_ops);
        }
        if sync {
            self.sync_wal()?;
        }
        Ok(())
    }
}

/// The mirror of the `lock` column family as it is at open (see `lock_mirror.rs`); off
/// when the locks would pass `limit` bytes.
fn load_lock_mirror(db: &DB, limit: usize) -> Result<LockMirror> {
    if limit == 0 {
        return Ok(LockMirror::off());
    }
    let handle = db
        .cf_handle(Cf::Lock.name())
        .expect("every column family is created at open");
    let mut iter = db.raw_iterator_cf(handle);
    iter.seek_to_first();
    let mut entries = Vec::new();
    let mut bytes = 0;
    while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
        bytes += LockMirror::entry_bytes(k, v);
        if bytes > limit {
            return Ok(LockMirror::off());
        }
        entries.push((k.to_vec(), v.to_vec()));
        iter.next();
    }
    iter.status()
        .map_err(Error::rocks("load the lock mirror"))?;
    Ok(LockMirror::new(entries, limit))
}

/// Makes a just-opened database's current WAL a reused file of `bytes`, with a second
/// one in reserve (see [`EngineConfig::wal_prefill_bytes`]). RocksDB reuses a WAL file
/// of this run once it is obsolete: after the memtable switch that follows it and the
/// flush of that memtable. So, twice: fill the current WAL with log-only records (they
/// reach no memtable), sync it, and switch; the second switch takes the first filled
/// file, and the second goes to the reserve. A switch needs a non-empty memtable: a
/// deletion of a key no one writes, which reads never see. (Recovery at open has
/// flushed what the previous run's WALs held, so nothing else is in the filled files.)
fn prefill_wal(db: &DB, bytes: usize) -> std::result::Result<(), rocksdb::Error> {
    const CHUNK: usize = 1 << 20;
    let chunk = vec![0u8; CHUNK.min(bytes)];
    let raft = db
        .cf_handle(Cf::Raft.name())
        .expect("every column family is created at open");
    for _ in 0..2 {
        let mut written = 0;
        while written < bytes {
            let mut batch = rocksdb::WriteBatch::default();
            batch.put_log_data(&chunk);
            db.write_opt(batch, &WriteOptions::default())?;
            written += chunk.len();
        }
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(raft, keys::WAL_PREFILL_KEY);
        db.write_opt(batch, &WriteOptions::default())?;
        db.flush_wal(true)?;
        db.flush_cf(raft)?;
    }
    Ok(())
}

/// Read options that stop iteration at `end` (exclusive).
fn bounded(end: &[u8]) -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_iterate_upper_bound(end.to_vec());
    ro
}

/// Calls `f` on each pair from `start` until it says stop or the iterator's bound. The raw
/// iterator lends each pair: no allocation per key.
fn drive<F>(
    mut iter: rocksdb::DBRawIteratorWithThreadMode<'_, DB>,
    start: &[u8],
    mut f: F,
    op: &'static str,
) -> Result<()>
where
    F: FnMut(&[u8], &[u8]) -> Result<bool>,
{
    iter.seek(start);
    while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
        if !f(k, v)? {
            return Ok(());
        }
        iter.next();
    }
    iter.status().map_err(Error::rocks(op))
}

/// A reader of the live database ([`RocksEngine::live`]).
pub struct RocksLive<'a> {
    engine: &'a RocksEngine,
}

impl Snapshot for RocksLive<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if cf == Cf::Lock {
            if let Some(mirrored) = self.engine.lock_mirror.get(key) {
                return Ok(mirrored);
            }
        }
        self.engine
            .db
            .get_cf(self.engine.handle(cf), key)
            .map_err(Error::rocks("get"))
    }

    fn scan<F>(&self, cf: Cf, start: &[u8], end: &[u8], f: F) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<bool>,
    {
        if end <= start {
            return Ok(());
        }
        let mut f = f;
        let mut resume = None;
        if cf == Cf::Lock {
            // The mirror in chunks, small first (most scans stop at the first lock that
            // matters), doubling up to 256; should it turn off meanwhile, RocksDB from
            // there on.
            let mut from = start.to_vec();
            let mut len = 16;
            while let Some(chunk) = self.engine.lock_mirror.range(&from, end, len) {
                let more = chunk.len() == len;
                len = (len * 2).min(256);
                for (k, v) in &chunk {
                    if !f(k, v)? {
                        return Ok(());
                    }
                }
                match chunk.last() {
                    Some((last, _)) if more => {
                        from = last.clone();
                        from.push(0);
                    }
                    _ => return Ok(()),
                }
            }
            resume = Some(from);
        }
        // The iterator pins an implicit snapshot of its own: the scan is consistent (from
        // `resume` on, for a lock scan that fell back to RocksDB partway).
        let iter = self
            .engine
            .db
            .raw_iterator_cf_opt(self.engine.handle(cf), bounded(end));
        drive(iter, resume.as_deref().unwrap_or(start), f, "scan")
    }
}

/// A RocksDB snapshot: a sequence number pinned until it is dropped (keep it short-lived:
/// a live snapshot keeps compaction from dropping the versions it can see).
pub struct RocksSnapshot<'a> {
    engine: &'a RocksEngine,
    snap: rocksdb::SnapshotWithThreadMode<'a, DB>,
}

impl Snapshot for RocksSnapshot<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap
            .get_cf(self.engine.handle(cf), key)
            .map_err(Error::rocks("snapshot get"))
    }

    fn scan<F>(&self, cf: Cf, start: &[u8], end: &[u8], f: F) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<bool>,
    {
        if end <= start {
            return Ok(());
        }
        let iter = self
            .snap
            .raw_iterator_cf_opt(self.engine.handle(cf), bounded(end));
        drive(iter, start, f, "snapshot scan")
    }
}

/// A RocksDB write batch.
pub struct RocksWriteBatch {
    engine: RocksEngine,
    inner: rocksdb::WriteBatch,
    /// Its `lock` operations, for the engine's mirror (while the mirror is on).
    lock_ops: Vec<MirrorOp>,
}

impl RocksWriteBatch {
    fn mirrors(&self, cf: Cf) -> bool {
        cf == Cf::Lock && self.engine.lock_mirror.is_on()
    }
}

impl WriteBatch for RocksWriteBatch {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.inner.put_cf(self.engine.handle(cf), key, value);
        if self.mirrors(cf) {
            self.lock_ops
                .push(MirrorOp::Put(key.to_vec(), value.to_vec()));
        }
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.inner.delete_cf(self.engine.handle(cf), key);
        if self.mirrors(cf) {
            self.lock_ops.push(MirrorOp::Delete(key.to_vec()));
        }
    }

    fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        // RocksDB treats an inverted range as an error at write time; the contract makes
        // it empty.
        if end > start {
            self.inner
                .delete_range_cf(self.engine.handle(cf), start, end);
            if self.mirrors(cf) {
                self.lock_ops
                    .push(MirrorOp::DeleteRange(start.to_vec(), end.to_vec()));
            }
        }
    }

    fn count(&self) -> usize {
        self.inner.len()
    }
}
