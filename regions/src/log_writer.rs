//! The LogWriter: one thread per store that turns the raft writes of all its regions into
//! one RocksDB batch and one `fsync` (group commit), then tells each peer its Ready is
//! durable (raft-rs `on_persist_ready`).
//!
//! Ordering: tasks are handled in queue order, and a peer's tasks enter the queue in Ready
//! order, so `Persisted{number}` reaches each peer in increasing `number`.
//! Failure: a failed write poisons the store (fsyncgate: the kernel may have dropped the
//! dirty pages, so a retry could "succeed" with data lost). The thread stops; every later
//! task is answered with the poison reason and nothing more is written.

use crate::metrics::StoreMetrics;
use crossbeam_channel::{Receiver, Sender};
use regatta_engine::{Engine as _, LogWrite, RocksEngine, WriteBatch as _};
use slog::{error, Logger};
use std::sync::{Arc, Mutex};
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
        let poisoned = Arc::new(Mutex::new(None));
        let p = poisoned.clone();
        let handle = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || run(engine, rx, max_batch_bytes, metrics, p, logger))
            .expect("spawning the LogWriter thread");
        (LogWriter { tx, poisoned }, handle)
    }

    /// Queues a task (blocks when the queue is full: back-pressure on the peers).
    pub fn submit(&self, task: WriteTask) {
        if let Err(e) = self.tx.send(task) {
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

    /// Why the store is poisoned, if it is.
    pub fn poison_reason(&self) -> Option<String> {
        self.poisoned
            .lock()
            .expect("poison lock is never poisoned")
            .clone()
    }
}

fn run(
    engine: RocksEngine,
    rx: Receiver<WriteTask>,
    max_batch_bytes: usize,
    metrics: Arc<StoreMetrics>,
    poisoned: Arc<Mutex<Option<String>>>,
    logger: Logger,
) {
    let mut tasks = Vec::new();
    while let Ok(first) = rx.recv() {
        tasks.clear();
        tasks.push(first);
        let mut bytes = 0usize;
        while bytes < max_batch_bytes && tasks.len() < 4096 {
            match rx.try_recv() {
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
        // Poisoned from outside (a failed apply write): write nothing more.
        let outside = poisoned
            .lock()
            .expect("poison lock is never poisoned")
            .clone();
        let result = match outside {
            Some(reason) => Err(reason),
            None => write_group(&engine, &mut tasks, &metrics),
        };
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
            while let Ok(t) = rx.recv() {
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
