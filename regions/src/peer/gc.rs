//! MVCC GC on a replica. The leader reports its region's oldest transaction lock to PD
//! (which keeps its safe point below it), and brings PD's GC safe point into the log (an admin
//! entry, so every replica records the same safe point at the same index, and it
//! survives restarts, snapshots and splits); every replica, once its applied safe point
//! moved past the one it last collected at, queues a GC pass of its copy of the region
//! on the store's GC thread (`gc_worker.rs`), off the peer's turn and off the apply.

use super::Peer;
use crate::gc_worker::{GcProgress, GcTask};
use regatta_proto::raft_serverpb::AdminCmd;
use slog::debug;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A replica's GC bookkeeping.
pub(super) struct GcState {
    last_check: Instant,
    progress: Arc<GcProgress>,
}

impl GcState {
    pub(super) fn new(now: Instant) -> GcState {
        GcState {
            last_check: now,
            progress: Arc::default(),
        }
    }

    /// The safe point of this replica's last completed GC pass (0: none).
    pub(super) fn collected(&self) -> u64 {
        self.progress.collected()
    }
}

impl Peer {
    /// Every `gc_interval_ms`: the leader reports to PD (with its region's oldest lock)
    /// and proposes PD's newer safe point; any replica whose applied safe point moved
    /// queues a pass.
    pub(super) fn maybe_gc(&mut self, now: Instant) {
        let every = Duration::from_millis(self.ctx.cfg.gc_interval_ms);
        if now.saturating_duration_since(self.gc.last_check) < every {
            return;
        }
        self.gc.last_check = now;
        if self.is_leader() {
            // A fresh lock report (see `report_to_pd`): PD holds its safe point at most
            // the life time behind a region's last report, so a rarely reporting region
            // (a hibernating one reports every minute) would hold GC back.
            self.report_to_pd();
        }
        self.propose_gc_safe_point();
        self.start_gc_pass();
    }

    /// The leader proposes PD's safe point when it is above the region's. The entry
    /// carries the epoch it was proposed at; a split applied before it makes it a no-op
    /// (proposed again at the next interval).
    fn propose_gc_safe_point(&mut self) {
        let pd_safe_point = self.ctx.pd_gc_safe_point.load(Ordering::Acquire);
        if !self.is_leader() || pd_safe_point <= self.raw.store().gc_safe_point() {
            return;
        }
        let mut admin = AdminCmd::new();
        admin.set_region_epoch(self.region().get_region_epoch().clone());
        admin.set_gc_safe_point(pd_safe_point);
        if self.propose_admin(admin).is_ok() {
            debug!(self.logger, "proposed a GC safe point"; "safe_point" => pd_safe_point,
                "index" => self.raw.raft.raft_log.last_index());
        }
    }

    /// Queues a GC pass of this replica at its applied safe point, unless one is queued or
    /// running, or that safe point was collected already.
    pub(super) fn start_gc_pass(&mut self) {
        let store = self.raw.store();
        let safe_point = store.gc_safe_point();
        if safe_point == 0
            || safe_point <= self.gc.progress.collected()
            || !store.is_initialized()
            || self.is_fenced()
        {
            return;
        }
        self.ctx.gc_worker.schedule(GcTask {
            engine: store.engine().clone(),
            region: store.region().clone(),
            safe_point,
            progress: self.gc.progress.clone(),
            logger: self.logger.clone(),
        });
    }
}
