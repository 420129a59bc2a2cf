//! The seam between the raftstore and the layer above it: the raftstore replicates and
//! applies commands, serves reads and moves regions, and knows no transaction; whatever
//! enters a replica's life for transactions enters here (TiKV's coprocessor host and
//! observers are the model). Regatta's transactional layer implements it (a crate of its
//! own); [`NoCoprocessor`] is a raftstore with nothing above. The raftstore calls it at six
//! points:
//!
//! | point | hook | what the transactional layer does there |
//! |---|---|---|
//! | a request arrives | [`RegionObserver::on_request`], [`RegionObserver::on_write`] | leader only, the timestamp limit, `max_ts` raised by reads, the read floor; lock waits queue, hand-overs ride behind releasing commands |
//! | a turn's entry is built | [`RegionObserver::pre_propose`], [`RegionObserver::post_propose`] | a 1PC commit ts chosen above `max_ts`; reads wait for that entry |
//! | apply | [`Coprocessor::begin_apply`] → [`Applier`] | Percolator actions over the apply batch (deterministic, every replica) |
//! | after apply | [`RegionObserver::on_applied`], [`RegionObserver::on_answer`] | released locks handed to their waiters; a raised GC safe point starts a GC pass |
//! | role change | [`RegionObserver::on_role_change`], [`RegionObserver::drain`], [`RegionObserver::before_hand_over`] | `max_ts` synced with the TSO; lock waits answered on step-down, split and fence; in-memory locks proposed before a transfer or split |
//! | periodic work | [`RegionObserver::on_tick`], [`RegionObserver::on_heartbeat`] | lock-wait deadlines, PD's safe point proposed, the oldest lock reported |
//!
//! Contracts the raftstore keeps for the layer: a command the layer claims ([`Coprocessor::kind`])
//! is validated by it, proposed and applied in log order like any other, deduplicated by
//! its `(client_id, seq)` when it is a write, and answered exactly once (through the
//! layer when it carries a token: [`RegionObserver::on_answer`] or
//! [`RegionObserver::on_abandoned`]). Hooks run on the replica's turn and must not block.
//!
//! Contracts the layer keeps: [`Applier`] is deterministic (the same entries on the same
//! state give the same bytes and answers on every replica, reading only the snapshot and
//! what the batch wrote before); an `Err` from it is an engine failure (the batch is dropped
//! and the replica stops), never a command's failure.

use crate::error::Error;
use crate::peer::{PeerMailbox, Responder};
use protobuf::Message as _;
use regatta_engine::{Cf, DynEngine, DynSnapshot, DynWriteBatch};
use regatta_proto::kvrpcpb::{KvResponse, Request, Response};
use regatta_proto::metapb::{Peer as PeerMeta, Region};
use regatta_proto::pdpb::RegionHeartbeatRequest;
use regatta_proto::raft_serverpb::{AdminCmd, RaftCmd};
use slog::Logger;
use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

/// Something an [`Applier`] tells the replica's [`RegionObserver`] about an applied entry
/// (which locks it released, which safe point it raised). Opaque to the raftstore: the
/// layer that writes it reads it.
pub type Note = Box<dyn Any + Send>;

/// A claimed command's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Changes nothing; served from the applied state.
    Read,
    /// Changes data: proposed, applied, deduplicated.
    Write,
}

/// A check of the raftstore's over one key or value.
pub type BytesCheck<'a> = dyn Fn(&[u8]) -> Result<(), Error> + 'a;
/// A check of the raftstore's over a range `[start, end)`.
pub type RangeCheck<'a> = dyn Fn(&[u8], &[u8]) -> Result<(), Error> + 'a;

/// The key and value checks of the raftstore (sizes, the key inside the region), for the
/// layer's validation.
pub struct Checks<'a> {
    /// Checks one key.
    pub key: &'a BytesCheck<'a>,
    /// Checks one value.
    pub value: &'a BytesCheck<'a>,
    /// Checks that a scan's `[start, end)` (an empty end: unbounded) overlaps the region.
    pub range: &'a RangeCheck<'a>,
}

/// A key space of a region's data the layer owns, for split checks: where it lies, and how
/// to get the user key back from a data key (a split cuts at user keys only).
pub struct KeySpace {
    /// Its column family.
    pub cf: Cf,
    /// The first data key of the region in it.
    pub lo: Vec<u8>,
    /// The end (exclusive) of the region's data keys in it.
    pub hi: Vec<u8>,
    /// The user key of a data key of this space (`None`: not one).
    pub user_key: fn(&[u8]) -> Option<Vec<u8>>,
}

/// The store-wide half of the layer: stateless towards replicas, shared by all of them and
/// by the local readers.
pub trait Coprocessor: Send + Sync + 'static {
    /// Whether `req` is one of the layer's commands (`None`: the raftstore's own).
    fn kind(&self, req: &Request) -> Option<Kind>;

    /// Checks a claimed request against the region with the raftstore's `checks`.
    fn validate(&self, req: &Request, region: &Region, checks: &Checks) -> Result<(), Error>;

    /// Serves a claimed read from `snap`, the region's applied state.
    fn read(
        &self,
        snap: &dyn DynSnapshot,
        region: &Region,
        req: &Request,
    ) -> Result<Response, Error>;

    /// Starts applying one batch of entries of `region_id` over `snap` (everything applied
    /// before them); the batch's writes go to the raftstore's batch.
    fn begin_apply<'a>(
        &'a self,
        snap: &'a dyn DynSnapshot,
        region_id: u64,
    ) -> Box<dyn Applier + 'a>;

    /// The key spaces of `region`'s data this layer owns, for split checks.
    fn key_spaces(&self, region: &Region) -> Vec<KeySpace>;

    /// The observer of a new replica.
    fn new_observer(&self, region_id: u64, logger: &Logger) -> Box<dyn RegionObserver>;
}

/// One apply batch's share of the layer (see [`Coprocessor::begin_apply`]).
pub trait Applier {
    /// Executes a claimed command of an entry at `index` of `region`. The raftstore checked
    /// its epoch and session; the outer `Err` is an engine failure, the inner one the
    /// command's answer. Notes go to the entry's [`RegionObserver::on_applied`].
    fn apply(
        &mut self,
        wb: &mut dyn DynWriteBatch,
        region: &Region,
        cmd: &RaftCmd,
        index: u64,
        notes: &mut Vec<Note>,
    ) -> Result<Result<Response, Error>, Error>;

    /// Executes an admin command that is not a split (`Ok(None)`: not the layer's).
    fn apply_admin(
        &mut self,
        wb: &mut dyn DynWriteBatch,
        region: &Region,
        admin: &AdminCmd,
        notes: &mut Vec<Note>,
    ) -> Result<Option<KvResponse>, Error>;

    /// `left` was split into `left` and `right` in this batch: the layer copies what the
    /// new region must start with.
    fn on_split(
        &mut self,
        wb: &mut dyn DynWriteBatch,
        left: &Region,
        right: &Region,
    ) -> Result<(), Error>;
}

/// What the observer of a request decided.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gate {
    /// Serve it as a linearizable read (ReadIndex) unless the client asked for a lease read.
    pub linearizable: bool,
    /// Serve it only once this index is applied.
    pub read_floor: u64,
}

/// What the replica asks of the raftstore after a hook (see [`ObserverCx`]).
#[derive(Default)]
pub(crate) struct Outbox {
    /// Commands to propose in this turn's entry, in order, with a token when the layer
    /// wants their answer back.
    pub(crate) cmds: Vec<(RaftCmd, Responder, Option<u64>)>,
    /// Admin commands to propose.
    pub(crate) admin: Vec<AdminCmd>,
    /// Send a region heartbeat to PD now.
    pub(crate) report: bool,
}

/// A replica's view, and its outbox, for one hook call.
pub struct ObserverCx<'a> {
    /// The region as this replica knows it.
    pub region: &'a Region,
    /// The store's engine (reads of the applied state; the GC worker's target).
    pub engine: &'a dyn DynEngine,
    /// Whether this replica leads.
    pub leader: bool,
    /// The leader as this replica knows it.
    pub leader_meta: Option<PeerMeta>,
    /// The current term.
    pub term: u64,
    /// The applied index and its term.
    pub applied: (u64, u64),
    /// Whether the replica was fenced (it serves nothing).
    pub fenced: bool,
    /// Whether a split is proposed and not yet applied, or a leader transfer is under way:
    /// state kept only in this leader's memory would not follow the region.
    pub handing_over: bool,
    /// Now, on the store's clock.
    pub now: Instant,
    /// The wall clock in ms, on the store's clock.
    pub wall_ms: u64,
    /// How off-turn work comes back to the replica (absent before its actor starts).
    pub mailbox: Option<&'a Arc<dyn PeerMailbox>>,
    /// The replica's logger.
    pub logger: &'a Logger,
    pub(crate) out: &'a mut Outbox,
}

impl ObserverCx<'_> {
    /// Proposes `cmd` in this turn's entry, answered through `tx` — or, with a `token`,
    /// through [`RegionObserver::on_answer`] (or [`RegionObserver::on_abandoned`] if it
    /// never applies).
    pub fn propose(&mut self, cmd: RaftCmd, tx: Responder, token: Option<u64>) {
        self.out.cmds.push((cmd, tx, token));
    }

    /// Proposes an admin command (dropped if this replica does not lead by then), ahead of
    /// the turn's entry.
    pub fn propose_admin(&mut self, admin: AdminCmd) {
        self.out.admin.push(admin);
    }

    /// Sends a region heartbeat to PD now (with [`RegionObserver::on_heartbeat`]'s part).
    pub fn report_to_pd(&mut self) {
        self.out.report = true;
    }

    /// The error for a request only the leader serves.
    pub fn not_leader(&self) -> Error {
        Error::NotLeader {
            region_id: self.region.get_id(),
            leader: self.leader_meta.clone(),
        }
    }
}

/// The replica-side half of the layer: one per replica, driven on its turn.
pub trait RegionObserver: Send {
    /// A claimed request arrived (validated). `Err` answers it.
    fn on_request(&mut self, req: &Request, cx: &mut ObserverCx) -> Result<Gate, Error>;

    /// A claimed write on the leader: the observer proposes it through `cx` (now, or later
    /// when it waits for something), with anything that must ride behind it.
    fn on_write(&mut self, cmd: RaftCmd, tx: Responder, cx: &mut ObserverCx);

    /// The entry of this turn is being built: the observer may fill in what must be
    /// chosen at propose time. Returns whether reads arriving from now on must wait for
    /// this entry ([`RegionObserver::post_propose`] gets its index).
    fn pre_propose(&mut self, cmd: &mut RaftCmd, cx: &ObserverCx) -> bool;

    /// The turn's entry, whose commands went through [`RegionObserver::pre_propose`], was
    /// proposed at `index`; `marked` when one of them asked reads to wait for it. (An
    /// entry raft refused gets no call.)
    fn post_propose(&mut self, index: u64, marked: bool);

    /// An admin command the observer asked for ([`ObserverCx::propose_admin`]) was
    /// proposed at `index`.
    fn post_propose_admin(&mut self, admin: &AdminCmd, index: u64);

    /// This leader is about to hand the region on — a leader transfer (raft drops
    /// proposals while it runs), or a split whose entry comes next — and the observer
    /// proposes now, through `cx`, whatever it holds only in memory that must follow the
    /// region (its admin commands go into the log ahead of the transfer or split).
    fn before_hand_over(&mut self, cx: &mut ObserverCx);

    /// A command proposed with `token` applied: the observer answers `tx` (now or later).
    fn on_answer(&mut self, token: u64, tx: Responder, resp: KvResponse, cx: &mut ObserverCx);

    /// Commands proposed with these tokens will not be answered through the observer:
    /// superseded or refused (never applied), timed out (outcome unknown: they may still
    /// apply) or the replica was fenced. Their requesters were answered already.
    fn on_abandoned(&mut self, tokens: Vec<u64>, cx: &mut ObserverCx);

    /// An entry applied with these notes (after its answers were given).
    fn on_applied(&mut self, notes: Vec<Note>, cx: &mut ObserverCx);

    /// The replica became leader (`cx.leader`) or stepped down.
    fn on_role_change(&mut self, cx: &mut ObserverCx);

    /// Everything held must be answered `why` now (stepped down, split, fenced).
    fn drain(&mut self, why: &Error);

    /// The raft clock ticked.
    fn on_tick(&mut self, cx: &mut ObserverCx);

    /// A message sent through [`PeerMailbox::notify`] arrived.
    fn on_message(&mut self, msg: Note, cx: &mut ObserverCx);

    /// A region heartbeat for PD is being sent: the observer adds its part.
    fn on_heartbeat(&self, hb: &mut RegionHeartbeatRequest, cx: &ObserverCx);

    /// Whether nothing is held (the replica may hibernate).
    fn is_idle(&self) -> bool;

    /// Named figures for status pages and tests (see `RegionStatus::observed`).
    fn status(&self, cx: &ObserverCx) -> Vec<(&'static str, u64)>;
}

/// A response whose body is `resp`, to answer a claimed command.
pub fn response(resp: Response) -> KvResponse {
    let mut out = KvResponse::new();
    out.set_response(resp);
    out
}

/// Bytes a command adds to its entry.
pub(crate) fn cmd_size(cmd: &RaftCmd) -> usize {
    cmd.compute_size() as usize
}

/// No layer above: a raftstore that serves raw commands only (tests, the simulator's
/// raw workloads).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCoprocessor;

impl Coprocessor for NoCoprocessor {
    fn kind(&self, _: &Request) -> Option<Kind> {
        None
    }

    fn validate(&self, _: &Request, _: &Region, _: &Checks) -> Result<(), Error> {
        Ok(())
    }

    fn read(&self, _: &dyn DynSnapshot, _: &Region, _: &Request) -> Result<Response, Error> {
        Err(Error::InvalidArgument(
            "no layer serves this command".into(),
        ))
    }

    fn begin_apply<'a>(&'a self, _: &'a dyn DynSnapshot, _: u64) -> Box<dyn Applier + 'a> {
        Box::new(NoApplier)
    }

    fn key_spaces(&self, _: &Region) -> Vec<KeySpace> {
        Vec::new()
    }

    fn new_observer(&self, _: u64, _: &Logger) -> Box<dyn RegionObserver> {
        Box::new(NoObserver)
    }
}

struct NoApplier;

impl Applier for NoApplier {
    fn apply(
        &mut self,
        _: &mut dyn DynWriteBatch,
        _: &Region,
        _: &RaftCmd,
        _: u64,
        _: &mut Vec<Note>,
    ) -> Result<Result<Response, Error>, Error> {
        Ok(Err(Error::InvalidArgument(
            "no layer applies this command".into(),
        )))
    }

    fn apply_admin(
        &mut self,
        _: &mut dyn DynWriteBatch,
        _: &Region,
        _: &AdminCmd,
        _: &mut Vec<Note>,
    ) -> Result<Option<KvResponse>, Error> {
        Ok(None)
    }

    fn on_split(&mut self, _: &mut dyn DynWriteBatch, _: &Region, _: &Region) -> Result<(), Error> {
        Ok(())
    }
}

/// The observer of a replica with no layer above: holds nothing, changes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl RegionObserver for NoObserver {
    fn on_request(&mut self, _: &Request, _: &mut ObserverCx) -> Result<Gate, Error> {
        Ok(Gate::default())
    }

    fn on_write(&mut self, cmd: RaftCmd, tx: Responder, cx: &mut ObserverCx) {
        cx.propose(cmd, tx, None);
    }

    fn pre_propose(&mut self, _: &mut RaftCmd, _: &ObserverCx) -> bool {
        false
    }

    fn post_propose(&mut self, _: u64, _: bool) {}

    fn post_propose_admin(&mut self, _: &AdminCmd, _: u64) {}

    fn before_hand_over(&mut self, _: &mut ObserverCx) {}

    fn on_answer(&mut self, _: u64, tx: Responder, resp: KvResponse, _: &mut ObserverCx) {
        let _ = tx.send(resp);
    }

    fn on_abandoned(&mut self, _: Vec<u64>, _: &mut ObserverCx) {}

    fn on_applied(&mut self, _: Vec<Note>, _: &mut ObserverCx) {}

    fn on_role_change(&mut self, _: &mut ObserverCx) {}

    fn drain(&mut self, _: &Error) {}

    fn on_tick(&mut self, _: &mut ObserverCx) {}

    fn on_message(&mut self, _: Note, _: &mut ObserverCx) {}

    fn on_heartbeat(&self, _: &mut RegionHeartbeatRequest, _: &ObserverCx) {}

    fn is_idle(&self) -> bool {
        true
    }

    fn status(&self, _: &ObserverCx) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}
