//! Regatta's raftstore: region replicas, each a raft-rs `RawNode` inside an actix actor
//! ([`PeerActor`] around a [`Peer`]); all of them persist through one RocksDB via the
//! store's [`LogWriter`] (one synced batch for every region's raft writes: group commit).
//! Apply, splits, hibernation, the leader lease and local reads live here.
//!
//! It knows no transaction. A layer above plugs in through one seam, [`coprocessor`]: a
//! store-wide [`coprocessor::Coprocessor`] (claims, validates, reads and applies its own
//! commands) and a per-replica [`coprocessor::RegionObserver`] (called when a request
//! arrives, an entry is proposed or applied, the role changes, the clock ticks). Regatta's
//! transactional layer is that layer (a crate of its own); the server crate wires both.
//!
//! Layering: depends on `regatta-engine` (storage) and `regatta-proto` (wire); PD is
//! reached through the [`pd::PdClient`] seam, other stores through [`Transport`].
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
pub mod coprocessor;
mod error;
mod local_reader;
mod log_writer;
mod metrics;
pub mod pd;
mod peer;
mod request;
mod router;
mod split_check;
mod transport;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{check_lease, StoreConfig};
pub use error::{Error, Result};
pub use local_reader::{ReadDelegate, ReadRegistry};
pub use log_writer::{GroupLimits, GroupWait, LogWriter, Persisted, PersistedSink, WriteTask};
pub use metrics::{MetricsSnapshot, StageCounters, StoreMetrics, WriteStages};
pub use pd::{BoxFuture, DetectSource, MemPd, PdClient, PdError, TsoSource};
pub use peer::{
    Campaign, CheckSplitSoon, CompactLog, Effect, Fence, GetStatus, Inbox, InboxFull, KvCommand,
    NewRegion, Peer, PeerActor, PeerContext, PeerMailbox, RaftMessageIn, RegionStatus, Responder,
    Seed, ShellContext, SplitCheckTask, SplitStep, TransferLeader,
};
pub use regatta_proto::MAX_BATCH_KEYS;
pub use request::with_checks;
pub use router::Router;
pub use split_check::{SplitCheckJob, SplitChecker};
pub use transport::Transport;
