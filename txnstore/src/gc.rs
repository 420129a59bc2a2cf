//! MVCC GC on a replica. The leader reports its region's oldest transaction lock to PD
//! (which keeps its safe point below it), and brings PD's GC safe point into the log (an admin
//! entry, so every replica records the same safe point at the same index, and it
//! survives restarts, snapshots and splits); every replica, once its applied safe point
//! moved past the one it last collected at, queues a GC pass of its copy of the region
//! on the store's GC thread (`gc_worker.rs`), off the peer's turn and off the apply.

use super::gc_worker::{GcProgress, GcTask};
use super::TxnObserver;
use regatta_proto::raft_serverpb::AdminCmd;
use regatta_raftstore::coprocessor::ObserverCx;
use slog::{debug, warn};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A replica's GC bookkeeping.
#[derive(Default)]
pub(super) struct GcState {
    /// When the last periodic check ran (`None`: never; the first tick only starts the
    /// interval).
    last_check: Option<Instant>,
    progress: Arc<GcProgress>,
}

impl GcState {
    /// The safe point of this replica's last completed GC pass (0: none).
    pub(super) fn collected(&self) -> u64 {
        self.progress.collected()
    }
}

impl TxnObserver {
    /// The region's applied GC safe point (0: none yet, or unreadable).
    pub(super) fn applied_safe_point(&self, cx: &ObserverCx) -> u64 {
        match regatta_engine::read_gc_safe_point(&cx.engine.dyn_live(), cx.region.get_id()) {
            Ok(sp) => sp,
            Err(e) => {
                warn!(self.logger, "reading the region's GC safe point failed"; "error" => %e);
                0
            }
        }
    }

    /// Every `gc_interval_ms`: the leader reports to PD (with its region's oldest lock)
    /// and proposes PD's newer safe point; any replica whose applied safe point moved
    /// queues a pass.
    pub(super) fn maybe_gc(&mut self, cx: &mut ObserverCx) {
        let every = Duration::from_millis(self.shared.cfg.gc_interval_ms);
        let last = *self.gc.last_check.get_or_insert(cx.now);
        if cx.now.saturating_duration_since(last) < every {
            return;
        }
        self.gc.last_check = Some(cx.now);
        if cx.leader {
            // A fresh lock report: PD holds its safe point at most the life time behind a
            // region's last report, so a rarely reporting region (a hibernating one
            // reports every minute) would hold GC back.
            cx.report_to_pd();
        }
        self.propose_gc_safe_point(cx);
        self.start_gc_pass(cx);
    }

    /// The leader proposes PD's safe point when it is above the region's. The entry
    /// carries the epoch it was proposed at; a split applied before it makes it a no-op
    /// (proposed again at the next interval).
    fn propose_gc_safe_point(&mut self, cx: &mut ObserverCx) {
        let pd_safe_point = self.shared.pd_gc_safe_point.load(Ordering::Acquire);
        if !cx.leader || pd_safe_point <= self.applied_safe_point(cx) {
            return;
        }
        let mut admin = AdminCmd::new();
        admin.set_region_epoch(cx.region.get_region_epoch().clone());
        admin.set_gc_safe_point(pd_safe_point);
        debug!(self.logger, "proposing a GC safe point"; "safe_point" => pd_safe_point);
        cx.propose_admin(admin);
    }

    /// Queues a GC pass of this replica at its applied safe point, unless one is queued or
    /// running, or that safe point was collected already.
    pub(super) fn start_gc_pass(&mut self, cx: &ObserverCx) {
        let safe_point = self.applied_safe_point(cx);
        if safe_point == 0
            || safe_point <= self.gc.progress.collected()
            || cx.region.get_peers().is_empty()
            || cx.fenced
        {
            return;
        }
        self.shared.gc_worker.schedule(GcTask {
            engine: cx.engine.dyn_clone(),
            region: cx.region.clone(),
            safe_point,
            progress: self.gc.progress.clone(),
            logger: self.logger.clone(),
        });
    }
}
