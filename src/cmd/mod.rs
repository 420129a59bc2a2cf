//! Subcommands.

pub mod cluster;
pub mod kv;
