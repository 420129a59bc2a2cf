//! The Regatta client: a Rust library that talks to a Regatta cluster over TCP (or over
//! any other [`Wire`]: the JSON-lines node runs it over its harness's lines).
//!
//! A [`Client`] finds the region holding a key through PD (and caches it), sends the
//! request to that region's leader, follows `NotLeader` hints, refreshes its cache on
//! `EpochNotMatch` / `KeyNotInRegion` / `RegionNotFound`, and retries retryable errors with
//! exponential backoff until the operation's deadline. Every write carries an at-most-once
//! session `(client_id, seq)`: a write retried after a lost answer is applied once, and the
//! retry receives the original answer.
//!
//! A read returns each value with its version ([`Versioned`]): the log index of the last
//! write to the key in its region.
//!
//! Layering: depends on `regatta-proto`'s client-facing wire types and tokio only (its
//! `rt`, `sync` and `time` features; no actix, no raft-rs, no `protoc`), so any async Rust
//! application can link it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), regatta_client::Error> {
//! use regatta_client::Client;
//! let client = Client::connect(&["127.0.0.1:2379"]).await?;
//! let index = client.put(b"greeting", b"hello").await?;
//! let got = client.get(b"greeting").await?.expect("just written");
//! assert_eq!(got.value, b"hello");
//! assert_eq!(got.version, index);
//! let swapped = client.cas(b"greeting", Some(b"hello"), b"bonjour").await?;
//! assert!(swapped.succeeded);
//! // Batches span regions: one request per region, the regions in parallel.
//! client.batch_put(&[(b"a".to_vec(), b"1".to_vec()), (b"z".to_vec(), b"2".to_vec())]).await?;
//! let values = client.batch_get(&[b"a".to_vec(), b"missing".to_vec()]).await?;
//! assert_eq!(values[0].as_ref().map(|v| v.value.as_slice()), Some(&b"1"[..]));
//! assert_eq!(values[1], None);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod client;
mod config;
mod error;
mod pd;
mod read;
mod region_cache;
mod retry;
mod session;
mod txn;
mod wire;

pub use client::{CasOutcome, Client};
pub use config::Config;
pub use error::{Error, PdError};
pub use pd::PdClient;
pub use read::{KvPair, ReadConsistency, ReadOutcome, Versioned};
pub use txn::{
    AtomicOp, AtomicOutcome, LocksResolved, OccOutcome, OccTxn, Snapshot, Transaction, TxnBody,
    TxnClient, TxnMode, TxnOptions,
};
pub use wire::{TcpWire, Wire, WireError, WireFuture};
