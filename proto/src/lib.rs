//! Regatta's wire types and the frame codec.
//!
//! This crate owns every byte that crosses a process boundary or lands on disk as a
//! protobuf: cluster metadata (`metapb`), client requests and typed errors (`kvrpcpb`),
//! raft traffic, the replicated command format and persisted states (`raft_serverpb`),
//! placement-driver calls (`pdpb`) and the TCP envelope (`framepb`). It is compiled with
//! rust-protobuf 2 by its pure-Rust codegen (no `protoc`), the codec raft-rs 0.7 uses, so
//! raft's own `eraftpb` messages travel inside ours as bytes: the crates that decode them
//! (engine, regions, the binary) take `raft::eraftpb` from raft-rs themselves.
//!
//! It depends on no other workspace crate and not on raft-rs, so the client links the wire
//! types without raft; it uses tokio only for the RPC connection (`rpc`: TCP, timeouts,
//! tasks). Frames are bounded ([`frame::MAX_FRAME_LEN`]): a length prefix above the bound
//! is rejected before any allocation.
#![deny(missing_docs)]

macro_rules! generated {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {
        $(
            #[$doc]
            #[allow(missing_docs, clippy::all, clippy::pedantic, non_camel_case_types,
                    non_snake_case, non_upper_case_globals, unused_imports, unused_results,
                    unknown_lints, renamed_and_removed_lints, dead_code, unused_parens,
                    deprecated, elided_lifetimes_in_paths, mismatched_lifetime_syntaxes)]
            pub mod $name {
                include!(concat!(env!("OUT_DIR"), "/", stringify!($name), ".rs"));
            }
        )*
    };
}

generated! {
    /// Cluster metadata: stores, regions, peers, epochs.
    metapb,
    /// Transactional (Percolator) commands, answers and key errors.
    txnpb,
    /// Client requests, responses and typed errors.
    kvrpcpb,
    /// Raft traffic, the replicated command format and persisted raft states.
    raft_serverpb,
    /// Placement-driver requests and responses.
    pdpb,
    /// The envelope of every TCP frame.
    framepb,
}

pub mod frame;
pub mod region;
pub mod rpc;
pub mod ts;

/// Most keys one batch request (batch get, batch put, a transactional command) carries:
/// stores refuse more as an invalid argument, and the client cuts bigger batches.
pub const MAX_BATCH_KEYS: usize = 10_000;

/// The protobuf runtime, so dependants encode with the same version.
pub use protobuf;
