//! The faults the scheduler injects into a simulated cluster: a store's disk failing a
//! write, a crash (now and then a power loss), a restart, a partition and its healing,
//! and leadership moved by transfer (what PD's balance and operators do).

use crate::layer;
use crate::world::World;
use rand::Rng;
use regatta_raftstore::Persisted;

impl World {
    /// A store's disk fails its oldest write: the replica that submitted it stops (it
    /// fences itself), and the store goes down as a poisoned store would; it restarts
    /// later.
    pub(crate) fn fail_write(&mut self) {
        let with: Vec<usize> = (0..self.nodes.len())
            .filter(|i| !self.nodes[*i].writes.is_empty())
            .collect();
        let i = with[self.rng.gen_range(0..with.len())];
        if let Some((r, _, ready_number, last_index, _)) = self.nodes[i].writes.pop_front() {
            self.note(format!("fail write s{} ready {ready_number}", i + 1));
            if let Some(peer) = self.peer(i, r) {
                peer.on_persisted(Persisted {
                    ready_number,
                    last_index,
                    result: Err("simulated disk failure".into()),
                });
            }
            self.crash(i);
        }
    }

    /// A store crashes: its replicas, its writes not yet completed and its queued
    /// off-turn work are lost. One crash in three is a power loss: the engine also loses
    /// a suffix of its writes since the last sync (apply's writes are not synced).
    pub(crate) fn crash(&mut self, i: usize) {
        self.faults += 1;
        if self.rng.gen_ratio(1, 3) {
            let unsynced = self.nodes[i].engine.unsynced_writes();
            let kept = self.rng.gen_range(0..=unsynced);
            self.nodes[i].engine.lose_power(kept);
            self.note(format!(
                "power loss s{}: {kept} of {unsynced} unsynced writes survive",
                i + 1
            ));
        }
        self.note(format!("crash s{}", i + 1));
        self.nodes[i].peers.clear();
        self.nodes[i].writes.clear();
        layer::forget(&self.offturn, i);
    }

    /// Restarts the store that is down (faults take down one store at a time).
    pub(crate) fn restart_down(&mut self) {
        if let Some(i) = (0..self.nodes.len()).find(|i| self.nodes[*i].is_down()) {
            self.note(format!("restart s{}", i + 1));
            self.start(i);
        }
    }

    /// Moves the leadership of a random region to another store by transfer: half the
    /// time the leader is told to (as PD's balance does), half the time a follower asks
    /// for it (raft's `MsgTransferLeader`). Nothing happens if the region has no leader
    /// up or the transfer does not complete (raft gives up after an election timeout).
    pub(crate) fn transfer_leadership(&mut self) {
        let r = self.rng.gen_range(0..self.regions.len());
        let stores = self.nodes.len();
        let leads = |p: &regatta_raftstore::Peer<_>| {
            let st = p.status();
            st.leader_id != 0 && st.leader_id == st.peer_id
        };
        let Some(leader) = (0..stores).find(|i| self.peer(*i, r).is_some_and(|p| leads(p))) else {
            return;
        };
        let to = (leader + self.rng.gen_range(1..stores)) % stores;
        let Some(to_peer) = self.peer(to, r).map(|p| p.status().peer_id) else {
            return;
        };
        self.faults += 1;
        if self.rng.gen_bool(0.5) {
            self.note(format!(
                "transfer r{} s{} -> s{}",
                r + 1,
                leader + 1,
                to + 1
            ));
            if let Some(p) = self.peer(leader, r) {
                p.transfer_leader(to_peer);
            }
        } else {
            self.note(format!("s{} asks for r{}", to + 1, r + 1));
            if let Some(p) = self.peer(to, r) {
                p.request_leadership();
            }
        }
    }

    /// Cuts one store off from the rest, or heals the network.
    pub(crate) fn partition_or_heal(&mut self) {
        if self.isolated.is_empty() {
            self.faults += 1;
            let i = self.rng.gen_range(0..self.nodes.len());
            self.isolated.insert(i);
            self.note(format!("isolate s{}", i + 1));
        } else {
            self.isolated.clear();
            self.note("heal".into());
        }
    }
}
