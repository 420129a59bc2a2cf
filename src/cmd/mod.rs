//! Subcommands.

pub mod bench;
pub mod bench_contention;
pub mod bench_txn;
pub mod cluster;
pub mod demo;
pub mod demo_txn;
pub mod kv;
pub mod regions;
pub mod sim;
pub mod txn;
