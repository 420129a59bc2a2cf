//! [`Detector`]: how a store's region leaders report their pessimistic lock waits to PD's
//! deadlock detector (`regatta_pd::deadlock`, one waits-for graph for the cluster).
//!
//! A leader about to queue transaction `w` behind holder `h` reports `w -> h`
//! (`WAIT_ADD`) and queues at once; it never waits for PD. If PD finds that the wait
//! closes a cycle it refuses it, and the refusal comes back to the leader's mailbox
//! ([`PeerMailbox::wait_refused`]), which answers the waiter `deadlock` — unless it was
//! granted meanwhile. When a wait ends (granted, timed out, cancelled, drained) the
//! leader reports `WAIT_REMOVE`.
//!
//! Invariants: one task per store sends the reports, in the order they were made, one
//! PD call at a time (each call carries everything queued since the last), so PD never
//! sees a wait's end before its start. The queue is bounded: a report that does not fit
//! is dropped and logged — an unreported wait can then only end by its timeout, and an
//! unreported end is dropped by PD after the edge TTL. PD unreachable: the same.

use crate::pd::PdClient;
use crate::peer::PeerMailbox;
use regatta_proto::pdpb::{DetectRequest, WaitForEntry, WaitForOp, WaitRefused};
use slog::{warn, Logger};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
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

    /// Reports that the wait of `waiter` for `holder` ended.
    pub(crate) fn done(&self, waiter: u64, holder: u64) {
        self.send(WaitForOp::WAIT_REMOVE, waiter, holder, 0, None);
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

/// The hash PD files a waited key under (only to name it in a cycle).
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    // SipHash with fixed keys: the same on every store and run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
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
        let mut replies: HashMap<(u64, u64), Arc<dyn PeerMailbox>> = HashMap::new();
        for r in batch {
            if let Some(reply) = r.reply {
                replies.insert((r.entry.get_waiter_ts(), r.entry.get_holder_ts()), reply);
            }
            req.mut_entries().push(r.entry);
        }
        let n = req.get_entries().len();
        match pd.detect(req).await {
            Ok(mut resp) => {
                for refused in resp.take_refused().into_iter() {
                    let at = (refused.get_waiter_ts(), refused.get_holder_ts());
                    if let Some(reply) = replies.get(&at) {
                        reply.wait_refused(refused);
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
