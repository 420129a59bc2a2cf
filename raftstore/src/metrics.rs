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
        }
    }
}
