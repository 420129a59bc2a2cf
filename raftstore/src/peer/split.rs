//! Region splits on the leader: the split check, asking PD for ids, proposing the split
//! entry, and what every replica does once it is applied (docs/ARCHITECTURE.md, "Region
//! splits").
//!
//! The progress of a split is one state machine, [`SplitProgress`]; the size check that
//! may start one runs beside it on a thread of its own (`Splits::checking`):
//!
//! ```text
//! Idle --ask ids--> AskingIds --ids--> Proposed{index} --applied / step down--> Idle
//!                       |
//!                       +--PD failed / not leader / epoch moved--> Idle
//! ```
//!
//! Invariants: at most one split of a region is asked for or proposed at a time; while
//! one is proposed the leader takes no lease (another store may elect the new region's
//! leader before this one applies the split); a check's result only counts for the epoch
//! it scanned.

use super::effects::{Effect, SplitCheckTask};
use super::{Peer, Responder};
use crate::error::Error;
use crate::peer::NewRegion;
use regatta_engine::Engine;
use regatta_proto::metapb::{Region, RegionEpoch};
use regatta_proto::pdpb::RegionHeartbeatRequest;
use regatta_proto::raft_serverpb::{AdminCmd, SplitCmd};
use slog::{info, warn};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::oneshot;

/// Where the region's split stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SplitProgress {
    /// Nothing in progress.
    #[default]
    Idle,
    /// PD was asked for the new region's ids.
    AskingIds,
    /// The split entry was proposed at this index.
    Proposed {
        /// Its log index.
        index: u64,
    },
}

impl SplitProgress {
    /// Whether a split may be asked for (a running size check does not stop one).
    pub(crate) fn may_ask(self) -> bool {
        self == SplitProgress::Idle
    }

    /// Whether the leader must not use its lease (a split is proposed, not applied).
    pub(crate) fn blocks_lease(self) -> bool {
        matches!(self, SplitProgress::Proposed { .. })
    }

    /// The ids arrived or could not be had.
    pub(crate) fn ids_answered(&mut self) {
        if *self == SplitProgress::AskingIds {
            *self = SplitProgress::Idle;
        }
    }

    /// A split entry at `index` was applied.
    pub(crate) fn applied(&mut self, index: u64) {
        if matches!(*self, SplitProgress::Proposed { index: i } if i <= index) {
            *self = SplitProgress::Idle;
        }
    }

    /// The replica stepped down: a proposed split is no longer this replica's to track
    /// (it still applies if it commits). A PD call in flight comes back and is refused.
    pub(crate) fn stepped_down(&mut self) {
        if matches!(*self, SplitProgress::Proposed { .. }) {
            *self = SplitProgress::Idle;
        }
    }
}

/// The leader's split bookkeeping.
#[derive(Default)]
pub(crate) struct Splits {
    pub(crate) progress: SplitProgress,
    /// A size check runs on its own thread (at most one at a time).
    pub(crate) checking: bool,
    /// Bytes proposed since the last split check.
    pub(crate) written_since_check: u64,
    /// The region's (keys, bytes) at the last split check, for PD.
    pub(crate) approximate: Option<(u64, u64)>,
    /// Regions the last few splits of this region created (for `EpochNotMatch`).
    pub(crate) recent: VecDeque<Region>,
    /// The split threshold the last split check used (a change triggers a new check).
    pub(crate) checked_split_keys: u64,
    /// Bytes to propose before the next check (`bytes_before_next_check`).
    pub(crate) check_after: u64,
    /// Check at the next tick as leader, not the next interval: the region was just
    /// split (a region far over the limit halves at each check: under a fast load it
    /// would otherwise grow faster than once-an-interval halving shrinks it).
    pub(crate) check_soon: bool,
    /// The pool refused a check: no early check until the next interval.
    pub(crate) early_held: bool,
}

impl Splits {
    /// Whether to check between intervals: the region was just split, or its leader
    /// proposed half the split size since its last check (under a fast load a region would
    /// otherwise grow by a whole interval's writes between checks) — unless the pool
    /// refused a check since the last interval.
    pub(crate) fn wants_early_check(&self, cfg: &crate::config::StoreConfig) -> bool {
        !self.early_held
            && !self.checking
            && (self.check_soon || self.written_since_check >= cfg.region_split_size / 2)
    }
}

/// How many bytes a leader proposes before it scans its region again, after a check
/// found `(keys, size)` against the split limits `(max_keys, max_size)`: at least `every`
/// (`StoreConfig::split_check_diff_bytes`; 0: every interval), and more while the region
/// is far from both limits — up to the bytes it could grow by before reaching one (a
/// write stores about what its command carries), and at most half its size, so a check
/// costs at most ~2 bytes scanned per byte written and the size PD is told is at most
/// ~1.5x stale. The keys limit is converted to bytes at the region's mean record size:
/// a region whose new records are much smaller than its old ones can pass it by the
/// records of half its size before the next check finds it. Rescanning every leader's
/// region every 8 MiB written took ~10% of a core on a store of 1 KiB records
/// (docs/BENCHMARKS.md, "a store that grows").
pub(crate) fn bytes_before_next_check(
    (keys, size): (u64, u64),
    (max_keys, max_size): (u64, u64),
    every: u64,
) -> u64 {
    if every == 0 || keys == 0 {
        return every;
    }
    let by_size = max_size.saturating_sub(size);
    let mean_record = size / keys;
    let by_keys = max_keys.saturating_sub(keys).saturating_mul(mean_record);
    every.max(by_size.min(by_keys).min(size / 2))
}

/// A step of a split that comes back to the region's peer from another task.
pub enum SplitStep {
    /// A split check finished: split at `key` if it is still the region of `version`.
    Checked {
        /// Where to split (`None`: the region is small enough).
        key: Option<Vec<u8>>,
        /// The region's (keys, bytes) as scanned.
        stats: (u64, u64),
        /// The epoch version the check scanned.
        version: u64,
    },
    /// PD handed out ids: propose the split.
    Ids {
        /// Where to split.
        key: Vec<u8>,
        /// The epoch the split was decided at.
        epoch: RegionEpoch,
        /// The new region's id; its peers take the next ids.
        first_id: u64,
        /// Who asked (a manual split), answered at apply.
        tx: Option<Responder>,
    },
    /// The store's split-check pool was full: the check did not run. `written` is what the
    /// replica had written since the check before it (so the next interval asks again).
    CheckRefused {
        /// Bytes written since the last check that ran.
        written: u64,
    },
    /// PD could not hand out ids.
    Failed {
        /// Why.
        reason: String,
        /// Who asked.
        tx: Option<Responder>,
    },
}

impl<E: Engine> Peer<E> {
    /// A client asked to split at `key` (validated to be inside the region).
    pub(super) fn on_split_request(&mut self, key: Vec<u8>, tx: Responder) {
        if !self.is_leader() {
            let _ = tx.send(self.not_leader().into_response());
            return;
        }
        if !self.splits.progress.may_ask() {
            let e =
                Error::ServerIsBusy(format!("region {}: a split is in progress", self.region_id));
            let _ = tx.send(e.into_response());
            return;
        }
        self.ask_split_ids(key, Some(tx));
    }

    /// Asks PD for the new region's id and peer ids, then comes back with `SplitStep::Ids`.
    fn ask_split_ids(&mut self, key: Vec<u8>, tx: Option<Responder>) {
        self.splits.progress = SplitProgress::AskingIds;
        self.effects.push(Effect::AllocSplitIds {
            count: self.region().get_peers().len() as u32 + 1,
            key,
            epoch: self.region().get_region_epoch().clone(),
            tx,
        });
    }

    /// The next step of a split (see [`SplitStep`]).
    pub fn on_split_step(&mut self, step: SplitStep) {
        if let Some(reason) = &self.fenced {
            // A stopped replica proposes nothing: answer whoever asked.
            self.splits.checking = false;
            if let SplitStep::Ids { tx: Some(tx), .. } | SplitStep::Failed { tx: Some(tx), .. } =
                step
            {
                let _ = tx.send(Error::StorePoisoned(reason.clone()).into_response());
            }
            return;
        }
        match step {
            SplitStep::Checked {
                key,
                stats,
                version,
            } => {
                self.splits.checking = false;
                self.splits.approximate = Some(stats);
                let cfg = &self.ctx.cfg;
                self.splits.check_after = bytes_before_next_check(
                    stats,
                    (self.splits.checked_split_keys, cfg.region_split_size),
                    cfg.split_check_diff_bytes,
                );
                let current = self.region().get_region_epoch().get_version();
                if let Some(key) = key {
                    if self.is_leader()
                        && version == current
                        && self.splits.progress == SplitProgress::Idle
                    {
                        info!(self.logger, "region too big; splitting"; "key" => ?key,
                            "keys" => stats.0, "bytes" => stats.1);
                        self.ask_split_ids(key, None);
                    }
                }
            }
            SplitStep::CheckRefused { written } => {
                self.splits.checking = false;
                self.splits.early_held = true;
                self.splits.written_since_check += written;
            }
            SplitStep::Failed { reason, tx } => {
                self.splits.progress.ids_answered();
                warn!(self.logger, "split: PD gave no ids"; "error" => &reason);
                if let Some(tx) = tx {
                    let _ = tx
                        .send(Error::ServerIsBusy(format!("split: PD: {reason}")).into_response());
                }
            }
            SplitStep::Ids {
                key,
                epoch,
                first_id,
                tx,
            } => {
                self.splits.progress.ids_answered();
                let tx = tx.unwrap_or_else(|| oneshot::channel().0);
                if !self.is_leader() {
                    let _ = tx.send(self.not_leader().into_response());
                    return;
                }
                if &epoch != self.region().get_region_epoch() {
                    let e = Error::EpochNotMatch {
                        current_regions: vec![self.region().clone()],
                    };
                    let _ = tx.send(e.into_response());
                    return;
                }
                self.propose_split(key, epoch, first_id, tx);
            }
        }
    }

    fn propose_split(&mut self, key: Vec<u8>, epoch: RegionEpoch, first_id: u64, tx: Responder) {
        let mut split = SplitCmd::new();
        split.set_split_key(key);
        split.set_new_region_id(first_id);
        let peers = self.region().get_peers().len() as u64;
        split.set_new_peer_ids((first_id + 1..=first_id + peers).collect());
        let mut admin = AdminCmd::new();
        admin.set_region_epoch(epoch);
        admin.set_split(split);
        // What the observer holds only in the leader's memory enters the log before the
        // split, so that each half's replicas apply it.
        self.before_hand_over();
        if self.propose_admin(admin).is_err() {
            let _ = tx.send(self.not_leader().into_response());
            return;
        }
        let index = self.raw.raft.raft_log.last_index();
        self.splits.progress = SplitProgress::Proposed { index };
        let now = self.ctx.clock.now();
        self.proposals.push_back(super::Proposal {
            index,
            term: self.raw.raft.term,
            proposed_at: now,
            persisted_after: None,
            timed: false,
            responders: vec![tx],
            tokens: Vec::new(),
            deadline: now + Duration::from_millis(self.ctx.cfg.proposal_timeout_ms),
        });
    }

    /// Every replica, after applying a split: the store starts the new region's peer; the
    /// leader reports both regions to PD at once.
    pub(super) fn on_split_applied(&mut self, index: u64, right: &Region) {
        info!(self.logger, "region split"; "index" => index, "new_region_id" => right.get_id(),
            "split_key" => ?right.get_start_key());
        self.splits.progress.applied(index);
        self.splits.written_since_check = 0;
        self.splits.approximate = None;
        self.splits.check_soon = true;
        self.splits.recent.push_front(right.clone());
        self.splits.recent.truncate(4);
        // Waiters for keys now in the new region would never see their release here:
        // every waiter retries with the new layout.
        let e = self.with_siblings(Error::EpochNotMatch {
            current_regions: vec![self.region().clone()],
        });
        self.observer.drain(&e);
        let leader = self.is_leader();
        self.effects.push(Effect::StartRegion(NewRegion {
            region_id: right.get_id(),
            campaign: leader,
        }));
        if leader {
            self.report_to_pd();
            let mut hb = RegionHeartbeatRequest::new();
            hb.set_region(right.clone());
            self.effects.push(Effect::ReportRegion(hb));
        }
    }

    /// Asks for a split check at the next tick this replica leads (a region a split
    /// just created: its size is known only to be up to the parent's).
    pub fn check_split_soon(&mut self) {
        self.splits.check_soon = true;
    }

    /// Starts a split check on another thread when the leader wrote enough since the last.
    pub(super) fn maybe_check_split(&mut self) {
        let cfg = &self.ctx.cfg;
        let s = &self.splits;
        if !self.is_leader()
            || s.checking
            || s.progress != SplitProgress::Idle
            || (s.written_since_check < s.check_after
                && !s.check_soon
                && s.approximate.is_some()
                && s.checked_split_keys == self.ctx.split_keys())
        {
            return;
        }
        self.splits.checking = true;
        self.splits.check_soon = false;
        let written = std::mem::take(&mut self.splits.written_since_check);
        self.splits.checked_split_keys = self.ctx.split_keys();
        let region = self.region().clone();
        self.effects.push(Effect::CheckSplit(SplitCheckTask {
            written,
            engine: self.raw.store().engine().clone(),
            others: self.ctx.coprocessor.key_spaces(&region),
            region,
            max_size: cfg.region_split_size,
            max_keys: self.splits.checked_split_keys,
            logger: self.logger.clone(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::bytes_before_next_check;
    use super::SplitProgress::{self, *};

    #[test]
    fn a_region_far_from_its_limits_is_checked_less_often_and_near_them_as_before() {
        const MIB: u64 = 1 << 20;
        let limits = (960_000, 96 * MIB);
        let every = 8 * MIB;
        // Small: the floor.
        assert_eq!(bytes_before_next_check((1_000, MIB), limits, every), every);
        // Half full (1 KiB records): half its size, well inside the room left.
        assert_eq!(
            bytes_before_next_check((48 * 1024, 48 * MIB), limits, every),
            24 * MIB
        );
        // 80 of 96 MiB: only the 16 MiB left before the size limit.
        assert_eq!(
            bytes_before_next_check((80 * 1024, 80 * MIB), limits, every),
            16 * MIB
        );
        // Near the limit, or past it: the floor again.
        assert_eq!(
            bytes_before_next_check((90 * 1024, 90 * MIB), limits, every),
            every
        );
        assert_eq!(
            bytes_before_next_check((200 * 1024, 200 * MIB), limits, every),
            every
        );
        // Small records (40 bytes): the keys limit decides. 160 k records left are
        // 6.4 MB, under the floor.
        assert_eq!(
            bytes_before_next_check((800_000, 32_000_000), limits, every),
            every
        );
        // 2 M records left are 80 MB, more than half the region's 20 MB.
        assert_eq!(
            bytes_before_next_check((500_000, 20_000_000), (2_500_000, 96 * MIB), every),
            10_000_000
        );
        // 10 k records of 419 bytes left: 4.19 MB, under the floor.
        assert_eq!(
            bytes_before_next_check((100_000, 40 * MIB), (110_000, 96 * MIB), every),
            every
        );
        // 30 k of them: 12.57 MB, the least of the three.
        assert_eq!(
            bytes_before_next_check((100_000, 40 * MIB), (130_000, 96 * MIB), every),
            30_000 * 419
        );
        // 0 keeps its meaning: check at every interval.
        assert_eq!(bytes_before_next_check((48 * 1024, 48 * MIB), limits, 0), 0);
    }

    #[test]
    fn a_split_walks_the_states_in_order() {
        let mut p = SplitProgress::default();
        assert!(p.may_ask() && !p.blocks_lease());
        p = AskingIds;
        assert!(!p.may_ask() && !p.blocks_lease(), "one split at a time");
        p.ids_answered();
        assert_eq!(p, Idle);
        p = Proposed { index: 10 };
        assert!(p.blocks_lease(), "no lease while a split is proposed");
        assert!(!p.may_ask());
        p.applied(9);
        assert_eq!(
            p,
            Proposed { index: 10 },
            "an earlier entry does not finish it"
        );
        p.applied(10);
        assert_eq!(p, Idle);
    }

    #[test]
    fn late_answers_do_not_move_a_proposed_split() {
        let mut p = Proposed { index: 3 };
        p.ids_answered();
        assert_eq!(p, Proposed { index: 3 });
        p.applied(2);
        assert_eq!(p, Proposed { index: 3 });
    }

    #[test]
    fn stepping_down_forgets_a_proposed_split_but_not_a_pd_call() {
        let mut p = Proposed { index: 5 };
        p.stepped_down();
        assert_eq!(p, Idle);
        let mut q = AskingIds;
        q.stepped_down();
        assert_eq!(q, AskingIds, "the PD answer comes back and is refused then");
    }
}
