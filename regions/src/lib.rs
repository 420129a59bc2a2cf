//! Regatta's raftstore: a [`Store`] hosts many region replicas, each a raft-rs `RawNode`
//! inside an actix actor ([`PeerActor`]); all of them persist through one RocksDB via the
//! store's [`LogWriter`] (one synced batch for every region's raft writes: group commit).
//!
//! Layering: depends on `regatta-engine` (storage), `regatta-txn` (Percolator actions,
//! run at apply) and `regatta-proto` (wire); PD is
//! reached through the [`pd::PdClient`] seam; nothing here is visible to clients except through the
//! wire protocol.
//!
//! Invariants:
//! - a client write is acknowledged only after its entry is committed and applied;
//! - `(client_id, seq)` sessions live in the replicated state, so a retried write is
//!   applied at most once, across leader changes, restarts and snapshots;
//! - reads on the leader are linearizable (ReadIndex, or through the log);
//! - a failed sync poisons the store: it refuses writes and never retries the sync.
#![deny(missing_docs)]

pub mod apply;
mod clock;
mod config;
mod detector;
mod error;
mod gc_worker;
mod local_reader;
mod log_writer;
mod metrics;
pub mod pd;
mod peer;
mod request;
mod router;
mod server;
mod split_check;
mod store;
mod transport;
mod ts_limit;
mod txn_cmd;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{check_lease, StoreConfig};
pub use detector::Detector;
pub use error::{Error, Result};
pub use local_reader::{ReadDelegate, ReadRegistry};
pub use log_writer::{LogWriter, Persisted, PersistedSink, WriteTask};
pub use metrics::{MetricsSnapshot, StoreMetrics};
pub use pd::{BoxFuture, MemPd, PdClient, PdError, TsoSource};
pub use peer::{
    Campaign, CompactLog, Fence, GetStatus, Inbox, InboxFull, KvCommand, NewRegion, Peer,
    PeerActor, PeerContext, PeerMailbox, RaftMessageIn, RegionStatus, Responder, Seed, SplitStep,
};
pub use router::Router;
pub use store::{Store, StoreOptions, TransportLayer};
pub use transport::{TcpTransport, Transport};
pub use ts_limit::TsLimit;
