//! [`StoreConfig`]: every bound and timing of a store, with documented defaults and a
//! `validate()` that rejects unsafe combinations.

use regatta_proto::rpc::InboundLimits;
use std::time::Duration;

/// Configuration of a store and its region replicas.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Raft logical clock period. Default 50 ms.
    pub tick_interval_ms: u64,
    /// Election timeout in ticks (randomised in `[n, max_election_ticks)` by raft-rs).
    /// Default 10 (0.5-1 s).
    pub election_ticks: usize,
    /// The (exclusive) top of the randomised election timeout, in ticks; 0: twice
    /// `election_ticks` (raft-rs's default). `election_ticks + 1` makes the timeout fixed,
    /// which a deterministic simulator needs (raft-rs draws it from a thread-local RNG):
    /// the simulator then varies who times out first by when it ticks each replica.
    pub max_election_ticks: usize,
    /// Heartbeat interval in ticks. Default 2 (100 ms).
    pub heartbeat_ticks: usize,
    /// Bytes of entries per append message. Default 1 MiB.
    pub max_size_per_msg: u64,
    /// Append messages in flight per follower. Default 256.
    pub max_inflight_msgs: usize,
    /// Compact a region's log once this many applied entries accumulate. Default 10,000.
    pub raft_log_gc_count_limit: u64,
    /// Entries kept in memory per region beyond the unpersisted/unapplied ones. Default 1,024.
    pub entry_cache_limit: usize,
    /// A ReadIndex read not served within this fails with a retryable `Timeout`. Default 3 s.
    pub read_timeout_ms: u64,
    /// A proposal not applied within this is answered `Timeout` (outcome unknown). Default 10 s.
    pub proposal_timeout_ms: u64,
    /// A request that needs the leader, reaching a replica that knows none (an election is
    /// under way), waits this long for one before it is answered `NotLeader` without a
    /// hint; it moves as soon as a leader is known. Kept under clients' per-request
    /// deadlines, so a held write is answered (definitely not applied) rather than timing
    /// out with an unknown outcome. Default 1 s (the longest election timeout); 0 answers
    /// at once.
    pub leader_wait_ms: u64,
    /// Proposals in flight per region; beyond it requests get `ServerIsBusy`. Default 20,000.
    pub max_inflight_proposals: usize,
    /// Largest key accepted. Default 4 KiB.
    pub max_key_size: usize,
    /// Largest value accepted. Default 8 MiB.
    pub max_value_size: usize,
    /// Largest frame accepted from a client or peer. Default 64 MiB + snapshot headroom.
    pub max_frame_size: usize,
    /// Bytes of frame buffers all of the store's connections may hold at once (bodies in
    /// progress and the buffer each keeps between frames); must be at least
    /// `max_frame_size`. Default 512 MiB.
    pub max_inbound_buffer_bytes: usize,
    /// A connection that starts no frame for this long is closed. Default 10 min.
    pub conn_idle_timeout_ms: u64,
    /// A connection that sends nothing for this long in the middle of a frame is closed.
    /// Default 30 s.
    pub frame_stall_timeout_ms: u64,
    /// At-most-once sessions idle longer than this (by the log's clock) are dropped. Default 10 min.
    pub dedup_session_ttl_ms: u64,
    /// Client requests from the network one replica's actor holds queued (beyond it they
    /// get `ServerIsBusy`), and, counted apart, raft messages (beyond it they are dropped).
    /// Default 4,096 each.
    pub peer_inbox_capacity: usize,
    /// Tasks the LogWriter queue holds before peers block. Default 4,096.
    pub log_writer_queue: usize,
    /// Bytes of log entries one LogWriter batch takes before it syncs. Default 4 MiB.
    pub log_writer_max_batch_bytes: usize,
    /// Under load, how long the LogWriter may wait for more tasks before it writes and
    /// syncs a group (it waits only while the groups are shared and waiting gathers more;
    /// see `log_writer::GroupWait`); 0 never waits. Default 200 µs.
    pub log_group_wait_us: u64,
    /// How often leaders report their regions to PD. Default 10 s.
    pub region_heartbeat_interval_ms: u64,
    /// How often the store reports to PD. Default 1 s.
    pub store_heartbeat_interval_ms: u64,
    /// Leader lease, from the send time of a heartbeat round a quorum acknowledged; 0
    /// turns lease reads (and bounded-staleness follower reads, which rely on it) off.
    /// Must satisfy `lease_ms + max_clock_drift_ms <= (election_ticks - 1) * tick`
    /// (docs/CLOCKS.md). Default 400 ms.
    pub lease_ms: u64,
    /// The most two nodes' clocks may drift apart over one election timeout. Default 50 ms.
    pub max_clock_drift_ms: u64,
    /// A read-your-writes read on a replica behind the client's last write waits this
    /// long for it before redirecting to the leader. Default 50 ms.
    pub ryw_wait_ms: u64,
    /// A region larger than this (bytes of keys and values) splits. Default 96 MiB.
    pub region_split_size: u64,
    /// A region with more keys than this splits. Default 960,000.
    pub region_split_keys: u64,
    /// How often a leader considers checking its region's size (and sooner after a split,
    /// or once it proposed half of `region_split_size` since its last check). Default 10 s.
    pub split_check_interval_ms: u64,
    /// Bytes proposed since the last check before a leader scans its region again, at
    /// least: a region the last check found far from both split limits waits for more
    /// (up to what it could grow by before reaching one, at most half its size). Default
    /// 8 MiB (0: check every interval).
    pub split_check_diff_bytes: u64,
    /// Threads of the store's split-check pool (each scans one region at a time). Default 1
    /// (TiKV's split-check worker is one thread too).
    pub split_check_threads: usize,
    /// The store's raft threads: its region actors are spread over this many (region `r`
    /// on thread `r % raft_threads`), and so are the connections it accepts. Default 1:
    /// every region, connection and raft sender on one thread, with no hop between
    /// threads on a write's path. More pays only with cores to spare (TiKV's store
    /// pool): on a 2-core machine running three stores, 2 cost 15% of the throughput
    /// (`docs/BENCHMARKS.md`).
    pub raft_threads: usize,
    /// Split checks queued for the pool at most; a leader that finds the queue full skips
    /// its check and tries again at its next `split_check_interval_ms`. Default 1,024.
    pub split_check_queue: usize,
    /// Region reports (heartbeats) queued for PD at most; the store sends them one at a
    /// time. A report that finds the queue full is dropped: reports are periodic and the
    /// region's next one carries its latest state. Default 4,096.
    pub pd_report_queue: usize,
    /// Regions made by splits queued for the store to start their peers at most; a split
    /// whose new region finds the queue full keeps it and offers it again at every tick of
    /// the parent's replica. Default 1,024.
    pub new_region_queue: usize,
    /// A leader idle this long, with every follower caught up, hibernates its region: the
    /// replicas tick every `hibernated_tick_interval_ms` instead (0: never). Default 500 ms.
    pub hibernate_after_ms: u64,
    /// The raft clock period of a hibernating region. Default 5 s (heartbeats every 10 s,
    /// elections after 50-100 s of silence).
    pub hibernated_tick_interval_ms: u64,
    /// A starting store retries registering with PD for this long (PD may come up after
    /// the store), then fails with `Error::PdUnavailable`. Default 60 s.
    pub pd_register_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            tick_interval_ms: 50,
            election_ticks: 10,
            max_election_ticks: 0,
            heartbeat_ticks: 2,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            raft_log_gc_count_limit: 10_000,
            entry_cache_limit: 1024,
            read_timeout_ms: 3_000,
            proposal_timeout_ms: 10_000,
            leader_wait_ms: 1_000,
            max_inflight_proposals: 20_000,
            max_key_size: 4 << 10,
            max_value_size: 8 << 20,
            max_frame_size: 256 << 20,
            max_inbound_buffer_bytes: 512 << 20,
            conn_idle_timeout_ms: 600_000,
            frame_stall_timeout_ms: 30_000,
            dedup_session_ttl_ms: 10 * 60 * 1000,
            peer_inbox_capacity: 4096,
            log_writer_queue: 4096,
            log_writer_max_batch_bytes: 4 << 20,
            log_group_wait_us: 200,
            region_heartbeat_interval_ms: 10_000,
            store_heartbeat_interval_ms: 1_000,
            lease_ms: 400,
            max_clock_drift_ms: 50,
            ryw_wait_ms: 50,
            region_split_size: 96 << 20,
            region_split_keys: 960_000,
            split_check_interval_ms: 10_000,
            split_check_diff_bytes: 8 << 20,
            split_check_threads: 1,
            raft_threads: 1,
            split_check_queue: 1024,
            pd_report_queue: 4096,
            new_region_queue: 1024,
            hibernate_after_ms: 500,
            hibernated_tick_interval_ms: 5_000,
            pd_register_timeout_ms: 60_000,
        }
    }
}

impl StoreConfig {
    /// Rejects configurations that would break raft or the bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.tick_interval_ms == 0 {
            return Err("tick_interval_ms must be > 0".into());
        }
        if self.max_election_ticks != 0 && self.max_election_ticks <= self.election_ticks {
            return Err(format!(
                "max_election_ticks ({}) must be 0 or above election_ticks ({})",
                self.max_election_ticks, self.election_ticks
            ));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(format!(
                "election_ticks ({}) must exceed heartbeat_ticks ({}) > 0",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        if self.leader_wait_ms >= self.proposal_timeout_ms {
            return Err(format!(
                "leader_wait_ms ({}) must be below proposal_timeout_ms ({})",
                self.leader_wait_ms, self.proposal_timeout_ms
            ));
        }
        if self.max_inflight_msgs == 0 || self.max_inflight_proposals == 0 {
            return Err("in-flight bounds must be > 0".into());
        }
        if self.raft_log_gc_count_limit < 2 {
            return Err("raft_log_gc_count_limit must be >= 2".into());
        }
        if self.max_key_size == 0 || self.max_value_size == 0 {
            return Err("key and value size limits must be > 0".into());
        }
        if self.max_frame_size < self.max_value_size + self.max_key_size + 1024 {
            return Err("max_frame_size must hold the largest key + value".into());
        }
        if self.peer_inbox_capacity == 0 {
            return Err("peer_inbox_capacity must be > 0".into());
        }
        self.inbound_limits().validate()?;
        if self.log_writer_queue == 0 || self.log_writer_max_batch_bytes == 0 {
            return Err("LogWriter bounds must be > 0".into());
        }
        if self.log_group_wait_us > 100_000 {
            return Err("log_group_wait_us must be at most 100,000 (100 ms)".into());
        }
        if self.region_split_size == 0 || self.region_split_keys < 2 {
            return Err("region_split_size must be > 0 and region_split_keys >= 2".into());
        }
        if self.hibernated_tick_interval_ms < self.tick_interval_ms {
            return Err("hibernated_tick_interval_ms must be at least tick_interval_ms".into());
        }
        if self.split_check_interval_ms < self.tick_interval_ms {
            return Err("split_check_interval_ms must be at least one tick".into());
        }
        if self.split_check_threads == 0 || self.split_check_threads > 64 {
            return Err(format!(
                "split_check_threads ({}) must be in 1..=64",
                self.split_check_threads
            ));
        }
        if self.raft_threads == 0 || self.raft_threads > 256 {
            return Err(format!(
                "raft_threads ({}) must be in 1..=256",
                self.raft_threads
            ));
        }
        if self.split_check_queue == 0 || self.pd_report_queue == 0 || self.new_region_queue == 0 {
            return Err(
                "split_check_queue, pd_report_queue and new_region_queue must be > 0".into(),
            );
        }
        if self.pd_register_timeout_ms == 0 {
            return Err("pd_register_timeout_ms must be > 0 (one attempt needs time)".into());
        }
        check_lease(
            self.lease_ms,
            self.max_clock_drift_ms,
            self.min_election_timeout_ms(),
        )
    }

    /// The shortest real time in which a follower that heard from the leader can vote for
    /// another candidate: raft-rs refuses votes until `election_ticks` ticks passed since
    /// the leader's last message, and the first of them may come right after it.
    pub fn min_election_timeout_ms(&self) -> u64 {
        (self.election_ticks as u64).saturating_sub(1) * self.tick_interval_ms
    }

    /// What the store's server reads from a connection, and for how long it waits.
    pub fn inbound_limits(&self) -> InboundLimits {
        InboundLimits {
            max_frame: self.max_frame_size,
            max_buffered: self.max_inbound_buffer_bytes,
            idle_timeout: Duration::from_millis(self.conn_idle_timeout_ms),
            stall_timeout: Duration::from_millis(self.frame_stall_timeout_ms),
        }
    }

    /// The leader lease (zero: off).
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// The tick period.
    pub fn tick_interval(&self) -> Duration {
        Duration::from_millis(self.tick_interval_ms)
    }

    /// How long a starting store tries to register with PD.
    pub fn pd_register_timeout(&self) -> Duration {
        Duration::from_millis(self.pd_register_timeout_ms)
    }
}

/// Checks a lease configuration: safe iff `lease + drift <= min_election_timeout`, i.e.
/// the lease ends before any follower that acknowledged it can vote for a new leader, even
/// when its clock runs faster by `drift`. A lease of 0 (off) is always safe.
pub fn check_lease(
    lease_ms: u64,
    drift_ms: u64,
    min_election_timeout_ms: u64,
) -> Result<(), String> {
    if lease_ms == 0 {
        return Ok(());
    }
    if lease_ms + drift_ms > min_election_timeout_ms {
        return Err(format!(
            "unsafe lease: lease {lease_ms} ms + clock drift {drift_ms} ms exceeds the \
             {min_election_timeout_ms} ms before a follower may vote for a new leader; a \
             deposed leader could serve stale reads (see docs/CLOCKS.md)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_combinations_are_rejected() {
        StoreConfig::default().validate().unwrap();
        let bad = StoreConfig {
            election_ticks: 2,
            heartbeat_ticks: 2,
            ..StoreConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = StoreConfig {
            max_frame_size: 1024,
            ..StoreConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = StoreConfig {
            max_inbound_buffer_bytes: 1 << 20,
            ..StoreConfig::default()
        };
        assert!(bad.validate().is_err(), "a budget below one frame");
        let bad = StoreConfig {
            frame_stall_timeout_ms: 0,
            ..StoreConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = StoreConfig {
            pd_register_timeout_ms: 0,
            ..StoreConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("pd_register_timeout_ms"));
    }

    #[test]
    fn every_queue_and_pool_is_bounded_and_not_empty() {
        for bad in [
            StoreConfig {
                split_check_threads: 0,
                ..StoreConfig::default()
            },
            StoreConfig {
                split_check_threads: 65,
                ..StoreConfig::default()
            },
            StoreConfig {
                raft_threads: 0,
                ..StoreConfig::default()
            },
            StoreConfig {
                raft_threads: 257,
                ..StoreConfig::default()
            },
            StoreConfig {
                split_check_queue: 0,
                ..StoreConfig::default()
            },
            StoreConfig {
                pd_report_queue: 0,
                ..StoreConfig::default()
            },
            StoreConfig {
                new_region_queue: 0,
                ..StoreConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unsafe_leases_are_rejected() {
        let cfg = StoreConfig::default();
        assert_eq!(cfg.min_election_timeout_ms(), 450);
        // 400 + 50 fits in 450; one more ms of lease or drift does not.
        check_lease(400, 50, 450).unwrap();
        assert!(check_lease(401, 50, 450).is_err());
        assert!(check_lease(400, 51, 450).is_err());
        check_lease(0, 10_000, 450).unwrap();
        let bad = StoreConfig {
            max_clock_drift_ms: 200,
            ..StoreConfig::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("unsafe lease"), "{err}");
        let shorter_election = StoreConfig {
            election_ticks: 5,
            ..StoreConfig::default()
        };
        assert!(shorter_election.validate().is_err());
    }
}
