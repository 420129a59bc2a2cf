//! Errors of the raftstore and their one mapping to the wire error.

use regatta_proto::kvrpcpb;
use regatta_proto::metapb::{Peer, Region};
use std::sync::Arc;

/// What went wrong serving a request or running a store. Variants are what a caller acts
/// on: retry elsewhere, refresh routing, back off, or give up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// This replica is not the leader; `leader` is the hint if one is known.
    #[error("region {region_id}: not leader (leader hint {leader:?})")]
    NotLeader {
        /// The region.
        region_id: u64,
        /// The leader, if known.
        leader: Option<Peer>,
    },
    /// The request's epoch is stale; these are the regions now.
    #[error("region epoch does not match ({} current regions)", current_regions.len())]
    EpochNotMatch {
        /// The current region(s).
        current_regions: Vec<Region>,
    },
    /// The key is outside the region's range.
    #[error("key {key:?} not in region {region_id}")]
    KeyNotInRegion {
        /// The key.
        key: Vec<u8>,
        /// The region.
        region_id: u64,
        /// Its start.
        start_key: Vec<u8>,
        /// Its end (empty = unbounded).
        end_key: Vec<u8>,
    },
    /// No replica of this region on this store.
    #[error("region {0} not found on this store")]
    RegionNotFound(u64),
    /// Too much in flight; back off.
    #[error("server is busy: {0}")]
    ServerIsBusy(String),
    /// Not served in time; the outcome of a write is unknown.
    #[error("{0} timed out")]
    Timeout(String),
    /// The proposal was dropped or replaced in the log; it did not take effect.
    #[error("stale command")]
    StaleCommand,
    /// A retried sequence number older than the session's newest.
    #[error("client {client_id}: seq {seq} older than {latest_seq}")]
    StaleSequence {
        /// The session.
        client_id: u64,
        /// The request's seq.
        seq: u64,
        /// The session's newest seq.
        latest_seq: u64,
    },
    /// The request is malformed or over a limit.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The layer above the raftstore (see `coprocessor`) refused a command with an answer
    /// of its own (for a transactional command: a `key_error`).
    #[error("{reason}")]
    Refused {
        /// Why, for logs and for callers that want the wire error instead.
        reason: String,
        /// The answer.
        response: Box<kvrpcpb::KvResponse>,
    },
    /// The store stopped accepting writes after a storage failure.
    #[error("store poisoned: {0}")]
    StorePoisoned(String),
    /// The storage engine failed (RocksDB I/O, a corrupt record): its typed error.
    #[error("storage: {0}")]
    Engine(Arc<regatta_engine::Error>),
    /// A region's state contradicts itself or this store (raft refuses to start it, it
    /// has no peer here): corruption or a bug; the replica is not started.
    #[error("region {region_id}: {detail}")]
    RegionState {
        /// The region.
        region_id: u64,
        /// What is wrong.
        detail: String,
    },
    /// An I/O failure outside the engine (the data directory, a socket).
    #[error("{op}: {source}")]
    Io {
        /// What was being done, with the path or address.
        op: String,
        /// The operating system's error.
        source: Arc<std::io::Error>,
    },
    /// PD did not take a request in time (e.g. registering a store at start): check that
    /// PD runs and that the address given for it is right.
    #[error("PD unavailable: {operation} failed {attempts} times in {waited_ms} ms; last error: {last_error}")]
    PdUnavailable {
        /// What was asked of PD, with the ids involved.
        operation: String,
        /// How long it was tried.
        waited_ms: u64,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last_error: String,
    },
    /// PD answered a request and refused it (e.g. registering a store whose id or address
    /// it will not take): repeating it would be refused again; check the store's id and
    /// address.
    #[error("PD refused {operation}: {reason}")]
    PdRefused {
        /// What was asked of PD, with the ids involved.
        operation: String,
        /// PD's answer.
        reason: String,
    },
}

impl From<regatta_engine::Error> for Error {
    fn from(e: regatta_engine::Error) -> Self {
        Error::Engine(Arc::new(e))
    }
}

impl Error {
    /// `key` is not in `region`'s range.
    pub fn key_not_in_region(region: &regatta_proto::metapb::Region, key: &[u8]) -> Error {
        Error::KeyNotInRegion {
            key: key.to_vec(),
            region_id: region.get_id(),
            start_key: region.get_start_key().to_vec(),
            end_key: region.get_end_key().to_vec(),
        }
    }

    /// An I/O error while doing `op` (name the path or address in it).
    pub fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let op = op.into();
        move |source| Error::Io {
            op,
            source: Arc::new(source),
        }
    }
}

impl Error {
    /// The wire form of this error.
    pub fn to_pb(&self) -> kvrpcpb::Error {
        let mut pb = kvrpcpb::Error::new();
        pb.set_message(self.to_string());
        match self {
            Error::NotLeader { region_id, leader } => {
                let mut nl = kvrpcpb::NotLeader::new();
                nl.set_region_id(*region_id);
                if let Some(l) = leader {
                    nl.set_leader(l.clone());
                }
                pb.set_not_leader(nl);
            }
            Error::EpochNotMatch { current_regions } => {
                let mut e = kvrpcpb::EpochNotMatch::new();
                e.set_current_regions(current_regions.clone().into());
                pb.set_epoch_not_match(e);
            }
            Error::KeyNotInRegion {
                key,
                region_id,
                start_key,
                end_key,
            } => {
                let mut e = kvrpcpb::KeyNotInRegion::new();
                e.set_key(key.clone());
                e.set_region_id(*region_id);
                e.set_start_key(start_key.clone());
                e.set_end_key(end_key.clone());
                pb.set_key_not_in_region(e);
            }
            Error::RegionNotFound(id) => {
                let mut e = kvrpcpb::RegionNotFound::new();
                e.set_region_id(*id);
                pb.set_region_not_found(e);
            }
            Error::ServerIsBusy(reason) => {
                let mut e = kvrpcpb::ServerIsBusy::new();
                e.set_reason(reason.clone());
                pb.set_server_is_busy(e);
            }
            Error::Timeout(op) => {
                let mut e = kvrpcpb::Timeout::new();
                e.set_operation(op.clone());
                pb.set_timeout(e);
            }
            Error::StaleCommand => pb.set_stale_command(kvrpcpb::StaleCommand::new()),
            Error::StaleSequence {
                client_id,
                seq,
                latest_seq,
            } => {
                let mut e = kvrpcpb::StaleSequence::new();
                e.set_client_id(*client_id);
                e.set_seq(*seq);
                e.set_latest_seq(*latest_seq);
                pb.set_stale_sequence(e);
            }
            Error::InvalidArgument(reason) | Error::Refused { reason, .. } => {
                let mut e = kvrpcpb::InvalidArgument::new();
                e.set_reason(reason.clone());
                pb.set_invalid_argument(e);
            }
            Error::PdUnavailable { .. } | Error::PdRefused { .. } => {
                // Only a store's start meets it; a caller elsewhere backs off and retries.
                let mut e = kvrpcpb::ServerIsBusy::new();
                e.set_reason(self.to_string());
                pb.set_server_is_busy(e);
            }
            Error::StorePoisoned(reason) => {
                let mut e = kvrpcpb::StorePoisoned::new();
                e.set_reason(reason.clone());
                pb.set_store_poisoned(e);
            }
            Error::Engine(_) | Error::RegionState { .. } | Error::Io { .. } => {
                // Not a poisoned store: this request failed on this store's storage; the
                // store still takes writes unless a sync failed (then it says
                // StorePoisoned).
                let mut e = kvrpcpb::StorageError::new();
                e.set_reason(self.to_string());
                pb.set_storage_error(e);
            }
        }
        pb
    }

    /// A response carrying this error.
    pub fn into_response(self) -> kvrpcpb::KvResponse {
        let mut resp = kvrpcpb::KvResponse::new();
        if let Error::Refused { response, .. } = self {
            return *response;
        }
        resp.set_error(self.to_pb());
        resp
    }
}

/// Result alias of the raftstore.
pub type Result<T> = std::result::Result<T, Error>;
