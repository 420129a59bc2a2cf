//! [`PeerActor`]: the actix shell around a [`Peer`], and the messages it takes. The only
//! file of the peer that knows actix, and the one that carries out the peer's effects
//! (sends, log writes, PD calls, split checks: see `effects.rs`).
//!
//! A turn: messages (raft traffic, client commands, ticks, persist notices, split steps)
//! update the peer; the first one schedules a `Flush` that runs after the mailbox batch,
//! so all commands of a turn share one log entry and all reads one ReadIndex round. The
//! raft clock is a timer re-armed at the peer's pace (slow while hibernating). The shell
//! never blocks: fsyncs happen on the LogWriter thread, split checks on the store's
//! split-check pool, PD calls as tasks on the actor's raft thread.

use super::effects::Effect;
use super::{NewRegion, Peer, PeerMailbox, RegionStatus, SplitStep};
use crate::coprocessor::Note;
use crate::error::Error;
use crate::log_writer::{LogWriter, Persisted, PersistedSink, WriteTask};
use crate::pd::{BoxFuture, PdClient};
use crate::peer::Responder;
use crate::split_check::SplitChecker;
use crate::transport::Transport;
use actix::prelude::*;
use regatta_proto::kvrpcpb::KvRequest;
use regatta_proto::pdpb::RegionHeartbeatRequest;
use regatta_proto::raft_serverpb::RaftMessage;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the shell needs to carry out its peer's effects: the store's transport, LogWriter
/// and PD, and where the store hears of region reports and new regions.
#[derive(Clone)]
pub struct ShellContext {
    /// Raft transport.
    pub transport: Arc<dyn Transport>,
    /// The store's LogWriter.
    pub log_writer: LogWriter,
    /// PD, for the ids of split regions.
    pub pd: Arc<dyn PdClient>,
    /// The store's split-check pool.
    pub split_checker: SplitChecker,
    /// Region reports for PD, sent one at a time by a store task; bounded by
    /// `StoreConfig::pd_report_queue` (a report that finds it full is dropped: the next
    /// one carries the region's latest state).
    pub pd_reports: mpsc::Sender<RegionHeartbeatRequest>,
    /// Regions a split created on this store: the store starts their peers (and makes the
    /// one on the old leader's store campaign at once). Bounded by
    /// `StoreConfig::new_region_queue`: one that finds it full waits in the shell, offered
    /// again at every tick.
    pub new_regions: mpsc::Sender<NewRegion>,
}

/// The actix shell of a [`Peer`].
pub struct PeerActor {
    peer: Peer,
    shell: ShellContext,
    /// This actor's address, once started (where LogWriter notices and PD answers go).
    me: Option<Addr<PeerActor>>,
    /// Regions splits made here that the store's full queue did not take yet.
    unstarted: VecDeque<NewRegion>,
    /// The buffer the peer's effects are carried out from (kept, with its capacity).
    effects: Vec<Effect>,
    flush_scheduled: bool,
    tick_handle: Option<SpawnHandle>,
    /// Messages from the network queued for this actor (see [`Inbox`]).
    inbox_queued: Arc<Queued>,
}

impl PeerActor {
    /// Wraps `peer`, carrying out its effects through `shell`.
    pub fn new(peer: Peer, shell: ShellContext) -> Self {
        PeerActor {
            peer,
            shell,
            me: None,
            unstarted: VecDeque::new(),
            effects: Vec::new(),
            flush_scheduled: false,
            tick_handle: None,
            inbox_queued: Arc::default(),
        }
    }

    /// Starts `peer`'s actor on `arbiter`; the network reaches it through the returned
    /// [`Inbox`], which holds at most `capacity` client requests and, apart from them, at
    /// most `capacity` raft messages.
    pub fn start_with_inbox(
        peer: Peer,
        shell: ShellContext,
        arbiter: &ArbiterHandle,
        capacity: usize,
    ) -> Inbox {
        let queued = Arc::new(Queued::default());
        let q = queued.clone();
        let addr = PeerActor::start_in_arbiter(arbiter, move |_| {
            let mut a = PeerActor::new(peer, shell);
            a.inbox_queued = q;
            a
        });
        Inbox {
            addr,
            queued,
            capacity,
        }
    }

    /// Carries out the peer's effects, in order (see `effects.rs`).
    fn run_effects(&mut self) {
        if !self.peer.has_effects() {
            return;
        }
        let Some(me) = self.me.clone() else {
            return; // not started: nothing can have happened yet
        };
        // One buffer, reused turn after turn.
        let mut effects = std::mem::take(&mut self.effects);
        self.peer.drain_effects_into(&mut effects);
        for e in effects.drain(..) {
            match e {
                Effect::Send(m) => self.shell.transport.send(m),
                Effect::Persist {
                    write,
                    ready_number,
                    last_index,
                    then_send,
                } => self.shell.log_writer.submit(WriteTask {
                    write,
                    ready_number,
                    last_index,
                    then_send,
                    transport: self.shell.transport.clone(),
                    notify: Arc::new(me.clone()),
                }),
                Effect::PoisonStore(reason) => self.shell.log_writer.poison(reason),
                Effect::ReportRegion(hb) => {
                    let _ = self.shell.pd_reports.try_send(hb);
                }
                Effect::StartRegion(r) => {
                    self.unstarted.push_back(r);
                    offer_new_regions(&self.shell.new_regions, &mut self.unstarted);
                }
                Effect::AllocSplitIds {
                    count,
                    key,
                    epoch,
                    tx,
                } => {
                    let (pd, back) = (self.shell.pd.clone(), me.clone());
                    actix::spawn(async move {
                        let step = match pd.alloc_id(count).await {
                            Ok(first_id) => SplitStep::Ids {
                                key,
                                epoch,
                                first_id,
                                tx,
                            },
                            Err(e) => SplitStep::Failed {
                                reason: e.to_string(),
                                tx,
                            },
                        };
                        back.do_send(step);
                    });
                }
                Effect::CheckSplit(task) => {
                    let (back, refused) = (me.clone(), task.refused());
                    if !self
                        .shell
                        .split_checker
                        .schedule(Box::new(move || back.do_send(task.run())))
                    {
                        me.do_send(refused);
                    }
                }
            }
        }
        self.effects = effects;
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        self.run_effects();
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
            offer_new_regions(&act.shell.new_regions, &mut act.unstarted);
            act.peer.tick();
            act.schedule_flush(ctx);
            if act.tick_handle.is_none() {
                act.schedule_tick(ctx);
            }
        }));
    }
}

/// Hands the regions splits made here to the store to start, in order, as far as its queue
/// takes them. One that waits is not lost meanwhile: its state is on disk, and a raft
/// heartbeat from its leader elsewhere starts it too. A closed queue (the store is
/// stopping) takes nothing ever again: a restart starts every region from disk.
fn offer_new_regions(tx: &mpsc::Sender<NewRegion>, pending: &mut VecDeque<NewRegion>) {
    while let Some(&n) = pending.front() {
        match tx.try_send(n) {
            Ok(()) => {
                pending.pop_front();
            }
            Err(mpsc::error::TrySendError::Full(_)) => return,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                pending.clear();
                return;
            }
        }
    }
}

/// How the observer's off-turn work comes back: tasks run on the actor's arbiter, their
/// messages come back as actor messages.
impl PeerMailbox for Addr<PeerActor> {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        actix::spawn(task);
    }

    fn notify(&self, note: Note) {
        self.do_send(ObserverMessage(note));
    }
}

/// A message for the replica's observer (see [`crate::coprocessor`]).
#[derive(Message)]
#[rtype(result = "()")]
struct ObserverMessage(Note);

impl Handler<ObserverMessage> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: ObserverMessage, ctx: &mut Context<Self>) {
        self.peer.on_observer_message(msg.0);
        self.schedule_flush(ctx);
    }
}

impl PersistedSink for Addr<PeerActor> {
    fn persisted(&self, p: Persisted) {
        self.do_send(p);
    }
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let addr = ctx.address();
        self.me = Some(addr.clone());
        self.peer.set_mailbox(Arc::new(addr));
        self.schedule_tick(ctx);
        self.peer.on_started();
        self.schedule_flush(ctx);
    }
}

/// The network's way into a replica's actor, with bounds: at most `capacity` client
/// requests and, counted apart, at most `capacity` raft messages wait in the actor's
/// mailbox. A full inbox refuses a client request (the server answers `ServerIsBusy`,
/// which clients back off from) or drops a raft message (raft retransmits), so a flood
/// cannot grow a store's memory without end; and since the two are counted apart, a
/// flood of client requests never crowds out the heartbeats that keep leaders leading.
#[derive(Clone)]
pub struct Inbox {
    addr: Addr<PeerActor>,
    queued: Arc<Queued>,
    capacity: usize,
}

/// Network messages waiting in one actor's mailbox, by kind.
#[derive(Debug, Default)]
struct Queued {
    kv: AtomicUsize,
    raft: AtomicUsize,
}

impl Inbox {
    /// The actor, for messages that bypass the bound (the store's own).
    pub fn addr(&self) -> &Addr<PeerActor> {
        &self.addr
    }

    /// How many client requests from the network wait in the actor's mailbox now.
    pub fn queued(&self) -> usize {
        self.queued.kv.load(Ordering::Acquire)
    }

    /// Queues a raft message from another store; refused (dropped) when the inbox is full.
    pub fn try_send_raft(&self, msg: RaftMessage) -> Result<(), InboxFull> {
        if !admit(&self.queued.raft, self.capacity) {
            return Err(InboxFull);
        }
        self.addr.do_send(FromNetwork::Raft(msg));
        Ok(())
    }

    /// Queues a client request; refused (and `tx` dropped) when the inbox is full.
    pub fn try_send_kv(&self, req: KvRequest, tx: Responder) -> Result<(), InboxFull> {
        if !admit(&self.queued.kv, self.capacity) {
            return Err(InboxFull);
        }
        self.addr.do_send(FromNetwork::Kv(req, tx));
        Ok(())
    }
}

/// A replica's inbox holds as many network messages as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxFull;

/// Counts one more queued message unless `capacity` are queued already.
fn admit(queued: &AtomicUsize, capacity: usize) -> bool {
    if queued.fetch_add(1, Ordering::AcqRel) >= capacity {
        queued.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

/// A message that came through the [`Inbox`] (and counts against its bound).
enum FromNetwork {
    Raft(RaftMessage),
    Kv(KvRequest, Responder),
}

impl Message for FromNetwork {
    type Result = ();
}

impl Handler<FromNetwork> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: FromNetwork, ctx: &mut Context<Self>) {
        match msg {
            FromNetwork::Raft(m) => {
                self.inbox_queued.raft.fetch_sub(1, Ordering::AcqRel);
                self.peer.on_raft_message(m);
            }
            FromNetwork::Kv(req, tx) => {
                self.inbox_queued.kv.fetch_sub(1, Ordering::AcqRel);
                self.peer.on_kv(req, tx);
            }
        }
        self.schedule_flush(ctx);
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
        self.run_effects();
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

impl Message for Persisted {
    type Result = ();
}

impl Handler<Persisted> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: Persisted, ctx: &mut Context<Self>) {
        self.peer.on_persisted(msg);
        self.schedule_flush(ctx);
    }
}

impl Message for SplitStep {
    type Result = ();
}

impl Handler<SplitStep> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: SplitStep, ctx: &mut Context<Self>) {
        self.peer.on_split_step(msg);
        self.schedule_flush(ctx);
    }
}

/// The store can no longer write (its LogWriter failed): stop the replica (see
/// [`Peer::fence`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fence(pub String);

impl Handler<Fence> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: Fence, _: &mut Context<Self>) {
        self.peer.fence(msg.0);
        self.run_effects();
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

/// Tells the replica of a region a split just created to check its size at the next
/// tick it leads (see [`Peer::check_split_soon`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CheckSplitSoon;

impl Handler<CheckSplitSoon> for PeerActor {
    type Result = ();
    fn handle(&mut self, _: CheckSplitSoon, _: &mut Context<Self>) {
        self.peer.check_split_soon();
    }
}

/// PD asks the leader to hand leadership to peer `.0` (leader balance).
#[derive(Message)]
#[rtype(result = "()")]
pub struct TransferLeader(pub u64);

impl Handler<TransferLeader> for PeerActor {
    type Result = ();
    fn handle(&mut self, msg: TransferLeader, ctx: &mut Context<Self>) {
        self.peer.transfer_leader(msg.0);
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
    /// Raw keys the node wrote itself (not client state): kept, with their current values.
    pub keep: Vec<Vec<u8>>,
    /// The snapshot's index (the state's commit index).
    pub index: u64,
    /// The snapshot's term.
    pub term: u64,
}

impl Handler<Seed> for PeerActor {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: Seed, ctx: &mut Context<Self>) -> Self::Result {
        let r = self.peer.seed(&msg.pairs, &msg.keep, msg.index, msg.term);
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

#[cfg(test)]
mod tests {
    use super::{admit, offer_new_regions, NewRegion};
    use std::collections::VecDeque;
    use tokio::sync::mpsc;

    #[test]
    fn new_regions_wait_in_order_while_the_store_queue_is_full() {
        let (tx, mut rx) = mpsc::channel(1);
        let region = |region_id| NewRegion {
            region_id,
            campaign: false,
        };
        let mut pending: VecDeque<NewRegion> = (1..=3).map(region).collect();
        offer_new_regions(&tx, &mut pending);
        let ids = |p: &VecDeque<NewRegion>| p.iter().map(|n| n.region_id).collect::<Vec<_>>();
        assert_eq!(ids(&pending), [2, 3], "the queue took one");
        assert_eq!(rx.try_recv().unwrap().region_id, 1);
        offer_new_regions(&tx, &mut pending);
        assert_eq!(ids(&pending), [3]);
        assert_eq!(rx.try_recv().unwrap().region_id, 2);
        drop(rx);
        offer_new_regions(&tx, &mut pending);
        assert!(
            pending.is_empty(),
            "a stopped store takes nothing; a restart reads disk"
        );
    }

    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_inbox_admits_up_to_its_capacity_and_again_once_drained() {
        let queued = AtomicUsize::new(0);
        assert!(admit(&queued, 2));
        assert!(admit(&queued, 2));
        assert!(!admit(&queued, 2), "full");
        assert!(!admit(&queued, 2), "still full; a refusal takes no place");
        assert_eq!(queued.load(Ordering::Acquire), 2);
        queued.fetch_sub(1, Ordering::AcqRel); // the actor handled one
        assert!(admit(&queued, 2));
        assert!(!admit(&queued, 2));
    }
}
