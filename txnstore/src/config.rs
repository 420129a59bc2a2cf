//! [`TxnConfig`]: the transactional layer's bounds and intervals, each with a documented
//! default, and a `validate()` that rejects unsafe combinations.

/// The transactional layer's configuration (one per store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnConfig {
    /// The longest a pessimistic lock request may wait in a key's queue (a request asking
    /// for more waits this long). Default 30 s.
    pub max_lock_wait_ms: u64,
    /// Most pessimistic lock requests waiting for one key; beyond it a request is
    /// answered at once (`locked`, or `ServerIsBusy`). Default 4,096.
    pub max_lock_waiters_per_key: usize,
    /// How often a leader compares PD's GC safe point with its region's (and proposes the
    /// newer one), and how often a replica whose region's safe point moved runs a GC pass
    /// over its copy of the region (a pass also starts as soon as a new safe point is
    /// applied). Checked at the replica's raft clock's pace. Default 10 min (TiKV's GC run
    /// interval): a pass scans the region's versions.
    pub gc_interval_ms: u64,
    /// Write records one GC chunk scans at most (one write batch of deletes each; a key's
    /// versions are never cut across chunks, so a key with more versions makes one chunk
    /// alone). Default 1,024.
    pub gc_batch_keys: usize,
    /// GC passes queued on the store's GC thread at most; a replica that finds the queue
    /// full tries again at its next interval. Default 1,024.
    pub gc_queue: usize,
    /// How far above the newest timestamp the store knows PD's TSO handed out (or its own
    /// wall clock, whichever is later) a transactional command's timestamps may be, in
    /// ms; a command with a timestamp beyond it is refused (`ts_too_far_ahead`) before it
    /// raises `max_ts` (TiKV's `max-ts-drift-allowance`). Default 60 s; it must exceed
    /// the clock skew between PD and the stores.
    pub max_ts_drift_allowance_ms: u64,
    /// Whether a leader grants a pessimistic lock that meets no conflict in memory,
    /// answering at once, and writes it into the log with the next command on its key
    /// (TiKV's in-memory pessimistic locks; docs/ARCHITECTURE.md). Such a lock is lost
    /// when leadership is lost without a transfer (a crash, a partition): its
    /// transaction's prewrite then fails, committing nothing. Default on.
    pub in_memory_pessimistic_locks: bool,
    /// Most locks one leader holds in memory per region; beyond it lock requests are
    /// proposed as usual. Default 16,384.
    pub max_in_memory_locks: usize,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            max_lock_wait_ms: 30_000,
            max_lock_waiters_per_key: 4096,
            gc_interval_ms: 600_000,
            gc_batch_keys: 1024,
            gc_queue: 1024,
            max_ts_drift_allowance_ms: 60_000,
            in_memory_pessimistic_locks: true,
            max_in_memory_locks: 16_384,
        }
    }
}

impl TxnConfig {
    /// Rejects values that would break an invariant or a bound.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_lock_waiters_per_key == 0 {
            return Err("max_lock_waiters_per_key must be > 0".into());
        }
        if self.max_lock_wait_ms > 50_000 {
            // PD keeps an unremoved wait edge for 60 s (`regatta_pd::deadlock::EDGE_TTL`).
            return Err("max_lock_wait_ms must be at most 50,000".into());
        }
        if self.gc_interval_ms == 0 {
            return Err("gc_interval_ms must be > 0".into());
        }
        if self.gc_batch_keys == 0 || self.gc_queue == 0 {
            return Err("gc_batch_keys and gc_queue must be > 0".into());
        }
        if self.max_ts_drift_allowance_ms == 0 || self.max_ts_drift_allowance_ms > 1 << 40 {
            return Err("max_ts_drift_allowance_ms must be in 1..=2^40".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_unsafe_bounds_are_refused() {
        TxnConfig::default().validate().unwrap();
        let bad = [
            TxnConfig {
                max_lock_waiters_per_key: 0,
                ..TxnConfig::default()
            },
            TxnConfig {
                max_lock_wait_ms: 60_000,
                ..TxnConfig::default()
            },
            TxnConfig {
                gc_queue: 0,
                ..TxnConfig::default()
            },
            TxnConfig {
                max_ts_drift_allowance_ms: 0,
                ..TxnConfig::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
