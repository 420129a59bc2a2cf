//! Regatta's deterministic simulator. Real region replicas (the raftstore's [`Peer`]s, as
//! in a store) run on one thread against a manual clock; a scheduler seeded by one number
//! decides everything else: which message is delivered next (so messages are delayed and
//! reordered), which is dropped or duplicated, when each store's log write completes or
//! fails, when a store crashes (losing the writes not yet durable) and restarts, when the
//! network partitions and heals, and when each client sends its next operation. A run is
//! a function of its seed: the same seed gives the same trace and the same trace hash.
//!
//! Each store runs a real raftstore replica of every region (static key ranges, two by
//! default) with the real transactional layer behind its seam;
//! PD is in memory with a timestamp oracle on the manual clock, and the work replicas do
//! off their turn (a TSO fetch after an election, notes to themselves) is queued for the
//! scheduler. Messages draw a delay when sent (mostly none, now and then longer than an
//! election timeout); log writes complete in group commits of random size.
//!
//! Two workloads ([`Workload`]), checked with [`check`]: the linearizable KV workload
//! records a history of puts and reads and checks it is linearizable; the bank moves money
//! between accounts in Percolator transactions (1PC within a region, 2PC and async commit
//! within and across regions, resolving the locks of clients that gave up), audits the total, and
//! checks the history for snapshot isolation.
//!
//! ```no_run
//! let report = regatta_sim::run(&regatta_sim::SimConfig::with_seed(7));
//! assert!(report.result.is_ok(), "seed 7: {:?}", report.result);
//! println!("trace hash {:016x}", report.trace_hash);
//! ```
//!
//! [`Peer`]: regatta_raftstore::Peer
#![deny(missing_docs)]

mod bank;
pub mod check;
mod config;
mod faults;
mod kv;
mod layer;
mod world;

pub use config::{SimConfig, SimReport, Workload};
pub use world::{run, shrink};

#[cfg(test)]
mod tests;
