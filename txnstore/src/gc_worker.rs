//! MVCC GC off the write path: one thread per store runs GC passes over region replicas,
//! each in bounded chunks ([`gc_chunk`]), writing the deletes straight to the store's
//! RocksDB (unsynced: a pass lost in a crash is run again).
//!
//! A pass is *local to its replica*, as TiKV's compaction filter is: every replica
//! (leader or follower) runs its own once its region's applied GC safe point moved past
//! the one it last collected at, and nothing goes through raft. Replicas may then differ,
//! but only in versions at or below the safe point that no read at or above it needs
//! (`regatta_txn::gc`'s invariant): reads below the safe point are refused (`txn_cmd`),
//! so no answer shows the difference. Why commands stay deterministic and what raft
//! snapshots carry: docs/ARCHITECTURE.md, "MVCC GC".
//!
//! Invariant: a pass collects at a safe point that its replica has already *applied*
//! (recorded in RocksDB), so every read that could see its deletes also sees the safe
//! point that refuses the reads those deletes would change.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use regatta_engine::{Cf, DynEngine, DynSnapshot, OpBatch, Snapshot};
use regatta_proto::metapb::Region;
use slog::{info, warn, Logger};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What one chunk did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkStats {
    /// Write records scanned.
    pub scanned: u64,
    /// Write records deleted.
    pub deleted: u64,
}

/// Runs GC at `safe_point` over one chunk of user keys from `start` (inclusive) toward
/// `end` (exclusive; empty = unbounded): the keys whose write records fit in
/// `batch_keys`, extended to the end of the last key's versions so a key is never cut in
/// two (its newest version at or below the safe point decides what goes). Writes the
/// chunk's deletes in one unsynced batch. Returns what it did and where the next chunk
/// starts (`None`: the range is done).
pub fn gc_chunk(
    engine: &dyn DynEngine,
    start: &[u8],
    end: &[u8],
    safe_point: u64,
    batch_keys: usize,
) -> regatta_txn::Result<(ChunkStats, Option<Vec<u8>>)> {
    let snap = engine.dyn_snapshot();
    let snap: &dyn DynSnapshot = &*snap;
    let (lo, hi) = regatta_txn::key::data_range(start, end);
    let mut scanned = 0u64;
    // The versions prefix (`x` + enc(user key)) of the record that reached the bound.
    let mut last_prefix: Option<Vec<u8>> = None;
    let mut next: Option<Vec<u8>> = None;
    let mut failed = None;
    snap.scan(Cf::Write, &lo, &hi, |k, _| {
        let prefix = match regatta_txn::key::split_version_key(k) {
            Ok((p, _)) => p,
            Err(e) => {
                failed = Some(e);
                return Ok(false);
            }
        };
        if let Some(last) = &last_prefix {
            if last.as_slice() != prefix {
                match regatta_txn::key::user_key(k) {
                    Ok(user) => next = Some(user),
                    Err(e) => failed = Some(e),
                }
                return Ok(false);
            }
        }
        scanned += 1;
        if scanned >= batch_keys as u64 && last_prefix.is_none() {
            last_prefix = Some(prefix.to_vec());
        }
        Ok(true)
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    let chunk_end = next.as_deref().unwrap_or(end);
    let mut ops = OpBatch::default();
    let deleted = regatta_txn::gc(&snap, &mut ops, start, chunk_end, safe_point)?;
    if deleted > 0 {
        engine.dyn_write(false, &mut |wb| {
            for op in &ops.ops {
                op.replay(wb);
            }
            Ok(())
        })?;
    }
    Ok((
        ChunkStats {
            scanned,
            deleted: deleted as u64,
        },
        next,
    ))
}

/// Locks a leader scans at most for its report to PD; past it, it reports the oldest as
/// 1, which holds PD's safe point where it is (safe, and visible in the report).
pub const MAX_LOCKS_SCANNED: usize = 10_000;

/// The smallest start ts of the transaction locks in `region` (0: none), as `snap` sees
/// them; 1 if there are more than [`MAX_LOCKS_SCANNED`]. What a leader reports to PD, which
/// keeps its GC safe point below it.
pub fn oldest_lock<S: Snapshot>(snap: &S, region: &Region) -> regatta_txn::Result<u64> {
    let (lo, hi) = regatta_txn::key::data_range(region.get_start_key(), region.get_end_key());
    let (mut oldest, mut seen) = (0u64, 0usize);
    let mut failed = None;
    snap.scan(Cf::Lock, &lo, &hi, |_, v| {
        seen += 1;
        if seen > MAX_LOCKS_SCANNED {
            oldest = 1;
            return Ok(false);
        }
        match regatta_txn::Lock::decode(v) {
            Ok(l) if oldest == 0 || l.start_ts < oldest => oldest = l.start_ts,
            Ok(_) => {}
            Err(e) => {
                failed = Some(e);
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(oldest),
    }
}

/// A replica's GC progress, shared between the peer and the GC thread.
#[derive(Debug, Default)]
pub struct GcProgress {
    /// A pass of this replica is queued or running.
    running: AtomicBool,
    /// The safe point of this replica's last completed pass (0: none).
    collected: AtomicU64,
}

impl GcProgress {
    /// The safe point of the last completed pass (0: none).
    pub fn collected(&self) -> u64 {
        self.collected.load(Ordering::Acquire)
    }
}

/// One pass: GC of `region`'s range on `engine` at `safe_point`.
pub(crate) struct GcTask {
    pub engine: Arc<dyn DynEngine>,
    pub region: Region,
    pub safe_point: u64,
    pub progress: Arc<GcProgress>,
    pub logger: Logger,
}

/// The store's GC thread: a bounded queue of passes, run one at a time.
#[derive(Clone)]
pub struct GcWorker {
    tx: Sender<GcTask>,
    stop: Arc<AtomicBool>,
}

impl GcWorker {
    /// Starts the thread; `batch_keys` bounds a chunk, `queue` the passes waiting.
    pub fn start(batch_keys: usize, queue: usize) -> (GcWorker, std::thread::JoinHandle<()>) {
        let (tx, rx) = crossbeam_channel::bounded(queue);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("regatta-gc".into())
            .spawn(move || run(rx, batch_keys, s))
            .expect("spawning the GC thread (resources at start-up)");
        (GcWorker { tx, stop }, handle)
    }

    /// A worker with no thread, which refuses every pass (replicas try again later, and
    /// never get one): for a deterministic run that sets no GC safe point (the
    /// simulator), so GC can never run off its thread.
    pub fn detached() -> GcWorker {
        let (tx, _) = crossbeam_channel::bounded(1);
        GcWorker {
            tx,
            stop: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Queues a pass unless one of the same replica is queued or running or the queue is
    /// full (then the replica tries again later); whether it was queued.
    pub(crate) fn schedule(&self, task: GcTask) -> bool {
        if self.stop.load(Ordering::Acquire) || task.progress.running.swap(true, Ordering::AcqRel) {
            return false;
        }
        let progress = task.progress.clone();
        match self.tx.try_send(task) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                progress.running.store(false, Ordering::Release);
                false
            }
        }
    }

    /// Makes the thread drop what is queued and end after its current chunk (the store
    /// stops; the engine handles the tasks hold go with them).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// How often an idle GC thread looks whether the store is stopping.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(50);

fn run(rx: Receiver<GcTask>, batch_keys: usize, stop: Arc<AtomicBool>) {
    use crossbeam_channel::RecvTimeoutError;
    // Ends when the store stops (whoever still holds a sender), dropping what is queued:
    // queued tasks hold the engine, which must close with the store.
    while !stop.load(Ordering::Acquire) {
        match rx.recv_timeout(STOP_POLL) {
            Ok(task) => {
                run_pass(&task, batch_keys, &stop);
                task.progress.running.store(false, Ordering::Release);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
    while let Ok(task) = rx.try_recv() {
        task.progress.running.store(false, Ordering::Release);
    }
}

fn run_pass(task: &GcTask, batch_keys: usize, stop: &AtomicBool) {
    let started = Instant::now();
    let (mut total, mut chunks) = (ChunkStats::default(), 0u64);
    let mut from = task.region.get_start_key().to_vec();
    let end = task.region.get_end_key();
    loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        match gc_chunk(
            task.engine.as_ref(),
            &from,
            end,
            task.safe_point,
            batch_keys,
        ) {
            Ok((stats, next)) => {
                chunks += 1;
                total.scanned += stats.scanned;
                total.deleted += stats.deleted;
                match next {
                    Some(n) => from = n,
                    None => break,
                }
            }
            Err(e) => {
                warn!(task.logger, "MVCC GC pass failed; it runs again later";
                    "safe_point" => task.safe_point, "error" => %e);
                return;
            }
        }
    }
    task.progress
        .collected
        .fetch_max(task.safe_point, Ordering::AcqRel);
    info!(task.logger, "MVCC GC pass";
        "safe_point" => task.safe_point, "versions_scanned" => total.scanned,
        "versions_deleted" => total.deleted, "chunks" => chunks,
        "ms" => started.elapsed().as_millis() as u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use regatta_engine::{Engine, MemEngine, WriteBatch};
    use regatta_txn::{Write, WriteKind};

    fn put_version(wb: &mut impl WriteBatch, key: &[u8], commit_ts: u64, kind: WriteKind) {
        let w = Write::new(
            kind,
            commit_ts - 1,
            (kind == WriteKind::Put).then(|| b"v".to_vec()),
        );
        wb.put(
            Cf::Write,
            &regatta_txn::key::version_key(key, commit_ts),
            &w.encode(),
        );
    }

    fn write_records(e: &MemEngine) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let (lo, hi) = regatta_txn::key::data_range(b"", b"");
        e.snapshot()
            .scan(Cf::Write, &lo, &hi, |k, _| {
                out.push(k.to_vec());
                Ok(true)
            })
            .unwrap();
        out
    }

    #[test]
    fn chunks_are_bounded_never_cut_a_key_and_collect_what_one_pass_would() {
        // Goal: a pass in small chunks deletes exactly what one `regatta_txn::gc` over the
        // whole range deletes, and no chunk scans more than the bound plus the rest of
        // one key's versions. Method: 30 keys with 1..=6 versions (puts, deletes, locks),
        // one engine collected in chunks of 4, a twin in one call; compare what remains.
        let (chunked, whole) = (MemEngine::new(), MemEngine::new());
        for e in [&chunked, &whole] {
            let mut wb = e.write_batch();
            for i in 0..30u64 {
                let key = format!("k{i:02}").into_bytes();
                for v in 0..(i % 6 + 1) {
                    let kind = match (i + v) % 4 {
                        0 => WriteKind::Delete,
                        1 => WriteKind::Lock,
                        _ => WriteKind::Put,
                    };
                    put_version(&mut wb, &key, 10 + 10 * v, kind);
                }
            }
            e.write(wb, false).unwrap();
        }
        let before = write_records(&chunked).len();
        let safe_point = 35;
        let mut wb = whole.write_batch();
        let expected_deleted =
            regatta_txn::gc(&whole.snapshot(), &mut wb, b"", b"", safe_point).expect("gc") as u64;
        whole.write(wb, false).unwrap();
        let (mut from, mut deleted, mut chunks) = (Vec::new(), 0, 0);
        loop {
            let (stats, next) = gc_chunk(&chunked, &from, b"", safe_point, 4).expect("chunk");
            assert!(
                stats.scanned <= 4 + 5,
                "a chunk of {} records",
                stats.scanned
            );
            deleted += stats.deleted;
            chunks += 1;
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
        assert!(chunks > 5, "the range took {chunks} chunks");
        assert!(expected_deleted > 0);
        assert_eq!(deleted, expected_deleted);
        assert_eq!(write_records(&chunked), write_records(&whole));
        assert_eq!(
            write_records(&chunked).len() as u64,
            before as u64 - deleted
        );
    }

    #[test]
    fn the_oldest_lock_of_a_region_is_found_and_others_are_ignored() {
        // Goal: what a leader reports to PD is the smallest start ts among its region's
        // locks (0: none), and no lock of another region counts.
        let e = MemEngine::new();
        let mut region = Region::new();
        region.set_start_key(b"b".to_vec());
        region.set_end_key(b"y".to_vec());
        assert_eq!(oldest_lock(&e.snapshot(), &region).unwrap(), 0);
        let mut wb = e.write_batch();
        for (key, ts) in [
            (&b"a"[..], 5u64),
            (b"c", 30),
            (b"d", 10),
            (b"x", 20),
            (b"z", 1),
        ] {
            let lock = regatta_txn::Lock::new(regatta_txn::LockKind::Put, key.to_vec(), ts, 100);
            wb.put(Cf::Lock, &regatta_txn::key::lock_key(key), &lock.encode());
        }
        e.write(wb, false).unwrap();
        assert_eq!(oldest_lock(&e.snapshot(), &region).unwrap(), 10);
    }

    #[test]
    fn a_chunk_stays_inside_its_range() {
        // Goal: a pass over a region touches no key outside it. Method: versions of keys
        // a, m and z; collect [m, z) only.
        let e = MemEngine::new();
        let mut wb = e.write_batch();
        for key in [b"a", b"m", b"z"] {
            put_version(&mut wb, key, 10, WriteKind::Put);
            put_version(&mut wb, key, 20, WriteKind::Put);
        }
        e.write(wb, false).unwrap();
        let (stats, next) = gc_chunk(&e, b"m", b"z", 100, 1024).expect("chunk");
        assert_eq!(next, None);
        assert_eq!(
            stats,
            ChunkStats {
                scanned: 2,
                deleted: 1
            }
        );
        assert_eq!(write_records(&e).len(), 5);
    }
}
