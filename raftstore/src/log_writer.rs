//! The LogWriter: one thread per store that turns the raft writes of all its regions into
//! one RocksDB batch and one `fsync` (group commit), then tells each peer its Ready is
//! durable (raft-rs `on_persist_ready`).
//!
//! Ordering: tasks are handled in queue order, and a peer's tasks enter the queue in Ready
//! order, so `Persisted{number}` reaches each peer in increasing `number`.
//! Failure: a failed write poisons the store (fsyncgate: the kernel may have dropped the
//! dirty pages, so a retry could "succeed" with data lost). The thread stops; every later
//! task is answered with the poison reason and nothing more is written.
//!
//! Stop and crash: when every handle is dropped (the store stops gracefully), the thread
//! writes what is still queued and exits. [`LogWriter::crash`] is the process dying
//! instead: the thread stops at once, and the tasks still queued, the batch it gathered
//! but has not written, and any task submitted later are dropped without a word: no
//! write, no `Persisted`. What a SIGKILL loses of the raft log is exactly that, since every
//! write already handed to RocksDB is in its WAL file (the OS keeps it; only a power loss
//! would drop the unsynced tail). [`LogWriter::set_stalled`] holds the thread before each
//! write (a disk that stops answering), so that tests can crash a store with writes queued.

use crate::metrics::StoreMetrics;
use crossbeam_channel::{Receiver, Sender};
use regatta_engine::{Engine as _, LogWrite, RocksEngine, WriteBatch as _};
use slog::{error, Logger};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// One peer's Ready to persist.
pub struct WriteTask {
    /// The write.
    pub write: LogWrite,
    /// The Ready's number.
    pub ready_number: u64,
    /// Last log index after this write (0 if the write holds no entries).
    pub last_index: u64,
    /// Where to report.
    pub notify: Arc<dyn PersistedSink>,
}

/// Who is told that a task is durable (or never will be): the peer that submitted it.
pub trait PersistedSink: Send + Sync {
    /// Delivers `p` to the peer (never blocks; called on the LogWriter thread).
    fn persisted(&self, p: Persisted);
}

/// Tells a peer that its Readies through `ready_number` are durable (or that they never
/// will be: `Err(reason)`).
pub struct Persisted {
    /// The Ready number.
    pub ready_number: u64,
    /// Last log index of that Ready's entries (0 = none).
    pub last_index: u64,
    /// `Err` when the store is poisoned.
    pub result: Result<(), String>,
}

/// Handle to the LogWriter thread.
#[derive(Clone)]
pub struct LogWriter {
    tx: Sender<WriteTask>,
    poisoned: Arc<Mutex<Option<String>>>,
    halt: Arc<Halt>,
}

/// The crash and stall switches, shared by the handles and the thread.
struct Halt {
    crashed: AtomicBool,
    /// Wakes the thread out of `recv` when it crashes (a message or the sender's drop).
    wake: Mutex<Option<Sender<()>>>,
    stalled: Mutex<bool>,
    unstalled: Condvar,
}

impl Halt {
    fn crashed(&self) -> bool {
        self.crashed.load(Ordering::Acquire)
    }

    /// Blocks while the disk is stalled; returns whether the LogWriter crashed meanwhile.
    fn wait_unstalled(&self) -> bool {
        let mut stalled = self.stalled.lock().expect("stall lock is never poisoned");
        while *stalled && !self.crashed() {
            stalled = self
                .unstalled
                .wait(stalled)
                .expect("stall lock is never poisoned");
        }
        self.crashed()
    }
}

impl LogWriter {
    /// Starts the thread.
    pub fn start(
        engine: RocksEngine,
        queue: usize,
        max_batch_bytes: usize,
        metrics: Arc<StoreMetrics>,
        logger: Logger,
    ) -> (LogWriter, JoinHandle<()>) {
        let (tx, rx) = crossbeam_channel::bounded(queue);
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let poisoned = Arc::new(Mutex::new(None));
        let halt = Arc::new(Halt {
            crashed: AtomicBool::new(false),
            wake: Mutex::new(Some(wake_tx)),
            stalled: Mutex::new(false),
            unstalled: Condvar::new(),
        });
        let (p, h) = (poisoned.clone(), halt.clone());
        let handle = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let queue = Queue {
                    tasks: rx,
                    wake: wake_rx,
                    halt: h,
                };
                run(engine, queue, max_batch_bytes, metrics, p, logger)
            })
            .expect("spawning the LogWriter thread");
        (LogWriter { tx, poisoned, halt }, handle)
    }

    /// Queues a task (blocks when the queue is full: back-pressure on the peers). After a
    /// [`crash`](Self::crash) the task is dropped: no write, no `Persisted`.
    pub fn submit(&self, task: WriteTask) {
        if self.halt.crashed() {
            return;
        }
        if let Err(e) = self.tx.send(task) {
            if self.halt.crashed() {
                return;
            }
            let task = e.into_inner();
            let reason = self
                .poison_reason()
                .unwrap_or_else(|| "log writer stopped".into());
            task.notify.persisted(Persisted {
                ready_number: task.ready_number,
                last_index: task.last_index,
                result: Err(reason),
            });
        }
    }

    /// Poisons the store from outside the LogWriter (an apply write failed: the disk is
    /// as bad for the log): every later task is refused with `reason`. The first reason
    /// stays.
    pub fn poison(&self, reason: String) {
        let mut p = self.poisoned.lock().expect("poison lock is never poisoned");
        if p.is_none() {
            *p = Some(reason);
        }
    }

    /// Stops the thread as a SIGKILL of the process would: the queued tasks and the batch
    /// gathered but not yet written are dropped, and so is every later task; none gets a
    /// `Persisted`. A write already running in RocksDB completes (the kill came after it),
    /// but is not reported either. Returns at once; the thread ends by itself.
    pub fn crash(&self) {
        self.halt.crashed.store(true, Ordering::Release);
        // Dropping the wake sender wakes a thread waiting for tasks ...
        self.halt
            .wake
            .lock()
            .expect("wake lock is never poisoned")
            .take();
        // ... and the stall's condition variable one held by a stalled disk.
        let _stalled = self
            .halt
            .stalled
            .lock()
            .expect("stall lock is never poisoned");
        self.halt.unstalled.notify_all();
    }

    /// Whether [`crash`](Self::crash) was called.
    pub fn is_crashed(&self) -> bool {
        self.halt.crashed()
    }

    /// Fault injection: while stalled, the thread holds the batch it gathered instead of
    /// writing it, as a disk that stops answering would (tasks queue up, peers block once
    /// the queue is full). Unstalling writes everything held, in order.
    pub fn set_stalled(&self, stalled: bool) {
        *self
            .halt
            .stalled
            .lock()
            .expect("stall lock is never poisoned") = stalled;
        self.halt.unstalled.notify_all();
    }

    /// Tasks waiting in the queue (not counting the batch being written).
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Why the store is poisoned, if it is.
    pub fn poison_reason(&self) -> Option<String> {
        self.poisoned
            .lock()
            .expect("poison lock is never poisoned")
            .clone()
    }
}

/// The thread's inputs: the tasks, and the crash switches.
struct Queue {
    tasks: Receiver<WriteTask>,
    wake: Receiver<()>,
    halt: Arc<Halt>,
}

impl Queue {
    /// The next task; `None` when every handle is gone (a stop: write what is queued,
    /// then end) or the LogWriter crashed.
    fn next(&self) -> Option<WriteTask> {
        if self.halt.crashed() {
            return None;
        }
        crossbeam_channel::select! {
            recv(self.tasks) -> t => t.ok().filter(|_| !self.halt.crashed()),
            recv(self.wake) -> _ => None,
        }
    }
}

fn run(
    engine: RocksEngine,
    queue: Queue,
    max_batch_bytes: usize,
    metrics: Arc<StoreMetrics>,
    poisoned: Arc<Mutex<Option<String>>>,
    logger: Logger,
) {
    let mut tasks = Vec::new();
    while let Some(first) = queue.next() {
        tasks.clear();
        tasks.push(first);
        let mut bytes = 0usize;
        while bytes < max_batch_bytes && tasks.len() < 4096 {
            match queue.tasks.try_recv() {
                Ok(t) => {
                    bytes += t
                        .write
                        .entries
                        .iter()
                        .map(|e| e.data.len() + 32)
                        .sum::<usize>();
                    tasks.push(t);
                }
                Err(_) => break,
            }
        }
        if queue.halt.wait_unstalled() {
            return; // crashed: the gathered batch is never written
        }
        // Poisoned from outside (a failed apply write): write nothing more.
        let outside = poisoned
            .lock()
            .expect("poison lock is never poisoned")
            .clone();
        let result = match outside {
            Some(reason) => Err(reason),
            None => write_group(&engine, &mut tasks, &metrics),
        };
        if queue.halt.crashed() {
            return; // written, but the process is gone before it could say so
        }
        if let Err(reason) = &result {
            error!(logger, "raft log write failed; store poisoned, refusing writes"; "error" => reason);
            *poisoned.lock().expect("poison lock is never poisoned") = Some(reason.clone());
        }
        for t in tasks.drain(..) {
            t.notify.persisted(Persisted {
                ready_number: t.ready_number,
                last_index: t.last_index,
                result: result.clone(),
            });
        }
        if result.is_err() {
            // Answer everything still queued, then stop: never write after a failed sync.
            let reason = result.err().unwrap_or_default();
            while let Some(t) = queue.next() {
                t.notify.persisted(Persisted {
                    ready_number: t.ready_number,
                    last_index: t.last_index,
                    result: Err(reason.clone()),
                });
            }
            return;
        }
    }
}

fn write_group(
    engine: &RocksEngine,
    tasks: &mut [WriteTask],
    metrics: &StoreMetrics,
) -> Result<(), String> {
    let mut wb = engine.write_batch();
    let mut entries = 0u64;
    let mut any = false;
    let sync = tasks.iter().any(|t| t.write.needs_sync());
    for t in tasks.iter_mut() {
        if let Some(extra) = t.write.extra.take() {
            // Self-contained (snapshot install, compaction); the sync below covers it.
            engine.write(extra, false).map_err(|e| e.to_string())?;
            any = true;
        }
        entries += t.write.entries.len() as u64;
        t.write.write_into(&mut wb);
    }
    if !wb.is_empty() || any {
        // A group of commit-index-only updates is written without a sync (see
        // `LogWrite::state_must_sync`): with one client, that halves the fsyncs.
        engine.write(wb, sync).map_err(|e| e.to_string())?;
        if sync {
            metrics.record_sync(entries, tasks.len() as u64);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;
    use regatta_engine::{keys, Cf, EngineConfig};
    use std::time::{Duration, Instant};

    /// The `Persisted` reports received: (Ready number, result).
    type Received = Arc<Mutex<Vec<(u64, Result<(), String>)>>>;

    /// Records the `Persisted` reports it gets (on the LogWriter's thread).
    struct Reports(Received);

    impl PersistedSink for Reports {
        fn persisted(&self, p: Persisted) {
            self.0.lock().unwrap().push((p.ready_number, p.result));
        }
    }

    /// Ready `number` of region 1, appending entries `from..=to`.
    fn task(number: u64, from: u64, to: u64, notify: &Arc<dyn PersistedSink>) -> WriteTask {
        let entries = (from..=to)
            .map(|index| Entry {
                index,
                term: 1,
                data: format!("entry {index}").into_bytes().into(),
                ..Default::default()
            })
            .collect();
        WriteTask {
            write: LogWrite {
                region_id: 1,
                entries,
                ..LogWrite::default()
            },
            ready_number: number,
            last_index: to,
            notify: notify.clone(),
        }
    }

    fn on_disk(engine: &RocksEngine, index: u64) -> bool {
        engine
            .get(Cf::Raft, &keys::entry_key(1, index))
            .unwrap()
            .is_some()
    }

    async fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        engine: RocksEngine,
        reports: Received,
        sink: Arc<dyn PersistedSink>,
        lw: LogWriter,
        thread: JoinHandle<()>,
    }

    /// A LogWriter that made Ready 1 (entries 1..=3) durable, then stalled with Ready 2
    /// (entries 4..=6) gathered and Readies 3 and 4 (entries 7..=12) behind it.
    async fn stalled_with_writes_queued() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksEngine::open(dir.path().join("db"), &EngineConfig::default()).unwrap();
        let reports: Received = Arc::default();
        let to: Arc<dyn PersistedSink> = Arc::new(Reports(Arc::clone(&reports)));
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let (lw, thread) = LogWriter::start(engine.clone(), 16, 1 << 20, Arc::default(), logger);
        lw.submit(task(1, 1, 3, &to));
        wait_for("Ready 1 is reported durable", || {
            reports.lock().unwrap().len() == 1
        })
        .await;
        lw.set_stalled(true);
        lw.submit(task(2, 4, 6, &to));
        wait_for("the thread takes Ready 2", || lw.queued() == 0).await;
        lw.submit(task(3, 7, 9, &to));
        lw.submit(task(4, 10, 12, &to));
        // The stalled thread holds Ready 2 (and perhaps 3, if it was still gathering).
        assert!(lw.queued() >= 1, "Ready 4 waits in the queue");
        Setup {
            _dir: dir,
            engine,
            reports,
            sink: to,
            lw,
            thread,
        }
    }

    /// Goal: a crash loses exactly what was not written yet. Method: a stalled LogWriter
    /// with one Ready gathered and two queued is crashed, and one more Ready is submitted
    /// after; none of them reaches the disk or gets a `Persisted`, while the Ready written
    /// before the stall stays. (A graceful stop writes them: see the next test.)
    #[actix_rt::test]
    async fn a_crash_drops_the_queued_and_gathered_writes_without_reporting_them() {
        let s = stalled_with_writes_queued().await;
        s.lw.crash();
        s.thread.join().unwrap();
        s.lw.submit(task(5, 13, 13, &s.sink));
        let reports = s.reports.lock().unwrap().clone();
        assert_eq!(reports, vec![(1, Ok(()))], "only Ready 1 was ever reported");
        for index in 1..=3 {
            assert!(on_disk(&s.engine, index), "entry {index} was durable");
        }
        for index in 4..=13 {
            assert!(
                !on_disk(&s.engine, index),
                "entry {index} outlived the crash"
            );
        }
        assert!(s.lw.is_crashed());
    }

    /// Goal: the contrast — a stop (every handle dropped) writes and reports everything
    /// queued before the thread ends.
    #[actix_rt::test]
    async fn a_stop_writes_and_reports_everything_queued() {
        let s = stalled_with_writes_queued().await;
        s.lw.set_stalled(false);
        drop(s.lw);
        s.thread.join().unwrap();
        let numbers: Vec<u64> = s.reports.lock().unwrap().iter().map(|r| r.0).collect();
        assert_eq!(numbers, vec![1, 2, 3, 4]);
        for index in 1..=12 {
            assert!(on_disk(&s.engine, index), "entry {index} was not written");
        }
    }
}
