//! [`MemEngine`]: the in-memory twin of [`RocksEngine`](crate::RocksEngine) — one ordered
//! map per column family — for unit tests of the layers above (apply, MVCC) that need the
//! [`Engine`] contract and no disk.
//!
//! The maps live behind one `Arc` swapped under a mutex: a [`MemSnapshot`] is a clone of
//! that `Arc` (O(1)), and a write copies the maps only while a snapshot still holds the old
//! ones (`Arc::make_mut`), so snapshots are point-in-time and writes atomic by
//! construction. By default nothing is durable and `sync` means nothing; an engine made
//! with [`MemEngine::with_power_loss`] also keeps what a power loss would leave — the
//! state as of the last synced write, plus the unsynced writes after it in order, of
//! which a power loss keeps a prefix (as RocksDB's WAL loses a suffix) — for the
//! simulator's crashes.

use crate::error::Result;
use crate::traits::{Cf, Engine, Snapshot, WriteBatch};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

type CfMap = BTreeMap<Vec<u8>, Vec<u8>>;
type CfMaps = [CfMap; Cf::ALL.len()];

/// An in-memory [`Engine`]. Cloning is cheap; clones share the data.
#[derive(Clone, Default)]
pub struct MemEngine {
    maps: Arc<Mutex<Arc<CfMaps>>>,
    /// What survives a power loss, when tracked.
    durable: Option<Arc<Mutex<Durable>>>,
}

/// The state as of the last synced write, and the writes since, in order.
#[derive(Default)]
struct Durable {
    synced: Arc<CfMaps>,
    unsynced: Vec<Vec<Op>>,
}

fn apply(maps: &mut CfMaps, ops: impl IntoIterator<Item = Op>) {
    for op in ops {
        match op {
            Op::Put(cf, k, v) => {
                maps[cf.index()].insert(k, v);
            }
            Op::Delete(cf, k) => {
                maps[cf.index()].remove(&k);
            }
            Op::DeleteRange(cf, start, end) => {
                let map = &mut maps[cf.index()];
                let mut tail = map.split_off(&start);
                let mut rest = tail.split_off(&end);
                map.append(&mut rest);
            }
        }
    }
}

impl std::fmt::Debug for MemEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let maps = self.lock();
        let mut d = f.debug_struct("MemEngine");
        for cf in Cf::ALL {
            d.field(cf.name(), &maps[cf.index()].len());
        }
        d.finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemEngine {
    /// A new, empty engine.
    pub fn new() -> MemEngine {
        MemEngine::default()
    }

    /// A new, empty engine that tracks what a power loss would leave (see the module
    /// doc and [`MemEngine::lose_power`]). Each write after a sync copies the maps once
    /// (the synced state shares them): for tests and the simulator, not for big data.
    pub fn with_power_loss() -> MemEngine {
        MemEngine {
            durable: Some(Arc::default()),
            ..MemEngine::default()
        }
    }

    /// Writes since the last synced one (0 without power-loss tracking).
    pub fn unsynced_writes(&self) -> usize {
        self.durable.as_ref().map_or(0, |d| lock(d).unsynced.len())
    }

    /// The power fails: the engine goes back to its last synced state plus the first
    /// `surviving` unsynced writes (clamped), which are then as durable as the rest.
    /// Without power-loss tracking nothing is lost.
    pub fn lose_power(&self, surviving: usize) {
        let Some(durable) = &self.durable else {
            return;
        };
        let mut guard = self.lock();
        let mut d = lock(durable);
        let mut maps = (*d.synced).clone();
        let unsynced = std::mem::take(&mut d.unsynced);
        for ops in unsynced.into_iter().take(surviving) {
            apply(&mut maps, ops);
        }
        let maps = Arc::new(maps);
        d.synced = Arc::clone(&maps);
        *guard = maps;
    }

    fn lock(&self) -> MutexGuard<'_, Arc<CfMaps>> {
        // A panic while the lock is held cannot leave the maps half-written: a write
        // builds nothing it could abandon between its operations (see `write`).
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine for MemEngine {
    type Snapshot<'a> = MemSnapshot;
    type Live<'a> = MemSnapshot;
    type WriteBatch = MemWriteBatch;

    /// A snapshot: taking one is a clone of an `Arc`.
    fn live(&self) -> MemSnapshot {
        self.snapshot()
    }

    fn snapshot(&self) -> MemSnapshot {
        MemSnapshot {
            maps: Arc::clone(&self.lock()),
        }
    }

    fn write_batch(&self) -> MemWriteBatch {
        MemWriteBatch::default()
    }

    fn write(&self, batch: MemWriteBatch, sync: bool) -> Result<()> {
        let mut guard = self.lock();
        let Some(durable) = &self.durable else {
            apply(Arc::make_mut(&mut guard), batch.ops);
            return Ok(());
        };
        let mut d = lock(durable);
        if sync {
            // Everything before and this write are durable now.
            apply(Arc::make_mut(&mut guard), batch.ops);
            d.synced = Arc::clone(&guard);
            d.unsynced.clear();
        } else {
            d.unsynced.push(batch.ops.clone());
            apply(Arc::make_mut(&mut guard), batch.ops);
        }
        Ok(())
    }
}

/// A point-in-time view of a [`MemEngine`]: the maps as they were when it was opened.
#[derive(Clone)]
pub struct MemSnapshot {
    maps: Arc<CfMaps>,
}

impl Snapshot for MemSnapshot {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.maps[cf.index()].get(key).cloned())
    }

    fn scan<F>(&self, cf: Cf, start: &[u8], end: &[u8], mut f: F) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<bool>,
    {
        if end <= start {
            return Ok(()); // BTreeMap::range panics on an inverted range.
        }
        let range = (Bound::Included(start), Bound::Excluded(end));
        for (k, v) in self.maps[cf.index()].range::<[u8], _>(range) {
            if !f(k, v)? {
                break;
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
enum Op {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

/// A [`MemEngine`] batch: its operations, replayed in order under the engine's lock.
#[derive(Default)]
pub struct MemWriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch for MemWriteBatch {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.ops.push(Op::Put(cf, key.to_vec(), value.to_vec()));
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.ops.push(Op::Delete(cf, key.to_vec()));
    }

    fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        if end > start {
            self.ops
                .push(Op::DeleteRange(cf, start.to_vec(), end.to_vec()));
        }
    }

    fn count(&self) -> usize {
        self.ops.len()
    }
}
