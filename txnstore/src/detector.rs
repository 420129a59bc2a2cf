//! [`Detector`]: how a store's region leaders report their pessimistic lock waits to PD's
//! deadlock detector (`regatta_pd::deadlock`, one waits-for graph for the cluster).
//!
//! A leader about to queue transaction `w` behind holder `h` reports `w -> h`
//! (`WAIT_ADD`) and queues at once; it never waits for PD. If PD finds that the wait
//! closes a cycle it refuses it, and the refusal comes back to the leader's mailbox
//! ([`PeerMailbox::notify`] with the [`WaitRefused`]), which answers the waiter `deadlock` — unless it was
//! granted meanwhile. When a wait ends (granted, timed out, cancelled, drained) the
//! leader reports `WAIT_REMOVE`.
//!
//! Invariants: one task per store sends the reports, in the order they were made, one
//! PD call at a time (each call carries everything queued since the last), so PD never
//! sees a wait's end before its start. The queue is bounded: a report that does not fit
//! is dropped and logged — an unreported wait can then only end by its timeout, and an
//! unreported end is dropped by PD after the edge TTL. PD unreachable: the same.

use regatta_proto::pdpb::{DetectRequest, WaitForEntry, WaitForOp, WaitRefused};
use regatta_raftstore::pd::PdClient;
use regatta_raftstore::PeerMailbox;
use slog::{warn, Logger};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Most reports one PD call carries.
const MAX_BATCH: usize = 4096;

/// One report, and for a new wait, where to send PD's refusal.
struct Report {
    entry: WaitForEntry,
    reply: Option<Arc<dyn PeerMailbox>>,
}

/// A store's handle on PD's deadlock detector (cheap to clone).
#[derive(Clone)]
pub struct Detector {
    tx: mpsc::Sender<Report>,
    logger: Logger,
}

impl Detector {
    /// A detector whose reports queue up to `capacity` deep, and the task that sends them
    /// to `pd` (the caller spawns it; it ends when every handle is dropped).
    pub fn new(
        pd: Arc<dyn PdClient>,
        capacity: usize,
        logger: Logger,
    ) -> (Detector, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let task = send_reports(rx, pd, logger.clone());
        (Detector { tx, logger }, task)
    }

    /// Reports that `waiter` starts waiting for `holder` on `key`; a refusal goes to
    /// `reply`. Returns false when the report could not be queued (the wait is then not
    /// checked for deadlocks, and ends by its timeout at worst).
    pub(crate) fn wait(
        &self,
        waiter: u64,
        holder: u64,
        key: &[u8],
        reply: Arc<dyn PeerMailbox>,
    ) -> bool {
        self.send(
            WaitForOp::WAIT_ADD,
            waiter,
            holder,
            key_hash(key),
            Some(reply),
        )
    }

    /// Reports that the wait of `waiter` for `holder` on `key` ended (its waits on other
    /// keys, in other regions too, go on).
    pub(crate) fn done(&self, waiter: u64, holder: u64, key: &[u8]) {
        self.send(WaitForOp::WAIT_REMOVE, waiter, holder, key_hash(key), None);
    }

    fn send(
        &self,
        op: WaitForOp,
        waiter: u64,
        holder: u64,
        key_hash: u64,
        reply: Option<Arc<dyn PeerMailbox>>,
    ) -> bool {
        let mut entry = WaitForEntry::new();
        entry.set_op(op);
        entry.set_waiter_ts(waiter);
        entry.set_holder_ts(holder);
        entry.set_key_hash(key_hash);
        match self.tx.try_send(Report { entry, reply }) {
            Ok(()) => true,
            Err(_) => {
                warn!(self.logger, "deadlock detector queue full or stopped: report dropped";
                    "op" => ?op, "waiter_ts" => waiter, "holder_ts" => holder);
                false
            }
        }
    }
}

/// The hash PD files a waited key under (only to name it in a cycle): 64-bit FNV-1a, a
/// specified function, so stores built by different toolchains name a key alike (std's
/// `DefaultHasher` may change between Rust releases).
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Sends the queued reports to PD, in order, one call at a time; hands refusals back.
async fn send_reports(mut rx: mpsc::Receiver<Report>, pd: Arc<dyn PdClient>, logger: Logger) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut req = DetectRequest::new();
        // A transaction may wait for one holder in several regions of this store (keys
        // of one statement in two regions, both held by it): each of those leaders hears
        // the refusal once, and each checks it against its own queue. A refusal names
        // the cycle's key, not the refused wait's, so (waiter, holder) is what matches.
        // PD keeps the refused waiter's waits on other keys, as their leaders keep them
        // queued, until they report their end.
        let mut replies: HashMap<(u64, u64), Vec<Arc<dyn PeerMailbox>>> = HashMap::new();
        for r in batch {
            if let Some(reply) = r.reply {
                let at = (r.entry.get_waiter_ts(), r.entry.get_holder_ts());
                let to = replies.entry(at).or_default();
                if !to.iter().any(|m| Arc::ptr_eq(m, &reply)) {
                    to.push(reply);
                }
            }
            req.mut_entries().push(r.entry);
        }
        let n = req.get_entries().len();
        match pd.detect(req).await {
            Ok(mut resp) => {
                for refused in resp.take_refused().into_iter() {
                    let at = (refused.get_waiter_ts(), refused.get_holder_ts());
                    // Once per pair: a second refusal of the same pair in this batch
                    // could cancel a wait queued again since the first.
                    for reply in replies.remove(&at).unwrap_or_default() {
                        reply.notify(Box::new(refused.clone()));
                    }
                }
            }
            Err(e) => {
                // The waits stay queued on their leaders and end by their timeouts.
                warn!(logger, "deadlock detection unavailable"; "reports" => n, "error" => %e);
            }
        }
    }
}

/// A refusal as the waiting transaction's answer: `KeyError.deadlock`.
pub(crate) fn deadlock_error(key: &[u8], refused: &WaitRefused) -> regatta_proto::txnpb::KeyError {
    let mut d = regatta_proto::txnpb::Deadlock::new();
    d.set_key(key.to_vec());
    d.set_blocker_start_ts(refused.get_holder_ts());
    let mut ke = regatta_proto::txnpb::KeyError::new();
    ke.set_deadlock(d);
    ke
}

#[cfg(test)]
mod tests {
    use super::*;
    use regatta_proto::metapb::Store;
    use regatta_proto::pdpb::{
        DetectResponse, RegionHeartbeatRequest, RegionHeartbeatResponse, StoreHeartbeatRequest,
        StoreHeartbeatResponse,
    };
    use regatta_raftstore::pd::{BoxFuture, MemPd, PdError};
    use std::sync::Mutex;

    /// A PD that records the reports it gets and refuses every add whose waiter is in
    /// `refuse`; the rest is `MemPd`'s.
    #[derive(Default)]
    struct RecordingPd {
        mem: MemPd,
        batches: Mutex<Vec<Vec<(WaitForOp, u64, u64)>>>,
        refuse: Vec<u64>,
    }

    impl PdClient for RecordingPd {
        fn put_store(&self, store: Store) -> BoxFuture<'_, Result<(), PdError>> {
            self.mem.put_store(store)
        }
        fn get_store(&self, store_id: u64) -> BoxFuture<'_, Result<Store, PdError>> {
            self.mem.get_store(store_id)
        }
        fn store_heartbeat(
            &self,
            req: StoreHeartbeatRequest,
        ) -> BoxFuture<'_, Result<StoreHeartbeatResponse, PdError>> {
            self.mem.store_heartbeat(req)
        }
        fn region_heartbeat(
            &self,
            req: RegionHeartbeatRequest,
        ) -> BoxFuture<'_, Result<RegionHeartbeatResponse, PdError>> {
            self.mem.region_heartbeat(req)
        }
        fn alloc_id(&self, count: u32) -> BoxFuture<'_, Result<u64, PdError>> {
            self.mem.alloc_id(count)
        }
        fn get_ts(&self) -> BoxFuture<'_, Result<u64, PdError>> {
            self.mem.get_ts()
        }
        fn detect(&self, req: DetectRequest) -> BoxFuture<'_, Result<DetectResponse, PdError>> {
            let mut resp = DetectResponse::new();
            let mut batch = Vec::new();
            for e in req.get_entries() {
                batch.push((e.get_op(), e.get_waiter_ts(), e.get_holder_ts()));
                if e.get_op() == WaitForOp::WAIT_ADD && self.refuse.contains(&e.get_waiter_ts()) {
                    let mut r = WaitRefused::new();
                    r.set_waiter_ts(e.get_waiter_ts());
                    r.set_holder_ts(e.get_holder_ts());
                    resp.mut_refused().push(r);
                }
            }
            self.batches.lock().expect("lock").push(batch);
            Box::pin(async move { Ok(resp) })
        }
    }

    /// A peer's mailbox that keeps the refusals it is given.
    #[derive(Default)]
    struct Refusals(Mutex<Vec<(u64, u64)>>);

    impl PeerMailbox for Refusals {
        fn spawn(&self, _: BoxFuture<'static, ()>) {}
        fn notify(&self, note: regatta_raftstore::coprocessor::Note) {
            let r = note
                .downcast::<WaitRefused>()
                .expect("only refusals are sent");
            let at = (r.get_waiter_ts(), r.get_holder_ts());
            self.0.lock().expect("lock").push(at);
        }
    }

    type Mailbox = Arc<Refusals>;

    /// A detector whose PD refuses every wait of transaction 2 (the task not yet run),
    /// and two peers' mailboxes.
    fn refusing_waiter_2() -> (
        Arc<RecordingPd>,
        Detector,
        impl Future<Output = ()>,
        Mailbox,
        Mailbox,
    ) {
        let pd = Arc::new(RecordingPd {
            refuse: vec![2],
            ..RecordingPd::default()
        });
        let logger = Logger::root(slog::Discard, slog::o!());
        let (detector, task) = Detector::new(pd.clone(), 16, logger);
        let (a, b) = (Arc::new(Refusals::default()), Arc::new(Refusals::default()));
        (pd, detector, task, a, b)
    }

    #[tokio::test]
    async fn reports_reach_pd_in_order_and_refusals_reach_the_peer_that_waited() {
        let (pd, detector, task, a, b) = refusing_waiter_2();
        // Queued before the task runs: they go in one call, in this order.
        assert!(detector.wait(1, 9, b"k", a.clone()));
        assert!(detector.wait(2, 1, b"j", b.clone()));
        detector.done(1, 9, b"k");
        drop(detector);
        task.await; // ends once every handle is gone and the queue is sent
        let batches = pd.batches.lock().expect("lock").clone();
        assert_eq!(
            batches,
            vec![vec![
                (WaitForOp::WAIT_ADD, 1, 9),
                (WaitForOp::WAIT_ADD, 2, 1),
                (WaitForOp::WAIT_REMOVE, 1, 9),
            ]]
        );
        assert!(a.0.lock().expect("lock").is_empty());
        assert_eq!(*b.0.lock().expect("lock"), vec![(2, 1)]);
    }

    #[tokio::test]
    async fn a_refusal_reaches_every_region_where_the_waiter_waits_for_that_holder() {
        // Transaction 2 waits for 1 on a key in each of two regions of this store, in
        // one batch; PD refuses both waits.
        let (pd, detector, task, a, b) = refusing_waiter_2();
        assert!(detector.wait(2, 1, b"in-a", a.clone()));
        assert!(detector.wait(2, 1, b"in-b", b.clone()));
        drop(detector);
        task.await;
        assert_eq!(pd.batches.lock().expect("lock").len(), 1, "one call");
        // Both waits were refused; each region hears the pair once.
        assert_eq!(
            *a.0.lock().expect("lock"),
            vec![(2, 1)],
            "region a heard once"
        );
        assert_eq!(
            *b.0.lock().expect("lock"),
            vec![(2, 1)],
            "region b heard once"
        );
    }

    #[test]
    fn a_full_queue_drops_the_report_and_says_so() {
        let logger = Logger::root(slog::Discard, slog::o!());
        let (detector, _task) = Detector::new(Arc::new(MemPd::default()), 1, logger);
        let reply = Arc::new(Refusals::default());
        assert!(detector.wait(1, 2, b"k", reply.clone()));
        assert!(
            !detector.wait(3, 2, b"k", reply),
            "capacity 1, the task never ran"
        );
        assert_eq!(key_hash(b"k"), key_hash(b"k"));
        assert_ne!(key_hash(b"k"), key_hash(b"j"));
    }

    #[test]
    fn key_hashes_are_fnv_1a_the_same_on_every_build() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(key_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
