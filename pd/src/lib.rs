//! Regatta's placement driver (PD): the cluster's directory. It keeps the store registry,
//! the region map (key range -> region, its epoch, peers and last known leader, learned
//! from region heartbeats), hands out unique ids, and runs the timestamp oracle ([`tso`]).
//!
//! Layering: depends on `regatta-proto` only. Stores and clients reach it over TCP with the
//! same length-prefixed frames as store traffic ([`start`] serves them); inside the process
//! it is an actix actor ([`PdActor`]) around a pure state machine ([`PdState`]).
//!
//! Invariants:
//! - an id is handed out at most once, across PD restarts: the allocator's high-water mark
//!   is persisted *before* any id below it is returned;
//! - a region's entry never goes back to an older epoch (a heartbeat with an older
//!   `(version, conf_ver)` is ignored);
//! - timestamps strictly increase, across PD restarts too: the oracle's high-water time is
//!   persisted before any timestamp at or above it is returned;
//! - the GC safe point never moves backwards, across restarts too: it is persisted before
//!   it is handed out; and it stays below every transaction lock a region reported
//!   ([`gc`]);
//! - the cluster is bootstrapped once: the first regions are created when the configured
//!   number of stores have registered, persisted, and handed to those stores thereafter.
//!
//! ```no_run
//! # async fn run() -> Result<(), regatta_pd::Error> {
//! let logger = slog::Logger::root(slog::Discard, slog::o!());
//! let config = regatta_pd::PdConfig::new(3, 4, "/tmp/regatta-pd".into());
//! let pd = regatta_pd::start(config, "127.0.0.1:2379", logger).await?;
//! println!("PD listening on {}", pd.addr);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod actor;
mod data_dir;
pub mod deadlock;
mod error;
pub mod gc;
mod server;
mod state;
pub mod tso;

pub use actor::{PdActor, PdCall};
pub use error::Error;
pub use server::{start, PdHandle};
pub use state::{static_split_keys, PdConfig, PdState, PD_MAX_FRAME};
