//! Regatta's store server: a [`Store`] wires the raftstore (`regatta-raftstore`: region
//! replicas, apply, the LogWriter) and the transactional layer (`regatta-txnstore`,
//! plugged into the raftstore's coprocessor seam), serves the RPC protocol, sends raft
//! messages over TCP ([`TcpTransport`]) and talks to PD (heartbeats, bootstrap, the TSO
//! loop that keeps the timestamp limit fresh).
//!
//! The raftstore's and the transactional layer's public faces are re-exported here, so an
//! application or a test names one crate.
#![deny(missing_docs)]

mod raft_threads;
mod register;
mod server;
mod store;
mod transport;

pub use regatta_engine::EngineConfig;
pub use regatta_raftstore::{
    apply, check_lease, coprocessor, pd, BoxFuture, Campaign, Clock, CompactLog, Error, Fence,
    GetStatus, Inbox, InboxFull, KvCommand, LogWriter, ManualClock, MemPd, MetricsSnapshot,
    NewRegion, PdClient, PdError, Peer, PeerActor, PeerContext, PeerMailbox, Persisted,
    PersistedSink, RaftMessageIn, ReadDelegate, ReadRegistry, RegionStatus, Responder, Result,
    Router, Seed, SplitStep, StoreConfig, StoreMetrics, SystemClock, TransferLeader, Transport,
    TsoSource, WriteTask,
};
pub use regatta_txnstore::{
    Detector, TsLimit, TxnConfig, TxnCoprocessor, TxnObserver, GC_COLLECTED_SAFE_POINT,
    GC_SAFE_POINT, IN_MEMORY_LOCKS, LOCK_WAITERS, PD_GC_SAFE_POINT,
};
pub use store::{Store, StoreOptions, TransportLayer};
pub use transport::TcpTransport;
