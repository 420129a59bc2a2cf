//! Split checks: how many keys and bytes a region holds, and where to cut it.
//!
//! A region's data lives in two key spaces (see `regatta_engine::keys`): raw pairs (`r`
//! in `default`) and MVCC data (`x` in `lock`, `write`, `default`: a key's lock, its
//! commit records and its large values). Both are counted. The split key is always a
//! *user* key, taken from whichever record passes the middle; a region cut at user key
//! `k` has every raw pair and every MVCC record of a user key on one side, because the
//! `x` space is `x` + memcomparable(user key) + `!ts` (order-preserving and prefix-free:
//! all versions and the lock of one user key sort between `enc(k)` and the next user
//! key's), so a split never separates a key's lock from its versions.
//!
//! Checks run on the store's [`SplitChecker`]: a few threads fed by one bounded queue, so
//! 10,000 leaders asking at once cost a queue, not 10,000 threads. A leader that finds the
//! queue full skips its check and asks again at its next split-check interval.

use crate::error::Error;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use regatta_engine::{keys, Cf, Engine, RocksEngine, Snapshot};
use regatta_proto::metapb::Region;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a split check found: the region's keys and bytes, and where to split it.
#[derive(Debug, Clone, Default)]
pub struct SplitCheck {
    /// Records in the region (raw pairs and MVCC locks, versions and large values).
    pub keys: u64,
    /// Bytes of their keys and values.
    pub size: u64,
    /// Where to split (`None`: within both limits).
    pub split_key: Option<Vec<u8>>,
}

/// One key space of a region's data: a column family, a data-key range, and how to get
/// the user key back from a data key.
struct Space {
    cf: Cf,
    lo: Vec<u8>,
    hi: Vec<u8>,
    raw: bool,
}

fn spaces(region: &Region) -> [Space; 4] {
    let (s, e) = (region.get_start_key(), region.get_end_key());
    let (rlo, rhi) = keys::raw_data_range(s, e);
    let (xlo, xhi) = keys::txn_data_range(s, e);
    let x = |cf| Space {
        cf,
        lo: xlo.clone(),
        hi: xhi.clone(),
        raw: false,
    };
    [
        Space {
            cf: Cf::Default,
            lo: rlo,
            hi: rhi,
            raw: true,
        },
        x(Cf::Lock),
        x(Cf::Write),
        x(Cf::Default),
    ]
}

fn user_key(space: &Space, data_key: &[u8]) -> Option<Vec<u8>> {
    if space.raw {
        keys::raw_user_key(data_key).map(<[u8]>::to_vec)
    } else {
        regatta_txn::key::user_key(data_key).ok()
    }
}

/// Scans `region` for [`SplitCheck`]: its records and bytes, and — if it holds more than
/// `max_keys` records or `max_size` bytes — the user key to split it at, where the count
/// or the size (whichever limit it passed) crosses the middle. Two streaming passes over
/// one snapshot (so both see the same records), nothing buffered.
pub fn split_check<E: Engine>(
    engine: &E,
    region: &Region,
    max_size: u64,
    max_keys: u64,
) -> Result<SplitCheck, Error> {
    let snap = engine.snapshot();
    let spaces = spaces(region);
    let (mut count, mut size) = (0u64, 0u64);
    for sp in &spaces {
        snap.scan(sp.cf, &sp.lo, &sp.hi, |k, v| {
            count += 1;
            size += (k.len() + v.len()) as u64;
            Ok(true)
        })?;
    }
    let mut check = SplitCheck {
        keys: count,
        size,
        split_key: None,
    };
    if count < 2 || (count <= max_keys && size <= max_size) {
        return Ok(check);
    }
    let by_keys = count > max_keys;
    let (mut seen_keys, mut seen_size) = (0u64, 0u64);
    for sp in &spaces {
        let mut found = None;
        snap.scan(sp.cf, &sp.lo, &sp.hi, |k, v| {
            seen_keys += 1;
            seen_size += (k.len() + v.len()) as u64;
            let past_middle = if by_keys {
                seen_keys > count / 2
            } else {
                seen_size > size / 2
            };
            if past_middle {
                if let Some(user) =
                    user_key(sp, k).filter(|u| u.as_slice() > region.get_start_key())
                {
                    found = Some(user);
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        if found.is_some() {
            check.split_key = found;
            break;
        }
    }
    Ok(check)
}

/// One check for the pool: scan `region` on `engine` against the limits, then hand the
/// result to `done` (on a pool thread).
pub(crate) struct SplitCheckTask {
    pub engine: RocksEngine,
    pub region: Region,
    pub max_size: u64,
    pub max_keys: u64,
    pub done: Box<dyn FnOnce(Result<SplitCheck, Error>) + Send>,
}

/// The store's split-check pool: `threads` threads taking tasks from one queue of
/// `queue` at most. Cloned into every peer; stopped with the store.
#[derive(Clone)]
pub struct SplitChecker {
    tx: Sender<SplitCheckTask>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// How often an idle pool thread looks whether the store is stopping.
const STOP_POLL: Duration = Duration::from_millis(50);

impl SplitChecker {
    /// Starts the pool (both bounds come from `StoreConfig`, which checks them).
    pub(crate) fn start(threads: usize, queue: usize) -> SplitChecker {
        let (tx, rx) = crossbeam_channel::bounded(queue);
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..threads)
            .map(|i| {
                let (rx, stop) = (rx.clone(), stop.clone());
                std::thread::Builder::new()
                    .name(format!("regatta-split-check-{i}"))
                    .spawn(move || run(rx, stop))
                    .expect("spawning a split-check thread (resources at start-up)")
            })
            .collect();
        SplitChecker {
            tx,
            stop,
            threads: Arc::new(Mutex::new(handles)),
        }
    }

    /// Queues `task`; false (and the task dropped) when the queue is full or the store is
    /// stopping: the caller skips this check and tries again later.
    pub(crate) fn schedule(&self, task: SplitCheckTask) -> bool {
        !self.stop.load(Ordering::Acquire) && self.tx.try_send(task).is_ok()
    }

    /// Makes the threads drop what is queued (the tasks hold the engine, which must close
    /// with the store) and end after their current check.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Waits for the threads to end (after [`SplitChecker::stop`]); false if one panicked.
    pub(crate) fn join(&self) -> bool {
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        handles.into_iter().all(|h| h.join().is_ok())
    }
}

fn run(rx: Receiver<SplitCheckTask>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        match rx.recv_timeout(STOP_POLL) {
            Ok(t) => (t.done)(split_check(&t.engine, &t.region, t.max_size, t.max_keys)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
    while rx.try_recv().is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use regatta_engine::{MemEngine, WriteBatch};

    #[test]
    fn the_pool_runs_checks_and_refuses_what_its_full_queue_cannot_hold() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = RocksEngine::open(dir.path(), &Default::default()).expect("engine");
        let pool = SplitChecker::start(1, 1);
        let (started_tx, started) = std::sync::mpsc::channel();
        let (results_tx, results) = std::sync::mpsc::channel();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let task = |n: u32| {
            let (started_tx, results_tx, gate) =
                (started_tx.clone(), results_tx.clone(), gate.clone());
            SplitCheckTask {
                engine: engine.clone(),
                region: Region::new(),
                max_size: u64::MAX,
                max_keys: u64::MAX,
                done: Box::new(move |r| {
                    started_tx.send(n).expect("test alive");
                    gate.lock().expect("gate").recv().expect("released");
                    results_tx
                        .send((n, r.map(|c| c.keys).ok()))
                        .expect("test alive");
                }),
            }
        };
        assert!(pool.schedule(task(1)));
        assert_eq!(started.recv().expect("the only thread runs it"), 1);
        assert!(pool.schedule(task(2)), "the queue holds one");
        assert!(!pool.schedule(task(3)), "a full queue refuses");
        release.send(()).expect("gate");
        release.send(()).expect("gate");
        let done: Vec<_> = (0..2).map(|_| results.recv().expect("a result")).collect();
        assert_eq!(
            done,
            [(1, Some(0)), (2, Some(0))],
            "an empty region, in order"
        );
        pool.stop();
        assert!(!pool.schedule(task(4)), "a stopping pool refuses");
        assert!(pool.join());
    }

    #[test]
    fn transactional_versions_are_counted_and_the_split_key_is_a_user_key() {
        // Goal: a region holding only MVCC data still splits, at a user key, so that
        // every version and the lock of a key stay on one side. Method: 10 user keys with
        // 3 versions each and a lock on one, no raw data; check with a low key limit.
        let e = MemEngine::new();
        let mut wb = e.write_batch();
        for i in 0..10u8 {
            let key = [b'k', i];
            for ts in 1..=3u64 {
                wb.put(
                    Cf::Write,
                    &regatta_txn::key::version_key(&key, ts * 10),
                    b"w",
                );
            }
        }
        wb.put(Cf::Lock, &regatta_txn::key::lock_key(&[b'k', 4]), b"l");
        e.write(wb, false).expect("write");
        let region = Region::new(); // the whole key space
        let check = split_check(&e, &region, u64::MAX, 10).expect("check");
        assert_eq!(check.keys, 31);
        let key = check.split_key.expect("over the key limit");
        assert!(
            key.starts_with(b"k") && key.len() == 2,
            "a user key: {key:?}"
        );
        // Every record of a user key is on one side of the cut.
        let (lo, _) = keys::txn_data_range(&key, b"");
        for i in 0..10u8 {
            let k = [b'k', i];
            let sides: Vec<bool> = (1..=3u64)
                .map(|ts| regatta_txn::key::version_key(&k, ts * 10) >= lo)
                .chain([regatta_txn::key::lock_key(&k) >= lo])
                .collect();
            assert!(sides.iter().all(|s| *s == sides[0]), "key {k:?} cut apart");
        }
    }
}
