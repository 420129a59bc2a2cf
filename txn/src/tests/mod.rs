//! Tests of the reader and the actions as data: each scenario runs actions on a fresh
//! engine, one batch per action, and checks what readers see and what the CFs hold. Every
//! scenario is generic over the engine; `on_mem!` runs it on `MemEngine`, `on_both!` on
//! `MemEngine` and on `RocksEngine` in a temp dir, to show both engines agree.

mod commit_tests;
mod gc_tests;
mod model_tests;
mod occ_tests;
mod pessimistic_tests;
mod prewrite_tests;
mod read_tests;
mod status_tests;

use crate::*;
use regatta_engine::{Cf, Engine, EngineConfig, MemEngine, RocksEngine, Snapshot, WriteBatch};

/// The tests' random numbers: xorshift64*, deterministic, so a failing seed replays.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A fresh engine of the kind under test; the guard keeps its files alive.
pub(crate) trait Fresh: Engine {
    type Guard;
    fn fresh() -> (Self, Self::Guard);
}

impl Fresh for MemEngine {
    type Guard = ();
    fn fresh() -> (Self, ()) {
        (MemEngine::new(), ())
    }
}

impl Fresh for RocksEngine {
    type Guard = tempfile::TempDir;
    fn fresh() -> (Self, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = RocksEngine::open(dir.path(), &EngineConfig::short_lived()).expect("open");
        (engine, dir)
    }
}

/// Runs the scenarios on `MemEngine`.
macro_rules! on_mem {
    ($($check:ident),* $(,)?) => {
        mod mem {
            $( #[test] fn $check() { super::$check::<regatta_engine::MemEngine>(); } )*
        }
    };
}

/// Runs the scenarios on `MemEngine` and on `RocksEngine`.
macro_rules! on_both {
    ($($check:ident),* $(,)?) => {
        mod both_mem {
            $( #[test] fn $check() { super::$check::<regatta_engine::MemEngine>(); } )*
        }
        mod both_rocks {
            $( #[test] fn $check() { super::$check::<regatta_engine::RocksEngine>(); } )*
        }
    };
}
pub(crate) use {on_both, on_mem};

pub(crate) const TTL_MS: u64 = 3000;

/// A timestamp at millisecond `ms` (logical part 0).
pub(crate) fn at_ms(ms: u64) -> u64 {
    ts::compose(ms, 0)
}

pub(crate) fn keys(ks: &[&[u8]]) -> Vec<Vec<u8>> {
    ks.iter().map(|k| k.to_vec()).collect()
}

/// An engine under test and the batches run on it.
pub(crate) struct Env<E: Fresh> {
    pub(crate) engine: E,
    _guard: E::Guard,
}

impl<E: Fresh> Env<E> {
    pub(crate) fn new() -> Self {
        let (engine, guard) = E::fresh();
        Env {
            engine,
            _guard: guard,
        }
    }

    /// Runs one action on a fresh snapshot and writes its batch if it succeeded (an
    /// action that fails leaves its batch to be discarded). Returns the result and the
    /// number of writes the batch held.
    pub(crate) fn run_counted<T>(
        &self,
        action: impl for<'s> FnOnce(&E::Snapshot<'s>, &mut E::WriteBatch) -> Result<T>,
    ) -> (Result<T>, usize) {
        let snap = self.engine.snapshot();
        let mut wb = self.engine.write_batch();
        let out = action(&snap, &mut wb);
        drop(snap);
        let n = wb.count();
        if out.is_ok() {
            self.engine.write(wb, false).expect("engine write");
        }
        (out, n)
    }

    pub(crate) fn run<T>(
        &self,
        action: impl for<'s> FnOnce(&E::Snapshot<'s>, &mut E::WriteBatch) -> Result<T>,
    ) -> Result<T> {
        self.run_counted(action).0
    }

    pub(crate) fn request(
        &self,
        primary: &[u8],
        start_ts: u64,
        ms: Vec<Mutation>,
    ) -> PrewriteRequest {
        PrewriteRequest {
            primary: primary.to_vec(),
            start_ts,
            lock_ttl_ms: TTL_MS,
            for_update_ts: 0,
            min_commit_ts: 0,
            async_commit_secondaries: None,
            read_versions: Vec::new(),
            mutations: ms,
        }
    }

    /// Prewrites `ms` with the first mutation's key as primary.
    pub(crate) fn prewrite(&self, ms: Vec<Mutation>, start_ts: u64) -> Result<PrewriteOutcome> {
        let primary = ms.first().map(|m| m.key.clone()).unwrap_or_default();
        let req = self.request(&primary, start_ts, ms);
        self.run(|s, wb| prewrite(s, wb, &req))
    }

    pub(crate) fn commit(&self, ks: &[&[u8]], start_ts: u64, commit_ts: u64) -> Result<u64> {
        let ks = keys(ks);
        self.run(|s, wb| commit(s, wb, &ks, start_ts, commit_ts))
    }

    pub(crate) fn rollback(&self, ks: &[&[u8]], start_ts: u64) -> Result<()> {
        let ks = keys(ks);
        self.run(|s, wb| rollback(s, wb, &ks, start_ts))
    }

    /// Prewrites and commits `ms` in two batches.
    pub(crate) fn committed(&self, ms: Vec<Mutation>, start_ts: u64, commit_ts: u64) {
        let ks: Vec<Vec<u8>> = ms.iter().map(|m| m.key.clone()).collect();
        self.prewrite(ms, start_ts).expect("prewrite");
        self.run(|s, wb| commit(s, wb, &ks, start_ts, commit_ts))
            .expect("commit");
    }

    pub(crate) fn get(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>> {
        MvccReader::new(&self.engine.snapshot()).get(key, ts)
    }

    pub(crate) fn value(&self, key: &[u8], ts: u64) -> Option<Vec<u8>> {
        self.get(key, ts).expect("get")
    }

    pub(crate) fn lock(&self, key: &[u8]) -> Option<Lock> {
        MvccReader::new(&self.engine.snapshot())
            .load_lock(key)
            .expect("load lock")
    }

    /// The write record stored at `key + ts`.
    pub(crate) fn write_at(&self, key: &[u8], ts: u64) -> Option<Write> {
        self.engine
            .snapshot()
            .get(Cf::Write, &key::version_key(key, ts))
            .expect("get")
            .map(|v| Write::decode(&v).expect("decode write"))
    }

    /// Every `(commit_ts, write)` of `key`, newest first.
    pub(crate) fn writes(&self, key: &[u8]) -> Vec<(u64, Write)> {
        let mut out = Vec::new();
        self.engine
            .snapshot()
            .scan(
                Cf::Write,
                &key::version_key(key, u64::MAX),
                &key::versions_end(key),
                |k, v| {
                    let (_, ts) = key::split_version_key(k).expect("version key");
                    out.push((ts, Write::decode(v).expect("decode write")));
                    Ok(true)
                },
            )
            .expect("scan");
        out
    }

    /// Number of records in `cf`.
    pub(crate) fn count(&self, cf: Cf) -> usize {
        let mut n = 0;
        self.engine
            .snapshot()
            .scan(cf, &[], &[0xFF; 8], |_, _| {
                n += 1;
                Ok(true)
            })
            .expect("scan");
        n
    }

    /// Stores raw bytes (for corruption tests).
    pub(crate) fn put_raw(&self, cf: Cf, k: &[u8], v: &[u8]) {
        let mut wb = self.engine.write_batch();
        wb.put(cf, k, v);
        self.engine.write(wb, false).expect("write");
    }
}
