//! The integration tests of the `regatta` crate, one binary (each test binary links
//! RocksDB, so one binary links it once). Each module is one topic and opens with its goal
//! and method; `common` is the harness they share: the in-process [`common::Cluster`], the
//! `regatta maelstrom` node harness, real processes, the linearizability and snapshot
//! isolation checkers, and [`common::machine`], the claim that lets a test that needs the
//! machine to itself run alone.
//!
//! Run one topic with `cargo test --release --test integration TOPIC::`, e.g.
//! `cargo test --release --test integration txn_cluster::`.

mod common;

mod atomic_batch;
mod cli_values;
mod cluster_faults;
mod cluster_kv;
mod disk_failure;
mod hibernation;
mod hostile_frames;
mod linearizability_checker;
mod maelstrom;
mod maelstrom_hostile;
mod maelstrom_published;
mod maelstrom_txn;
mod nemesis;
mod occ;
mod process_crash;
mod read_strategies;
mod region_split;
mod store_lifecycle;
mod txn_cli;
mod txn_cluster;
mod txn_gc;
mod txn_lock_wait;
mod txn_store;
