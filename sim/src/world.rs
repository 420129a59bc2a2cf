//! One simulated cluster: stores, the wire between them, clients, and the seeded scheduler
//! that drives them (see the crate doc).
//!
//! What a store is here: one RocksDB (in a temporary directory) and the replica of the
//! region it hosts, a [`Peer`] whose effects the scheduler carries out. A log write is
//! held until the scheduler completes it (in order per store, as the LogWriter does) or
//! fails it; a crash drops the replica and the writes not yet completed — a process crash:
//! what reached the engine survives, as it would in the OS page cache — and a restart
//! opens the replica again from the engine.
//!
//! Determinism: the only randomness is the scheduler's RNG; replicas read the shared
//! manual clock; raft-rs's election timeout is fixed (`max_election_ticks`) and the
//! scheduler varies who times out first by skipping some replicas' ticks.

use crate::check::linearizability::{self, Event, Op};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use regatta_engine::{bootstrap_region, Engine, EngineConfig, LogWrite, PeerStorage, RocksEngine};
use regatta_proto::kvrpcpb::{GetRequest, KvRequest, KvResponse, PutRequest, ReadConsistency};
use regatta_proto::metapb::{Peer as PeerMeta, Region, RegionEpoch};
use regatta_proto::raft_serverpb::RaftMessage;
use regatta_raftstore::coprocessor::NoCoprocessor;
use regatta_raftstore::{
    Clock, Effect, ManualClock, Peer, PeerContext, Persisted, ReadRegistry, SplitStep, StoreConfig,
    StoreMetrics,
};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const REGION: u64 = 1;
/// Decisions kept for the report's trace (the last ones).
const TRACE_KEPT: usize = 400;

/// What one run does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed: the run is a function of it (and of the rest of this config).
    pub seed: u64,
    /// Stores, each with a replica of the one region (3).
    pub stores: usize,
    /// Concurrent clients (3).
    pub clients: usize,
    /// Operations each client runs (12).
    pub ops_per_client: usize,
    /// Keys the operations spread over (2: contention makes a history worth checking).
    pub keys: usize,
    /// Crashes, restarts, partitions, failed writes (on by default); without them only
    /// delays, reorders, drops and duplicates.
    pub faults: bool,
    /// Scheduler steps at most (a run that has not finished by then stops; operations
    /// still pending count as of unknown outcome).
    pub max_steps: u64,
}

impl SimConfig {
    /// The default run of `seed`.
    pub fn with_seed(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            stores: 3,
            clients: 3,
            ops_per_client: 12,
            keys: 2,
            faults: true,
            max_steps: 60_000,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The run's seed.
    pub seed: u64,
    /// Scheduler steps taken.
    pub steps: u64,
    /// A hash of every decision and every message delivered: equal for equal runs.
    pub trace_hash: u64,
    /// Operations invoked.
    pub ops: usize,
    /// Operations that returned a definite answer.
    pub completed: usize,
    /// Simulated time the run covered.
    pub simulated: Duration,
    /// `Err` names the violated property (the checker's finding).
    pub result: Result<(), String>,
    /// The last decisions, oldest first.
    pub trace: Vec<String>,
}

/// Runs `cfg` once.
pub fn run(cfg: &SimConfig) -> SimReport {
    World::new(cfg).run()
}

/// Runs a failing `cfg` with fewer operations while it still fails, and returns the
/// smallest failing run (its trace is the shortest this search finds).
pub fn shrink(cfg: &SimConfig) -> (SimConfig, SimReport) {
    let mut best = (cfg.clone(), run(cfg));
    let mut c = cfg.clone();
    while c.ops_per_client > 1 {
        c.ops_per_client -= 1;
        let r = run(&c);
        if r.result.is_err() {
            best = (c.clone(), r);
        }
    }
    best
}

struct Node {
    store_id: u64,
    engine: RocksEngine,
    _dir: tempfile::TempDir,
    peer: Option<Peer>,
    /// Log writes not yet completed, in submission order.
    writes: VecDeque<(LogWrite, u64, u64)>,
    /// Times this store was started (its replica's incarnation).
    starts: u64,
}

enum Kind {
    Put(Vec<u8>),
    Get(ReadConsistency),
}

struct Pending {
    key: Vec<u8>,
    kind: Kind,
    seq: u64,
    invoked: Instant,
    /// Give up (outcome unknown) after this.
    deadline: Instant,
    rx: Option<oneshot::Receiver<KvResponse>>,
    /// The store it was last sent to.
    target: usize,
}

struct Client {
    id: u64,
    seq: u64,
    done: usize,
    pending: Option<Pending>,
}

struct World {
    cfg: SimConfig,
    store_cfg: Arc<StoreConfig>,
    rng: StdRng,
    clock: Arc<ManualClock>,
    started: Instant,
    nodes: Vec<Node>,
    /// Messages in flight: (to store index, message).
    wire: Vec<(usize, RaftMessage)>,
    /// Stores cut off from the rest (messages to or from them are lost).
    isolated: HashSet<usize>,
    clients: Vec<Client>,
    history: Vec<Event>,
    hash: u64,
    trace: VecDeque<String>,
    steps: u64,
    logger: slog::Logger,
}

fn region(stores: usize) -> Region {
    let mut r = Region::new();
    r.set_id(REGION);
    let mut e = RegionEpoch::new();
    e.set_conf_ver(1);
    e.set_version(1);
    r.set_region_epoch(e);
    for s in 1..=stores as u64 {
        let mut p = PeerMeta::new();
        p.set_id(100 + s);
        p.set_store_id(s);
        r.mut_peers().push(p);
    }
    r
}

impl World {
    fn new(cfg: &SimConfig) -> World {
        let store_cfg = StoreConfig {
            election_ticks: 10,
            max_election_ticks: 11,
            // No splits, no hibernation: one region, always at full pace.
            region_split_keys: u64::MAX / 2,
            region_split_size: u64::MAX / 2,
            hibernate_after_ms: 0,
            ..StoreConfig::default()
        };
        let clock = Arc::new(ManualClock::new());
        let nodes = (1..=cfg.stores as u64)
            .map(|store_id| {
                let dir = tempfile::tempdir().expect("a temporary directory for a store");
                let engine = RocksEngine::open(dir.path(), &EngineConfig::default())
                    .expect("opening a store's engine");
                bootstrap_region(&engine, &region(cfg.stores)).expect("bootstrapping");
                Node {
                    store_id,
                    engine,
                    _dir: dir,
                    peer: None,
                    writes: VecDeque::new(),
                    starts: 0,
                }
            })
            .collect();
        let clients = (0..cfg.clients as u64)
            .map(|i| Client {
                id: 1000 + i,
                seq: 0,
                done: 0,
                pending: None,
            })
            .collect();
        let started = clock.now();
        let mut w = World {
            cfg: cfg.clone(),
            store_cfg: Arc::new(store_cfg),
            rng: StdRng::seed_from_u64(cfg.seed),
            clock,
            started,
            nodes,
            wire: Vec::new(),
            isolated: HashSet::new(),
            clients,
            history: Vec::new(),
            hash: 0xcbf2_9ce4_8422_2325,
            trace: VecDeque::new(),
            steps: 0,
            logger: slog::Logger::root(slog::Discard, slog::o!()),
        };
        for i in 0..w.nodes.len() {
            w.start(i);
        }
        w
    }

    /// Records a decision: into the trace hash, and the kept trace.
    fn note(&mut self, what: String) {
        self.mix(what.as_bytes());
        if self.trace.len() == TRACE_KEPT {
            self.trace.pop_front();
        }
        let at = self.clock.now().saturating_duration_since(self.started);
        self.trace
            .push_back(format!("{:>8}ms {what}", at.as_millis()));
    }

    fn mix(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash = (self.hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.starts += 1;
        let storage = PeerStorage::open(node.engine.clone(), REGION, 1 << 20)
            .expect("reading a store's replica")
            .expect("the region is bootstrapped");
        let ctx = PeerContext {
            cfg: self.store_cfg.clone(),
            metrics: Arc::new(StoreMetrics::default()),
            coprocessor: Arc::new(NoCoprocessor),
            store_id: node.store_id,
            reads: ReadRegistry::default(),
            split_keys: Arc::new(AtomicU64::new(self.store_cfg.region_split_keys)),
            lease_ms: Arc::new(AtomicU64::new(self.store_cfg.lease_ms)),
            clock: self.clock.clone() as Arc<dyn Clock>,
            seed: self.cfg.seed ^ (node.store_id << 48) ^ node.starts,
            logger: self.logger.clone(),
        };
        let mut peer = Peer::new(storage, 100 + node.store_id, ctx).expect("starting a replica");
        peer.on_started();
        node.peer = Some(peer);
    }

    fn run(mut self) -> SimReport {
        let mut result = Ok(());
        while self.steps < self.cfg.max_steps {
            self.steps += 1;
            if let Err(e) = self.drain_effects() {
                result = Err(e);
                break;
            }
            self.poll_clients();
            if self.finished() {
                break;
            }
            self.step();
        }
        // What is still pending has an unknown outcome.
        for c in 0..self.clients.len() {
            if let Some(p) = self.clients[c].pending.take() {
                self.record(&p, None, None);
            }
        }
        let ops = self.history.len();
        let completed = self.history.iter().filter(|e| e.returned.is_some()).count();
        if result.is_ok() {
            result = linearizability::check(&self.history)
                .map_err(|e| format!("the history is not linearizable: {e}"));
        }
        SimReport {
            seed: self.cfg.seed,
            steps: self.steps,
            trace_hash: self.hash,
            ops,
            completed,
            simulated: self.clock.now().saturating_duration_since(self.started),
            result,
            trace: self.trace.into_iter().collect(),
        }
    }

    fn finished(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.pending.is_none() && c.done >= self.cfg.ops_per_client)
    }

    /// Every live replica ends its turn; its effects go on the wire or into its store's
    /// queue of writes.
    fn drain_effects(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            let Some(peer) = self.nodes[i].peer.as_mut() else {
                continue;
            };
            peer.flush();
            for e in peer.take_effects() {
                match e {
                    Effect::Send(m) => {
                        let to = m.get_to_peer().get_store_id() as usize - 1;
                        self.wire.push((to, m));
                    }
                    Effect::Persist {
                        write,
                        ready_number,
                        last_index,
                    } => self.nodes[i]
                        .writes
                        .push_back((write, ready_number, last_index)),
                    Effect::PoisonStore(reason) => {
                        return Err(format!("store {} poisoned itself: {reason}", i + 1));
                    }
                    // One region, no PD: nothing to report or start; a split check or
                    // an id request is answered at once as refused (splits are off here).
                    Effect::ReportRegion(_) | Effect::StartRegion(_) => {}
                    Effect::CheckSplit(task) => {
                        if let Some(peer) = self.nodes[i].peer.as_mut() {
                            peer.on_split_step(task.refused());
                        }
                    }
                    Effect::AllocSplitIds { tx, .. } => {
                        if let Some(peer) = self.nodes[i].peer.as_mut() {
                            peer.on_split_step(SplitStep::Failed {
                                reason: "no PD in the simulator".into(),
                                tx,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// One scheduling decision: now and then a fault (when they are on), else a delivery,
    /// a completed write, a client's next operation or a tick.
    fn step(&mut self) {
        let any_writes = self.nodes.iter().any(|n| !n.writes.is_empty());
        if self.cfg.faults {
            let down = self.nodes.iter().any(|n| n.peer.is_none());
            if down && self.rng.gen_ratio(1, 60) {
                return self.restart_down();
            }
            if !down && self.rng.gen_ratio(1, 700) {
                let i = self.rng.gen_range(0..self.nodes.len());
                return self.crash(i);
            }
            let flip = if self.isolated.is_empty() { 700 } else { 150 };
            if self.rng.gen_ratio(1, flip) {
                return self.partition_or_heal();
            }
            if any_writes && self.rng.gen_ratio(1, 2000) {
                return self.fail_write();
            }
        }
        let idle = self
            .clients
            .iter()
            .any(|c| c.pending.is_none() && c.done < self.cfg.ops_per_client);
        match self.rng.gen_range(0..100u32) {
            0..=49 if !self.wire.is_empty() => self.deliver(),
            50..=79 if any_writes => self.complete_write(),
            80..=87 if idle => self.invoke(),
            _ => self.tick(),
        }
    }

    /// Delivers one message in flight, chosen at random (so messages are reordered);
    /// sometimes drops it or delivers it twice.
    fn deliver(&mut self) {
        let at = self.rng.gen_range(0..self.wire.len());
        let (to, m) = self.wire.swap_remove(at);
        let from = m.get_from_peer().get_store_id() as usize - 1;
        let fate = self.rng.gen_range(0..100u32);
        let cut = self.isolated.contains(&to) != self.isolated.contains(&from);
        if fate < 3 || cut || self.nodes[to].peer.is_none() {
            self.note(format!("drop {}->{}", from + 1, to + 1));
            return;
        }
        if fate < 5 {
            self.wire.push((to, m.clone()));
        }
        let bytes = protobuf::Message::write_to_bytes(&m).unwrap_or_default();
        self.mix(&bytes);
        self.note(format!("deliver {}->{}", from + 1, to + 1));
        if let Some(peer) = self.nodes[to].peer.as_mut() {
            peer.on_raft_message(m);
        }
    }

    /// Completes the oldest write of a store with writes queued.
    fn complete_write(&mut self) {
        let with: Vec<usize> = (0..self.nodes.len())
            .filter(|i| !self.nodes[*i].writes.is_empty())
            .collect();
        let i = with[self.rng.gen_range(0..with.len())];
        let Some((mut write, ready_number, last_index)) = self.nodes[i].writes.pop_front() else {
            return;
        };
        self.note(format!("persist s{} ready {ready_number}", i + 1));
        let engine = &self.nodes[i].engine;
        let outcome = (|| {
            if let Some(extra) = write.extra.take() {
                engine.write(extra, false)?;
            }
            let mut wb = engine.write_batch();
            write.write_into(&mut wb);
            engine.write(wb, false)
        })();
        let result = outcome.map_err(|e| e.to_string());
        if let Some(peer) = self.nodes[i].peer.as_mut() {
            peer.on_persisted(Persisted {
                ready_number,
                last_index,
                result,
            });
        }
    }

    /// A store's disk fails its oldest write: the replica stops (it fences itself), and
    /// the store goes down as a poisoned store would; it restarts later.
    fn fail_write(&mut self) {
        let with: Vec<usize> = (0..self.nodes.len())
            .filter(|i| !self.nodes[*i].writes.is_empty())
            .collect();
        let i = with[self.rng.gen_range(0..with.len())];
        if let Some((_, ready_number, last_index)) = self.nodes[i].writes.pop_front() {
            self.note(format!("fail write s{} ready {ready_number}", i + 1));
            if let Some(peer) = self.nodes[i].peer.as_mut() {
                peer.on_persisted(Persisted {
                    ready_number,
                    last_index,
                    result: Err("simulated disk failure".into()),
                });
            }
            self.crash(i);
        }
    }

    fn crash(&mut self, i: usize) {
        self.note(format!("crash s{}", i + 1));
        self.nodes[i].peer = None;
        self.nodes[i].writes.clear();
    }

    /// Restarts the store that is down (at most one is).
    fn restart_down(&mut self) {
        if let Some(i) = (0..self.nodes.len()).find(|i| self.nodes[*i].peer.is_none()) {
            self.note(format!("restart s{}", i + 1));
            self.start(i);
        }
    }

    /// Cuts one store off from the rest, or heals the network.
    fn partition_or_heal(&mut self) {
        if self.isolated.is_empty() {
            let i = self.rng.gen_range(0..self.nodes.len());
            self.isolated.insert(i);
            self.note(format!("isolate s{}", i + 1));
        } else {
            self.isolated.clear();
            self.note("heal".into());
        }
    }

    /// The clock moves one tick; each live replica ticks, but now and then one does not
    /// (so which replica times out first varies with the seed).
    fn tick(&mut self) {
        self.clock.advance(self.store_cfg.tick_interval());
        let mut skipped = Vec::new();
        for i in 0..self.nodes.len() {
            if self.rng.gen_range(0..10u32) == 0 {
                skipped.push(i + 1);
                continue;
            }
            if let Some(peer) = self.nodes[i].peer.as_mut() {
                peer.tick();
            }
        }
        self.note(format!("tick (skipped {skipped:?})"));
        let now = self.clock.now();
        for c in 0..self.clients.len() {
            let expired = self.clients[c]
                .pending
                .as_ref()
                .is_some_and(|p| now >= p.deadline);
            if expired {
                if let Some(p) = self.clients[c].pending.take() {
                    self.note(format!("client {c} gives up"));
                    self.record(&p, None, None);
                    self.clients[c].done += 1;
                }
            }
        }
    }

    /// An idle client invokes its next operation at a random store.
    fn invoke(&mut self) {
        let idle: Vec<usize> = (0..self.clients.len())
            .filter(|c| {
                self.clients[*c].pending.is_none()
                    && self.clients[*c].done < self.cfg.ops_per_client
            })
            .collect();
        let c = idle[self.rng.gen_range(0..idle.len())];
        let key = format!("k{}", self.rng.gen_range(0..self.cfg.keys)).into_bytes();
        let kind = if self.rng.gen_bool(0.5) {
            let client = &self.clients[c];
            Kind::Put(format!("c{}-{}", client.id, client.seq + 1).into_bytes())
        } else if self.rng.gen_bool(0.5) {
            Kind::Get(ReadConsistency::LINEARIZABLE)
        } else {
            Kind::Get(ReadConsistency::LEASE)
        };
        let seq = if matches!(kind, Kind::Put(_)) {
            self.clients[c].seq += 1;
            self.clients[c].seq
        } else {
            0
        };
        let target = self.rng.gen_range(0..self.nodes.len());
        let now = self.clock.now();
        let p = Pending {
            key,
            kind,
            seq,
            invoked: now,
            deadline: now + Duration::from_secs(20),
            rx: None,
            target,
        };
        self.note(format!(
            "client {c} invokes {} on {} at s{}",
            match &p.kind {
                Kind::Put(v) => format!("put {}", String::from_utf8_lossy(v)),
                Kind::Get(c) => format!("get ({c:?})"),
            },
            String::from_utf8_lossy(&p.key),
            target + 1
        ));
        self.clients[c].pending = Some(p);
        self.send(c);
    }

    /// Sends client `c`'s pending operation to its target store (a write keeps its
    /// session's seq, so a retry is applied at most once).
    fn send(&mut self, c: usize) {
        let client_id = self.clients[c].id;
        let Some(p) = self.clients[c].pending.as_mut() else {
            return;
        };
        let mut req = KvRequest::new();
        req.mut_context().set_region_id(REGION);
        req.mut_context()
            .set_region_epoch(region(self.cfg.stores).get_region_epoch().clone());
        match &p.kind {
            Kind::Put(v) => {
                req.mut_context().set_client_id(client_id);
                req.mut_context().set_seq(p.seq);
                let mut put = PutRequest::new();
                put.set_key(p.key.clone());
                put.set_value(v.clone());
                req.mut_request().set_put(put);
            }
            Kind::Get(consistency) => {
                req.mut_context().set_consistency(*consistency);
                let mut get = GetRequest::new();
                get.set_key(p.key.clone());
                req.mut_request().set_get(get);
            }
        }
        let (tx, rx) = oneshot::channel();
        p.rx = Some(rx);
        match self.nodes[p.target].peer.as_mut() {
            Some(peer) => peer.on_kv(req, tx),
            None => drop(tx), // a down store: the client sees the connection fail
        }
    }

    /// Takes the answers that arrived; retries what may be retried.
    fn poll_clients(&mut self) {
        for c in 0..self.clients.len() {
            let Some(p) = self.clients[c].pending.as_mut() else {
                continue;
            };
            let Some(rx) = p.rx.as_mut() else {
                continue;
            };
            let answer = match rx.try_recv() {
                Ok(resp) => Some(resp),
                Err(oneshot::error::TryRecvError::Empty) => continue,
                Err(oneshot::error::TryRecvError::Closed) => None,
            };
            let n = self.nodes.len();
            let retry_at = match &answer {
                Some(resp) if !resp.has_error() => {
                    let Some(p) = self.clients[c].pending.take() else {
                        continue;
                    };
                    let read = match p.kind {
                        Kind::Get(_) => {
                            let g = resp.get_response().get_get();
                            Some(g.get_found().then(|| g.get_value().to_vec()))
                        }
                        Kind::Put(_) => None,
                    };
                    self.note(format!("client {c} completes"));
                    let now = self.clock.now();
                    self.record(&p, Some(now), read);
                    self.clients[c].done += 1;
                    continue;
                }
                Some(resp) if resp.get_error().has_not_leader() => {
                    let hint = resp
                        .get_error()
                        .get_not_leader()
                        .get_leader()
                        .get_store_id();
                    if hint >= 1 && hint as usize <= n {
                        hint as usize - 1
                    } else {
                        self.rng.gen_range(0..n)
                    }
                }
                // Any other error, or a store that went down: try another store. A write
                // retried under its session is applied at most once.
                _ => self.rng.gen_range(0..n),
            };
            if let Some(p) = self.clients[c].pending.as_mut() {
                p.target = retry_at;
            }
            self.note(format!("client {c} retries at s{}", retry_at + 1));
            self.send(c);
        }
    }

    /// Adds an operation to the history: `returned` `None` is an unknown outcome (a read
    /// without an answer constrains nothing and is left out).
    fn record(&mut self, p: &Pending, returned: Option<Instant>, read: Option<Option<Vec<u8>>>) {
        let op = match (&p.kind, read) {
            (Kind::Put(v), _) => Op::Put(v.clone()),
            (Kind::Get(_), Some(v)) => Op::Get(v),
            (Kind::Get(_), None) => return,
        };
        self.history.push(Event {
            key: p.key.clone(),
            op,
            invoked: p.invoked,
            returned,
        });
    }
}
