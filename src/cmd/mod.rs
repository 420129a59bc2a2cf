//! Subcommands.

pub mod bench;
pub mod cluster;
pub mod demo;
pub mod demo_txn;
pub mod kv;
pub mod regions;
pub mod txn;
