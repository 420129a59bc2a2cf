//! The raft clock and the periodic work it paces: proposal and read deadlines, the lease
//! kept warm, split checks, log compaction, PD reports and the observer's periodic work. Periodic work is time-based
//! (on the peer's [`crate::Clock`]), so it keeps its pace while the region hibernates.

use super::effects::Effect;
use super::Peer;
use crate::coprocessor::Outbox;
use crate::error::Error;
use regatta_engine::Engine;
use regatta_proto::pdpb::RegionHeartbeatRequest;
use slog::{error, info};
use std::time::Duration;

/// How many times less often a hibernating leader reports to PD.
const HIBERNATED_REPORT_FACTOR: u32 = 6;

impl<E: Engine> Peer<E> {
    /// Advances the raft clock; expires reads and proposals past their deadline; compacts
    /// the log when it grew past the limit; reports to PD.
    pub fn tick(&mut self) {
        if self.is_fenced() {
            return; // no heartbeats, no campaigns
        }
        // While a snapshot installs the raft clock stands still (as TiKV's does): an
        // election now would read the log below the snapshot, which storage no longer
        // has while raft's applied index trails it (raft-rs panics).
        if self.pending_snapshot.is_none() {
            self.raw.tick();
        }
        let now = self.ctx.clock.now();
        while self.proposals.front().is_some_and(|p| p.deadline <= now) {
            if let Some(p) = self.proposals.pop_front() {
                for tx in p.responders {
                    let _ = tx.send(
                        Error::Timeout(format!("proposal at index {}", p.index)).into_response(),
                    );
                }
                self.abandon_tokens(p.tokens);
            }
        }
        self.expire_leader_waits(now);
        let read_timeout = Duration::from_millis(self.ctx.cfg.read_timeout_ms);
        for r in self.reads.expire(now, read_timeout) {
            let _ =
                r.tx.send(Error::Timeout("read index".into()).into_response());
        }
        self.serve_ryw(now);
        self.keep_lease_warm(now);
        let cfg = self.ctx.cfg.clone();
        if now.saturating_duration_since(self.last_split_check)
            >= Duration::from_millis(cfg.split_check_interval_ms)
        {
            self.last_split_check = now;
            self.splits.early_held = false;
            self.maybe_check_split();
        } else if self.is_leader() && self.splits.wants_early_check(&cfg) {
            // Between intervals too (see `Splits::wants_early_check`).
            self.maybe_check_split();
        }
        if now.saturating_duration_since(self.last_compact_check) >= cfg.tick_interval() * 20 {
            self.last_compact_check = now;
            self.maybe_compact();
        }
        // A hibernating region has nothing new to tell PD (a leader change or split wakes
        // it and reports at once): it reports 6x less often, so idle regions cost PD little.
        let mut report_every = Duration::from_millis(cfg.region_heartbeat_interval_ms);
        if self.hibernation.is_hibernating() {
            report_every *= HIBERNATED_REPORT_FACTOR;
        }
        if self.is_leader() && now.saturating_duration_since(self.last_pd_report) >= report_every {
            self.report_to_pd();
        }
        self.observe(|o, cx| o.on_tick(cx));
        self.maybe_hibernate(now);
    }

    /// Sends this leader's view of the region (leader, term, approximate size) to PD.
    pub(super) fn report_to_pd(&mut self) {
        self.last_pd_report = self.ctx.clock.now();
        let mut hb = RegionHeartbeatRequest::new();
        hb.set_region(self.region().clone());
        if let Some(l) = self.leader_meta() {
            hb.set_leader(l);
        }
        hb.set_term(self.raw.raft.term);
        if let Some((keys, size)) = self.splits.approximate {
            hb.set_approximate_keys(keys);
            hb.set_approximate_size(size);
        }
        // The layer above adds its part (see `coprocessor`).
        let mut scratch = Outbox::default();
        self.observer
            .on_heartbeat(&mut hb, &self.view(&mut scratch));
        self.effects.push(Effect::ReportRegion(hb));
    }

    /// Compacts the raft log once it holds `raft_log_gc_count_limit` applied entries.
    fn maybe_compact(&mut self) {
        let store = self.raw.store();
        let (applied, _) = store.applied();
        let truncated = store.truncated_index();
        let limit = self.ctx.cfg.raft_log_gc_count_limit;
        if applied.saturating_sub(truncated) < limit {
            return;
        }
        let mut idx = applied;
        if self.is_leader() {
            // Keep what a slightly lagging follower still needs, so it catches up by log,
            // not snapshot; a follower lagging by more than the limit gets a snapshot.
            let min_match = self
                .raw
                .raft
                .prs()
                .iter()
                .map(|(_, p)| p.matched)
                .min()
                .unwrap_or(applied);
            if min_match > truncated && applied - min_match < limit {
                idx = min_match;
            }
        }
        match self.raw.mut_store().compact_to(idx) {
            Ok(Some(wb)) => {
                info!(self.logger, "raft log compacted"; "through" => idx);
                self.submit_extra_write(wb);
            }
            Ok(None) => {}
            Err(e) => error!(self.logger, "log compaction failed"; "error" => %e),
        }
    }
}
