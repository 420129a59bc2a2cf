//! [`Engine`]: the one RocksDB of a store, with its four column families.
//!
//! Writes go through [`WriteBatch`]es; a batch is atomic, and `sync` decides whether the
//! write waits for `fsync` of the WAL. Only the store's LogWriter thread writes with
//! `sync = true` (raft log + HardState); applied data follows unsynced, after the log entries
//! it came from are durable, so the WAL order makes a recovered state a prefix of the log.

use crate::error::{Error, Result};
use crate::keys;
use protobuf::Message;
use regatta_proto::raft_serverpb::RegionLocalState;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions,
    WriteOptions, DB,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
}

/// Tuning of the RocksDB instance.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Background flush/compaction threads.
    pub max_background_jobs: i32,
    /// Memtable size per column family, in bytes.
    pub write_buffer_size: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_background_jobs: 2,
            write_buffer_size: 64 << 20,
        }
    }
}

/// The RocksDB of one store, shared by all its regions. Cloning is cheap.
#[derive(Clone)]
pub struct Engine {
    db: Arc<DB>,
    path: PathBuf,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.path).finish()
    }
}

impl Engine {
    /// Opens (or creates) the store's RocksDB at `path`.
    pub fn open(path: impl AsRef<Path>, config: &EngineConfig) -> Result<Engine> {
        let path = path.as_ref().to_path_buf();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(config.max_background_jobs);
        // Lets unsynced apply writes proceed while the LogWriter's group syncs the WAL.
        opts.set_enable_pipelined_write(true);
        let cfs = Cf::ALL.iter().map(|cf| {
            let mut cf_opts = Options::default();
            cf_opts.set_write_buffer_size(config.write_buffer_size);
            ColumnFamilyDescriptor::new(cf.name(), cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(Error::rocks("open"))?;
        Ok(Engine {
            db: Arc::new(db),
            path,
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn handle(&self, cf: Cf) -> &ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("every column family is created at open")
    }

    /// A new, empty batch on this engine.
    pub fn batch(&self) -> WriteBatch {
        WriteBatch {
            engine: self.clone(),
            inner: rocksdb::WriteBatch::default(),
        }
    }

    /// Writes `batch` atomically; with `sync` it is durable when this returns.
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db
            .write_opt(batch.inner, &opts)
            .map_err(Error::rocks("write"))
    }

    /// Point read.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.handle(cf), key)
            .map_err(Error::rocks("get"))
    }

    /// Point read of a protobuf record; `what`/`region_id` name it in a corruption error.
    pub fn get_msg<M: Message>(
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

    /// Calls `f` on every key/value in `[start, end)` in order until it returns `false`.
    pub fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        let iter = self.db.iterator_cf_opt(
            self.handle(cf),
            ro,
            IteratorMode::From(start, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(Error::rocks("scan"))?;
            if !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    /// A consistent point-in-time view, for snapshot generation.
    pub fn snapshot(&self) -> EngineSnapshot<'_> {
        EngineSnapshot {
            engine: self,
            snap: self.db.snapshot(),
        }
    }

    /// All regions with a state on this store (tombstones included).
    pub fn region_states(&self) -> Result<Vec<RegionLocalState>> {
        let (start, end) = keys::region_state_range();
        let mut out = Vec::new();
        self.scan(Cf::Raft, &start, &end, |k, v| {
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

/// A point-in-time view of the engine.
pub struct EngineSnapshot<'a> {
    engine: &'a Engine,
    snap: rocksdb::SnapshotWithThreadMode<'a, DB>,
}

impl EngineSnapshot<'_> {
    /// Point read at the snapshot.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap
            .get_cf(self.engine.handle(cf), key)
            .map_err(Error::rocks("snapshot get"))
    }

    /// Scan of `[start, end)` at the snapshot; see [`Engine::scan`].
    pub fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        let iter = self.snap.iterator_cf_opt(
            self.engine.handle(cf),
            ro,
            IteratorMode::From(start, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(Error::rocks("snapshot scan"))?;
            if !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }
}

/// An atomic batch of writes to one engine.
pub struct WriteBatch {
    engine: Engine,
    inner: rocksdb::WriteBatch,
}

impl WriteBatch {
    /// Sets `key` to `value` in `cf`.
    pub fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.inner.put_cf(self.engine.handle(cf), key, value);
    }

    /// Sets `key` to the encoding of `msg` in `cf`.
    pub fn put_msg<M: Message>(&mut self, cf: Cf, key: &[u8], msg: &M) {
        let bytes = msg
            .write_to_bytes()
            .expect("encoding an in-memory protobuf message cannot fail");
        self.put(cf, key, &bytes);
    }

    /// Removes `key` from `cf`.
    pub fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.inner.delete_cf(self.engine.handle(cf), key);
    }

    /// Removes every key in `[start, end)` of `cf`.
    pub fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        self.inner
            .delete_range_cf(self.engine.handle(cf), start, end);
    }

    /// Number of operations in the batch.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Bytes of the batch's representation.
    pub fn size_in_bytes(&self) -> usize {
        self.inner.size_in_bytes()
    }
}

/// Decodes a stored protobuf record, turning failure into [`Error::Corrupt`].
pub fn decode_msg<M: Message>(bytes: &[u8], what: &'static str, region_id: u64) -> Result<M> {
    M::parse_from_bytes(bytes).map_err(|e| Error::Corrupt {
        what,
        region_id,
        detail: e.to_string(),
    })
}
