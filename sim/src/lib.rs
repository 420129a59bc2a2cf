//! Regatta's deterministic simulator. Real region replicas (the raftstore's [`Peer`]s, as
//! in a store) run on one thread against a manual clock; a scheduler seeded by one number
//! decides everything else: which message is delivered next (so messages are delayed and
//! reordered), which is dropped or duplicated, when each store's log write completes or
//! fails, when a store crashes (losing the writes not yet durable) and restarts, when the
//! network partitions and heals, and when each client sends its next operation. A run is
//! a function of its seed: the same seed gives the same trace and the same trace hash.
//!
//! Workloads check what must hold with [`check`]: the linearizable KV workload records a
//! history of puts and reads and checks it is linearizable.
//!
//! ```no_run
//! let report = regatta_sim::run(&regatta_sim::SimConfig::with_seed(7));
//! assert!(report.result.is_ok(), "seed 7: {:?}", report.result);
//! println!("trace hash {:016x}", report.trace_hash);
//! ```
//!
//! [`Peer`]: regatta_raftstore::Peer
#![deny(missing_docs)]

pub mod check;
mod world;

pub use world::{run, shrink, SimConfig, SimReport};

#[cfg(test)]
mod tests;
