//! The Regatta client: a Rust library that talks to a Regatta cluster over TCP.
//!
//! A [`Client`] finds the region holding a key through PD (and caches it), sends the
//! request to that region's leader, follows `NotLeader` hints, refreshes its cache on
//! `EpochNotMatch` / `KeyNotInRegion` / `RegionNotFound`, and retries retryable errors with
//! exponential backoff until the operation's deadline. Every write carries an at-most-once
//! session `(client_id, seq)`: a write retried after a lost answer is applied once, and the
//! retry receives the original answer.
//!
//! Layering: depends on `regatta-proto` and tokio only (no actix), so any async Rust
//! application can link it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), regatta_client::Error> {
//! use regatta_client::Client;
//! let client = Client::connect(&["127.0.0.1:2379"]).await?;
//! client.put(b"greeting", b"hello").await?;
//! assert_eq!(client.get(b"greeting").await?, Some(b"hello".to_vec()));
//! let swapped = client.cas(b"greeting", Some(b"hello"), b"bonjour").await?;
//! assert!(swapped.succeeded);
//! // Batches span regions: one request per region, the regions in parallel.
//! client.batch_put(&[(b"a".to_vec(), b"1".to_vec()), (b"z".to_vec(), b"2".to_vec())]).await?;
//! let values = client.batch_get(&[b"a".to_vec(), b"missing".to_vec()]).await?;
//! assert_eq!(values, vec![Some(b"1".to_vec()), None]);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod client;
mod config;
mod error;
mod pd;
mod region_cache;
mod session;

pub use client::{CasOutcome, Client, KvPair, ReadConsistency, ReadOutcome};
pub use config::Config;
pub use error::Error;
pub use pd::PdClient;
