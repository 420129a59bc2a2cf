//! Store counters (lock-free), read by `regatta bench` and the status API.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one store.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Synced LogWriter batches.
    pub syncs: AtomicU64,
    /// Raft entries written by those batches.
    pub synced_entries: AtomicU64,
    /// Peer write tasks in those batches.
    pub synced_tasks: AtomicU64,
    /// Time those batches' writes took, synced (WAL write + fdatasync), in µs.
    pub sync_micros: AtomicU64,
    /// Commands proposed (each client write or log read).
    pub proposed_cmds: AtomicU64,
    /// Log entries proposed (one per actor turn with commands).
    pub proposed_entries: AtomicU64,
    /// Reads answered on the connection thread by a leader's lease.
    pub local_reads_leader: AtomicU64,
    /// Reads answered on the connection thread by a follower (staleness or RYW).
    pub local_reads_follower: AtomicU64,
    /// Follower or read-your-writes reads a follower sent on to the leader.
    pub follower_redirects: AtomicU64,
    /// Raft messages this store's replicas sent (heartbeats, appends, votes, wakes...).
    pub raft_messages_sent: AtomicU64,
    /// The stages of this store's leaders' proposals: see [`WriteStages`].
    pub stages: StageCounters,
}

/// Where the writes this store's leaders proposed spent their time, summed (TiKV's
/// propose-wait, append-log, commit-log and apply durations). Each entry of client
/// commands a leader proposed and saw applied in its own term is timed from its proposal;
/// each command from its arrival in the replica's batch.
#[derive(Debug, Default)]
pub struct StageCounters {
    /// Commands timed in `wait_us`.
    pub cmds: AtomicU64,
    /// Σ per command: arrival in its leader's batch → its entry proposed (the rest of
    /// the turn, a busy batch's wait).
    pub wait_us: AtomicU64,
    /// Entries timed in the sums below.
    pub entries: AtomicU64,
    /// Σ per entry: proposed → the leader handling the notice that its own LogWriter
    /// wrote and synced it (the LogWriter's round and the notice's wait for a turn).
    pub persist_us: AtomicU64,
    /// Σ per entry: proposed → known committed (a quorum durable, the leader's write
    /// included) on the leader's turn that applies it.
    pub commit_us: AtomicU64,
    /// Σ per entry: known committed → applied and answered (its turn's apply).
    pub apply_us: AtomicU64,
}

/// A copy of [`StageCounters`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStages {
    /// Commands timed in `wait_us`.
    pub cmds: u64,
    /// Σ arrival → proposed, per command, in µs.
    pub wait_us: u64,
    /// Entries timed below.
    pub entries: u64,
    /// Σ proposed → the leader's own write known durable, per entry, in µs.
    pub persist_us: u64,
    /// Σ proposed → committed, per entry, in µs.
    pub commit_us: u64,
    /// Σ committed → applied and answered, per entry, in µs.
    pub apply_us: u64,
}

impl WriteStages {
    /// The sums of `self` and `o` (of several stores).
    pub fn plus(self, o: WriteStages) -> WriteStages {
        WriteStages {
            cmds: self.cmds + o.cmds,
            wait_us: self.wait_us + o.wait_us,
            entries: self.entries + o.entries,
            persist_us: self.persist_us + o.persist_us,
            commit_us: self.commit_us + o.commit_us,
            apply_us: self.apply_us + o.apply_us,
        }
    }

    /// What was added from `before` to `self` (counters only grow).
    pub fn since(self, before: WriteStages) -> WriteStages {
        WriteStages {
            cmds: self.cmds.saturating_sub(before.cmds),
            wait_us: self.wait_us.saturating_sub(before.wait_us),
            entries: self.entries.saturating_sub(before.entries),
            persist_us: self.persist_us.saturating_sub(before.persist_us),
            commit_us: self.commit_us.saturating_sub(before.commit_us),
            apply_us: self.apply_us.saturating_sub(before.apply_us),
        }
    }

    /// Mean µs of each stage: (wait per command, persist, commit, apply per entry).
    pub fn means(&self) -> (f64, f64, f64, f64) {
        let per = |sum: u64, n: u64| if n == 0 { 0.0 } else { sum as f64 / n as f64 };
        (
            per(self.wait_us, self.cmds),
            per(self.persist_us, self.entries),
            per(self.commit_us, self.entries),
            per(self.apply_us, self.entries),
        )
    }
}

impl StageCounters {
    fn snapshot(&self) -> WriteStages {
        WriteStages {
            cmds: self.cmds.load(Ordering::Relaxed),
            wait_us: self.wait_us.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            persist_us: self.persist_us.load(Ordering::Relaxed),
            commit_us: self.commit_us.load(Ordering::Relaxed),
            apply_us: self.apply_us.load(Ordering::Relaxed),
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Synced LogWriter batches.
    pub syncs: u64,
    /// Raft entries written by synced batches.
    pub synced_entries: u64,
    /// Peer write tasks in synced batches.
    pub synced_tasks: u64,
    /// Time synced batches' writes took, in µs.
    pub sync_micros: u64,
    /// Commands proposed.
    pub proposed_cmds: u64,
    /// Log entries proposed.
    pub proposed_entries: u64,
    /// Reads answered locally by a leader's lease.
    pub local_reads_leader: u64,
    /// Reads answered locally by a follower.
    pub local_reads_follower: u64,
    /// Follower / RYW reads redirected to the leader.
    pub follower_redirects: u64,
    /// Raft messages sent.
    pub raft_messages_sent: u64,
    /// The stages of the leaders' writes.
    pub stages: WriteStages,
}

impl MetricsSnapshot {
    /// The sums of `self` and `o` (of several stores).
    pub fn plus(self, o: MetricsSnapshot) -> MetricsSnapshot {
        MetricsSnapshot {
            syncs: self.syncs + o.syncs,
            synced_entries: self.synced_entries + o.synced_entries,
            synced_tasks: self.synced_tasks + o.synced_tasks,
            sync_micros: self.sync_micros + o.sync_micros,
            proposed_cmds: self.proposed_cmds + o.proposed_cmds,
            proposed_entries: self.proposed_entries + o.proposed_entries,
            local_reads_leader: self.local_reads_leader + o.local_reads_leader,
            local_reads_follower: self.local_reads_follower + o.local_reads_follower,
            follower_redirects: self.follower_redirects + o.follower_redirects,
            raft_messages_sent: self.raft_messages_sent + o.raft_messages_sent,
            stages: self.stages.plus(o.stages),
        }
    }
}

impl StoreMetrics {
    pub(crate) fn record_sync(&self, entries: u64, tasks: u64, took: std::time::Duration) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.synced_entries.fetch_add(entries, Ordering::Relaxed);
        self.synced_tasks.fetch_add(tasks, Ordering::Relaxed);
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            syncs: self.syncs.load(Ordering::Relaxed),
            synced_entries: self.synced_entries.load(Ordering::Relaxed),
            synced_tasks: self.synced_tasks.load(Ordering::Relaxed),
            sync_micros: self.sync_micros.load(Ordering::Relaxed),
            proposed_cmds: self.proposed_cmds.load(Ordering::Relaxed),
            proposed_entries: self.proposed_entries.load(Ordering::Relaxed),
            local_reads_leader: self.local_reads_leader.load(Ordering::Relaxed),
            local_reads_follower: self.local_reads_follower.load(Ordering::Relaxed),
            follower_redirects: self.follower_redirects.load(Ordering::Relaxed),
            raft_messages_sent: self.raft_messages_sent.load(Ordering::Relaxed),
            stages: self.stages.snapshot(),
        }
    }
}
