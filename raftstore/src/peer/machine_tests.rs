//! The peer driven as a state machine, with no actor, socket or thread: three replicas of
//! one region, each on its own engine, a manual clock, and a test loop that carries out
//! their effects by hand (delivers `Send`s, writes `Persist`s and reports them back). What
//! the loop delivers, drops or delays is the test's choice, so each scenario is exact.

use super::effects::Effect;
use super::{Peer, PeerContext};
use crate::clock::{Clock, ManualClock};
use crate::config::StoreConfig;
use crate::coprocessor::{
    Applier, Checks, Coprocessor, Gate, KeySpace, Kind, NoCoprocessor, NoObserver, Note,
    ObserverCx, RegionObserver,
};
use crate::local_reader::ReadRegistry;
use crate::log_writer::Persisted;
use crate::metrics::{StoreMetrics, WriteStages};
use regatta_engine::{
    bootstrap_region, Engine, EngineConfig, LogWrite, PeerStorage, RocksEngine, Snapshot,
};
use regatta_proto::kvrpcpb::{KvRequest, KvResponse, PutRequest};
use regatta_proto::metapb::{Peer as PeerMeta, Region, RegionEpoch};
use regatta_proto::raft_serverpb::RaftMessage;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

const REGION: u64 = 1;

/// A replica and its store's engine.
struct Node {
    store_id: u64,
    peer: Peer,
    engine: RocksEngine,
    _dir: tempfile::TempDir,
}

/// A write a replica asked for, as the LogWriter would get it.
struct Held {
    write: LogWrite,
    ready_number: u64,
    last_index: u64,
    then_send: Vec<RaftMessage>,
}

/// Three replicas and what travels between them.
struct Group {
    nodes: Vec<Node>,
    clock: Arc<ManualClock>,
    /// Messages sent and not yet delivered: (to store, message).
    wire: VecDeque<(u64, RaftMessage)>,
    /// Stores cut off from the others: their messages, in and out, are dropped.
    isolated: HashSet<u64>,
    /// Hold `Persist` effects instead of carrying them out (see [`Group::held`]).
    hold_writes: bool,
    held: Vec<(usize, Held)>,
}

fn region() -> Region {
    let mut r = Region::new();
    r.set_id(REGION);
    let mut e = RegionEpoch::new();
    e.set_conf_ver(1);
    e.set_version(1);
    r.set_region_epoch(e);
    for s in 1..=3u64 {
        let mut p = PeerMeta::new();
        p.set_id(10 + s);
        p.set_store_id(s);
        r.mut_peers().push(p);
    }
    r
}

fn config() -> StoreConfig {
    StoreConfig {
        // Reads and writes wait for nothing but raft here; no lease, no hibernation.
        lease_ms: 0,
        hibernate_after_ms: 0,
        // Small, so a replica cut off for a few dozen puts catches up by snapshot.
        raft_log_gc_count_limit: 8,
        ..StoreConfig::default()
    }
}

impl Group {
    fn new() -> Group {
        Group::with_coprocessor(Arc::new(NoCoprocessor))
    }

    /// Three replicas with `coprocessor` above them.
    fn with_coprocessor(coprocessor: Arc<dyn Coprocessor>) -> Group {
        let clock = Arc::new(ManualClock::new());
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let cfg = Arc::new(config());
        let nodes = (1..=3u64)
            .map(|store_id| {
                let dir = tempfile::tempdir().expect("temp dir");
                let engine =
                    RocksEngine::open(dir.path(), &EngineConfig::short_lived()).expect("engine");
                bootstrap_region(&engine, &region()).expect("bootstrap");
                let storage = PeerStorage::open(engine.clone(), REGION, 1 << 20)
                    .expect("open")
                    .expect("bootstrapped");
                let ctx = PeerContext {
                    cfg: cfg.clone(),
                    metrics: Arc::new(StoreMetrics::default()),
                    coprocessor: coprocessor.clone(),
                    store_id,
                    reads: ReadRegistry::default(),
                    split_keys: Arc::new(AtomicU64::new(cfg.region_split_keys)),
                    lease_ms: Arc::new(AtomicU64::new(0)),
                    clock: clock.clone() as Arc<dyn Clock>,
                    seed: store_id,
                    logger: logger.clone(),
                };
                let mut peer = Peer::new(storage, 10 + store_id, ctx).expect("peer");
                peer.on_started();
                Node {
                    store_id,
                    peer,
                    engine,
                    _dir: dir,
                }
            })
            .collect();
        Group {
            nodes,
            clock,
            wire: VecDeque::new(),
            isolated: HashSet::new(),
            hold_writes: false,
            held: Vec::new(),
        }
    }

    /// Carries out every node's effects, and delivers messages, until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                self.nodes[i].peer.flush();
                for e in self.nodes[i].peer.take_effects() {
                    moved = true;
                    self.carry_out(i, e);
                }
            }
            while let Some((to, m)) = self.wire.pop_front() {
                moved = true;
                let from = m.get_from_peer().get_store_id();
                if self.isolated.contains(&to) || self.isolated.contains(&from) {
                    continue;
                }
                if let Some(n) = self.nodes.iter_mut().find(|n| n.store_id == to) {
                    n.peer.on_raft_message(m);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the group never settled");
    }

    fn carry_out(&mut self, i: usize, e: Effect) {
        match e {
            Effect::Send(m) => {
                let to = m.get_to_peer().get_store_id();
                self.wire.push_back((to, m));
            }
            Effect::Persist {
                write,
                ready_number,
                last_index,
                then_send,
            } => {
                let held = Held {
                    write,
                    ready_number,
                    last_index,
                    then_send,
                };
                if self.hold_writes {
                    self.held.push((i, held));
                } else {
                    self.persist(i, held);
                }
            }
            // No PD, no other regions here.
            Effect::ReportRegion(_)
            | Effect::StartRegion(_)
            | Effect::AllocSplitIds { .. }
            | Effect::CheckSplit(_) => {}
            Effect::PoisonStore(reason) => panic!("store {} poisoned: {reason}", i + 1),
        }
    }

    /// What the LogWriter does with a write: the extra batch, then the log part; then the
    /// messages that waited for it; then the notice back to the peer.
    fn persist(&mut self, i: usize, held: Held) {
        let Held {
            mut write,
            ready_number,
            last_index,
            then_send,
        } = held;
        let engine = &self.nodes[i].engine;
        if let Some(extra) = write.extra.take() {
            engine.write(extra, false).expect("write");
        }
        let mut wb = engine.write_batch();
        write.write_into(&mut wb);
        engine.write(wb, false).expect("write");
        for m in then_send {
            let to = m.get_to_peer().get_store_id();
            self.wire.push_back((to, m));
        }
        self.nodes[i].peer.on_persisted(Persisted {
            ready_number,
            last_index,
            result: Ok(()),
        });
    }

    /// One raft tick on every node, then settle.
    fn tick(&mut self) {
        self.clock.advance(config().tick_interval());
        for n in &mut self.nodes {
            n.peer.tick();
        }
        self.settle();
    }

    fn leaders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].peer.is_leader())
            .collect()
    }

    /// Ticks until exactly one leader is known; its index.
    fn elect(&mut self) -> usize {
        self.settle();
        for _ in 0..200 {
            if let [one] = self.leaders()[..] {
                return one;
            }
            self.tick();
        }
        panic!("no single leader after 200 ticks: {:?}", self.leaders());
    }

    fn put(&mut self, i: usize, key: &[u8], value: &[u8]) -> oneshot::Receiver<KvResponse> {
        let mut req = KvRequest::new();
        req.mut_context().set_region_id(REGION);
        req.mut_context()
            .set_region_epoch(region().get_region_epoch().clone());
        let mut put = PutRequest::new();
        put.set_key(key.to_vec());
        put.set_value(value.to_vec());
        req.mut_request().set_put(put);
        let (tx, rx) = oneshot::channel();
        self.nodes[i].peer.on_kv(req, tx);
        rx
    }

    fn value(&self, i: usize, key: &[u8]) -> Option<Vec<u8>> {
        self.nodes[i]
            .engine
            .live()
            .get_raw(key)
            .expect("read")
            .map(|v| v.value)
    }
}

#[test]
fn three_replicas_elect_one_leader_and_apply_a_put_everywhere() {
    // Goal: the peer alone, driven by hand, is a working raft replica. Method: three
    // replicas, every effect carried out at once; a put at the leader.
    let mut g = Group::new();
    let leader = g.elect();
    let mut rx = g.put(leader, b"k", b"v");
    g.settle();
    let resp = rx.try_recv().expect("answered once the entry applied");
    assert!(!resp.has_error(), "{resp:?}");
    // The followers learn the commit index with the next append or heartbeat.
    g.tick();
    for i in 0..3 {
        assert_eq!(g.value(i, b"k"), Some(b"v".to_vec()), "store {}", i + 1);
    }
}

#[test]
fn a_follower_acknowledges_an_append_only_after_its_write_is_durable() {
    // Goal: a follower's answer to an append is held until the write carrying the entries
    // is reported durable (raft's rule: acknowledge only what survives a crash). Method:
    // hold every write; the follower asks for one and sends nothing until it is reported.
    let mut g = Group::new();
    let leader = g.elect();
    let follower = (leader + 1) % 3;
    g.hold_writes = true;
    let mut rx = g.put(leader, b"k", b"v");
    g.settle();
    assert!(rx.try_recv().is_err(), "nothing is durable: no answer yet");
    let (i, held) = g
        .held
        .iter()
        .position(|(i, h)| *i == follower && !h.write.entries.is_empty())
        .map(|at| g.held.remove(at))
        .expect("the follower asked to persist the entry");
    assert!(
        g.wire.is_empty(),
        "the follower sent nothing before its write was durable"
    );
    let leader_store = g.nodes[leader].store_id;
    assert!(
        held.then_send
            .iter()
            .any(|m| m.get_to_peer().get_store_id() == leader_store),
        "the acknowledgement waits with the write"
    );
    g.persist(i, held);
    assert!(
        g.wire.iter().any(|(to, _)| *to == leader_store),
        "once durable, the acknowledgement goes to the leader"
    );
}

#[test]
fn a_leader_times_the_stages_of_its_writes() {
    // Goal: the write stages a leader reports (`StageCounters`) measure what they name.
    // Method: a manual clock; a put waits 1 ms in its turn's batch; the leader's own
    // write is held 2 ms after the proposal, the followers' 3 ms more; apply takes no
    // time on this clock.
    let ms = Duration::from_millis;
    let mut g = Group::new();
    let leader = g.elect();
    let before = g.nodes[leader].peer.ctx.metrics.snapshot().stages;
    g.hold_writes = true;
    let mut rx = g.put(leader, b"k", b"v");
    g.clock.advance(ms(1));
    g.settle();
    g.clock.advance(ms(2));
    let own = g
        .held
        .iter()
        .position(|(i, h)| *i == leader && !h.write.entries.is_empty())
        .expect("the leader asked to persist its entry");
    let (i, held) = g.held.remove(own);
    g.persist(i, held);
    g.settle();
    assert!(rx.try_recv().is_err(), "no follower is durable yet");
    g.clock.advance(ms(3));
    g.hold_writes = false;
    for (i, held) in std::mem::take(&mut g.held) {
        g.persist(i, held);
    }
    g.settle();
    let resp = rx.try_recv().expect("answered once a quorum is durable");
    assert!(!resp.has_error(), "{resp:?}");
    let stages = g.nodes[leader]
        .peer
        .ctx
        .metrics
        .snapshot()
        .stages
        .since(before);
    assert_eq!(
        stages,
        WriteStages {
            cmds: 1,
            wait_us: 1_000,
            entries: 1,
            persist_us: 2_000,
            commit_us: 5_000,
            apply_us: 0,
        }
    );
    for i in (0..3).filter(|i| *i != leader) {
        let s = g.nodes[i].peer.ctx.metrics.snapshot().stages;
        assert_eq!(s.entries, 0, "followers propose nothing, so time nothing");
    }
}

#[test]
fn a_region_just_split_or_fast_growing_checks_its_size_at_the_next_tick_it_leads() {
    // Goal: a region a split made (or narrowed), or one written half its split size
    // since its last check, checks its size at once, not an interval later, so a region
    // under a fast load never grows by a whole interval's writes between checks.
    // Method: ticks well inside the check interval start no check; after
    // `check_split_soon` (or a split applied) the leader's next tick does, once; a
    // follower keeps the request; and the leader checks once half the split size was
    // proposed since its last check.
    // One tick of replica `i`; the checks it started, each run and reported back.
    fn checks(g: &mut Group, i: usize) -> usize {
        g.clock.advance(config().tick_interval());
        g.nodes[i].peer.tick();
        let mut n = 0;
        for e in g.nodes[i].peer.take_effects() {
            if let Effect::CheckSplit(task) = e {
                n += 1;
                let step = task.run();
                g.nodes[i].peer.on_split_step(step);
            }
        }
        n
    }
    let mut g = Group::new();
    let leader = g.elect();
    let follower = (leader + 1) % 3;
    // A check is due one interval after the start; skip past it.
    g.clock
        .advance(Duration::from_millis(config().split_check_interval_ms));
    assert_eq!(checks(&mut g, leader), 1, "the first check, an interval in");
    assert_eq!(checks(&mut g, leader), 0, "within the interval: no check");
    g.nodes[leader].peer.check_split_soon();
    g.nodes[follower].peer.check_split_soon();
    assert_eq!(
        checks(&mut g, leader),
        1,
        "the leader checks at its next tick"
    );
    assert_eq!(checks(&mut g, leader), 0, "once");
    assert!(
        g.nodes[follower].peer.splits.check_soon,
        "a follower keeps the request for when it leads"
    );
    // A split applied asks for one too.
    let mut right = region();
    right.set_id(REGION + 1);
    right.set_start_key(b"m".to_vec());
    g.nodes[leader].peer.on_split_applied(7, &right);
    drop(g.nodes[leader].peer.take_effects());
    assert_eq!(
        checks(&mut g, leader),
        1,
        "a split applied: checked at once"
    );
    // Half a region's worth proposed: checked at the next tick too.
    g.nodes[leader].peer.splits.written_since_check = config().region_split_size / 2 - 1;
    assert_eq!(
        checks(&mut g, leader),
        0,
        "below half the split size: no check"
    );
    g.nodes[leader].peer.splits.written_since_check += 1;
    assert_eq!(checks(&mut g, leader), 1, "half the split size written");
    assert_eq!(checks(&mut g, leader), 0, "and the count starts again");
    // A check the pool refuses waits for the next interval, not the next tick.
    g.nodes[leader].peer.splits.written_since_check = config().region_split_size / 2;
    g.clock.advance(config().tick_interval());
    g.nodes[leader].peer.tick();
    let refused: Vec<_> = g.nodes[leader]
        .peer
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::CheckSplit(task) => Some(task.refused()),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 1, "half the split size written again");
    for step in refused {
        g.nodes[leader].peer.on_split_step(step);
    }
    assert_eq!(checks(&mut g, leader), 0, "refused: not at the next tick");
    g.clock
        .advance(Duration::from_millis(config().split_check_interval_ms));
    assert_eq!(checks(&mut g, leader), 1, "at the next interval");
}

#[test]
fn a_leader_cut_off_from_its_followers_never_acknowledges_a_write() {
    // Goal: no quorum, no commit. Method: isolate the leader, put, tick well past an
    // election timeout; the answer is never a success (the leader steps down by check
    // quorum and the put fails or times out), and the others elect a new leader.
    let mut g = Group::new();
    let leader = g.elect();
    g.isolated.insert(g.nodes[leader].store_id);
    let mut rx = g.put(leader, b"k", b"lost");
    for _ in 0..100 {
        g.tick();
        if let Ok(resp) = rx.try_recv() {
            assert!(
                resp.has_error(),
                "a write without a quorum succeeded: {resp:?}"
            );
            break;
        }
    }
    assert_eq!(g.value(leader, b"k"), None);
    let others: Vec<usize> = g.leaders().into_iter().filter(|i| *i != leader).collect();
    assert_eq!(others.len(), 1, "the majority elected a leader of its own");
}

#[test]
fn a_command_queued_by_a_leader_that_steps_down_before_proposing_is_refused() {
    // Goal: a command queued in a turn whose replica loses leadership before the turn's
    // entry is proposed is answered NotLeader, never proposed (raft-rs 0.7 would forward it
    // to the new leader, and the peer would wait for it at an index another leader fills).
    // Method: queue a put at the leader, then, before its flush, hand it a heartbeat of a
    // higher term from another replica.
    let mut g = Group::new();
    let leader = g.elect();
    let other = (leader + 1) % 3;
    let mut rx = g.put(leader, b"k", b"v");
    let term = g.nodes[leader].peer.raw.raft.term;
    let to = g.nodes[leader].peer.region().get_peers()[leader].clone();
    let mut rm = g.nodes[other].peer.envelope(to);
    let hb = raft::eraftpb::Message {
        msg_type: raft::eraftpb::MessageType::MsgHeartbeat,
        to: 10 + g.nodes[leader].store_id,
        from: 10 + g.nodes[other].store_id,
        term: term + 1,
        ..Default::default()
    };
    rm.set_message(protobuf::Message::write_to_bytes(&hb).expect("encode"));
    g.nodes[leader].peer.on_raft_message(rm);
    assert!(
        !g.nodes[leader].peer.is_leader(),
        "a higher term steps it down"
    );
    g.nodes[leader].peer.flush();
    let resp = rx.try_recv().expect("answered in the same turn");
    assert!(resp.get_error().has_not_leader(), "{resp:?}");
    assert!(
        g.nodes[leader].peer.proposals.is_empty(),
        "nothing was proposed (nor forwarded)"
    );
}

#[test]
fn a_replica_fenced_before_its_shell_runs_sends_none_of_the_acks_it_held() {
    // Goal: a fenced replica drops every raft message, including the acknowledgements
    // travelling with writes still in its outbox (`Effect::Persist::then_send`); the
    // writes themselves still go. Method: a follower takes an append and flushes, so its
    // outbox holds the write with its ack; it is fenced before the shell takes them.
    let mut g = Group::new();
    let leader = g.elect();
    let follower = (leader + 1) % 3;
    let _rx = g.put(leader, b"k", b"v");
    g.nodes[leader].peer.flush();
    for e in g.nodes[leader].peer.take_effects() {
        g.carry_out(leader, e);
    }
    let follower_store = g.nodes[follower].store_id;
    let appends: Vec<RaftMessage> = std::mem::take(&mut g.wire)
        .into_iter()
        .filter(|(to, _)| *to == follower_store)
        .map(|(_, m)| m)
        .collect();
    assert!(!appends.is_empty(), "the leader appended to the follower");
    let peer = &mut g.nodes[follower].peer;
    for m in appends {
        peer.on_raft_message(m);
    }
    peer.flush();
    peer.fence("test: the disk failed".into());
    let persists: Vec<Effect> = peer
        .take_effects()
        .into_iter()
        .filter(|e| matches!(e, Effect::Persist { .. }))
        .collect();
    assert!(!persists.is_empty(), "the write still goes");
    assert!(
        persists
            .iter()
            .all(|e| matches!(e, Effect::Persist { then_send, .. } if then_send.is_empty())),
        "no acknowledgement leaves a fenced replica"
    );
}

#[test]
fn a_replica_installing_a_snapshot_ignores_leader_transfers_and_its_election_clock() {
    // Goal: while a follower's snapshot install is being written, its log below the
    // snapshot is gone from storage but raft's applied index still trails it; a campaign
    // then (a leader transfer's MsgTimeoutNow, an election timeout, a requested
    // leadership) would read those entries, and raft-rs panics. Method: a follower cut
    // off while the others compact past it; healed, it gets a snapshot whose write is
    // held; meanwhile it gets a MsgTimeoutNow, a leadership request and many election
    // timeouts; then the write completes and it catches up.
    let mut g = Group::new();
    let leader = g.elect();
    let lagging = (leader + 1) % 3;
    let lag_store = g.nodes[lagging].store_id;
    g.isolated.insert(lag_store);
    for i in 0..40u32 {
        let mut rx = g.put(leader, format!("k{i:02}").as_bytes(), b"v");
        g.settle();
        assert!(
            rx.try_recv().is_ok_and(|r| !r.has_error()),
            "put {i} applied"
        );
    }
    for _ in 0..25 {
        g.tick(); // the log compacts past the cut-off follower
    }
    g.isolated.clear();
    g.hold_writes = true;
    for _ in 0..50 {
        g.tick();
        if g.nodes[lagging].peer.pending_snapshot.is_some() {
            break;
        }
    }
    assert!(
        g.nodes[lagging].peer.pending_snapshot.is_some(),
        "the follower installs a snapshot"
    );
    let (term, leader_peer) = (
        g.nodes[leader].peer.raw.raft.term,
        g.nodes[leader].peer.peer_id,
    );
    let lag_peer = g.nodes[lagging].peer.peer_id;
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgTimeoutNow);
    m.from = leader_peer;
    m.to = lag_peer;
    m.term = term;
    let mut msg = RaftMessage::new();
    msg.set_region_id(REGION);
    msg.set_region_epoch(region().get_region_epoch().clone());
    let peer = |store_id: u64, id: u64| {
        let mut p = PeerMeta::new();
        p.set_store_id(store_id);
        p.set_id(id);
        p
    };
    msg.set_from_peer(peer(g.nodes[leader].store_id, leader_peer));
    msg.set_to_peer(peer(lag_store, lag_peer));
    msg.set_message(protobuf::Message::write_to_bytes(&m).expect("encode"));
    let node = &mut g.nodes[lagging];
    node.peer.on_raft_message(msg);
    node.peer.request_leadership();
    for _ in 0..100 {
        g.clock.advance(config().tick_interval());
        g.nodes[lagging].peer.tick();
    }
    // The write completes; the follower catches up and the group keeps one leader.
    g.hold_writes = false;
    for _ in 0..10 {
        for (i, held) in std::mem::take(&mut g.held) {
            g.persist(i, held);
        }
        g.tick();
    }
    assert!(
        g.nodes[lagging].peer.pending_snapshot.is_none(),
        "installed"
    );
    assert_eq!(g.leaders().len(), 1);
    assert_eq!(g.value(lagging, b"k39"), Some(b"v".to_vec()));
}

/// Above the raftstore: a layer whose observer, once armed, proposes one admin command
/// from its tick, and records the indexes `post_propose` and `post_propose_admin` get.
#[derive(Default)]
struct AdminOnTick {
    armed: Arc<std::sync::atomic::AtomicBool>,
    /// (index, whether an admin command) per call, in order.
    seen: Arc<std::sync::Mutex<Vec<(u64, bool)>>>,
}

struct AdminOnTickObserver {
    armed: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<std::sync::Mutex<Vec<(u64, bool)>>>,
    inner: NoObserver,
}

impl Coprocessor for AdminOnTick {
    fn kind(&self, r: &regatta_proto::kvrpcpb::Request) -> Option<Kind> {
        NoCoprocessor.kind(r)
    }
    fn validate(
        &self,
        r: &regatta_proto::kvrpcpb::Request,
        g: &Region,
        c: &Checks,
    ) -> Result<(), crate::Error> {
        NoCoprocessor.validate(r, g, c)
    }
    fn read(
        &self,
        s: &dyn regatta_engine::DynSnapshot,
        g: &Region,
        r: &regatta_proto::kvrpcpb::Request,
    ) -> Result<regatta_proto::kvrpcpb::Response, crate::Error> {
        NoCoprocessor.read(s, g, r)
    }
    fn begin_apply<'a>(
        &'a self,
        s: &'a dyn regatta_engine::DynSnapshot,
        id: u64,
    ) -> Box<dyn Applier + 'a> {
        NoCoprocessor.begin_apply(s, id)
    }
    fn key_spaces(&self, _: &Region) -> Vec<KeySpace> {
        Vec::new()
    }
    fn new_observer(&self, _: u64, _: &slog::Logger) -> Box<dyn RegionObserver> {
        Box::new(AdminOnTickObserver {
            armed: self.armed.clone(),
            seen: self.seen.clone(),
            inner: NoObserver,
        })
    }
}

impl RegionObserver for AdminOnTickObserver {
    fn on_request(
        &mut self,
        r: &regatta_proto::kvrpcpb::Request,
        cx: &mut ObserverCx,
    ) -> Result<Gate, crate::Error> {
        self.inner.on_request(r, cx)
    }
    fn on_write(
        &mut self,
        c: regatta_proto::raft_serverpb::RaftCmd,
        tx: crate::Responder,
        cx: &mut ObserverCx,
    ) {
        self.inner.on_write(c, tx, cx)
    }
    fn pre_propose(
        &mut self,
        _: &mut regatta_proto::raft_serverpb::RaftCmd,
        _: &ObserverCx,
    ) -> bool {
        false
    }
    fn post_propose(&mut self, index: u64, _: bool) {
        self.seen.lock().unwrap().push((index, false));
    }
    fn post_propose_admin(&mut self, _: &regatta_proto::raft_serverpb::AdminCmd, index: u64) {
        self.seen.lock().unwrap().push((index, true));
    }
    fn before_hand_over(&mut self, _: &mut ObserverCx) {}
    fn on_answer(&mut self, t: u64, tx: crate::Responder, r: KvResponse, cx: &mut ObserverCx) {
        self.inner.on_answer(t, tx, r, cx)
    }
    fn on_abandoned(&mut self, _: Vec<u64>, _: &mut ObserverCx) {}
    fn on_applied(&mut self, _: Vec<Note>, _: &mut ObserverCx) {}
    fn on_role_change(&mut self, _: &mut ObserverCx) {}
    fn drain(&mut self, _: &crate::Error) {}
    fn on_tick(&mut self, cx: &mut ObserverCx) {
        if cx.leader && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let mut admin = regatta_proto::raft_serverpb::AdminCmd::new();
            admin.set_region_epoch(cx.region.get_region_epoch().clone());
            admin.set_gc_safe_point(7);
            cx.propose_admin(admin);
        }
    }
    fn on_message(&mut self, _: Note, _: &mut ObserverCx) {}
    fn on_heartbeat(&self, _: &mut regatta_proto::pdpb::RegionHeartbeatRequest, _: &ObserverCx) {}
    fn is_idle(&self) -> bool {
        true
    }
    fn status(&self, _: &ObserverCx) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

#[test]
fn an_observers_admin_command_is_proposed_ahead_of_the_turns_entry_and_told_its_own_index() {
    // Goal: the layer learns the index of the admin commands it proposes (what keeps the
    // in-memory locks' bookkeeping exact) and they go ahead of the turn's commands.
    // Method: a put waits in the leader's turn batch; the observer's tick proposes an
    // admin command; the indexes told match the log's entries.
    let layer = AdminOnTick::default();
    let (armed, seen) = (layer.armed.clone(), layer.seen.clone());
    let mut g = Group::with_coprocessor(Arc::new(layer));
    let leader = g.elect();
    seen.lock().unwrap().clear();
    let mut rx = g.put(leader, b"k", b"v");
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    g.tick();
    g.settle();
    assert!(rx.try_recv().is_ok(), "the put was answered");
    let seen = seen.lock().unwrap().clone();
    let admin_at = seen.iter().find(|(_, admin)| *admin).expect("admin told").0;
    let put_at = seen.iter().find(|(_, admin)| !*admin).expect("put told").0;
    assert!(admin_at < put_at, "the admin goes first: {seen:?}");
    let log = &g.nodes[leader].peer.raw.raft.raft_log;
    for (index, admin) in [(admin_at, true), (put_at, false)] {
        let e = log
            .entries(index, u64::MAX, raft::GetEntriesContext::empty(false))
            .expect("in the log");
        let batch: regatta_proto::raft_serverpb::RaftCmdBatch =
            protobuf::Message::parse_from_bytes(&e[0].data).expect("a command batch");
        assert_eq!(batch.has_admin(), admin, "entry {index}: {batch:?}");
        if admin {
            assert_eq!(batch.get_admin().get_gc_safe_point(), 7);
        } else {
            assert!(batch.get_cmds()[0].get_request().has_put());
        }
    }
}
