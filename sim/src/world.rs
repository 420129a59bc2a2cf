//! One simulated cluster: stores, the wire between them, clients, and the seeded scheduler
//! that drives them (see the crate doc).
//!
//! What a store is here: one in-memory engine that knows what a power loss would leave
//! (`MemEngine::with_power_loss`) and a replica of each region (`SimConfig::regions`,
//! static: the workload's keys cut into ranges), each a [`Peer`] running the store's one
//! transactional layer (as a store's replicas do; see `layer.rs`) whose effects the
//! scheduler carries out. A log write is held until the scheduler completes it (in order
//! per store, whatever its region, as the one LogWriter does) or fails it; a crash drops
//! the store's replicas and the writes not yet completed — a process crash: what reached
//! the engine survives, as it would in the OS page cache — or, now and then, a power loss
//! that also drops a suffix of the engine's unsynced writes; a restart opens the replicas
//! again from the engine.
//!
//! Determinism: the only randomness is the scheduler's RNG; replicas read the shared
//! manual clock; raft-rs's election timeout is fixed (`max_election_ticks`) and the
//! scheduler varies who times out first by skipping some replicas' ticks.

use crate::bank::{Bank, Phase};
use crate::check::linearizability::{self, Event, Op};
use crate::config::{SimConfig, SimReport, Workload};
use crate::kv::Client;
use crate::layer::{self, OffturnQueue, SimMailbox, Tso};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use regatta_engine::{bootstrap_region, Engine, LogWrite, MemEngine, MemWriteBatch, PeerStorage};
use regatta_proto::kvrpcpb::KvResponse;
use regatta_proto::metapb::Region;
use regatta_proto::raft_serverpb::RaftMessage;
use regatta_raftstore::pd::PdClient;
use regatta_raftstore::{
    Clock, Effect, ManualClock, Peer, PeerContext, Persisted, ReadRegistry, SplitStep, StoreConfig,
    StoreMetrics,
};
use regatta_txnstore::GcWorker;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Decisions kept for the report's trace (the last ones).
const TRACE_KEPT: usize = 5_000;

/// What one scheduler step does when no fault is injected.
#[derive(Clone, Copy)]
enum Action {
    Deliver,
    Persist,
    Invoke,
    Offturn,
    Tick,
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

/// A log write waiting for its store's group commit: the region (index) whose replica
/// submitted it, the write, its ready number and last index, and the messages that leave
/// once it is durable.
type PendingWrite = (usize, LogWrite<MemWriteBatch>, u64, u64, Vec<RaftMessage>);

pub(crate) struct Node {
    store_id: u64,
    pub(crate) engine: MemEngine,
    /// The store's replicas, region index `r` (region id `r + 1`) at `r`; empty while
    /// the store is down.
    pub(crate) peers: Vec<Peer<MemEngine>>,
    /// Log writes not yet completed, in submission order.
    pub(crate) writes: VecDeque<PendingWrite>,
    /// Times this store was started (its replicas' incarnation).
    starts: u64,
}

impl Node {
    /// Whether the store is down (crashed, not restarted yet).
    pub(crate) fn is_down(&self) -> bool {
        self.peers.is_empty()
    }
}

pub(crate) struct World {
    pub(crate) cfg: SimConfig,
    store_cfg: Arc<StoreConfig>,
    pub(crate) rng: StdRng,
    clock: Arc<ManualClock>,
    started: Instant,
    pub(crate) nodes: Vec<Node>,
    /// The regions, in key order: region index `r` has id `r + 1`.
    pub(crate) regions: Vec<Region>,
    /// The cluster's timestamp oracle (PD's, which clients ask too).
    pub(crate) tso: Tso,
    pd: Arc<dyn PdClient>,
    /// The replicas' off-turn work (TSO fetches, notes to themselves).
    pub(crate) offturn: OffturnQueue,
    gc_worker: GcWorker,
    /// The bank workload's state (the bank workload only).
    pub(crate) bank: Option<Bank>,
    /// Messages in flight: (to store index, message).
    wire: Vec<(Instant, usize, RaftMessage)>,
    /// Stores cut off from the rest (messages to or from them are lost).
    pub(crate) isolated: HashSet<usize>,
    pub(crate) clients: Vec<Client>,
    pub(crate) history: Vec<Event>,
    hash: u64,
    trace: VecDeque<String>,
    steps: u64,
    pub(crate) faults: usize,
    /// What must not happen and did (the run fails).
    findings: Vec<String>,
    logger: slog::Logger,
}

/// Whether a region error is one a client retries at another store: routing (not the
/// leader, a stale epoch, no such region yet), a proposal lost or late (stale, timed
/// out), a busy or poisoned store. Any other error is one no correct store gives the
/// simulated clients, and fails the run.
pub(crate) fn retryable(e: &regatta_proto::kvrpcpb::Error) -> bool {
    e.has_not_leader()
        || e.has_epoch_not_match()
        || e.has_region_not_found()
        || e.has_stale_command()
        || e.has_timeout()
        || e.has_server_is_busy()
        || e.has_store_poisoned()
}

/// The regions of `cfg`: its workload's keys cut into `cfg.regions` ranges of about as
/// many keys each (at most one region per key), in key order. Region `r` (index) has id
/// `r + 1` and a replica on every store, peer id `100 × id + store id`.
pub(crate) fn regions(cfg: &SimConfig) -> Vec<Region> {
    let mut keys: Vec<Vec<u8>> = match cfg.workload {
        Workload::Kv => (0..cfg.keys).map(crate::kv::key).collect(),
        Workload::Bank => (0..Bank::accounts(cfg.keys))
            .map(crate::bank::account)
            .collect(),
    };
    keys.sort();
    let n = cfg.regions.clamp(1, keys.len().max(1));
    let cuts: Vec<Vec<u8>> = (1..n).map(|i| keys[i * keys.len() / n].clone()).collect();
    (0..n)
        .map(|r| {
            let id = r as u64 + 1;
            let peers = (1..=cfg.stores as u64).map(|s| (100 * id + s, s));
            let mut region = regatta_engine::initial_region(id, peers);
            if r > 0 {
                region.set_start_key(cuts[r - 1].clone());
            }
            if r + 1 < n {
                region.set_end_key(cuts[r].clone());
            }
            region
        })
        .collect()
}

impl World {
    fn new(cfg: &SimConfig) -> World {
        let store_cfg = StoreConfig {
            election_ticks: 10,
            max_election_ticks: 11,
            // No splits, no hibernation: static regions, always at full pace.
            region_split_keys: u64::MAX / 2,
            region_split_size: u64::MAX / 2,
            hibernate_after_ms: 0,
            ..StoreConfig::default()
        };
        let clock = Arc::new(ManualClock::new());
        let regions = regions(cfg);
        let nodes = (1..=cfg.stores as u64)
            .map(|store_id| {
                let engine = MemEngine::with_power_loss();
                for region in &regions {
                    bootstrap_region(&engine, region).expect("bootstrapping");
                }
                Node {
                    store_id,
                    engine,
                    peers: Vec::new(),
                    writes: VecDeque::new(),
                    starts: 0,
                }
            })
            .collect();
        let kv_clients = if cfg.workload == Workload::Kv {
            cfg.clients as u64
        } else {
            0
        };
        let clients = (0..kv_clients)
            .map(|i| Client {
                id: 1000 + i,
                seq: 0,
                done: 0,
                pending: None,
            })
            .collect();
        let started = clock.now();
        let tso = Tso::new(clock.clone());
        let gc_worker = GcWorker::detached();
        let bank = (cfg.workload == Workload::Bank).then(|| Bank::new(cfg.clients, cfg.keys));
        let mut w = World {
            pd: tso.pd(),
            tso,
            offturn: OffturnQueue::default(),
            gc_worker,
            bank,
            cfg: cfg.clone(),
            store_cfg: Arc::new(store_cfg),
            rng: StdRng::seed_from_u64(cfg.seed),
            clock,
            started,
            nodes,
            regions,
            wire: Vec::new(),
            isolated: HashSet::new(),
            clients,
            history: Vec::new(),
            hash: 0xcbf2_9ce4_8422_2325,
            trace: VecDeque::new(),
            steps: 0,
            faults: 0,
            findings: Vec::new(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
        };
        for i in 0..w.nodes.len() {
            w.start(i);
        }
        w
    }

    /// Records a decision: into the trace hash, and the kept trace.
    pub(crate) fn note(&mut self, what: String) {
        self.mix(what.as_bytes());
        self.keep(what);
    }

    /// Adds a line to the kept trace only (debugging output must not change the hash).
    fn keep(&mut self, what: String) {
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

    /// Starts store `i`: a replica of every region from its engine, all sharing the
    /// store's transactional layer, metrics and read registry (as a store's do).
    pub(crate) fn start(&mut self, i: usize) {
        self.nodes[i].starts += 1;
        let (store_id, starts) = (self.nodes[i].store_id, self.nodes[i].starts);
        let coprocessor = layer::txn_layer(
            self.pd.clone(),
            &self.gc_worker,
            i,
            starts,
            &self.offturn,
            &self.logger,
        );
        let metrics = Arc::new(StoreMetrics::default());
        let reads = ReadRegistry::default();
        for r in 0..self.regions.len() {
            let rid = r as u64 + 1;
            let storage = PeerStorage::open(self.nodes[i].engine.clone(), rid, 1 << 20)
                .expect("reading a store's replica")
                .expect("the region is bootstrapped");
            let ctx = PeerContext {
                cfg: self.store_cfg.clone(),
                metrics: metrics.clone(),
                coprocessor: coprocessor.clone(),
                store_id,
                reads: reads.clone(),
                split_keys: Arc::new(AtomicU64::new(self.store_cfg.region_split_keys)),
                lease_ms: Arc::new(AtomicU64::new(self.store_cfg.lease_ms)),
                clock: self.clock.clone() as Arc<dyn Clock>,
                seed: self.cfg.seed ^ (store_id << 48) ^ ((rid - 1) << 40) ^ starts,
                logger: self.logger.clone(),
            };
            let mut peer =
                Peer::new(storage, 100 * rid + store_id, ctx).expect("starting a replica");
            peer.set_mailbox(Arc::new(SimMailbox {
                store: i,
                region: r,
                incarnation: starts,
                queue: self.offturn.clone(),
            }));
            peer.on_started();
            self.nodes[i].peers.push(peer);
        }
    }

    /// The index of the region holding `key`.
    pub(crate) fn region_of(&self, key: &[u8]) -> usize {
        self.regions
            .iter()
            .position(|r| {
                key >= r.get_start_key() && (r.get_end_key().is_empty() || key < r.get_end_key())
            })
            .expect("the regions cover every key")
    }

    /// Store `i`'s replica of region `r`, unless the store is down.
    pub(crate) fn peer(&mut self, i: usize, r: usize) -> Option<&mut Peer<MemEngine>> {
        self.nodes[i].peers.get_mut(r)
    }

    /// Records something that must not happen; the run fails with it.
    pub(crate) fn finding(&mut self, what: String) {
        self.note(format!("finding: {what}"));
        self.findings.push(what);
    }

    /// Where a client sends a request again after `answer` (an error, or none: the store
    /// went down): the store a `NotLeader` names, else one at random.
    pub(crate) fn retry_target(&mut self, answer: Option<&KvResponse>) -> usize {
        let n = self.nodes.len();
        let hint = answer.map_or(0, |r| {
            r.get_error().get_not_leader().get_leader().get_store_id() as usize
        });
        if (1..=n).contains(&hint) {
            hint - 1
        } else {
            self.rng.gen_range(0..n)
        }
    }

    pub(crate) fn clock_now(&self) -> Instant {
        self.clock.now()
    }

    fn run(mut self) -> SimReport {
        let mut result = Ok(());
        // SIM_DUMP=1: the trace also shows each replica's (term, leader) as it changes
        // and, at the end, each replica's log and what is in flight (for debugging).
        let dump = std::env::var_os("SIM_DUMP").is_some();
        let mut views = vec![None; self.nodes.len() * self.regions.len()];
        while self.steps < self.cfg.max_steps {
            self.steps += 1;
            if dump {
                let regions = self.regions.len();
                let now: Vec<_> = self
                    .nodes
                    .iter()
                    .flat_map(|n| {
                        (0..regions).map(|r| {
                            n.peers
                                .get(r)
                                .map(|p| (p.status().term, p.status().leader_id))
                        })
                    })
                    .collect();
                for (k, view) in now.into_iter().enumerate() {
                    if view != views[k] {
                        views[k] = view;
                        let (i, r) = (k / regions, k % regions);
                        self.keep(format!("view s{} r{}: {view:?}", i + 1, r + 1));
                    }
                }
            }
            if let Err(e) = self.drain_effects() {
                result = Err(e);
                break;
            }
            match self.bank {
                Some(_) => self.bank_poll(),
                None => self.kv_poll(),
            }
            if self.finished() {
                break;
            }
            self.step();
        }
        if std::env::var_os("SIM_DUMP").is_some() {
            for k in 0..self.nodes.len() * self.regions.len() {
                let (i, r) = (k / self.regions.len(), k % self.regions.len());
                let st = self.nodes[i].peers.get(r).map(|p| p.status());
                let line = match st {
                    Some(s) => format!(
                        "s{} r{}: leader {} term {} commit {} applied {} last {} lease {}",
                        i + 1,
                        r + 1,
                        s.leader_id,
                        s.term,
                        s.commit_index,
                        s.applied_index,
                        s.last_index,
                        s.lease_valid
                    ),
                    None => format!("s{}: down", i + 1),
                };
                let now = self.clock.now();
                let due = self.wire.iter().filter(|w| w.0 <= now).count();
                let mut kinds = std::collections::BTreeMap::new();
                for w in &self.wire {
                    *kinds
                        .entry(format!(
                            "{:?}",
                            <raft::eraftpb::Message as protobuf::Message>::parse_from_bytes(
                                w.2.get_message()
                            )
                            .map(|m| m.get_msg_type())
                        ))
                        .or_insert(0) += 1;
                }
                let line = format!(
                    "{line} writes {} wire {} due {due} {kinds:?}",
                    self.nodes[i].writes.len(),
                    self.wire.len()
                );
                self.keep(line);
            }
        }
        // What is still pending has an unknown outcome.
        for c in 0..self.clients.len() {
            if let Some(p) = self.clients[c].pending.take() {
                self.kv_record(&p, None, None);
            }
        }
        let (ops, completed, committed) = match &self.bank {
            Some(bank) => bank.counts(),
            None => (
                self.history.len(),
                self.history.iter().filter(|e| e.returned.is_some()).count(),
                self.history
                    .iter()
                    .filter(|e| e.returned.is_some() && matches!(e.op, Op::Put(_)))
                    .count(),
            ),
        };
        if result.is_ok() && !self.findings.is_empty() {
            result = Err(self.findings.join("; "));
        }
        if result.is_ok() {
            result = match &self.bank {
                Some(bank) => bank
                    .check()
                    .map_err(|e| format!("the bank's history is not snapshot-isolated: {e}")),
                None => linearizability::check(&self.history)
                    .map_err(|e| format!("the history is not linearizable: {e}")),
            };
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
            faults: self.faults,
            committed,
            cross_region_async_commits: self
                .bank
                .as_ref()
                .map_or(0, |b| b.cross_region_async_commits),
            deadlocks: self.bank.as_ref().map_or(0, |b| b.deadlocks),
            cross_region_secondary_checks: self
                .bank
                .as_ref()
                .map_or(0, |b| b.cross_region_secondary_checks),
        }
    }

    fn finished(&self) -> bool {
        if let Some(bank) = &self.bank {
            return bank.phase() == Phase::Done;
        }
        self.clients
            .iter()
            .all(|c| c.pending.is_none() && c.done >= self.cfg.ops_per_client)
    }

    /// Every live replica ends its turn; its effects go on the wire or into its store's
    /// queue of writes.
    fn drain_effects(&mut self) -> Result<(), String> {
        for k in 0..self.nodes.len() * self.regions.len() {
            let (i, r) = (k / self.regions.len(), k % self.regions.len());
            let Some(peer) = self.peer(i, r) else {
                continue;
            };
            peer.flush();
            for e in peer.take_effects() {
                match e {
                    Effect::Send(m) => {
                        let to = m.get_to_peer().get_store_id() as usize - 1;
                        let due = self.clock.now() + self.delay();
                        self.wire.push((due, to, m));
                    }
                    Effect::Persist {
                        write,
                        ready_number,
                        last_index,
                        then_send,
                    } => self.nodes[i].writes.push_back((
                        r,
                        write,
                        ready_number,
                        last_index,
                        then_send,
                    )),
                    Effect::PoisonStore(reason) => {
                        return Err(format!("store {} poisoned itself: {reason}", i + 1));
                    }
                    // Static regions, no PD: nothing to report or start; a split check
                    // or an id request is answered at once as refused (splits are off
                    // here).
                    Effect::ReportRegion(_) | Effect::StartRegion(_) => {}
                    Effect::CheckSplit(task) => {
                        if let Some(peer) = self.peer(i, r) {
                            peer.on_split_step(task.refused());
                        }
                    }
                    Effect::AllocSplitIds { tx, .. } => {
                        if let Some(peer) = self.peer(i, r) {
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
        // The bank's setup and final read run with the faults off, on a healed network
        // with every store up.
        let calm = self.bank.as_ref().is_some_and(|b| b.phase() != Phase::Run);
        if calm && !self.isolated.is_empty() {
            return self.partition_or_heal();
        }
        if calm && self.nodes.iter().any(Node::is_down) {
            return self.restart_down();
        }
        if self.cfg.faults && !calm {
            let down = self.nodes.iter().any(Node::is_down);
            if down && self.rng.gen_ratio(1, 40) {
                return self.restart_down();
            }
            if !down && self.rng.gen_ratio(1, 250) {
                let i = self.rng.gen_range(0..self.nodes.len());
                return self.crash(i);
            }
            let flip = if self.isolated.is_empty() { 300 } else { 80 };
            if self.rng.gen_ratio(1, flip) {
                return self.partition_or_heal();
            }
            if !down && any_writes && self.rng.gen_ratio(1, 600) {
                return self.fail_write();
            }
            if self.rng.gen_ratio(1, 300) {
                return self.transfer_leadership();
            }
        }
        let idle = match &self.bank {
            Some(bank) => !bank.idle(self.cfg.ops_per_client).is_empty(),
            None => self
                .clients
                .iter()
                .any(|c| c.pending.is_none() && c.done < self.cfg.ops_per_client),
        };
        let (tasks, notes) = layer::pending(&self.offturn);
        let now = self.clock.now();
        let due = self.wire.iter().any(|(at, _, _)| *at <= now);
        // Time moves on mostly once the work due now is done: a message is late by the
        // delay it drew, not by how many others are in flight.
        let busy = due || any_writes;
        let options = [
            (if due { 55 } else { 0 }, Action::Deliver),
            (if any_writes { 30 } else { 0 }, Action::Persist),
            (if idle { 8 } else { 0 }, Action::Invoke),
            (if tasks || notes { 4 } else { 0 }, Action::Offturn),
            (if busy { 3 } else { 30 }, Action::Tick),
        ];
        let total: u32 = options.iter().map(|o| o.0).sum();
        let mut roll = self.rng.gen_range(0..total);
        let mut action = Action::Tick;
        for (weight, a) in options {
            if roll < weight {
                action = a;
                break;
            }
            roll -= weight;
        }
        match action {
            Action::Deliver => self.deliver(),
            Action::Persist => self.complete_write(),
            Action::Invoke => match self.bank {
                Some(_) => self.bank_invoke(),
                None => self.kv_invoke(),
            },
            Action::Offturn => self.offturn(),
            Action::Tick => self.tick(),
        }
    }

    /// How late a message sent now arrives: mostly at once or within the tick, now and
    /// then a few ticks late, rarely later than an election timeout.
    fn delay(&mut self) -> Duration {
        let tick = self.store_cfg.tick_interval();
        match self.rng.gen_range(0..1000u32) {
            0..=699 => Duration::ZERO,
            700..=949 => tick.mul_f64(self.rng.gen_range(0.0..1.0)),
            950..=989 => tick * self.rng.gen_range(1..=4),
            _ => tick * self.rng.gen_range(5..=30),
        }
    }

    /// The replicas' off-turn work makes progress: every queued task is polled once (a
    /// TSO fetch answers at once), and the oldest note reaches its replica (unless that
    /// replica crashed since).
    fn offturn(&mut self) {
        let finished = layer::run_tasks(&self.offturn);
        let note = layer::next_note(&self.offturn);
        let delivered = note.is_some();
        if let Some((i, r, incarnation, note)) = note {
            if self.nodes[i].starts == incarnation {
                if let Some(peer) = self.peer(i, r) {
                    peer.on_observer_message(note);
                }
            }
        }
        self.note(format!(
            "off-turn: {finished} tasks finished, note {delivered}"
        ));
    }

    /// Delivers one message due now, chosen at random among those due (so messages are
    /// reordered); sometimes drops it or delivers it twice (the copy later).
    fn deliver(&mut self) {
        let now = self.clock.now();
        let due: Vec<usize> = (0..self.wire.len())
            .filter(|i| self.wire[*i].0 <= now)
            .collect();
        let at = due[self.rng.gen_range(0..due.len())];
        let (_, to, m) = self.wire.swap_remove(at);
        let from = m.get_from_peer().get_store_id() as usize - 1;
        let fate = self.rng.gen_range(0..100u32);
        let cut = self.isolated.contains(&to) != self.isolated.contains(&from);
        if fate < 3 || cut || self.nodes[to].is_down() {
            self.note(format!("drop {}->{}", from + 1, to + 1));
            return;
        }
        if fate < 5 {
            let again = now + self.delay();
            self.wire.push((again, to, m.clone()));
        }
        let bytes = protobuf::Message::write_to_bytes(&m).unwrap_or_default();
        self.mix(&bytes);
        let r = m.get_region_id() as usize - 1;
        self.note(match self.regions.len() {
            1 => format!("deliver {}->{}", from + 1, to + 1),
            _ => format!("deliver {}->{} r{}", from + 1, to + 1, r + 1),
        });
        if let Some(peer) = self.peer(to, r) {
            peer.on_raft_message(m);
        }
    }

    /// A store's group commit: its oldest writes, a random number of them, become
    /// durable in order (as the LogWriter completes every write of a batch at once).
    fn complete_write(&mut self) {
        let with: Vec<usize> = (0..self.nodes.len())
            .filter(|i| !self.nodes[*i].writes.is_empty())
            .collect();
        let i = with[self.rng.gen_range(0..with.len())];
        let batch = self.rng.gen_range(1..=self.nodes[i].writes.len());
        self.note(format!("persist s{} {batch} writes", i + 1));
        for _ in 0..batch {
            let Some((r, mut write, ready_number, last_index, then_send)) =
                self.nodes[i].writes.pop_front()
            else {
                return;
            };
            let engine = &self.nodes[i].engine;
            // As the LogWriter: the extra batch first, unsynced; then the entries and
            // state, synced when the write needs it (which makes the extra durable too).
            let outcome = (|| {
                let sync = write.needs_sync();
                if let Some(extra) = write.extra.take() {
                    engine.write(extra, false)?;
                }
                let mut wb = engine.write_batch();
                write.write_into(&mut wb);
                engine.write(wb, sync)
            })();
            let result = outcome.map_err(|e| e.to_string());
            // The messages that waited for the write leave right after it.
            if result.is_ok() {
                for m in then_send {
                    let to = m.get_to_peer().get_store_id() as usize - 1;
                    let due = self.clock.now() + self.delay();
                    self.wire.push((due, to, m));
                }
            }
            if let Some(peer) = self.peer(i, r) {
                peer.on_persisted(Persisted {
                    ready_number,
                    last_index,
                    result,
                });
            }
        }
    }

    /// The clock moves one tick; each live replica ticks, but now and then one does not
    /// (so which replica times out first varies with the seed).
    fn tick(&mut self) {
        self.clock.advance(self.store_cfg.tick_interval());
        let mut skipped = Vec::new();
        for k in 0..self.nodes.len() * self.regions.len() {
            let (i, r) = (k / self.regions.len(), k % self.regions.len());
            if self.rng.gen_range(0..10u32) == 0 {
                skipped.push(match self.regions.len() {
                    1 => format!("s{}", i + 1),
                    _ => format!("s{} r{}", i + 1, r + 1),
                });
                continue;
            }
            if let Some(peer) = self.peer(i, r) {
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
                    self.kv_record(&p, None, None);
                    self.clients[c].done += 1;
                }
            }
        }
    }
}
