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
                let current = self.region().get_region_epoch().get_version();
                if let Some(key) = key {
                    if self.is_leader()
                        && version == current
                        && self.splits.progress == SplitProgress::Idle
                    {
                        info!(self.logger, "region too big; splitting"; "key" => ?key);
                        self.ask_split_ids(key, None);
                    }
                }
            }
            SplitStep::CheckRefused { written } => {
                self.splits.checking = false;
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

    /// Starts a split check on another thread when the leader wrote enough since the last.
    pub(super) fn maybe_check_split(&mut self) {
        let cfg = &self.ctx.cfg;
        let s = &self.splits;
        if !self.is_leader()
            || s.checking
            || s.progress != SplitProgress::Idle
            || (s.written_since_check < cfg.split_check_diff_bytes
                && s.approximate.is_some()
                && s.checked_split_keys == self.ctx.split_keys())
        {
            return;
        }
        self.splits.checking = true;
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
    use super::SplitProgress::{self, *};

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
