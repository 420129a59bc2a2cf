//! One region replica: [`Peer`] (plain state machine around raft-rs's `RawNode`) inside
//! [`PeerActor`] (a thin actix shell that never blocks).
//!
//! A turn: messages (raft traffic, client commands, ticks, persist notifications) update
//! the peer; the first one schedules a `Flush` that runs after the mailbox batch. The
//! flush proposes all commands of the turn as one log entry, starts one ReadIndex round
//! for all reads of the turn, then drains raft's Ready:
//! leader messages go out at once (Raft thesis 10.2.1); entries, HardState and snapshot go
//! to the LogWriter as one `WriteTask`; after its sync `Persisted` arrives and the
//! follower messages held for that Ready are sent. Committed entries (never beyond the
//! durable log: raft-rs caps them at the persisted index) are applied and their proposals
//! answered.
//!
//! Invariants: proposals are answered once; an answer of success means the entry was
//! applied; `StaleCommand` means it never will be; `Timeout` means unknown.

use crate::apply::{self, AppliedEntry};
use crate::config::StoreConfig;
use crate::error::Error;
use crate::local_reader::{ReadDelegate, ReadState};
use crate::log_writer::{LogWriter, Persisted, WriteTask};
use crate::metrics::StoreMetrics;
use crate::pd::PdClient;
use crate::transport::Transport;
use actix::prelude::*;
use protobuf::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};
use raft::{RawNode, ReadOnlyOption, StateRole};
use regatta_engine::{Engine as _, LogWrite, PeerStorage, Snapshot as _};
use regatta_proto::kvrpcpb::{
    KvRequest, KvResponse, ReadConsistency, ReadInfo, Request, Request_oneof_cmd,
};
use regatta_proto::metapb::{Peer as PeerMeta, Region};
use regatta_proto::pdpb::RegionHeartbeatRequest;
use regatta_proto::raft_serverpb::{AdminCmd, RaftCmd, RaftCmdBatch, RaftMessage, SplitCmd};
use slog::{debug, error, info, o, warn, Logger};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Where a request's answer goes.
pub type Responder = oneshot::Sender<KvResponse>;

/// Bytes of command data per log entry before a turn's commands spill into another entry.
const MAX_ENTRY_DATA: usize = 1 << 20;

struct Proposal {
    index: u64,
    term: u64,
    responders: Vec<Responder>,
    deadline: Instant,
    /// When it was proposed: once it commits, a quorum heard from this leader after this.
    proposed_at: Instant,
}

struct ReadReq {
    req: Request,
    tx: Responder,
    deadline: Instant,
    started: Instant,
    /// Filled in as the read is routed (lease, round trips), completed when served.
    info: ReadInfo,
    /// The region's epoch version when the read was accepted; a split before it is served
    /// sends it back with `EpochNotMatch` (its key may have moved to another region).
    version: u64,
}

/// A ReadIndex round in flight: its reads, and when and in which term it started (a
/// confirmed round renews the lease from its start).
struct ReadRound {
    started: Instant,
    term: u64,
    reads: Vec<ReadReq>,
}

/// Messages whose send time a replica remembers, for the freshness echo.
const SENT_TIMES_KEPT: usize = 4096;

/// What the store needs from its environment to run a peer.
#[derive(Clone)]
pub struct PeerContext {
    /// Store config.
    pub cfg: Arc<StoreConfig>,
    /// Raft transport.
    pub transport: Arc<dyn Transport>,
    /// The store's LogWriter.
    pub log_writer: LogWriter,
    /// Store counters.
    pub metrics: Arc<StoreMetrics>,
    /// Region reports for PD.
    pub pd_reports: mpsc::UnboundedSender<RegionHeartbeatRequest>,
    /// PD, for the ids of split regions.
    pub pd: Arc<dyn PdClient>,
    /// Regions a split created on this store: the store starts their peers (and makes the
    /// one on the old leader's store campaign at once).
    pub new_regions: mpsc::UnboundedSender<NewRegion>,
    /// The store this peer lives on.
    pub store_id: u64,
    /// The regions hosted on this store (an uninitialized replica checks a snapshot's range
    /// against them).
    pub router: crate::router::Router,
    /// The key count above which a region splits; starts as `cfg.region_split_keys`,
    /// changed through [`crate::Store::set_split_keys`].
    pub split_keys: Arc<AtomicU64>,
    /// The leader lease in ms (0: off); starts as `cfg.lease_ms`, changed only through
    /// [`crate::Store::set_lease`], which checks it is safe.
    pub lease_ms: Arc<AtomicU64>,
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
}

/// The region replica state machine.
pub struct Peer {
    region_id: u64,
    peer_id: u64,
    raw: RawNode<PeerStorage>,
    ctx: PeerContext,
    logger: Logger,
    pending_cmds: Vec<(RaftCmd, Responder)>,
    pending_bytes: usize,
    proposals: VecDeque<Proposal>,
    new_reads: Vec<ReadReq>,
    reads_waiting_term: Vec<ReadReq>,
    reads_inflight: HashMap<u64, ReadRound>,
    reads_ready: VecDeque<(u64, Vec<ReadReq>)>,
    next_read_id: u64,
    persisted_msgs: VecDeque<(u64, Vec<Message>)>,
    inflight_writes: usize,
    pending_snapshot: Option<(u64, u64)>,
    snapshot_reports: Vec<u64>,
    poisoned: Option<String>,
    ticks: u64,
    was_leader: bool,
    self_addr: Option<Recipient<Persisted>>,
    /// Leader lease: valid in `lease_term` until `lease_until` (docs/CLOCKS.md).
    lease_until: Option<Instant>,
    lease_term: u64,
    /// No lease from rounds started before this (set by leader transfers).
    lease_blocked_until: Option<Instant>,
    /// Freshness echo: this replica's message numbering and when each was sent.
    out_seq: u64,
    sent_times: VecDeque<(u64, Instant)>,
    /// Newest `seq` received from each peer.
    seq_from: HashMap<u64, u64>,
    /// Leader stamps not yet applied: (leader commit index, local anchor time).
    fresh_pending: VecDeque<(u64, Instant)>,
    /// Every write acknowledged before this local instant is in the applied state.
    safe_time: Option<Instant>,
    /// Read-your-writes reads waiting for the applied index to reach theirs.
    ryw_waiting: Vec<(ReadReq, u64)>,
    /// What local reads see (see `local_reader`), and what was last published there.
    delegate: Arc<ReadDelegate>,
    published: Arc<ReadState>,
    /// Non-transfer votes are ignored until then (a restarted replica that saw a leader).
    vote_guard_until: Option<Instant>,
    /// Split: ids asked of PD (no second split meanwhile) / proposed at this index.
    split_asked: bool,
    split_pending: Option<u64>,
    /// Bytes proposed since the last split check.
    written_since_check: u64,
    split_checking: bool,
    /// The region's (keys, bytes) at the last split check, for PD.
    approximate: Option<(u64, u64)>,
    /// Regions the last few splits of this region created (for `EpochNotMatch`).
    recent_splits: VecDeque<Region>,
    /// Hibernation: whether the region ticks slowly, when it last saw work, and whether
    /// the actor must reschedule its clock.
    hibernating: bool,
    last_active: Instant,
    tick_changed: bool,
    /// When periodic work last ran (time-based, so it keeps its pace while hibernating).
    last_pd_report: Instant,
    last_split_check: Instant,
    last_compact_check: Instant,
    split_self: Option<Recipient<SplitStep>>,
    /// Stores of peers not (yet) in the region: how an uninitialized replica answers.
    peer_cache: HashMap<u64, PeerMeta>,
    /// The split threshold the last split check used (a change triggers a new check).
    checked_split_keys: u64,
}

/// How many times less often a hibernating leader reports to PD.
const HIBERNATED_REPORT_FACTOR: u32 = 6;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Peer {
    /// Builds the replica of `storage`'s region with peer id `peer_id`.
    pub fn new(storage: PeerStorage, peer_id: u64, ctx: PeerContext) -> Result<Peer, Error> {
        let region_id = storage.region().get_id();
        let logger = ctx
            .logger
            .new(o!("region_id" => region_id, "peer_id" => peer_id));
        let cfg = &ctx.cfg;
        let raft_cfg = raft::Config {
            id: peer_id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            applied: storage.applied().0,
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
        let delegate = Arc::new(ReadDelegate::new(
            ctx.store_id,
            ctx.metrics.clone(),
            storage.engine().clone(),
            ctx.cfg.clone(),
            storage.region().clone(),
        ));
        delegate.set_applied(storage.applied().0);
        // Only a replica that has seen an election (term above the initial one) can have
        // acknowledged a leader's lease; fresh regions (bootstrap, split) elect at once.
        let seen_leader = raft::Storage::initial_state(&storage)
            .map(|s| s.hard_state.term > regatta_engine::RAFT_INIT_LOG_TERM)
            .unwrap_or(true);
        let vote_guard_until = (seen_leader && cfg.lease_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(cfg.min_election_timeout_ms()));
        let raw = RawNode::new(&raft_cfg, storage, &logger)
            .map_err(|e| Error::Engine(format!("raft init of region {region_id}: {e}")))?;
        Ok(Peer {
            region_id,
            peer_id,
            raw,
            ctx,
            logger,
            pending_cmds: Vec::new(),
            pending_bytes: 0,
            proposals: VecDeque::new(),
            new_reads: Vec::new(),
            reads_waiting_term: Vec::new(),
            reads_inflight: HashMap::new(),
            reads_ready: VecDeque::new(),
            next_read_id: 1,
            persisted_msgs: VecDeque::new(),
            inflight_writes: 0,
            pending_snapshot: None,
            snapshot_reports: Vec::new(),
            poisoned: None,
            ticks: 0,
            was_leader: false,
            self_addr: None,
            lease_until: None,
            lease_term: 0,
            lease_blocked_until: None,
            // A random base: echoes meant for an earlier incarnation match nothing.
            out_seq: rand::random::<u64>() >> 2,
            sent_times: VecDeque::new(),
            seq_from: HashMap::new(),
            fresh_pending: VecDeque::new(),
            safe_time: None,
            ryw_waiting: Vec::new(),
            delegate,
            published: Arc::default(),
            vote_guard_until,
            split_asked: false,
            split_pending: None,
            written_since_check: 0,
            split_checking: false,
            approximate: None,
            recent_splits: VecDeque::new(),
            hibernating: false,
            last_active: Instant::now(),
            tick_changed: false,
            last_pd_report: Instant::now(),
            last_split_check: Instant::now(),
            last_compact_check: Instant::now(),
            split_self: None,
            peer_cache: HashMap::new(),
            checked_split_keys: 0,
        })
    }

    /// The region's id.
    pub fn region_id(&self) -> u64 {
        self.region_id
    }

    /// A client asked to split at `key` (validated to be inside the region).
    fn on_split_request(&mut self, key: Vec<u8>, tx: Responder) {
        if !self.is_leader() {
            let _ = tx.send(self.not_leader().into_response());
            return;
        }
        if self.split_asked || self.split_pending.is_some() {
            let e =
                Error::ServerIsBusy(format!("region {}: a split is in progress", self.region_id));
            let _ = tx.send(e.into_response());
            return;
        }
        self.ask_split_ids(key, Some(tx));
    }

    /// Asks PD for the new region's id and peer ids, then comes back with `SplitStep::Ids`.
    fn ask_split_ids(&mut self, key: Vec<u8>, tx: Option<Responder>) {
        let Some(me) = self.split_self.clone() else {
            return;
        };
        self.split_asked = true;
        let pd = self.ctx.pd.clone();
        let count = self.region().get_peers().len() as u32 + 1;
        let epoch = self.region().get_region_epoch().clone();
        actix::spawn(async move {
            match pd.alloc_id(count).await {
                Ok(first_id) => me.do_send(SplitStep::Ids {
                    key,
                    epoch,
                    first_id,
                    tx,
                }),
                Err(reason) => me.do_send(SplitStep::Failed { reason, tx }),
            }
        });
    }

    /// The next step of a split (see [`SplitStep`]).
    pub fn on_split_step(&mut self, step: SplitStep) {
        match step {
            SplitStep::Checked {
                key,
                stats,
                version,
            } => {
                self.split_checking = false;
                self.approximate = Some(stats);
                let current = self.region().get_region_epoch().get_version();
                if let Some(key) = key {
                    if self.is_leader()
                        && version == current
                        && !self.split_asked
                        && self.split_pending.is_none()
                    {
                        info!(self.logger, "region too big; splitting"; "key" => ?key);
                        self.ask_split_ids(key, None);
                    }
                }
            }
            SplitStep::Failed { reason, tx } => {
                self.split_asked = false;
                warn!(self.logger, "split: PD gave no ids"; "error" => &reason);
                if let Some(tx) = tx {
                    let _ = tx
                        .send(Error::ServerIsBusy(format!("split: PD: {reason}")).into_response());
                }
            }
            SplitStep::Ids {
                key,
                epoch,
                first_id,
                tx,
            } => {
                self.split_asked = false;
                let tx = tx.unwrap_or_else(|| oneshot::channel().0);
                if !self.is_leader() {
                    let _ = tx.send(self.not_leader().into_response());
                    return;
                }
                if &epoch != self.region().get_region_epoch() {
                    let e = Error::EpochNotMatch {
                        current_regions: vec![self.region().clone()],
                    };
                    let _ = tx.send(e.into_response());
                    return;
                }
                let mut split = SplitCmd::new();
                split.set_split_key(key);
                split.set_new_region_id(first_id);
                let peers = self.region().get_peers().len() as u64;
                split.set_new_peer_ids((first_id + 1..=first_id + peers).collect());
                let mut admin = AdminCmd::new();
                admin.set_region_epoch(epoch);
                admin.set_split(split);
                let mut batch = RaftCmdBatch::new();
                batch.set_propose_time_ms(now_ms());
                batch.set_admin(admin);
                let data = batch
                    .write_to_bytes()
                    .expect("encoding an in-memory command batch cannot fail");
                if self.raw.propose(vec![], data).is_err() {
                    let _ = tx.send(self.not_leader().into_response());
                    return;
                }
                let index = self.raw.raft.raft_log.last_index();
                self.split_pending = Some(index);
                self.proposals.push_back(Proposal {
                    index,
                    term: self.raw.raft.term,
                    proposed_at: Instant::now(),
                    responders: vec![tx],
                    deadline: Instant::now()
                        + Duration::from_millis(self.ctx.cfg.proposal_timeout_ms),
                });
            }
        }
    }

    /// Every replica, after applying a split: the store starts the new region's peer; the
    /// leader reports both regions to PD at once.
    fn on_split_applied(&mut self, index: u64, left: &Region, right: &Region) {
        info!(self.logger, "region split"; "index" => index, "new_region_id" => right.get_id(),
            "split_key" => ?right.get_start_key());
        if self.split_pending.is_some_and(|i| i <= index) {
            self.split_pending = None;
        }
        self.written_since_check = 0;
        self.approximate = None;
        self.recent_splits.push_front(right.clone());
        self.recent_splits.truncate(4);
        let leader = self.is_leader();
        let _ = self.ctx.new_regions.send(NewRegion {
            region_id: right.get_id(),
            campaign: leader,
        });
        if leader {
            let _ = left;
            self.report_to_pd();
            let mut hb = RegionHeartbeatRequest::new();
            hb.set_region(right.clone());
            let _ = self.ctx.pd_reports.send(hb);
        }
    }

    /// Starts a split check on another thread when the leader wrote enough since the last.
    fn maybe_check_split(&mut self) {
        let cfg = &self.ctx.cfg;
        if !self.is_leader()
            || self.split_checking
            || self.split_asked
            || self.split_pending.is_some()
            || (self.written_since_check < cfg.split_check_diff_bytes
                && self.approximate.is_some()
                && self.checked_split_keys == self.ctx.split_keys())
        {
            return;
        }
        let Some(me) = self.split_self.clone() else {
            return;
        };
        self.split_checking = true;
        self.written_since_check = 0;
        self.checked_split_keys = self.ctx.split_keys();
        let engine = self.raw.store().engine().clone();
        let region = self.region().clone();
        let (max_size, max_keys) = (cfg.region_split_size, self.checked_split_keys);
        let logger = self.logger.clone();
        std::thread::spawn(move || {
            let version = region.get_region_epoch().get_version();
            let check = match apply::split_check(&engine, &region, max_size, max_keys) {
                Ok(c) => c,
                Err(e) => {
                    warn!(logger, "split check failed"; "error" => %e);
                    apply::SplitCheck::default()
                }
            };
            me.do_send(SplitStep::Checked {
                key: check.split_key,
                stats: (check.keys, check.size),
                version,
            });
        });
    }

    /// The read delegate the store's connections use for local reads.
    pub fn delegate(&self) -> Arc<ReadDelegate> {
        self.delegate.clone()
    }

    /// Publishes the state local reads rely on, when it changed. Called at the end of a
    /// turn and before any message is sent: a leader transfer withdraws the lease before
    /// `MsgTimeoutNow` leaves.
    fn publish_read_state(&mut self) {
        let (applied, applied_term) = self.raw.store().applied();
        let raft = &self.raw.raft;
        let leader = self.is_leader();
        let lease_until = if leader
            && self.ctx.lease_ms() > 0
            && raft.lead_transferee.is_none()
            && self.lease_term == raft.term
            && applied_term == raft.term
            && self.split_pending.is_none()
        {
            self.lease_until
        } else {
            None
        };
        let changed = self.published.leader != leader
            || self.published.lease_until != lease_until
            || self.published.safe_time != self.safe_time
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
            safe_time: self.safe_time,
            applied_index: applied,
            leader,
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
        RegionStatus {
            region: s.region().clone(),
            peer_id: self.peer_id,
            leader_id: self.raw.raft.leader_id,
            leader_store_id: self.leader_meta().map_or(0, |p| p.get_store_id()),
            term: self.raw.raft.term,
            applied_index: s.applied().0,
            commit_index: self.raw.raft.raft_log.committed,
            last_index: s.last_index_now(),
            truncated_index: s.truncated_index(),
            lease_valid: self.ctx.lease_ms() > 0
                && self.is_leader()
                && self.raw.raft.lead_transferee.is_none()
                && self.lease_term == self.raw.raft.term
                && self.lease_until.is_some_and(|t| Instant::now() < t),
            transferring_leadership: self.is_leader() && self.raw.raft.lead_transferee.is_some(),
            staleness_bound: self.safe_time.map(|t| t.elapsed()),
            hibernating: self.hibernating,
        }
    }

    fn validate(&self, req: &KvRequest) -> Result<(), Error> {
        validate_request(req, self.region(), &self.ctx.cfg).map_err(|e| self.with_siblings(e))
    }

    /// Adds the regions this replica's splits created to an `EpochNotMatch`, so a client
    /// with an old epoch learns the new layout without asking PD.
    fn with_siblings(&self, e: Error) -> Error {
        match e {
            Error::EpochNotMatch {
                mut current_regions,
            } => {
                current_regions.extend(self.recent_splits.iter().cloned());
                Error::EpochNotMatch { current_regions }
            }
            other => other,
        }
    }

    /// Takes a client request (answered through `tx`).
    pub fn on_kv(&mut self, mut req: KvRequest, tx: Responder) {
        self.wake();
        if let Err(e) = self.validate(&req) {
            let _ = tx.send(e.into_response());
            return;
        }
        let request = req.take_request();
        let write = apply::is_write(&request);
        if write {
            if let Some(reason) = &self.poisoned {
                let _ = tx.send(Error::StorePoisoned(reason.clone()).into_response());
                return;
            }
        }
        if let Some(Request_oneof_cmd::split(sp)) = &request.cmd {
            let key = sp.get_split_key().to_vec();
            self.on_split_request(key, tx);
            return;
        }
        let ctx = req.take_context();
        let consistency = ctx.get_consistency();
        if !self.is_leader() {
            if !write {
                self.follower_read(request, &ctx, tx);
            } else {
                let _ = tx.send(self.not_leader().into_response());
            }
            return;
        }
        if write || consistency == ReadConsistency::LOG_READ {
            if self.proposals.len() + self.pending_cmds.len() >= self.ctx.cfg.max_inflight_proposals
            {
                let _ = tx.send(
                    Error::ServerIsBusy(format!("region {}: too many proposals", self.region_id))
                        .into_response(),
                );
                return;
            }
            let mut cmd = RaftCmd::new();
            cmd.set_client_id(ctx.get_client_id());
            cmd.set_seq(ctx.get_seq());
            cmd.set_region_epoch(self.region().get_region_epoch().clone());
            cmd.set_request(request);
            self.pending_bytes += cmd.compute_size() as usize;
            self.pending_cmds.push((cmd, tx));
            if self.pending_bytes >= MAX_ENTRY_DATA {
                self.propose_pending();
            }
        } else {
            let now = Instant::now();
            let mut read = ReadReq {
                req: request,
                tx,
                deadline: now + Duration::from_millis(self.ctx.cfg.read_timeout_ms),
                started: now,
                info: ReadInfo::new(),
                version: self.region().get_region_epoch().get_version(),
            };
            read.info.set_linearizable(true);
            let lease_ok = consistency != ReadConsistency::LINEARIZABLE
                && self.split_pending.is_none()
                && self.lease_valid(now)
                && self.raw.raft.commit_to_current_term();
            if lease_ok {
                // No other leader can exist while the lease holds, so the commit index is
                // the newest; serve once it is applied.
                read.info.set_lease_used(true);
                let index = self.raw.raft.raft_log.committed;
                self.reads_ready.push_back((index, vec![read]));
            } else {
                read.info.set_network_round_trips(1);
                self.new_reads.push(read);
            }
        }
    }

    /// A read that reached a follower: served here when its consistency allows it and this
    /// replica is fresh enough, else redirected to the leader (`NotLeader`).
    fn follower_read(
        &mut self,
        req: Request,
        ctx: &regatta_proto::kvrpcpb::Context,
        tx: Responder,
    ) {
        let now = Instant::now();
        let mut read = ReadReq {
            req,
            tx,
            deadline: now,
            started: now,
            info: ReadInfo::new(),
            version: self.region().get_region_epoch().get_version(),
        };
        match ctx.get_consistency() {
            ReadConsistency::FOLLOWER if ctx.get_max_staleness_ms() > 0 => {
                let bound = Duration::from_millis(ctx.get_max_staleness_ms());
                if let Some(staleness) = self.safe_time.map(|t| now.saturating_duration_since(t)) {
                    if staleness <= bound {
                        read.info.set_staleness_us(staleness.as_micros() as u64);
                        let applied = self.raw.store().applied().0;
                        self.finish_read(read, applied);
                        return;
                    }
                }
            }
            ReadConsistency::READ_YOUR_WRITES => {
                let want = ctx.get_min_applied_index();
                let applied = self.raw.store().applied().0;
                if applied >= want {
                    self.finish_read(read, applied);
                } else {
                    read.deadline = now + Duration::from_millis(self.ctx.cfg.ryw_wait_ms);
                    self.ryw_waiting.push((read, want));
                }
                return;
            }
            _ => {}
        }
        if matches!(
            ctx.get_consistency(),
            ReadConsistency::FOLLOWER | ReadConsistency::READ_YOUR_WRITES
        ) {
            self.ctx
                .metrics
                .follower_redirects
                .fetch_add(1, Ordering::Relaxed);
        }
        let _ = read.tx.send(self.not_leader().into_response());
    }

    /// Serves read-your-writes reads whose index is now applied; redirects those that
    /// waited too long.
    fn serve_ryw(&mut self, now: Instant) {
        if self.ryw_waiting.is_empty() {
            return;
        }
        let applied = self.raw.store().applied().0;
        let waiting = std::mem::take(&mut self.ryw_waiting);
        for (read, want) in waiting {
            if applied >= want {
                self.finish_read(read, applied);
            } else if read.deadline <= now || self.is_leader() {
                self.ctx
                    .metrics
                    .follower_redirects
                    .fetch_add(1, Ordering::Relaxed);
                let _ = read.tx.send(self.not_leader().into_response());
            } else {
                self.ryw_waiting.push((read, want));
            }
        }
    }

    /// Answers `read` from the applied state; `read_index` is the index it was served at.
    fn finish_read(&self, read: ReadReq, read_index: u64) {
        if read.version != self.region().get_region_epoch().get_version() {
            let e = self.with_siblings(Error::EpochNotMatch {
                current_regions: vec![self.region().clone()],
            });
            let _ = read.tx.send(e.into_response());
            return;
        }
        let mut resp = self.read_local(&read.req);
        if !resp.has_error() {
            let mut info = read.info;
            info.set_served_by_store(self.ctx.store_id);
            info.set_read_index(read_index);
            info.set_applied_index(self.raw.store().applied().0);
            info.set_waited_us(read.started.elapsed().as_micros() as u64);
            resp.set_read_info(info);
        }
        let _ = read.tx.send(resp);
    }

    /// Whether this leader's lease holds at `now` (docs/CLOCKS.md). Never across a term
    /// change, after stepping down, or while a leader transfer is in flight.
    fn lease_valid(&mut self, now: Instant) -> bool {
        if self.ctx.lease_ms() == 0 || !self.is_leader() {
            return false;
        }
        if self.raw.raft.lead_transferee.is_some() {
            // The transferee may be elected without waiting out the followers' election
            // timers: no lease now, and none from rounds started before it could end.
            self.lease_until = None;
            let block = now + Duration::from_millis(self.ctx.cfg.min_election_timeout_ms());
            self.lease_blocked_until = Some(block);
            return false;
        }
        self.lease_term == self.raw.raft.term && self.lease_until.is_some_and(|t| now < t)
    }

    /// A quorum acknowledged a message this leader sent at `sent_at` in term `term`.
    fn renew_lease(&mut self, sent_at: Instant, term: u64) {
        let now = Instant::now();
        if self.ctx.lease_ms() == 0
            || !self.is_leader()
            || term != self.raw.raft.term
            || self.raw.raft.lead_transferee.is_some()
            || self
                .lease_blocked_until
                .is_some_and(|b| sent_at < b || now < b)
        {
            return;
        }
        let until = sent_at + Duration::from_millis(self.ctx.lease_ms());
        if self.lease_term != term {
            self.lease_term = term;
            self.lease_until = Some(until);
        } else {
            self.lease_until = Some(self.lease_until.map_or(until, |u| u.max(until)));
        }
    }

    /// Moves the follower's safe time forward over the leader stamps it has now applied.
    fn advance_safe_time(&mut self) {
        let applied = self.raw.store().applied().0;
        while self
            .fresh_pending
            .front()
            .is_some_and(|(c, _)| *c <= applied)
        {
            if let Some((_, at)) = self.fresh_pending.pop_front() {
                self.safe_time = Some(self.safe_time.map_or(at, |t| t.max(at)));
            }
        }
    }

    /// Steps a raft message from another replica.
    pub fn on_raft_message(&mut self, msg: RaftMessage) {
        if msg.get_wake() {
            self.wake();
            if msg.get_message().is_empty() {
                return;
            }
        }
        let m = match Message::parse_from_bytes(msg.get_message()) {
            Ok(m) => m,
            Err(e) => {
                warn!(self.logger, "undecodable raft message dropped"; "error" => %e);
                return;
            }
        };
        if m.to != self.peer_id {
            debug!(self.logger, "raft message for another peer dropped"; "to" => m.to);
            return;
        }
        let from = msg.get_from_peer().get_id();
        if !self.raw.store().is_initialized() && !self.accept_while_uninitialized(&msg, &m) {
            return;
        }
        if msg.get_hibernate() {
            // The leader hibernates: follow it (its heartbeats keep coming, slowly).
            if !self.is_leader() && m.term >= self.raw.raft.term {
                self.set_hibernating(true);
            }
        } else if !(self.is_leader() && m.get_msg_type() == MessageType::MsgHeartbeatResponse) {
            self.wake();
        }
        if msg.get_seq() != 0 {
            let newest = self.seq_from.entry(from).or_insert(0);
            *newest = (*newest).max(msg.get_seq());
        }
        if msg.get_leader_commit() != 0 {
            // The leader stamped its commit index while holding its lease, after it had
            // received our message `echo_seq`: every write acknowledged before we sent that
            // message is at or below the stamp.
            let echo = msg.get_echo_seq();
            if let Ok(i) = self.sent_times.binary_search_by_key(&echo, |(s, _)| *s) {
                let at = self.sent_times[i].1;
                let newer = self.fresh_pending.back().is_none_or(|(_, t)| at > *t);
                if newer && self.safe_time.is_none_or(|t| at > t) {
                    self.fresh_pending.push_back((msg.get_leader_commit(), at));
                    if self.fresh_pending.len() > SENT_TIMES_KEPT {
                        self.fresh_pending.pop_front();
                    }
                }
            }
        }
        let vote = matches!(
            m.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        );
        if vote
            && self.ctx.lease_ms() > 0
            && &m.context[..] != raft::CAMPAIGN_TRANSFER
            && self.vote_guard_until.is_some_and(|t| Instant::now() < t)
        {
            // Just (re)started, this replica may have acknowledged a leader whose lease still
            // runs and forgot it: it must not help elect another one yet (docs/CLOCKS.md).
            debug!(self.logger, "vote request ignored during the post-start lease guard"; "from" => m.from);
            return;
        }
        if let Err(e) = self.raw.step(m) {
            debug!(self.logger, "raft step failed"; "error" => %e);
        }
    }

    /// Whether an uninitialized replica takes `m`. It learns its peers' stores from their
    /// messages; it never votes (it has no log, and a restart would forget the vote); it
    /// installs a snapshot only if no region hosted here overlaps the snapshot's range (a
    /// replica of the parent region that has not caught up yet must first give the range
    /// up — the leader retries the snapshot).
    fn accept_while_uninitialized(&mut self, msg: &RaftMessage, m: &Message) -> bool {
        let from = msg.get_from_peer();
        if from.get_id() != 0 && from.get_store_id() != 0 {
            self.peer_cache.insert(from.get_id(), from.clone());
        }
        match m.get_msg_type() {
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => false,
            MessageType::MsgSnapshot => {
                let region = match regatta_engine::snapshot::decode_region(m.get_snapshot()) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(self.logger, "undecodable snapshot dropped"; "error" => %e);
                        return false;
                    }
                };
                match self.ctx.router.overlapping(&region, self.region_id) {
                    Some(other) => {
                        info!(self.logger, "snapshot deferred: a hosted region overlaps it";
                            "overlapping_region" => other.get_id());
                        false
                    }
                    None => true,
                }
            }
            _ => true,
        }
    }

    /// Advances the raft clock; expires reads and proposals past their deadline; compacts
    /// the log when it grew past the limit; reports to PD.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.ticks += 1;
        let now = Instant::now();
        while self.proposals.front().is_some_and(|p| p.deadline <= now) {
            if let Some(p) = self.proposals.pop_front() {
                for tx in p.responders {
                    let _ = tx.send(
                        Error::Timeout(format!("proposal at index {}", p.index)).into_response(),
                    );
                }
            }
        }
        let expire = |reads: &mut Vec<ReadReq>| {
            let (dead, live): (Vec<_>, Vec<_>) = reads.drain(..).partition(|r| r.deadline <= now);
            *reads = live;
            for r in dead {
                let _ =
                    r.tx.send(Error::Timeout("read index".into()).into_response());
            }
        };
        expire(&mut self.reads_waiting_term);
        for round in self.reads_inflight.values_mut() {
            expire(&mut round.reads);
        }
        // Rounds only renewing the lease are given up after the read timeout, so a lost
        // one never stops the next.
        let read_timeout = Duration::from_millis(self.ctx.cfg.read_timeout_ms);
        self.reads_inflight
            .retain(|_, r| !r.reads.is_empty() || r.started.elapsed() < read_timeout);
        self.serve_ryw(now);
        self.keep_lease_warm(now);
        let cfg = self.ctx.cfg.clone();
        if now.duration_since(self.last_split_check)
            >= Duration::from_millis(cfg.split_check_interval_ms)
        {
            self.last_split_check = now;
            self.maybe_check_split();
        }
        if now.duration_since(self.last_compact_check) >= cfg.tick_interval() * 20 {
            self.last_compact_check = now;
            self.maybe_compact();
        }
        // A hibernating region has nothing new to tell PD (a leader change or split wakes
        // it and reports at once): it reports 6x less often, so idle regions cost PD little.
        let mut report_every = Duration::from_millis(cfg.region_heartbeat_interval_ms);
        if self.hibernating {
            report_every *= HIBERNATED_REPORT_FACTOR;
        }
        if self.is_leader() && now.duration_since(self.last_pd_report) >= report_every {
            self.report_to_pd();
        }
        self.maybe_hibernate(now);
    }

    /// The raft clock period now: slow while the region hibernates.
    pub fn tick_interval(&self) -> Duration {
        if self.hibernating {
            Duration::from_millis(self.ctx.cfg.hibernated_tick_interval_ms)
        } else {
            self.ctx.cfg.tick_interval()
        }
    }

    /// Whether the actor must reschedule its clock (the pace changed); clears the flag.
    pub fn take_tick_changed(&mut self) -> bool {
        std::mem::take(&mut self.tick_changed)
    }

    /// A leader with nothing to do and every follower caught up hibernates.
    fn maybe_hibernate(&mut self, now: Instant) {
        let cfg = &self.ctx.cfg;
        if self.hibernating
            || cfg.hibernate_after_ms == 0
            || !self.is_leader()
            || now.duration_since(self.last_active) < Duration::from_millis(cfg.hibernate_after_ms)
        {
            return;
        }
        let raft = &self.raw.raft;
        let last = raft.raft_log.last_index();
        let quiet = raft.raft_log.committed == last
            && self.raw.store().applied().0 == last
            && raft.prs().iter().all(|(_, p)| p.matched == last)
            && raft.lead_transferee.is_none()
            && self.proposals.is_empty()
            && self.pending_cmds.is_empty()
            && self.new_reads.is_empty()
            && self.reads_waiting_term.is_empty()
            && self.reads_inflight.values().all(|r| r.reads.is_empty())
            && self.reads_ready.is_empty()
            && self.ryw_waiting.is_empty()
            && self.inflight_writes == 0
            && self.pending_snapshot.is_none()
            && self.split_pending.is_none()
            && !self.split_asked
            && !self.split_checking;
        if quiet {
            debug!(self.logger, "hibernating");
            self.set_hibernating(true);
            // Tell the followers now rather than at the next heartbeat.
            self.raw.ping();
        }
    }

    fn set_hibernating(&mut self, on: bool) {
        if self.hibernating != on {
            self.hibernating = on;
            self.tick_changed = true;
        }
    }

    /// Work arrived: tick at full pace again; a follower also wakes its leader.
    fn wake(&mut self) {
        self.last_active = Instant::now();
        if !self.hibernating {
            return;
        }
        debug!(self.logger, "waking up");
        self.set_hibernating(false);
        if !self.is_leader() {
            // Wake the leader (and the other followers: if the leader is gone, they must
            // all tick at full pace to elect another one soon).
            let others: Vec<PeerMeta> = self
                .region()
                .get_peers()
                .iter()
                .filter(|p| p.get_id() != self.peer_id)
                .cloned()
                .collect();
            for to in others {
                let mut rm = self.envelope(to);
                rm.set_wake(true);
                self.ctx.transport.send(rm);
                self.ctx
                    .metrics
                    .raft_messages_sent
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// A leader whose lease is about to lapse starts a ReadIndex round with no reads: its
    /// confirmation renews the lease, so lease reads and follower-read freshness (leader
    /// stamps need the lease) keep working without a read paying for the round trip.
    fn keep_lease_warm(&mut self, now: Instant) {
        if self.hibernating
            || self.ctx.lease_ms() == 0
            || !self.is_leader()
            || !self.raw.raft.commit_to_current_term()
            || self.reads_inflight.values().any(|r| r.reads.is_empty())
        {
            return;
        }
        let margin = self.ctx.cfg.tick_interval() * (self.ctx.cfg.heartbeat_ticks as u32 + 1);
        let lapsing = !self.lease_valid(now) || self.lease_until.is_some_and(|u| u <= now + margin);
        if lapsing {
            self.start_round(Vec::new());
        }
    }

    fn report_to_pd(&mut self) {
        self.last_pd_report = Instant::now();
        let mut hb = RegionHeartbeatRequest::new();
        hb.set_region(self.region().clone());
        if let Some(l) = self.leader_meta() {
            hb.set_leader(l);
        }
        hb.set_term(self.raw.raft.term);
        if let Some((keys, size)) = self.approximate {
            hb.set_approximate_keys(keys);
            hb.set_approximate_size(size);
        }
        let _ = self.ctx.pd_reports.send(hb);
    }

    fn maybe_compact(&mut self) {
        let store = self.raw.store();
        let (applied, _) = store.applied();
        let truncated = store.truncated_index();
        let limit = self.ctx.cfg.raft_log_gc_count_limit;
        if applied.saturating_sub(truncated) < limit {
            return;
        }
        let mut idx = applied;
        if self.is_leader() {
            // Keep what a slightly lagging follower still needs, so it catches up by log,
            // not snapshot; a follower lagging by more than the limit gets a snapshot.
            let min_match = self
                .raw
                .raft
                .prs()
                .iter()
                .map(|(_, p)| p.matched)
                .min()
                .unwrap_or(applied);
            if min_match > truncated && applied - min_match < limit {
                idx = min_match;
            }
        }
        match self.raw.mut_store().compact_to(idx) {
            Ok(Some(wb)) => {
                info!(self.logger, "raft log compacted"; "through" => idx);
                self.submit_extra_write(wb);
            }
            Ok(None) => {}
            Err(e) => error!(self.logger, "log compaction failed"; "error" => %e),
        }
    }

    fn propose_pending(&mut self) {
        if self.pending_cmds.is_empty() {
            return;
        }
        let cmds = std::mem::take(&mut self.pending_cmds);
        self.pending_bytes = 0;
        let n = cmds.len() as u64;
        let mut batch = RaftCmdBatch::new();
        batch.set_propose_time_ms(now_ms());
        let mut responders = Vec::with_capacity(cmds.len());
        for (cmd, tx) in cmds {
            batch.mut_cmds().push(cmd);
            responders.push(tx);
        }
        let data = batch
            .write_to_bytes()
            .expect("encoding an in-memory command batch cannot fail");
        self.written_since_check += data.len() as u64;
        match self.raw.propose(vec![], data) {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                self.proposals.push_back(Proposal {
                    index,
                    term,
                    proposed_at: Instant::now(),
                    responders,
                    deadline: Instant::now()
                        + Duration::from_millis(self.ctx.cfg.proposal_timeout_ms),
                });
                self.ctx
                    .metrics
                    .proposed_cmds
                    .fetch_add(n, Ordering::Relaxed);
                self.ctx
                    .metrics
                    .proposed_entries
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                let e = self.not_leader();
                for tx in responders {
                    let _ = tx.send(e.clone().into_response());
                }
            }
        }
    }

    fn start_reads(&mut self) {
        if self.new_reads.is_empty() && self.reads_waiting_term.is_empty() {
            return;
        }
        if !self.is_leader() {
            let e = self.not_leader();
            for r in self
                .new_reads
                .drain(..)
                .chain(self.reads_waiting_term.drain(..))
            {
                let _ = r.tx.send(e.clone().into_response());
            }
            return;
        }
        let mut reads = std::mem::take(&mut self.reads_waiting_term);
        reads.append(&mut self.new_reads);
        // raft-rs drops read_index silently until the leader committed an entry of its term.
        if !self.raw.raft.commit_to_current_term() {
            self.reads_waiting_term = reads;
            return;
        }
        self.start_round(reads);
    }

    /// Starts one ReadIndex round (a heartbeat broadcast) for `reads`.
    fn start_round(&mut self, reads: Vec<ReadReq>) {
        let id = self.next_read_id;
        self.next_read_id += 1;
        self.raw.read_index(id.to_be_bytes().to_vec());
        self.reads_inflight.insert(
            id,
            ReadRound {
                started: Instant::now(),
                term: self.raw.raft.term,
                reads,
            },
        );
    }

    fn serve_reads(&mut self) {
        let applied = self.raw.store().applied().0;
        while self
            .reads_ready
            .front()
            .is_some_and(|(idx, _)| *idx <= applied)
        {
            let Some((index, reads)) = self.reads_ready.pop_front() else {
                break;
            };
            for r in reads {
                self.finish_read(r, index);
            }
        }
    }

    fn read_local(&self, req: &Request) -> KvResponse {
        read_from_engine(&self.raw.store().engine().snapshot(), self.region(), req)
    }

    /// A message from this replica to `to`, with no raft content yet.
    fn envelope(&self, to: PeerMeta) -> RaftMessage {
        let mut rm = RaftMessage::new();
        rm.set_region_id(self.region_id);
        let mut from = PeerMeta::new();
        from.set_id(self.peer_id);
        from.set_store_id(self.ctx.store_id);
        rm.set_from_peer(from);
        rm.set_to_peer(to);
        rm.set_region_epoch(self.region().get_region_epoch().clone());
        rm
    }

    fn send_messages(&mut self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        self.publish_read_state();
        let now = Instant::now();
        let stamp = if self.lease_valid(now) && self.raw.raft.commit_to_current_term() {
            self.raw.raft.raft_log.committed
        } else {
            0
        };
        for m in msgs {
            let Some(to) = self
                .region()
                .get_peers()
                .iter()
                .find(|p| p.get_id() == m.to)
                .or_else(|| self.peer_cache.get(&m.to))
                .cloned()
            else {
                continue;
            };
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshot_reports.push(m.to);
            }
            let mut rm = self.envelope(to);
            if m.get_msg_type() == MessageType::MsgHeartbeat {
                // Lets a store that missed the split making this region start a replica.
                rm.set_start_key(self.region().get_start_key().to_vec());
                rm.set_end_key(self.region().get_end_key().to_vec());
            }
            self.out_seq += 1;
            rm.set_seq(self.out_seq);
            self.sent_times.push_back((self.out_seq, now));
            if self.sent_times.len() > SENT_TIMES_KEPT {
                self.sent_times.pop_front();
            }
            rm.set_echo_seq(self.seq_from.get(&m.to).copied().unwrap_or(0));
            rm.set_leader_commit(stamp);
            rm.set_hibernate(self.hibernating && self.is_leader());
            rm.set_message(
                m.write_to_bytes()
                    .expect("encoding an in-memory raft message cannot fail"),
            );
            self.ctx.transport.send(rm);
            self.ctx
                .metrics
                .raft_messages_sent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn on_role_change(&mut self) {
        let leader = self.is_leader();
        if leader && !self.was_leader {
            info!(self.logger, "became leader"; "term" => self.raw.raft.term);
            self.report_to_pd();
        }
        if !leader && self.was_leader {
            info!(self.logger, "stepped down"; "term" => self.raw.raft.term);
            self.lease_until = None;
            self.split_pending = None;
            let e = self.not_leader();
            for (_, round) in self.reads_inflight.drain() {
                for r in round.reads {
                    let _ = r.tx.send(e.clone().into_response());
                }
            }
            for r in self.reads_waiting_term.drain(..) {
                let _ = r.tx.send(e.clone().into_response());
            }
            // Reads whose index was confirmed while leader are still linearizable once applied.
        }
        self.was_leader = leader;
    }

    /// Proposes the turn's commands, starts its reads and drains raft's Ready.
    pub fn flush(&mut self) {
        self.propose_pending();
        self.start_reads();
        while self.raw.has_ready() {
            self.handle_ready();
        }
        for to in std::mem::take(&mut self.snapshot_reports) {
            self.raw.report_snapshot(to, raft::SnapshotStatus::Finish);
        }
        self.serve_reads();
        self.advance_safe_time();
        self.serve_ryw(Instant::now());
        self.publish_read_state();
    }

    fn handle_ready(&mut self) {
        let mut rd = self.raw.ready();
        let role_changed = rd.ss().is_some();
        self.send_messages(rd.take_messages());
        let mut w = LogWrite {
            region_id: self.region_id,
            ..LogWrite::default()
        };
        if !rd.snapshot().is_empty() {
            let meta = rd.snapshot().get_metadata();
            let (idx, term) = (meta.index, meta.term);
            match self.raw.mut_store().apply_snapshot(rd.snapshot(), &mut w) {
                Ok(()) => {
                    info!(self.logger, "installing snapshot"; "index" => idx, "term" => term);
                    self.pending_snapshot = Some((idx, term));
                }
                Err(e) => {
                    // A leader sent a snapshot we cannot apply: continuing would diverge.
                    panic!(
                        "region {} peer {}: cannot apply snapshot at index {idx} term {term}: {e}",
                        self.region_id, self.peer_id
                    );
                }
            }
        }
        if let Some(hs) = rd.hs() {
            let hs = hs.clone();
            self.raw.mut_store().set_hard_state(&hs, &mut w);
        }
        let entries = rd.take_entries();
        let last_index = entries.last().map_or(0, |e| e.index);
        self.raw.mut_store().append(entries, &mut w);
        for rs in rd.take_read_states() {
            let id = rs
                .request_ctx
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if let Some(round) = self.reads_inflight.remove(&id) {
                // A quorum answered the heartbeat of this round, sent at its start.
                self.renew_lease(round.started, round.term);
                if !round.reads.is_empty() {
                    self.reads_ready.push_back((rs.index, round.reads));
                }
            }
        }
        let committed = rd.take_committed_entries();
        let persisted_msgs = rd.take_persisted_messages();
        let number = rd.number();
        if w.is_empty() && self.inflight_writes == 0 && self.pending_snapshot.is_none() {
            self.send_messages(persisted_msgs);
            let mut light = self.raw.advance_append(rd);
            self.send_messages(light.take_messages());
            self.apply(committed);
            self.apply(light.take_committed_entries());
        } else {
            self.raw.advance_append_async(rd);
            self.persisted_msgs.push_back((number, persisted_msgs));
            self.inflight_writes += 1;
            if let Some(addr) = &self.self_addr {
                self.ctx.log_writer.submit(WriteTask {
                    write: w,
                    ready_number: number,
                    last_index,
                    notify: addr.clone(),
                });
            }
            self.apply(committed);
        }
        if role_changed {
            self.on_role_change();
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|e| e.index) else {
            return;
        };
        let ttl = self.ctx.cfg.dedup_session_ttl_ms;
        match apply::apply_committed(self.raw.mut_store(), entries, ttl, &self.logger) {
            Ok(applied) => {
                self.raw.advance_apply_to(last);
                self.delegate.set_applied(last);
                for a in applied {
                    if let Some((left, right)) = &a.split {
                        self.on_split_applied(a.index, left, right);
                    }
                    self.answer(a);
                }
            }
            Err(e) => {
                // Storage failure on apply: stop serving rather than diverge.
                error!(self.logger, "apply failed; replica stops accepting writes"; "error" => %e);
                self.poisoned = Some(e.to_string());
            }
        }
    }

    fn answer(&mut self, a: AppliedEntry) {
        while let Some(p) = self.proposals.front() {
            if p.index > a.index {
                break;
            }
            let Some(p) = self.proposals.pop_front() else {
                break;
            };
            if p.index == a.index && p.term == a.term && p.responders.len() == a.responses.len() {
                // Committed: a quorum took an append sent after it was proposed.
                self.renew_lease(p.proposed_at, p.term);
                for (tx, mut resp) in p.responders.into_iter().zip(a.responses) {
                    let r = resp.get_response();
                    let is_read = r.has_get() || r.has_scan() || r.has_batch_get();
                    if is_read && !resp.has_error() {
                        let mut info = ReadInfo::new();
                        info.set_linearizable(true);
                        info.set_network_round_trips(1); // the append of its entry
                        info.set_served_by_store(self.ctx.store_id);
                        info.set_read_index(a.index);
                        info.set_applied_index(a.index);
                        info.set_waited_us(p.proposed_at.elapsed().as_micros() as u64);
                        resp.set_read_info(info);
                    }
                    let _ = tx.send(resp);
                }
                return;
            }
            for tx in p.responders {
                let _ = tx.send(Error::StaleCommand.into_response());
            }
        }
    }

    /// Installs a snapshot at `(index, term)` holding exactly `pairs` (raw user key, value)
    /// on a replica that holds no data yet (how a harness seeds a node, `seed_state`). The
    /// snapshot goes through raft's own restore path, so it is persisted and applied like
    /// one received from a leader, and a lagging replica later gets it from whoever leads.
    pub fn seed(
        &mut self,
        pairs: &[(Vec<u8>, Vec<u8>)],
        index: u64,
        term: u64,
    ) -> Result<(), Error> {
        let store = self.raw.store();
        let has_data = !store
            .engine()
            .snapshot()
            .scan_raw(
                self.region().get_start_key(),
                self.region().get_end_key(),
                1,
            )
            .map_err(Error::from)?
            .is_empty();
        if has_data || self.raw.raft.raft_log.committed >= index {
            return Err(Error::InvalidArgument(format!(
                "seed refused: the replica already holds data or committed through {} (>= {index})",
                self.raw.raft.raft_log.committed
            )));
        }
        let snap = regatta_engine::snapshot::build_seed(
            self.region(),
            store.voters(),
            index,
            term,
            pairs,
        )?;
        if self.raw.raft.state != StateRole::Follower || self.raw.raft.term < term {
            let t = self.raw.raft.term.max(term);
            self.raw.raft.become_follower(t, raft::INVALID_ID);
        }
        if !self.raw.raft.restore(snap) {
            return Err(Error::InvalidArgument(format!(
                "raft refused the seed snapshot at index {index} term {term}"
            )));
        }
        info!(self.logger, "seeded from a snapshot"; "index" => index, "term" => term, "keys" => pairs.len());
        Ok(())
    }

    /// Compacts the raft log through `up_to` (capped at the applied index; the state
    /// machine in RocksDB is the snapshot) and returns the `(index, term)` the log is now
    /// compacted through.
    pub fn compact_log(&mut self, up_to: u64) -> Result<(u64, u64), Error> {
        if let Some(wb) = self.raw.mut_store().compact_to(up_to)? {
            info!(self.logger, "raft log compacted on request"; "through" => self.raw.store().truncated_index());
            self.submit_extra_write(wb);
        }
        let store = self.raw.store();
        let idx = store.truncated_index();
        let term = self.raw.raft.raft_log.term(idx).unwrap_or(0);
        Ok((idx, term))
    }

    /// Sends a write that needs no Ready of its own (compaction) through the LogWriter
    /// queue, so it stays ordered with log appends.
    fn submit_extra_write(&mut self, wb: regatta_engine::RocksWriteBatch) {
        let write = LogWrite {
            region_id: self.region_id,
            extra: Some(wb),
            ..LogWrite::default()
        };
        if let Some(addr) = &self.self_addr {
            self.ctx.log_writer.submit(WriteTask {
                write,
                ready_number: 0,
                last_index: 0,
                notify: addr.clone(),
            });
        }
    }

    /// Makes this replica leader through a leader transfer when a leader is known (the
    /// current leader catches it up, then tells it to campaign at once), or by campaigning
    /// when none is: with pre-vote and check-quorum a plain campaign against a live leader
    /// would lose.
    pub fn request_leadership(&mut self) {
        if self.is_leader() {
            return;
        }
        let leader = self.raw.raft.leader_id;
        if leader != raft::INVALID_ID && leader != self.peer_id {
            self.raw.transfer_leader(self.peer_id);
        } else if let Err(e) = self.raw.campaign() {
            warn!(self.logger, "campaign failed"; "error" => %e);
        }
    }

    /// The LogWriter made Readies through `ready_number` durable (or failed).
    pub fn on_persisted(&mut self, p: Persisted) {
        if let Err(reason) = p.result {
            error!(self.logger, "store poisoned; rejecting writes"; "reason" => &reason);
            self.poisoned = Some(reason.clone());
            for prop in self.proposals.drain(..) {
                for tx in prop.responders {
                    let _ = tx.send(Error::StorePoisoned(reason.clone()).into_response());
                }
            }
            return;
        }
        if p.ready_number == 0 {
            return; // a compaction
        }
        self.raw.on_persist_ready(p.ready_number);
        self.inflight_writes = self.inflight_writes.saturating_sub(1);
        if p.last_index > 0 {
            self.raw.mut_store().on_persisted(p.last_index);
        }
        if let Some((idx, _)) = self.pending_snapshot {
            if self.raw.raft.raft_log.persisted >= idx {
                self.raw.advance_apply_to(idx);
                self.delegate.set_applied(idx);
                self.pending_snapshot = None;
                if !self.peer_cache.is_empty() {
                    info!(self.logger, "initialized by snapshot"; "index" => idx,
                        "region" => ?self.region());
                    self.peer_cache.clear();
                }
            }
        }
        while self
            .persisted_msgs
            .front()
            .is_some_and(|(n, _)| *n <= p.ready_number)
        {
            if let Some((_, msgs)) = self.persisted_msgs.pop_front() {
                self.send_messages(msgs);
            }
        }
    }
}

/// Checks a request against the replica's region (epoch, key range) and the size limits.
pub(crate) fn validate_request(
    req: &KvRequest,
    region: &Region,
    cfg: &StoreConfig,
) -> Result<(), Error> {
    if region.get_peers().is_empty() {
        // An uninitialized replica: it does not know its range yet.
        return Err(Error::RegionNotFound(region.get_id()));
    }
    let ctx = req.get_context();
    let epoch = region.get_region_epoch();
    if ctx.get_region_epoch().get_version() != epoch.get_version()
        || ctx.get_region_epoch().get_conf_ver() != epoch.get_conf_ver()
    {
        return Err(Error::EpochNotMatch {
            current_regions: vec![region.clone()],
        });
    }
    let check_key = |key: &[u8]| -> Result<(), Error> {
        if key.is_empty() || key.len() > cfg.max_key_size {
            return Err(Error::InvalidArgument(format!(
                "key of {} bytes (must be 1..={})",
                key.len(),
                cfg.max_key_size
            )));
        }
        if !regatta_proto::region::key_in_range(region, key) {
            return Err(Error::KeyNotInRegion {
                key: key.to_vec(),
                region_id: region.get_id(),
                start_key: region.get_start_key().to_vec(),
                end_key: region.get_end_key().to_vec(),
            });
        }
        Ok(())
    };
    let check_value = |v: &[u8]| -> Result<(), Error> {
        if v.len() > cfg.max_value_size {
            return Err(Error::InvalidArgument(format!(
                "value of {} bytes exceeds {}",
                v.len(),
                cfg.max_value_size
            )));
        }
        Ok(())
    };
    match &req.get_request().cmd {
        Some(Request_oneof_cmd::get(g)) => check_key(g.get_key()),
        Some(Request_oneof_cmd::put(p)) => {
            check_key(p.get_key())?;
            check_value(p.get_value())
        }
        Some(Request_oneof_cmd::delete(d)) => check_key(d.get_key()),
        Some(Request_oneof_cmd::batch_get(b)) => {
            check_batch_len(b.get_keys().len())?;
            b.get_keys().iter().try_for_each(|k| check_key(k))
        }
        Some(Request_oneof_cmd::batch_put(b)) => {
            check_batch_len(b.get_pairs().len())?;
            b.get_pairs().iter().try_for_each(|p| {
                check_key(p.get_key())?;
                check_value(p.get_value())
            })
        }
        Some(Request_oneof_cmd::batch_delete(b)) => {
            check_batch_len(b.get_keys().len())?;
            b.get_keys().iter().try_for_each(|k| check_key(k))
        }
        Some(Request_oneof_cmd::cas(c)) => {
            check_key(c.get_key())?;
            check_value(c.get_expected())?;
            check_value(c.get_new_value())
        }
        Some(Request_oneof_cmd::scan(s)) => {
            let r = region;
            let start_ok = r.get_end_key().is_empty() || s.get_start_key() < r.get_end_key();
            let end_ok = s.get_end_key().is_empty() || s.get_end_key() > r.get_start_key();
            if start_ok && end_ok {
                Ok(())
            } else {
                Err(Error::KeyNotInRegion {
                    key: s.get_start_key().to_vec(),
                    region_id: region.get_id(),
                    start_key: r.get_start_key().to_vec(),
                    end_key: r.get_end_key().to_vec(),
                })
            }
        }
        Some(Request_oneof_cmd::split(sp)) => {
            check_key(sp.get_split_key())?;
            if sp.get_split_key() == region.get_start_key() {
                return Err(Error::InvalidArgument(
                    "the split key is the region's start: nothing to split".into(),
                ));
            }
            Ok(())
        }
        None => Err(Error::InvalidArgument("request has no command".into())),
    }
}

/// A batch holds at least one key and at most [`MAX_BATCH_KEYS`].
fn check_batch_len(n: usize) -> Result<(), Error> {
    if n == 0 || n > MAX_BATCH_KEYS {
        return Err(Error::InvalidArgument(format!(
            "a batch of {n} keys (must be 1..={MAX_BATCH_KEYS})"
        )));
    }
    Ok(())
}

/// Most keys one batch request carries (the client cuts bigger batches).
pub const MAX_BATCH_KEYS: usize = 10_000;

/// Serves a get, batch get or scan from the replica's applied state in `snap`.
pub(crate) fn read_from_engine<S: regatta_engine::Snapshot>(
    snap: &S,
    region: &Region,
    req: &Request,
) -> KvResponse {
    let mut resp = regatta_proto::kvrpcpb::Response::new();
    let result = match &req.cmd {
        Some(Request_oneof_cmd::get(g)) => snap
            .get_raw(g.get_key())
            .map(|v| resp.set_get(apply::get_response(v)))
            .map_err(Error::from),
        Some(Request_oneof_cmd::batch_get(b)) => b
            .get_keys()
            .iter()
            .map(|k| Ok((k.clone(), snap.get_raw(k)?)))
            .collect::<Result<Vec<_>, Error>>()
            .map(|reads| resp.set_batch_get(apply::batch_get_response(reads))),
        Some(Request_oneof_cmd::scan(s)) => apply::scan_region(
            snap,
            region,
            s.get_start_key(),
            s.get_end_key(),
            s.get_limit() as usize,
            None,
        )
        .map(|r| resp.set_scan(r)),
        _ => Err(Error::InvalidArgument("not a read".into())),
    };
    match result {
        Ok(()) => {
            let mut out = KvResponse::new();
            out.set_response(resp);
            out
        }
        Err(e) => e.into_response(),
    }
}

/// The actix shell of a [`Peer`].
pub struct PeerActor {
    peer: Peer,
    flush_scheduled: bool,
    tick_handle: Option<SpawnHandle>,
}

impl PeerActor {
    /// Wraps `peer`.
    pub fn new(peer: Peer) -> Self {
        PeerActor {
            peer,
            flush_scheduled: false,
            tick_handle: None,
        }
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
        if self.peer.take_tick_changed() {
            self.schedule_tick(ctx);
        }
    }

    /// (Re)arms the raft clock at the peer's current pace (slow while hibernating).
    fn schedule_tick(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.tick_handle.take() {
            ctx.cancel_future(h);
        }
        let interval = self.peer.tick_interval();
        self.tick_handle = Some(ctx.run_later(interval, |act, ctx| {
            act.tick_handle = None;
            act.peer.tick();
            act.schedule_flush(ctx);
            if act.tick_handle.is_none() {
                act.schedule_tick(ctx);
            }
        }));
    }
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.peer.self_addr = Some(ctx.address().recipient());
        self.peer.split_self = Some(ctx.address().recipient());
        self.schedule_tick(ctx);
    }
}

/// Runs the end-of-turn work.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

impl Handler<Flush> for PeerActor {
    type Result = ();
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.flush_scheduled = false;
        self.peer.flush();
    }
}

/// A raft message from another store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RaftMessageIn(pub RaftMessage);

impl Handler<RaftMessageIn> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: RaftMessageIn, ctx: &mut Context<Self>) {
        self.peer.on_raft_message(msg.0);
        self.schedule_flush(ctx);
    }
}

/// A client request and where to answer it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct KvCommand {
    /// The request.
    pub req: KvRequest,
    /// The answer channel.
    pub tx: Responder,
}

impl Handler<KvCommand> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: KvCommand, ctx: &mut Context<Self>) {
        self.peer.on_kv(msg.req, msg.tx);
        self.schedule_flush(ctx);
    }
}

impl Handler<Persisted> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: Persisted, ctx: &mut Context<Self>) {
        self.peer.on_persisted(msg);
        self.schedule_flush(ctx);
    }
}

/// A step of a split that comes back to the region's actor from another task.
#[derive(Message)]
#[rtype(result = "()")]
pub enum SplitStep {
    /// A split check finished: split at `key` if it is still the region of `version`.
    Checked {
        /// Where to split (`None`: the region is small enough).
        key: Option<Vec<u8>>,
        /// The region's (keys, bytes) as scanned.
        stats: (u64, u64),
        /// The epoch version the check scanned.
        version: u64,
    },
    /// PD handed out ids: propose the split.
    Ids {
        /// Where to split.
        key: Vec<u8>,
        /// The epoch the split was decided at.
        epoch: regatta_proto::metapb::RegionEpoch,
        /// The new region's id; its peers take the next ids.
        first_id: u64,
        /// Who asked (a manual split), answered at apply.
        tx: Option<Responder>,
    },
    /// PD could not hand out ids.
    Failed {
        /// Why.
        reason: String,
        /// Who asked.
        tx: Option<Responder>,
    },
}

impl Handler<SplitStep> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: SplitStep, ctx: &mut Context<Self>) {
        self.peer.on_split_step(msg);
        self.schedule_flush(ctx);
    }
}

/// Asks for the replica's [`RegionStatus`].
#[derive(Message)]
#[rtype(result = "RegionStatus")]
pub struct GetStatus;

impl Handler<GetStatus> for PeerActor {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.peer.status())
    }
}

/// Asks the replica to become leader (tests, `become_leader`): by leader transfer when a
/// leader is known, else by campaigning. It wins only with a quorum's votes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Campaign;

impl Handler<Campaign> for PeerActor {
    type Result = ();
    fn handle(&mut self, _: Campaign, ctx: &mut Context<Self>) {
        self.peer.request_leadership();
        self.schedule_flush(ctx);
    }
}

/// PD asks the leader to hand leadership to peer `.0` (leader balance).
#[derive(Message)]
#[rtype(result = "()")]
pub struct TransferLeader(pub u64);

impl Handler<TransferLeader> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: TransferLeader, ctx: &mut Context<Self>) {
        let peer = &mut self.peer;
        let member = peer
            .region()
            .get_peers()
            .iter()
            .any(|p| p.get_id() == msg.0);
        if peer.is_leader() && member && msg.0 != peer.peer_id {
            info!(peer.logger, "transferring leadership (PD balance)"; "to" => msg.0);
            peer.raw.transfer_leader(msg.0);
        }
        self.schedule_flush(ctx);
    }
}

/// Seeds a replica that holds no data with a snapshot at `(index, term)` holding `pairs`
/// (raw user key, value); see [`Peer::seed`].
#[derive(Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Seed {
    /// The state: raw user keys and values.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The snapshot's index (the state's commit index).
    pub index: u64,
    /// The snapshot's term.
    pub term: u64,
}

impl Handler<Seed> for PeerActor {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: Seed, ctx: &mut Context<Self>) -> Self::Result {
        let r = self.peer.seed(&msg.pairs, msg.index, msg.term);
        self.schedule_flush(ctx);
        r
    }
}

/// Compacts the replica's raft log through an index (capped at the applied index);
/// answers the `(index, term)` it is compacted through. See [`Peer::compact_log`].
#[derive(Message)]
#[rtype(result = "Result<(u64, u64), Error>")]
pub struct CompactLog(pub u64);

impl Handler<CompactLog> for PeerActor {
    type Result = Result<(u64, u64), Error>;
    fn handle(&mut self, msg: CompactLog, ctx: &mut Context<Self>) -> Self::Result {
        let r = self.peer.compact_log(msg.0);
        self.schedule_flush(ctx);
        r
    }
}
