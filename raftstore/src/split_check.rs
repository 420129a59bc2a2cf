//! Split checks: how many keys and bytes a region holds, and where to cut it.
//!
//! A region's data lives in key spaces (see `regatta_engine::keys`): raw pairs (`r` in
//! `default`), the raftstore's own, and those of the layer above (see
//! [`crate::coprocessor::KeySpace`]). All are counted. The split key is always a *user*
//! key, taken from whichever record passes the middle; each space maps its data keys back
//! to user keys in order, so a region cut at user key `k` has every record of a user key
//! on one side.
//!
//! Checks run on the store's [`SplitChecker`]: a few threads fed by one bounded queue, so
//! 10,000 leaders asking at once cost a queue, not 10,000 threads. A check the full queue
//! refuses is reported back to its replica, which asks again at its next interval.

use crate::coprocessor::KeySpace;
use crate::error::Error;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use regatta_engine::{keys, Cf, Engine, Snapshot};
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

/// The raw key space of `region` (`r` in `default`): the raftstore's own.
fn raw_space(region: &Region) -> KeySpace {
    let (lo, hi) = keys::raw_data_range(region.get_start_key(), region.get_end_key());
    KeySpace {
        cf: Cf::Default,
        lo,
        hi,
        user_key: |k| keys::raw_user_key(k).map(<[u8]>::to_vec),
    }
}

/// Scans `region` for [`SplitCheck`]: its records and bytes, and — if it holds more than
/// `max_keys` records or `max_size` bytes — the user key to split it at, where the count
/// or the size (whichever limit it passed) crosses the middle. Two streaming passes over
/// one snapshot (so both see the same records), nothing buffered. `others` are the key
/// spaces of the layer above (see [`crate::coprocessor::Coprocessor::key_spaces`]),
/// counted after the raw one.
pub fn split_check<E: Engine>(
    engine: &E,
    region: &Region,
    max_size: u64,
    max_keys: u64,
    others: &[KeySpace],
) -> Result<SplitCheck, Error> {
    let snap = engine.snapshot();
    let raw = [raw_space(region)];
    let spaces: Vec<&KeySpace> = raw.iter().chain(others).collect();
    let (mut count, mut size) = (0u64, 0u64);
    for sp in spaces.iter() {
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
    for sp in spaces.iter() {
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
                    (sp.user_key)(k).filter(|u| u.as_slice() > region.get_start_key())
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

/// A job of the pool: one split check and the delivery of its result.
pub type SplitCheckJob = Box<dyn FnOnce() + Send>;

/// The store's split-check pool: `threads` threads taking jobs from one queue of `queue`
/// at most. Stopped with the store.
#[derive(Clone)]
pub struct SplitChecker {
    tx: Sender<SplitCheckJob>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// How often an idle pool thread looks whether the store is stopping.
const STOP_POLL: Duration = Duration::from_millis(50);

impl SplitChecker {
    /// Starts the pool (both bounds come from `StoreConfig`, which checks them).
    pub fn start(threads: usize, queue: usize) -> SplitChecker {
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

    /// Queues `job`; false (and the job dropped) when the queue is full or the store is
    /// stopping: the caller tells the replica, which tries again later.
    pub fn schedule(&self, job: SplitCheckJob) -> bool {
        !self.stop.load(Ordering::Acquire) && self.tx.try_send(job).is_ok()
    }

    /// Makes the threads drop what is queued (the jobs hold the engine, which must close
    /// with the store) and end after their current check.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Waits for the threads to end (after [`SplitChecker::stop`]); false if one panicked.
    pub fn join(&self) -> bool {
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        handles.into_iter().all(|h| h.join().is_ok())
    }
}

fn run(rx: Receiver<SplitCheckJob>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        match rx.recv_timeout(STOP_POLL) {
            Ok(job) => job(),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
    while rx.try_recv().is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_runs_jobs_in_order_and_refuses_what_its_full_queue_cannot_hold() {
        let pool = SplitChecker::start(1, 1);
        let (started_tx, started) = std::sync::mpsc::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let job = |n: u32| -> SplitCheckJob {
            let (started_tx, done_tx, gate) = (started_tx.clone(), done_tx.clone(), gate.clone());
            Box::new(move || {
                started_tx.send(n).expect("test alive");
                gate.lock().expect("gate").recv().expect("released");
                done_tx.send(n).expect("test alive");
            })
        };
        assert!(pool.schedule(job(1)));
        assert_eq!(started.recv().expect("the only thread runs it"), 1);
        assert!(pool.schedule(job(2)), "the queue holds one");
        assert!(!pool.schedule(job(3)), "a full queue refuses");
        release.send(()).expect("gate");
        release.send(()).expect("gate");
        let order: Vec<u32> = (0..2).map(|_| done.recv().expect("done")).collect();
        assert_eq!(order, [1, 2]);
        pool.stop();
        assert!(!pool.schedule(job(4)), "a stopping pool refuses");
        assert!(pool.join());
    }
}
