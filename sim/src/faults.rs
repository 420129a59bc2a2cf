//! The faults the scheduler injects into a simulated cluster: a store's disk failing a
//! write, a crash (now and then a power loss), a restart, a partition and its healing.

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
