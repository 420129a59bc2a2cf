//! What a run does ([`SimConfig`], [`Workload`]) and what it found ([`SimReport`]).

use std::time::Duration;

/// What one run does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed: the run is a function of it (and of the rest of this config).
    pub seed: u64,
    /// Stores, each with a replica of every region (3).
    pub stores: usize,
    /// Regions the workload's keys are cut into, in key order (2: a transfer between
    /// accounts of two regions is prewritten and committed region by region, with
    /// async commit across them); at most one per key.
    pub regions: usize,
    /// Concurrent clients (3).
    pub clients: usize,
    /// Operations each client runs (12).
    pub ops_per_client: usize,
    /// What the clients run.
    pub workload: Workload,
    /// Keys the operations spread over: the KV workload's keys (2: contention makes a
    /// history worth checking), the bank's accounts (4).
    pub keys: usize,
    /// Crashes, restarts, partitions, failed writes (on by default); without them only
    /// delays, reorders, drops and duplicates.
    pub faults: bool,
    /// Scheduler steps at most (a run that has not finished by then stops; operations
    /// still pending count as of unknown outcome).
    pub max_steps: u64,
}

impl SimConfig {
    /// The default run of `seed`.
    pub fn with_seed(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            stores: 3,
            regions: 2,
            clients: 3,
            ops_per_client: 12,
            workload: Workload::Kv,
            keys: 2,
            faults: true,
            max_steps: 60_000,
        }
    }

    /// The default bank run of `seed`: 4 accounts, 3 clients of 8 transactions or audits.
    pub fn bank(seed: u64) -> SimConfig {
        SimConfig {
            workload: Workload::Bank,
            keys: 4,
            ops_per_client: 8,
            max_steps: 120_000,
            ..SimConfig::with_seed(seed)
        }
    }
}

/// The simulated clients' workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Puts and reads of a few keys; the history must be linearizable.
    Kv,
    /// Transfers between accounts in Percolator transactions, and audits; the history
    /// must be snapshot-isolated and every audit must see the bank's total.
    Bank,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The run's seed.
    pub seed: u64,
    /// Scheduler steps taken.
    pub steps: u64,
    /// A hash of every decision and every message delivered: equal for equal runs.
    pub trace_hash: u64,
    /// Operations invoked.
    pub ops: usize,
    /// Operations that returned a definite answer.
    pub completed: usize,
    /// Simulated time the run covered.
    pub simulated: Duration,
    /// `Err` names the violated property (the checker's finding).
    pub result: Result<(), String>,
    /// The last decisions, oldest first.
    pub trace: Vec<String>,
    /// Faults injected: crashes, failed writes, partitions.
    pub faults: usize,
    /// Writes that took effect and were acknowledged: puts (KV), committed transfers
    /// (bank).
    pub committed: usize,
    /// Bank transfers that asked for async commit and committed with their two accounts
    /// in two regions.
    pub cross_region_async_commits: usize,
    /// Async-commit locks whose fate a bank client decided from secondaries in another
    /// region than the primary (`check_secondary_locks`).
    pub cross_region_secondary_checks: usize,
    /// Pessimistic lock requests of bank transfers answered `deadlock` (PD's waits-for
    /// graph refused their wait).
    pub deadlocks: usize,
}
