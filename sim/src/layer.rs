//! The transactional layer as the simulator runs it: each store's replica runs the real
//! [`TxnCoprocessor`] (as a store does), PD is in memory with a timestamp oracle on the
//! manual clock and PD's own waits-for graph for deadlock detection, and the
//! work a replica's observer does off its turn (a TSO fetch after an election, deadlock
//! reports, notes back to the replica) is queued here for the scheduler to run, instead
//! of on a runtime's threads.

use regatta_pd::deadlock::{WaitsFor, EDGE_TTL};
use regatta_raftstore::coprocessor::Note;
use regatta_raftstore::pd::{BoxFuture, MemPd, PdClient};
use regatta_raftstore::{Clock, ManualClock, PeerMailbox};
use regatta_txnstore::{Detector, GcWorker, TxnConfig, TxnCoprocessor};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

type Task = BoxFuture<'static, ()>;

/// Off-turn work waiting for the scheduler, tagged with the store (index) and the
/// incarnation of the replicas that queued it (a crash drops its incarnation's work);
/// a note also names the region (index) of the replica it goes back to.
#[derive(Default)]
pub(crate) struct Offturn {
    tasks: Vec<(usize, u64, Task)>,
    notes: VecDeque<(usize, usize, u64, Note)>,
}

/// The queue every store's mailbox feeds.
pub(crate) type OffturnQueue = Arc<Mutex<Offturn>>;

fn lock(q: &OffturnQueue) -> std::sync::MutexGuard<'_, Offturn> {
    q.lock()
        .expect("the simulator is one thread: its queue lock is never poisoned")
}

/// Drops what store `store` queued (it crashed: its runtime went with it).
pub(crate) fn forget(q: &OffturnQueue, store: usize) {
    let mut o = lock(q);
    o.tasks.retain(|(s, _, _)| *s != store);
    o.notes.retain(|(s, _, _, _)| *s != store);
}

/// Polls every queued task once, in queue order (tasks queued meanwhile wait for the
/// next call); returns how many finished.
pub(crate) fn run_tasks(q: &OffturnQueue) -> usize {
    let tasks = std::mem::take(&mut lock(q).tasks);
    let mut cx = Context::from_waker(Waker::noop());
    let mut kept = Vec::with_capacity(tasks.len());
    let mut finished = 0;
    for (store, incarnation, mut task) in tasks {
        match task.as_mut().poll(&mut cx) {
            Poll::Ready(()) => finished += 1,
            Poll::Pending => kept.push((store, incarnation, task)),
        }
    }
    let mut o = lock(q);
    kept.append(&mut o.tasks);
    o.tasks = kept;
    finished
}

/// The oldest queued note, with its store, region and incarnation.
pub(crate) fn next_note(q: &OffturnQueue) -> Option<(usize, usize, u64, Note)> {
    lock(q).notes.pop_front()
}

/// Whether tasks or notes are queued.
pub(crate) fn pending(q: &OffturnQueue) -> (bool, bool) {
    let o = lock(q);
    (!o.tasks.is_empty(), !o.notes.is_empty())
}

/// A replica's mailbox: what it spawns or notifies goes on the queue.
pub(crate) struct SimMailbox {
    pub(crate) store: usize,
    pub(crate) region: usize,
    pub(crate) incarnation: u64,
    pub(crate) queue: OffturnQueue,
}

impl PeerMailbox for SimMailbox {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        lock(&self.queue)
            .tasks
            .push((self.store, self.incarnation, task));
    }

    fn notify(&self, note: Note) {
        lock(&self.queue)
            .notes
            .push_back((self.store, self.region, self.incarnation, note));
    }
}

/// The cluster's timestamp oracle: the manual clock's wall milliseconds in the TSO
/// layout, strictly increasing (shared by PD and the simulated clients).
#[derive(Clone)]
pub(crate) struct Tso {
    clock: Arc<ManualClock>,
    last: Arc<AtomicU64>,
}

impl Tso {
    pub(crate) fn new(clock: Arc<ManualClock>) -> Tso {
        Tso {
            clock,
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The next timestamp.
    pub(crate) fn next(&self) -> u64 {
        let floor = regatta_proto::ts::compose(self.clock.wall_ms(), 0);
        let prev = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some((last + 1).max(floor))
            })
            .unwrap_or_else(|last| last);
        (prev + 1).max(floor)
    }

    /// PD in memory whose TSO is this one, with the cluster's real waits-for graph (PD's
    /// [`WaitsFor`], on the manual clock): a wait that would close a cycle is refused, so
    /// the stores answer `deadlock` as in a cluster (`MemPd` alone accepts every wait).
    pub(crate) fn pd(&self) -> Arc<dyn PdClient> {
        let tso = self.clone();
        let (clock, waits) = (self.clock.clone(), Mutex::new(WaitsFor::new(EDGE_TTL)));
        let pd = MemPd::default()
            .with_tso(Box::new(move || {
                let ts = tso.next();
                Box::pin(async move { Ok(ts) })
            }))
            .with_detect(Box::new(move |req| {
                waits
                    .lock()
                    .expect("the simulator is one thread: its lock is never poisoned")
                    .detect(req, clock.now())
            }));
        Arc::new(pd)
    }
}

/// One store's transactional layer: the coprocessor its replicas run, and its deadlock
/// reporter's task queued on `queue` (its reports reach PD's waits-for graph).
pub(crate) fn txn_layer(
    pd: Arc<dyn PdClient>,
    gc_worker: &GcWorker,
    store: usize,
    incarnation: u64,
    queue: &OffturnQueue,
    logger: &slog::Logger,
) -> Arc<TxnCoprocessor> {
    let cfg = TxnConfig::default();
    let (detector, task) = Detector::new(pd.clone(), 64, logger.clone());
    lock(queue).tasks.push((store, incarnation, Box::pin(task)));
    Arc::new(TxnCoprocessor::new(cfg, pd, detector, gc_worker.clone()))
}
