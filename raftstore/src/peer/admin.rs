//! Operator and harness requests to one replica: seeding a fresh replica with a state,
//! compacting its log on request, and leadership changes (campaign, leader transfer).

use super::Peer;
use crate::error::Error;
use protobuf::Message as _;
use raft::RawNode;
use raft::StateRole;
use regatta_engine::Engine;
use regatta_engine::{PeerStorage, Snapshot as _};
use regatta_proto::raft_serverpb::{AdminCmd, RaftCmdBatch};
use slog::{info, warn};

impl<E: Engine> Peer<E> {
    /// Proposes `admin` alone in its entry (stamped with the leader's wall clock, as every
    /// entry is); `Err` when this replica does not lead (raft-rs 0.7 would forward a
    /// follower's proposal to the leader; the peer never lets it).
    pub(super) fn propose_admin(&mut self, admin: AdminCmd) -> raft::Result<()> {
        if !self.is_leader() {
            return Err(raft::Error::ProposalDropped);
        }
        let mut batch = RaftCmdBatch::new();
        batch.set_propose_time_ms(self.ctx.clock.wall_ms());
        batch.set_admin(admin);
        let data = batch
            .write_to_bytes()
            .expect("encoding an in-memory command batch cannot fail");
        self.raw.propose(vec![], data)
    }

    /// Installs a snapshot at `(index, term)` holding exactly `pairs` (raw user key, value)
    /// on a replica that holds no client data (how a harness seeds a node, `seed_state`).
    /// `keep` names raw keys the node wrote itself, not client state (the JSON node's
    /// timestamp-oracle limit): on a region's only voter they do not count as data, and
    /// their current values are carried into the seeded state. With several voters they
    /// count as data: each replica is seeded on its own, and values carried from each
    /// one's own copy could differ between replicas that must hold one state.
    ///
    /// The snapshot goes through raft's own restore path, so it is persisted and applied
    /// like one received from a leader. Raft refuses a snapshot at or below its commit
    /// index, and a fresh replica has committed its bootstrap entry and its start-up
    /// entries (the new leader's empty entry, the oracle's limit) past any small seed
    /// index. The region's only voter may rewind those: no other replica holds its log and
    /// no client saw its entries (it holds no client data), so it is rebuilt over a
    /// rewound storage first ([`PeerStorage::rewound`]) and then restored, and it elects
    /// itself again once the snapshot is installed. A replica of a group of several voters
    /// refuses instead: other replicas hold its committed entries.
    ///
    /// Errors: `InvalidArgument` when the replica holds client data or cannot take the
    /// seed (it says why); `ServerIsBusy` (retry shortly) while work is in flight
    /// (proposals, reads, unpersisted writes, unapplied entries).
    pub fn seed(
        &mut self,
        pairs: &[(Vec<u8>, Vec<u8>)],
        keep: &[Vec<u8>],
        index: u64,
        term: u64,
    ) -> Result<(), Error> {
        if let Some(reason) = &self.fenced {
            return Err(Error::StorePoisoned(reason.clone()));
        }
        // Raft adds to both (the next entry, the next term) without checking overflow.
        if index >= 1 << 62 || term >= 1 << 62 {
            return Err(Error::InvalidArgument(format!(
                "seed refused: index {index} and term {term} must be below 2^62"
            )));
        }
        let keep = if self.is_sole_voter() { keep } else { &[] };
        let region = self.region().clone();
        let rid = self.region_id;
        let log = &self.raw.raft.raft_log;
        let busy = !self.proposals.is_empty()
            || !self.batch.is_empty()
            || self.inflight_writes > 0
            || self.pending_snapshot.is_some()
            || !self.reads.is_idle()
            || log.applied < log.committed
            || self.raw.store().applied().0 < log.applied;
        if busy {
            return Err(Error::ServerIsBusy(format!(
                "region {rid}: the seed waits for the replica's work in flight"
            )));
        }
        let kept = {
            let snap = self.raw.store().engine().snapshot();
            if let Some(k) = regatta_engine::snapshot::first_data_key(&snap, &region, keep)? {
                return Err(Error::InvalidArgument(format!(
                    "seed refused: region {rid} already holds data (key {}); only a \
                     replica with no client data can be seeded",
                    String::from_utf8_lossy(&k)
                )));
            }
            let mut kept = Vec::new();
            for k in keep {
                if let Some(v) = snap.get_raw(k)? {
                    if !pairs.iter().any(|(p, _)| p == k) {
                        kept.push((k.clone(), v.value));
                    }
                }
            }
            kept
        };
        let committed = self.raw.raft.raft_log.committed;
        let rewind = committed >= index;
        if rewind && !self.is_sole_voter() {
            return Err(Error::InvalidArgument(format!(
                "seed refused: region {rid} committed through {committed} (>= {index}) \
                 and has {} voters, whose replicas hold those entries; seed at an index \
                 above {committed}",
                self.raw.store().voters().len()
            )));
        }
        // Everything that may refuse the seed is checked before anything changes.
        let mut all = pairs.to_vec();
        all.extend(kept);
        let snap = regatta_engine::snapshot::build_seed(
            &region,
            self.raw.store().voters(),
            index,
            term,
            &all,
        )?;
        // The seed replaces the region's data, sessions included.
        self.sessions.clear();
        if rewind {
            // From here on the replica's state has changed: a failure stops it (a rewound
            // replica that did not take its seed must not serve, nor elect itself over an
            // empty log); a restart recovers it from the disk, untouched until the seed's
            // write.
            if let Err(e) = self.rewind() {
                self.fence(format!("the seed's rewind failed: {e}"));
                return Err(e);
            }
        }
        if self.raw.raft.state != StateRole::Follower || self.raw.raft.term < term {
            let t = self.raw.raft.term.max(term);
            self.raw.raft.become_follower(t, raft::INVALID_ID);
            self.on_role_change();
        }
        if !self.raw.raft.restore(snap) {
            let e = format!("raft refused the seed snapshot at index {index} term {term}");
            if rewind {
                self.fence(e.clone());
            }
            return Err(Error::InvalidArgument(e));
        }
        info!(self.logger, "seeded from a snapshot"; "index" => index, "term" => term,
            "keys" => pairs.len(), "kept" => all.len() - pairs.len());
        Ok(())
    }

    /// Rebuilds this replica's raft node over its rewound storage (see [`Peer::seed`]):
    /// same term and vote, no log, nothing committed or applied; a leader steps down
    /// first. The caller checked that nothing is in flight.
    fn rewind(&mut self) -> Result<(), Error> {
        if self.is_leader() {
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
            self.on_role_change();
        }
        let cfg = super::raft_config(&self.ctx.cfg, self.peer_id, 0)?;
        let engine = self.raw.store().engine().clone();
        let cache_limit = self.ctx.cfg.entry_cache_limit;
        let placeholder = PeerStorage::uninitialized(engine, self.region_id, cache_limit);
        let storage = std::mem::replace(self.raw.mut_store(), placeholder).rewound();
        self.raw = RawNode::new(&cfg, storage, &self.logger).map_err(|e| Error::RegionState {
            region_id: self.region_id,
            detail: format!("raft refuses the rewound replica: {e}"),
        })?;
        // Local reads must not count entries of the old log as applied.
        self.delegate.reset_applied(0);
        self.reads = super::read_index::ReadIndexQueue::default();
        let base = super::fresh_base(
            self.ctx.seed ^ self.raw.raft.term,
            self.peer_id,
            self.ctx.clock.wall_ms(),
        );
        self.freshness = super::freshness::Freshness::new(base);
        info!(self.logger, "rewound the replica's log for a seed"; "term" => self.raw.raft.term);
        Ok(())
    }

    /// Called once the actor runs: a region's only voter elects itself at once (no
    /// election timeout to wait out, nobody to ask for votes), on first start as after a
    /// restart.
    pub fn on_started(&mut self) {
        if self.is_sole_voter() && !self.is_leader() {
            self.request_leadership();
        }
    }

    /// Compacts the raft log through `up_to` (capped at the applied index; the state
    /// machine in RocksDB is the snapshot) and returns the `(index, term)` the log is now
    /// compacted through.
    pub fn compact_log(&mut self, up_to: u64) -> Result<(u64, u64), Error> {
        if let Some(reason) = &self.fenced {
            return Err(Error::StorePoisoned(reason.clone()));
        }
        if let Some(wb) = self.raw.mut_store().compact_to(up_to)? {
            info!(self.logger, "raft log compacted on request"; "through" => self.raw.store().truncated_index());
            self.submit_extra_write(wb);
        }
        let store = self.raw.store();
        let idx = store.truncated_index();
        let term = self.raw.raft.raft_log.term(idx).unwrap_or(0);
        Ok((idx, term))
    }

    /// Makes this replica leader through a leader transfer when a leader is known (the
    /// current leader catches it up, then tells it to campaign at once), or by campaigning
    /// when none is: with pre-vote and check-quorum a plain campaign against a live leader
    /// would lose.
    pub fn request_leadership(&mut self) {
        // (Not while a snapshot installs: see `on_raft_message`.)
        if self.is_leader() || self.is_fenced() || self.pending_snapshot.is_some() {
            return;
        }
        let leader = self.raw.raft.leader_id;
        if leader != raft::INVALID_ID && leader != self.peer_id {
            self.raw.transfer_leader(self.peer_id);
        } else if let Err(e) = self.raw.campaign() {
            warn!(self.logger, "campaign failed"; "error" => %e);
        }
    }

    /// PD asks this leader to hand leadership to peer `to` (leader balance); ignored when
    /// this replica does not lead or `to` is not another member of the region.
    pub fn transfer_leader(&mut self, to: u64) {
        let member = self.region().get_peers().iter().any(|p| p.get_id() == to);
        if self.is_leader() && !self.is_fenced() && member && to != self.peer_id {
            info!(self.logger, "transferring leadership (PD balance)"; "to" => to);
            self.before_hand_over();
            self.raw.transfer_leader(to);
        }
    }
}
