//! Subcommands.

pub mod bench;
pub mod cluster;
pub mod kv;
pub mod regions;
