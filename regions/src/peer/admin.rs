//! Operator and harness requests to one replica: seeding a fresh replica with a state,
//! compacting its log on request, and leadership changes (campaign, leader transfer).

use super::Peer;
use crate::error::Error;
use protobuf::Message as _;
use raft::StateRole;
use regatta_engine::{Engine as _, Snapshot as _};
use regatta_proto::raft_serverpb::{AdminCmd, RaftCmdBatch};
use slog::{info, warn};

impl Peer {
    /// Proposes `admin` alone in its entry (stamped with the leader's wall clock, as every
    /// entry is); `Err` when raft refuses it (not the leader).
    pub(super) fn propose_admin(&mut self, admin: AdminCmd) -> raft::Result<()> {
        let mut batch = RaftCmdBatch::new();
        batch.set_propose_time_ms(self.ctx.clock.wall_ms());
        batch.set_admin(admin);
        let data = batch
            .write_to_bytes()
            .expect("encoding an in-memory command batch cannot fail");
        self.raw.propose(vec![], data)
    }

    /// Installs a snapshot at `(index, term)` holding exactly `pairs` (raw user key, value)
    /// on a replica that holds no data yet (how a harness seeds a node, `seed_state`). The
    /// snapshot goes through raft's own restore path, so it is persisted and applied like
    /// one received from a leader, and a lagging replica later gets it from whoever leads.
    pub fn seed(
        &mut self,
        pairs: &[(Vec<u8>, Vec<u8>)],
        index: u64,
        term: u64,
    ) -> Result<(), Error> {
        if let Some(reason) = &self.fenced {
            return Err(Error::StorePoisoned(reason.clone()));
        }
        let store = self.raw.store();
        let has_data = !store
            .engine()
            .snapshot()
            .scan_raw(
                self.region().get_start_key(),
                self.region().get_end_key(),
                1,
            )
            .map_err(Error::from)?
            .is_empty();
        if has_data || self.raw.raft.raft_log.committed >= index {
            return Err(Error::InvalidArgument(format!(
                "seed refused: the replica already holds data or committed through {} (>= {index})",
                self.raw.raft.raft_log.committed
            )));
        }
        let snap = regatta_engine::snapshot::build_seed(
            self.region(),
            store.voters(),
            index,
            term,
            pairs,
        )?;
        if self.raw.raft.state != StateRole::Follower || self.raw.raft.term < term {
            let t = self.raw.raft.term.max(term);
            self.raw.raft.become_follower(t, raft::INVALID_ID);
        }
        if !self.raw.raft.restore(snap) {
            return Err(Error::InvalidArgument(format!(
                "raft refused the seed snapshot at index {index} term {term}"
            )));
        }
        info!(self.logger, "seeded from a snapshot"; "index" => index, "term" => term, "keys" => pairs.len());
        Ok(())
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
        if self.is_leader() || self.is_fenced() {
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
            self.raw.transfer_leader(to);
        }
    }
}
