//! One region replica: [`Peer`], a plain state machine around raft-rs's `RawNode`, inside
//! [`PeerActor`], a thin actix shell that never blocks.
//!
//! The peer is cut by concern, one file each (TiKV's raftstore peer and openraft's
//! engine/core split are the models):
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | the replica's state, construction, status, validation, read-state publishing |
//! | `ready.rs` | driving raft: propose, drain `Ready`, persist, apply, answer |
//! | `batch.rs` | the turn's commands not yet proposed, as data |
//! | `messages.rs` | raft traffic in (guards) and out (envelope, freshness numbers) |
//! | `requests.rs` | client requests: writes, log reads, lease and ReadIndex reads |
//! | `read_index.rs` | the ReadIndex queue, as data |
//! | `lease.rs` | the leader lease, as data |
//! | `freshness.rs` | follower safe time, as data; follower and read-your-writes reads |
//! | `split.rs` | split check, ids, proposal and apply; the split's progress as one enum |
//! | `hibernate.rs` | the raft clock's pace, as data; hibernate and wake |
//! | `leader_wait.rs` | requests held while no leader is known, as data |
//! | `observe.rs` | the replica's observer (the layer above, see [`crate::coprocessor`]) called with a view of the replica |
//! | `tick.rs` | the raft clock and periodic work: deadlines, compaction, PD reports |
//! | `admin.rs` | seeding, compaction on request, campaign and leader transfer |
//! | `fence.rs` | stopping a replica that can no longer write |
//! | `actor.rs` | the actix shell and its messages (the only file that knows actix) |
//!
//! Time is read only through the store's [`crate::Clock`], so the data parts are tested
//! with a manual clock.
//!
//! Invariants: proposals are answered once; an answer of success means the entry was
//! applied; `StaleCommand` means it never will be; `Timeout` means unknown.

mod actor;
mod admin;
mod batch;
mod effects;
mod fence;
mod freshness;
mod hibernate;
mod leader_wait;
mod lease;
mod messages;
mod observe;
mod read_index;
mod ready;
mod requests;
mod split;
mod tick;

pub use actor::{
    Campaign, CheckSplitSoon, CompactLog, Fence, GetStatus, Inbox, InboxFull, KvCommand, PeerActor,
    RaftMessageIn, Seed, ShellContext, TransferLeader,
};
pub use effects::{Effect, SplitCheckTask};
pub use split::SplitStep;

use crate::clock::Clock;
use crate::config::StoreConfig;
use crate::coprocessor::{Coprocessor, Outbox, RegionObserver};
use crate::error::Error;
use crate::local_reader::{ReadDelegate, ReadRegistry, ReadState};
use crate::metrics::StoreMetrics;
use crate::pd::BoxFuture;
use crate::request::validate_request;
use freshness::Freshness;
use hibernate::Hibernation;
use lease::Lease;
use raft::{RawNode, ReadOnlyOption, StateRole};
use read_index::{ReadIndexQueue, ReadReq};
use regatta_engine::Engine;
use regatta_engine::{PeerStorage, RocksEngine};
use regatta_proto::kvrpcpb::{KvRequest, KvResponse};
use regatta_proto::metapb::{Peer as PeerMeta, Region};
use slog::{o, Logger};
use split::Splits;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Where a request's answer goes.
pub type Responder = oneshot::Sender<KvResponse>;

/// Bytes of command data per log entry before a turn's commands spill into another entry.
const MAX_ENTRY_DATA: usize = 1 << 20;

/// How the observer's work done off the peer's turn comes back to it (see
/// [`crate::coprocessor`]). The actor shell implements it; the core never names actix.
pub trait PeerMailbox: Send + Sync {
    /// Runs `task` on the peer's runtime (a PD call whose answer comes back as a message).
    fn spawn(&self, task: BoxFuture<'static, ()>);
    /// Delivers a message of the layer above (see [`crate::coprocessor`]) to the peer's
    /// next turn, where its observer takes it (from any thread).
    fn notify(&self, note: crate::coprocessor::Note);
}

struct Proposal {
    index: u64,
    term: u64,
    responders: Vec<Responder>,
    /// Commands whose answer goes to the observer: (command index, token).
    tokens: Vec<(usize, u64)>,
    deadline: Instant,
    /// When it was proposed: once it commits, a quorum heard from this leader after this.
    proposed_at: Instant,
    /// How long after `proposed_at` the leader's own write of it was reported durable.
    persisted_after: Option<Duration>,
    /// Whether it counts in the write stages (an entry of client commands).
    timed: bool,
}

/// What the store needs from its environment to run a peer.
#[derive(Clone)]
pub struct PeerContext {
    /// Store config.
    pub cfg: Arc<StoreConfig>,
    /// Store counters.
    pub metrics: Arc<StoreMetrics>,
    /// The layer above the raftstore (see [`crate::coprocessor`]).
    pub coprocessor: Arc<dyn Coprocessor>,
    /// The store this peer lives on.
    pub store_id: u64,
    /// The read delegates of the regions hosted on this store (an uninitialized replica
    /// checks a snapshot's range against them).
    pub reads: ReadRegistry,
    /// The key count above which a region splits; starts as `cfg.region_split_keys`,
    /// changed through [`crate::Store::set_split_keys`].
    pub split_keys: Arc<AtomicU64>,
    /// The leader lease in ms (0: off); starts as `cfg.lease_ms`, changed only through
    /// [`crate::Store::set_lease`], which checks it is safe.
    pub lease_ms: Arc<AtomicU64>,
    /// Where time is read (the system clock, or a manual one in tests).
    pub clock: Arc<dyn Clock>,
    /// Seeds what only has to differ between incarnations of a replica (the numbering of
    /// its freshness stamps): the store draws it at random, a simulator from its seed.
    pub seed: u64,
    /// Logger.
    pub logger: Logger,
}

impl PeerContext {
    /// The current leader lease in ms (0: off).
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms.load(Ordering::Relaxed)
    }

    /// The current split threshold in keys.
    pub fn split_keys(&self) -> u64 {
        self.split_keys.load(Ordering::Relaxed)
    }
}

/// A region a split created, for the store to start its peer.
#[derive(Debug, Clone, Copy)]
pub struct NewRegion {
    /// The new region.
    pub region_id: u64,
    /// Whether its peer should campaign at once (it is on the old region's leader store).
    pub campaign: bool,
}

/// A snapshot of a replica's state, for status pages and tests.
#[derive(Debug, Clone)]
pub struct RegionStatus {
    /// The region as this replica knows it.
    pub region: Region,
    /// This replica's peer id.
    pub peer_id: u64,
    /// The leader's peer id (0 = unknown).
    pub leader_id: u64,
    /// The leader's store id (0 = unknown).
    pub leader_store_id: u64,
    /// Current term.
    pub term: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Last log index.
    pub last_index: u64,
    /// Log compacted through this index.
    pub truncated_index: u64,
    /// Whether this replica leads and its lease holds now.
    pub lease_valid: bool,
    /// Whether this replica leads and is transferring leadership.
    pub transferring_leadership: bool,
    /// Follower reads: how stale this replica's applied state may be at most (`None`: it
    /// has no proof of freshness).
    pub staleness_bound: Option<Duration>,
    /// Whether the region hibernates here (slow raft clock).
    pub hibernating: bool,
    /// Named figures of the replica's observer (the layer above, see
    /// [`crate::coprocessor::RegionObserver::status`]).
    pub observed: Vec<(&'static str, u64)>,
}

impl RegionStatus {
    /// The observer's figure `name` (0 when it reports none by that name).
    pub fn observed(&self, name: &str) -> u64 {
        self.observed
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }
}

/// The region replica state machine.
pub struct Peer<E: Engine = RocksEngine> {
    region_id: u64,
    peer_id: u64,
    raw: RawNode<PeerStorage<E>>,
    ctx: PeerContext,
    logger: Logger,
    // Driving raft (ready.rs).
    /// The turn's commands, proposed as one entry at its end (see `batch.rs`).
    batch: batch::TurnBatch,
    /// The at-most-once sessions as the engine holds them (see `apply::SessionCache`).
    sessions: crate::apply::SessionCache,
    proposals: VecDeque<Proposal>,
    inflight_writes: usize,
    pending_snapshot: Option<(u64, u64)>,
    snapshot_reports: Vec<u64>,
    /// Why this replica stopped (see `fence`): it serves nothing until a restart.
    fenced: Option<String>,
    was_leader: bool,
    /// When, and in which term, this replica became leader, until that term's first entry
    /// is applied (whose commit renews the lease from then).
    leader_since: Option<(Instant, u64)>,
    /// What this replica asks its shell to do, in order (see `effects.rs`).
    effects: Vec<effects::Effect<E>>,
    /// How the observer's off-turn work comes back; set by the shell when it starts.
    mailbox: Option<Arc<dyn PeerMailbox>>,
    // Reads.
    reads: ReadIndexQueue,
    lease: Lease,
    freshness: Freshness,
    /// Read-your-writes reads waiting for the applied index to reach theirs.
    ryw_waiting: Vec<(ReadReq, u64)>,
    /// Requests held while no leader is known (see `leader_wait.rs`).
    leader_wait: leader_wait::LeaderWait,
    /// What local reads see (see `local_reader`), and what was last published there.
    delegate: Arc<ReadDelegate<E>>,
    published: Arc<ReadState>,
    /// Non-transfer votes are ignored until then (a restarted replica that saw a leader).
    vote_guard_until: Option<Instant>,
    // Splits, hibernation, periodic work.
    splits: Splits,
    hibernation: Hibernation,
    last_pd_report: Instant,
    last_split_check: Instant,
    last_compact_check: Instant,
    /// Stores of peers not (yet) in the region: how an uninitialized replica answers.
    peer_cache: HashMap<u64, PeerMeta>,
    /// The layer above's part of this replica (see [`crate::coprocessor`]).
    observer: Box<dyn RegionObserver>,
}

/// A numbering base for a replica's freshness stamps, distinct per store process (`seed`),
/// replica and moment of creation (splitmix64 of the three; two bits of headroom).
fn fresh_base(seed: u64, peer_id: u64, wall_ms: u64) -> u64 {
    let mut z = seed ^ peer_id.rotate_left(32) ^ wall_ms.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) >> 2
}

/// The raft-rs configuration of peer `peer_id`, whose state machine applied through
/// `applied`.
fn raft_config(cfg: &StoreConfig, peer_id: u64, applied: u64) -> Result<raft::Config, Error> {
    let raft_cfg = raft::Config {
        id: peer_id,
        election_tick: cfg.election_ticks,
        min_election_tick: cfg.election_ticks,
        max_election_tick: if cfg.max_election_ticks == 0 {
            2 * cfg.election_ticks
        } else {
            cfg.max_election_ticks
        },
        heartbeat_tick: cfg.heartbeat_ticks,
        applied,
        max_size_per_msg: cfg.max_size_per_msg,
        max_inflight_msgs: cfg.max_inflight_msgs,
        check_quorum: true,
        pre_vote: true,
        // Off: raft-rs 0.7's append batching merges entries into a queued *empty*
        // MsgAppend without checking that they follow its index, so a probe answered
        // out of order (reordered or duplicated messages) yields an append whose index
        // and entries disagree; the follower then acks entries it does not have and
        // panics on the next heartbeat. Found by tests/cluster_faults.rs. The TCP
        // transport batches messages per frame anyway.
        batch_append: false,
        read_only_option: ReadOnlyOption::Safe,
        ..Default::default()
    };
    raft_cfg
        .validate()
        .map_err(|e| Error::InvalidArgument(format!("raft config: {e}")))?;
    Ok(raft_cfg)
}

impl<E: Engine> Peer<E> {
    /// Builds the replica of `storage`'s region with peer id `peer_id`.
    pub fn new(storage: PeerStorage<E>, peer_id: u64, ctx: PeerContext) -> Result<Peer<E>, Error> {
        let region_id = storage.region().get_id();
        let logger = ctx
            .logger
            .new(o!("region_id" => region_id, "peer_id" => peer_id));
        let cfg = &ctx.cfg;
        let raft_cfg = raft_config(cfg, peer_id, storage.applied().0)?;
        let delegate = Arc::new(ReadDelegate::new(
            ctx.store_id,
            ctx.metrics.clone(),
            storage.engine().clone(),
            ctx.cfg.clone(),
            ctx.clock.clone(),
            storage.region().clone(),
        ));
        delegate.set_applied(storage.applied().0);
        let now = ctx.clock.now();
        let fresh_base = fresh_base(ctx.seed, peer_id, ctx.clock.wall_ms());
        // Only a replica that has seen an election (term above the initial one) can have
        // acknowledged a leader's lease; fresh regions (bootstrap, split) elect at once.
        let seen_leader = raft::Storage::initial_state(&storage)
            .map(|s| s.hard_state.term > regatta_engine::RAFT_INIT_LOG_TERM)
            .unwrap_or(true);
        let vote_guard_until = (seen_leader && cfg.lease_ms > 0)
            .then(|| now + Duration::from_millis(cfg.min_election_timeout_ms()));
        let observer = ctx.coprocessor.new_observer(region_id, &logger);
        let raw = RawNode::new(&raft_cfg, storage, &logger).map_err(|e| Error::RegionState {
            region_id,
            detail: format!("raft refuses to start the replica: {e}"),
        })?;
        Ok(Peer {
            region_id,
            peer_id,
            raw,
            ctx,
            logger,
            batch: batch::TurnBatch::default(),
            sessions: crate::apply::SessionCache::default(),
            proposals: VecDeque::new(),
            inflight_writes: 0,
            pending_snapshot: None,
            snapshot_reports: Vec::new(),
            fenced: None,
            was_leader: false,
            leader_since: None,
            effects: Vec::new(),
            mailbox: None,
            reads: ReadIndexQueue::default(),
            lease: Lease::default(),
            // A base of its own: echoes meant for an earlier incarnation match nothing.
            freshness: Freshness::new(fresh_base),
            ryw_waiting: Vec::new(),
            leader_wait: leader_wait::LeaderWait::default(),
            delegate,
            published: Arc::default(),
            vote_guard_until,
            splits: Splits::default(),
            hibernation: Hibernation::new(now),
            last_pd_report: now,
            last_split_check: now,
            last_compact_check: now,
            peer_cache: HashMap::new(),
            observer,
        })
    }

    /// Whether this replica is its region's only voter: it elects itself at once, on
    /// start and after a seed, instead of waiting out an election timeout.
    fn is_sole_voter(&self) -> bool {
        self.raw.store().voters() == [self.peer_id]
    }

    /// Where the observer's off-turn work comes back (the shell sets it when it starts).
    pub fn set_mailbox(&mut self, mailbox: Arc<dyn PeerMailbox>) {
        self.mailbox = Some(mailbox);
    }

    /// The region's id.
    pub fn region_id(&self) -> u64 {
        self.region_id
    }

    /// The read delegate the store's connections use for local reads.
    pub fn delegate(&self) -> Arc<ReadDelegate<E>> {
        self.delegate.clone()
    }

    /// Publishes the state local reads rely on, when it changed. Called at the end of a
    /// turn and before any message is sent: a leader transfer withdraws the lease before
    /// `MsgTimeoutNow` leaves.
    fn publish_read_state(&mut self) {
        let (applied, applied_term) = self.raw.store().applied();
        // A snapshot being installed has switched the storage's view already, but its data
        // lands with its write: until then, local reads must not count it as applied.
        let applied = applied.min(self.raw.raft.raft_log.applied);
        let raft = &self.raw.raft;
        let leader = self.is_leader() && !self.is_fenced();
        let lease_until = if leader
            && !self.is_fenced()
            && self.ctx.lease_ms() > 0
            && raft.lead_transferee.is_none()
            && applied_term == raft.term
            && !self.splits.progress.blocks_lease()
        {
            self.lease.until_in(raft.term)
        } else {
            None
        };
        let safe_time = self.freshness.safe_time().filter(|_| !self.is_fenced());
        let fenced = self.is_fenced();
        let changed = self.published.fenced != fenced
            || self.published.leader != leader
            || self.published.lease_until != lease_until
            || self.published.safe_time != safe_time
            || self.published.applied_index != applied
            || self.published.region.get_region_epoch() != self.region().get_region_epoch();
        if !changed {
            return;
        }
        let region = if self.published.region.get_id() == self.region().get_id()
            && self.published.region.get_region_epoch() == self.region().get_region_epoch()
        {
            self.published.region.clone()
        } else {
            Arc::new(self.region().clone())
        };
        let state = Arc::new(ReadState {
            region,
            lease_until,
            commit_index: raft.raft_log.committed,
            safe_time,
            applied_index: applied,
            leader,
            fenced,
        });
        self.delegate.publish(state.clone());
        self.published = state;
    }

    fn region(&self) -> &Region {
        self.raw.store().region()
    }

    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    fn leader_meta(&self) -> Option<PeerMeta> {
        let id = self.raw.raft.leader_id;
        self.region()
            .get_peers()
            .iter()
            .find(|p| p.get_id() == id && id != 0)
            .cloned()
    }

    fn not_leader(&self) -> Error {
        Error::NotLeader {
            region_id: self.region_id,
            leader: self.leader_meta(),
        }
    }

    /// The replica's status.
    pub fn status(&self) -> RegionStatus {
        let s = self.raw.store();
        let now = self.ctx.clock.now();
        // A fenced replica knows no leader: it hears nothing.
        let leader = if self.is_fenced() {
            None
        } else {
            self.leader_meta()
        };
        RegionStatus {
            region: s.region().clone(),
            peer_id: self.peer_id,
            leader_id: leader.as_ref().map_or(0, |p| p.get_id()),
            leader_store_id: leader.map_or(0, |p| p.get_store_id()),
            term: self.raw.raft.term,
            // As local reads see it (a snapshot counts once its data is written).
            applied_index: s.applied().0.min(self.raw.raft.raft_log.applied),
            commit_index: self.raw.raft.raft_log.committed,
            last_index: s.last_index_now(),
            truncated_index: s.truncated_index(),
            lease_valid: self.ctx.lease_ms() > 0
                && self.is_leader()
                && !self.is_fenced()
                && self.raw.raft.lead_transferee.is_none()
                && self.lease.valid(now, self.raw.raft.term),
            transferring_leadership: self.is_leader() && self.raw.raft.lead_transferee.is_some(),
            staleness_bound: self.freshness.staleness(now),
            hibernating: self.hibernation.is_hibernating(),
            observed: {
                let mut scratch = Outbox::default();
                self.observer.status(&self.view(&mut scratch))
            },
        }
    }

    fn validate(&self, req: &KvRequest) -> Result<(), Error> {
        validate_request(req, self.region(), &self.ctx.cfg, &*self.ctx.coprocessor)
            .map_err(|e| self.with_siblings(e))
    }

    /// Adds the regions this replica's splits created to an `EpochNotMatch`, so a client
    /// with an old epoch learns the new layout without asking PD.
    fn with_siblings(&self, e: Error) -> Error {
        match e {
            Error::EpochNotMatch {
                mut current_regions,
            } => {
                current_regions.extend(self.splits.recent.iter().cloned());
                Error::EpochNotMatch { current_regions }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod machine_tests;
