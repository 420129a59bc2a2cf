//! [`Store`]: one node. Opens the RocksDB, starts the LogWriter, recovers every region
//! replica from disk, registers with PD, creates the regions PD bootstrapped, serves TCP.
//!
//! Peers run as actors on the store's raft threads (one by default), and so do the store's
//! network tasks (its server's connections and its raft senders): with one thread, a
//! message from the network reaches its region's actor, and an actor's message reaches
//! its sender task, without a hop to another thread (`raft_threads.rs` for more). PD and
//! bookkeeping tasks run on the caller's actix system.

use crate::raft_threads::{RaftHandles, RaftThreads};
use crate::register::register;
use crate::server;
use crate::transport::TcpTransport;
use actix::prelude::*;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use regatta_engine::{bootstrap_region, EngineConfig, PeerStorage, RocksEngine};
use regatta_proto::metapb;
use regatta_proto::pdpb::{RegionHeartbeatRequest, StoreHeartbeatRequest};
use regatta_proto::raft_serverpb::RaftMessage;
use regatta_raftstore::Error;
use regatta_raftstore::LogWriter;
use regatta_raftstore::Router;
use regatta_raftstore::StoreConfig;
use regatta_raftstore::Transport;
use regatta_raftstore::{
    Campaign, CheckSplitSoon, Fence, GetStatus, NewRegion, Peer, PeerActor, PeerContext,
    RaftMessageIn, RegionStatus, ShellContext, TransferLeader,
};
use regatta_raftstore::{Clock, SystemClock};
use regatta_raftstore::{MetricsSnapshot, StoreMetrics};
use regatta_raftstore::{PdClient, PdError, SplitChecker};
use regatta_txnstore::{Detector, GcWorker, TxnConfig, TxnCoprocessor};
use slog::{debug, error, info, o, warn, Logger};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How to start a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// This store's id (nonzero, unique in the cluster).
    pub store_id: u64,
    /// Address to listen on (`host:0` picks a port).
    pub listen_addr: String,
    /// Data directory (RocksDB lives in `DIR/db`).
    pub data_dir: PathBuf,
    /// Tuning of the raftstore.
    pub config: StoreConfig,
    /// Tuning of the transactional layer.
    pub txn: TxnConfig,
    /// Tuning of the store's RocksDB (memtables, WAL reuse and prefill).
    pub engine: EngineConfig,
}

/// Builds the transport a store sends raft messages through, from the TCP one.
pub type TransportLayer = Box<dyn FnOnce(TcpTransport) -> Arc<dyn Transport> + Send>;

/// A running store.
pub struct Store {
    /// This store's id.
    pub store_id: u64,
    /// The address it serves on.
    pub addr: SocketAddr,
    router: Router,
    metrics: Arc<StoreMetrics>,
    threads: RaftThreads,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    engine: RocksEngine,
    log_writer: LogWriter,
    log_writer_thread: std::thread::JoinHandle<()>,
    gc_worker: GcWorker,
    gc_thread: std::thread::JoinHandle<()>,
    split_checker: SplitChecker,
    logger: Logger,
    cfg: Arc<StoreConfig>,
    lease_ms: Arc<AtomicU64>,
    split_keys: Arc<AtomicU64>,
}

struct Shared {
    store_id: u64,
    engine: RocksEngine,
    router: Router,
    ctx: PeerContext,
    /// What the peers' shells need to carry out their effects.
    shell: ShellContext,
    /// The transactional layer (see `txnstore`), behind `ctx.coprocessor` for the peers.
    txn: TxnCoprocessor,
    threads: RaftHandles,
    /// Vote requests for regions not started here yet, kept a short while for the split
    /// that is about to start them (see [`Shared::on_unknown_region_message`]).
    early: std::sync::Mutex<HashMap<u64, (Instant, Vec<RaftMessage>)>>,
}

/// Vote requests kept per region not started yet, and for how long.
const EARLY_MSGS_PER_REGION: usize = 16;
const EARLY_MSGS_TTL: Duration = Duration::from_secs(10);
/// How often the store looks whether its LogWriter was poisoned (then it stops every
/// replica; a replica that meets the failure itself stops at once).
const POISON_POLL: Duration = Duration::from_millis(50);
/// Raft messages for regions not hosted here that wait for the store to look at them;
/// more are dropped (raft retransmits).
const UNKNOWN_REGION_QUEUE: usize = 1024;
/// Lock-wait reports queued for PD's deadlock detector, at most (see `detector.rs`).
const DETECTOR_QUEUE: usize = 65_536;

impl Shared {
    fn create_peer(&self, region_id: u64) -> Result<bool, Error> {
        if self.router.get(region_id).is_some() {
            return Ok(false);
        }
        let Some(storage) = PeerStorage::open(
            self.engine.clone(),
            region_id,
            self.ctx.cfg.entry_cache_limit,
        )?
        else {
            return Ok(false);
        };
        let Some(me) = storage
            .region()
            .get_peers()
            .iter()
            .find(|p| p.get_store_id() == self.store_id)
            .cloned()
        else {
            return Err(Error::RegionState {
                region_id,
                detail: format!("the region has no peer on store {}", self.store_id),
            });
        };
        let peer = Peer::new(storage, me.get_id(), self.ctx.clone())?;
        let addr = self.start(peer);
        self.deliver_early(region_id, &addr);
        Ok(true)
    }

    /// Hands the messages that came before `region_id`'s replica started to it.
    fn deliver_early(&self, region_id: u64, addr: &Addr<PeerActor>) {
        let early = self
            .early
            .lock()
            .expect("early-message lock is never poisoned")
            .remove(&region_id);
        if let Some((since, msgs)) = early {
            if since.elapsed() < EARLY_MSGS_TTL {
                for m in msgs {
                    addr.do_send(RaftMessageIn(m));
                }
            }
        }
    }

    /// Keeps a vote request for a region not started here yet. The usual case: a split's new
    /// region campaigns on the old leader's store before this store has applied the
    /// split; its vote requests wait here instead of being lost, so the region gets its
    /// leader at once rather than after another election timeout.
    fn keep_early(&self, msg: RaftMessage) {
        let mut early = self
            .early
            .lock()
            .expect("early-message lock is never poisoned");
        early.retain(|_, (since, _)| since.elapsed() < EARLY_MSGS_TTL);
        let (_, msgs) = early
            .entry(msg.get_region_id())
            .or_insert_with(|| (Instant::now(), Vec::new()));
        if msgs.len() < EARLY_MSGS_PER_REGION {
            msgs.push(msg);
        }
    }

    fn start(&self, peer: Peer) -> Addr<PeerActor> {
        let region_id = peer.region_id();
        let delegate = peer.delegate();
        let cap = self.ctx.cfg.peer_inbox_capacity;
        let inbox = PeerActor::start_with_inbox(
            peer,
            self.shell.clone(),
            self.threads.for_region(region_id),
            cap,
        );
        let addr = inbox.addr().clone();
        self.router.register(region_id, inbox, delegate);
        if let Some(reason) = self.shell.log_writer.poison_reason() {
            // Started after the store was poisoned (a split, a missed region): it stops
            // at once too.
            addr.do_send(Fence(format!("the store's log writer failed: {reason}")));
        }
        addr
    }

    /// Waits until the LogWriter is poisoned, then stops every replica at once (not only
    /// those that happen to write next: an idle leader would keep leading on a dead
    /// disk). Said once.
    async fn fence_when_poisoned(self: Arc<Self>, logger: Logger) {
        let reason = loop {
            if let Some(reason) = self.shell.log_writer.poison_reason() {
                break reason;
            }
            tokio::time::sleep(POISON_POLL).await;
        };
        error!(logger, "store poisoned: stopping every replica; restart the store once the disk is healthy";
            "reason" => reason.as_str(), "replicas" => self.router.region_ids().len());
        for (_, addr) in self.router.all() {
            addr.do_send(Fence(format!("the store's log writer failed: {reason}")));
        }
    }

    /// A raft message for a region this store does not host. A leader's heartbeat whose
    /// range no hosted region overlaps means this store missed the split that made the
    /// region (it caught up on the parent by snapshot): start an uninitialized replica,
    /// which the leader then initializes with a snapshot. If a hosted region overlaps, it
    /// is the parent that has not applied the split yet and will start the replica itself.
    fn on_unknown_region_message(&self, msg: RaftMessage) -> Result<(), Error> {
        let region_id = msg.get_region_id();
        if let Some(addr) = self.router.get(region_id) {
            addr.do_send(RaftMessageIn(msg));
            return Ok(());
        }
        let to = msg.get_to_peer();
        if to.get_store_id() != self.store_id
            || to.get_id() == 0
            || msg.get_from_peer().get_id() == 0
        {
            return Ok(());
        }
        let Ok(m) = Message::parse_from_bytes(msg.get_message()) else {
            return Ok(());
        };
        let kind = m.get_msg_type();
        // A split-made region never starts at the beginning of the key space.
        if kind != MessageType::MsgHeartbeat || msg.get_start_key().is_empty() {
            if matches!(
                kind,
                MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
            ) {
                self.keep_early(msg);
            }
            return Ok(());
        }
        // A split applied here already wrote the region's state: start it from that.
        if self.create_peer(region_id)? {
            if let Some(addr) = self.router.get(region_id) {
                addr.do_send(RaftMessageIn(msg));
            }
            return Ok(());
        }
        let mut range = metapb::Region::new();
        range.set_start_key(msg.get_start_key().to_vec());
        range.set_end_key(msg.get_end_key().to_vec());
        if self.router.overlapping(&range, region_id).is_some() {
            // The parent here has not applied the split yet: it will start the replica.
            return Ok(());
        }
        let storage = PeerStorage::uninitialized(
            self.engine.clone(),
            region_id,
            self.ctx.cfg.entry_cache_limit,
        );
        let peer = Peer::new(storage, to.get_id(), self.ctx.clone())?;
        info!(self.ctx.logger, "starting an uninitialized replica for a region this store missed";
            "region_id" => region_id, "peer_id" => to.get_id(),
            "leader_store" => msg.get_from_peer().get_store_id());
        let addr = self.start(peer);
        self.deliver_early(region_id, &addr);
        addr.do_send(RaftMessageIn(msg));
        Ok(())
    }
}

impl Store {
    /// Starts a store; must run inside an actix system.
    pub async fn start(
        opts: StoreOptions,
        pd: Arc<dyn PdClient>,
        logger: Logger,
    ) -> Result<Store, Error> {
        Self::start_with_transport(opts, pd, Box::new(|tcp| Arc::new(tcp)), logger).await
    }

    /// Starts a store whose outgoing raft messages go through `wrap(tcp)` — e.g. a
    /// fault-injecting layer in tests, in the manner of TiKV's transport filters.
    pub async fn start_with_transport(
        opts: StoreOptions,
        pd: Arc<dyn PdClient>,
        wrap: TransportLayer,
        logger: Logger,
    ) -> Result<Store, Error> {
        opts.config.validate().map_err(Error::InvalidArgument)?;
        opts.txn.validate().map_err(Error::InvalidArgument)?;
        if opts.store_id == 0 {
            return Err(Error::InvalidArgument("store id must be nonzero".into()));
        }
        let logger = logger.new(o!("store_id" => opts.store_id));
        std::fs::create_dir_all(&opts.data_dir)
            .map_err(Error::io(format!("create {}", opts.data_dir.display())))?;
        let engine = RocksEngine::open(opts.data_dir.join("db"), &opts.engine)?;
        let lock_mirror_on = engine.lock_mirror_len().is_some();
        if opts.engine.lock_mirror_bytes > 0 && !lock_mirror_on {
            warn!(
                logger,
                "more locks than the in-memory lock mirror holds: lock reads go to \
                RocksDB until a start finds fewer"
            );
        }
        let listener = TcpListener::bind(&opts.listen_addr)
            .await
            .map_err(Error::io(format!("bind {}", opts.listen_addr)))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("local address of the listener"))?;
        let mut me = metapb::Store::new();
        me.set_id(opts.store_id);
        me.set_address(addr.to_string());
        register(&*pd, me, opts.config.pd_register_timeout(), &logger).await?;
        let metrics = Arc::new(StoreMetrics::default());
        // The listener moves to the first raft thread's runtime, which accepts every
        // connection and deals them over the raft threads (`raft_threads.rs`).
        let listener = listener.into_std().map_err(Error::io("listener"))?;
        let threads = RaftThreads::start(opts.config.raft_threads).await?;
        let first_rt = threads.handles().first().clone();
        let listener = match first_rt
            .spawn(async move { TcpListener::from_std(listener) })
            .await
        {
            Ok(Ok(listener)) => listener,
            Ok(Err(e)) => {
                threads.shut().await;
                return Err(Error::io("listener")(e));
            }
            Err(_) => {
                threads.shut().await;
                return Err(Error::io("start the store's raft threads")(
                    std::io::Error::other("the first raft thread did not take the listener"),
                ));
            }
        };
        // Started once nothing before it can fail, so a failed start has no LogWriter to
        // stop except in `recover` below.
        let (log_writer, log_writer_thread) = LogWriter::start(
            engine.clone(),
            opts.config.log_writer_queue,
            regatta_raftstore::GroupLimits {
                max_batch_bytes: opts.config.log_writer_max_batch_bytes,
                wait: std::time::Duration::from_micros(opts.config.log_group_wait_us),
            },
            metrics.clone(),
            logger.clone(),
        );
        let transport: Arc<dyn Transport> = wrap(TcpTransport::with_lanes(
            pd.clone(),
            threads.handles().runtimes(),
            logger.clone(),
        ));
        // Both bounded (StoreConfig): a full report queue drops reports, a full new-region
        // queue leaves the region with its parent's replica until a later tick.
        let (reports_tx, mut reports_rx) =
            mpsc::channel::<RegionHeartbeatRequest>(opts.config.pd_report_queue);
        let (new_regions_tx, mut new_regions_rx) =
            mpsc::channel::<NewRegion>(opts.config.new_region_queue);
        let router = Router::default();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let cfg = Arc::new(opts.config.clone());
        let lease_ms = Arc::new(AtomicU64::new(cfg.lease_ms));
        let split_keys = Arc::new(AtomicU64::new(cfg.region_split_keys));
        let (detector, detector_task) = Detector::new(
            pd.clone(),
            DETECTOR_QUEUE,
            logger.new(o!("component" => "detector")),
        );
        let (gc_worker, gc_thread) = GcWorker::start(opts.txn.gc_batch_keys, opts.txn.gc_queue);
        let split_checker = SplitChecker::start(cfg.split_check_threads, cfg.split_check_queue);
        let txn = TxnCoprocessor::new(opts.txn.clone(), pd.clone(), detector, gc_worker.clone());
        let shared = Arc::new(Shared {
            store_id: opts.store_id,
            engine: engine.clone(),
            router: router.clone(),
            ctx: PeerContext {
                cfg: cfg.clone(),
                metrics: metrics.clone(),
                coprocessor: Arc::new(txn.clone()),
                store_id: opts.store_id,
                reads: router.reads().clone(),
                lease_ms: lease_ms.clone(),
                split_keys: split_keys.clone(),
                clock,
                seed: rand::random(),
                logger: logger.clone(),
            },
            shell: ShellContext {
                transport,
                log_writer: log_writer.clone(),
                pd: pd.clone(),
                split_checker: split_checker.clone(),
                pd_reports: reports_tx,
                new_regions: new_regions_tx,
            },
            txn,
            threads: threads.handles().clone(),
            early: std::sync::Mutex::default(),
        });
        let recovered = match recover(&shared) {
            Ok(n) => n,
            Err(e) => {
                // Stop the replicas already started, then the LogWriter, and wait for
                // their threads: the RocksDB they hold is closed when `start` returns, so
                // a retry can open the data directory.
                gc_worker.stop();
                split_checker.stop();
                threads.shut().await;
                drop(shared);
                drop(log_writer);
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = log_writer_thread.join();
                    let _ = gc_thread.join();
                    split_checker.join()
                })
                .await;
                return Err(e);
            }
        };
        info!(logger, "store started"; "addr" => %addr, "recovered_regions" => recovered);

        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(detector_task));
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let (unknown_tx, mut unknown_rx) = mpsc::channel::<RaftMessage>(UNKNOWN_REGION_QUEUE);
        tasks.push(first_rt.spawn(server::serve(
            listener,
            threads.handles().runtimes().to_vec(),
            router.clone(),
            unknown_tx,
            cfg.inbound_limits(),
            shutdown_rx,
            logger.clone(),
        )));
        let (pd2, router2) = (pd.clone(), router.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(hb) = reports_rx.recv().await {
                let rid = hb.get_region().get_id();
                if let Ok(resp) = pd2.region_heartbeat(hb).await {
                    if resp.has_transfer_leader() {
                        if let Some(addr) = router2.get(rid) {
                            addr.do_send(TransferLeader(resp.get_transfer_leader().get_id()));
                        }
                    }
                }
            }
        }));
        let (shared2, log2) = (shared.clone(), logger.clone());
        tasks.push(tokio::spawn(async move {
            // One task for both ways a replica starts, so they never race.
            loop {
                // Splits first: a region whose parent already applied the split must be
                // started from the split's state, never as an uninitialized replica.
                let n = tokio::select! {
                    biased;
                    n = new_regions_rx.recv() => n,
                    m = unknown_rx.recv() => {
                        if let Some(m) = m {
                            if let Err(e) = shared2.on_unknown_region_message(m) {
                                warn!(log2, "starting an uninitialized replica failed"; "error" => %e);
                            }
                        }
                        continue;
                    }
                };
                let Some(n) = n else { return };
                match shared2.create_peer(n.region_id) {
                    // Started now (not already, by a heartbeat while this waited: a leader
                    // elected meanwhile keeps its leadership).
                    Ok(started) => {
                        if started {
                            if let Some(addr) = shared2.router.get(n.region_id) {
                                addr.do_send(CheckSplitSoon);
                                if n.campaign {
                                    addr.do_send(Campaign);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        warn!(log2, "starting a split region's peer failed";
                            "region_id" => n.region_id, "error" => %e)
                    }
                }
            }
        }));
        let (pd3, shared3, log3) = (pd.clone(), shared.clone(), logger.clone());
        let interval = Duration::from_millis(cfg.store_heartbeat_interval_ms);
        tasks.push(tokio::spawn(async move {
            heartbeat_loop(pd3, shared3, interval, lock_mirror_on, log3).await;
        }));
        let (pd4, shared4, log4) = (pd.clone(), shared.clone(), logger.clone());
        tasks.push(tokio::spawn(ts_limit_loop(pd4, shared4, interval, log4)));
        tasks.push(tokio::spawn(
            shared.clone().fence_when_poisoned(logger.clone()),
        ));
        Ok(Store {
            store_id: opts.store_id,
            addr,
            router,
            metrics,
            threads,
            tasks,
            shutdown,
            engine,
            log_writer,
            log_writer_thread,
            gc_worker,
            gc_thread,
            split_checker,
            logger,
            cfg,
            lease_ms,
            split_keys,
        })
    }

    /// Changes the key count above which this store's regions split (at least 2); the
    /// leaders check their regions against it at their next split check.
    pub fn set_split_keys(&self, keys: u64) -> Result<(), String> {
        if keys < 2 {
            return Err(format!(
                "a split threshold of {keys} keys (must be at least 2)"
            ));
        }
        self.split_keys
            .store(keys, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Changes the leader lease of every replica on this store (0: off) if it is safe with
    /// this store's election timeout and `max_clock_drift_ms` (docs/CLOCKS.md); an unsafe
    /// lease is refused with the reason and nothing changes. Leases already granted keep
    /// their end; new ones use the new length.
    pub fn set_lease(&self, lease_ms: u64, max_clock_drift_ms: u64) -> Result<(), String> {
        regatta_raftstore::check_lease(
            lease_ms,
            max_clock_drift_ms,
            self.cfg.min_election_timeout_ms(),
        )?;
        self.lease_ms
            .store(lease_ms, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Fault injection for tests and drills: while `Some(reason)`, every write to this
    /// store's RocksDB fails as on a full disk (see `RocksEngine::fail_writes`); the store
    /// then poisons itself and stops its replicas. `None` lifts the fault for writes made
    /// after a restart (a poisoned store stays poisoned until it restarts).
    pub fn inject_write_failure(&self, reason: Option<String>) {
        self.engine.fail_writes(reason);
    }

    /// Why the store refuses writes, if it does (its LogWriter failed).
    pub fn poison_reason(&self) -> Option<String> {
        self.log_writer.poison_reason()
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Status of every region replica on this store.
    pub async fn region_statuses(&self) -> Vec<RegionStatus> {
        let mut out = Vec::new();
        for (_, addr) in self.router.all() {
            if let Ok(s) = addr.send(GetStatus).await {
                out.push(s);
            }
        }
        out.sort_by_key(|s| s.region.get_id());
        out
    }

    /// The store's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// The router (region id -> actor).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The store's engine.
    pub fn engine(&self) -> &RocksEngine {
        &self.engine
    }

    /// Fault injection: stalls (or resumes) this store's disk as its LogWriter sees it —
    /// raft writes queue up unwritten and unreported (see [`LogWriter::set_stalled`]).
    pub fn stall_log_writer(&self, stalled: bool) {
        self.log_writer.set_stalled(stalled);
    }

    /// Stops serving: the listener and every connection close, region actors stop, the
    /// LogWriter finishes what it was given and exits, and RocksDB is closed when this
    /// returns — so the same data directory can be opened again at once. Data stays on
    /// disk; anything not yet synced was never acknowledged. A stalled disk
    /// ([`Store::stall_log_writer`]) resumes first, or the stop would wait for ever.
    pub async fn stop(self) {
        self.log_writer.set_stalled(false);
        self.shut_down(false).await;
    }

    /// Abandons the store as a SIGKILL of its process would, for crash tests: first the
    /// LogWriter stops at once, dropping the raft writes queued or gathered and not yet
    /// handed to RocksDB, and never reports them `Persisted` (so no message or answer
    /// that depends on them goes out); then the network and the region actors stop where
    /// they are, with whatever they held in memory (proposals, unapplied entries, queued
    /// messages). A handler running at that moment still ends its turn (threads cannot be
    /// cut mid-call), but nothing it submits reaches the log; an apply write it makes is
    /// of entries already durable, which a later kill could equally have let through.
    ///
    /// What it does not lose, like a real SIGKILL: every write already handed to RocksDB,
    /// synced or not — it is in the WAL file, which the OS keeps when a process dies
    /// (only a power loss drops unsynced WAL, and that is not simulated here). RocksDB is
    /// closed before this returns (its memtables are not flushed; the reopen replays the
    /// WAL), so the directory can be opened again at once.
    pub async fn crash(self) {
        self.log_writer.crash();
        self.shut_down(true).await;
    }

    async fn shut_down(self, crashed: bool) {
        let Store {
            tasks,
            shutdown,
            threads,
            engine,
            log_writer,
            log_writer_thread,
            gc_worker,
            gc_thread,
            split_checker,
            logger,
            router,
            ..
        } = self;
        let _ = shutdown.send(true);
        // The GC and split-check threads drop their queues and end after their current
        // chunk or check.
        gc_worker.stop();
        split_checker.stop();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        // The actors (and their LogWriter handles) go with the raft threads; then the
        // LogWriter's channel closes and its thread ends (after writing what is queued,
        // unless it crashed).
        threads.stop();
        drop(router);
        drop(engine);
        drop(log_writer);
        drop(gc_worker);
        let joined = tokio::task::spawn_blocking(move || {
            // Every thread is joined, even after one that panicked.
            let joined = [
                threads.join(),
                log_writer_thread.join().is_ok(),
                gc_thread.join().is_ok(),
                split_checker.join(),
            ];
            joined.iter().all(|ok| *ok)
        })
        .await;
        if !matches!(joined, Ok(true)) {
            warn!(logger, "a store thread panicked before stopping");
        }
        if crashed {
            info!(logger, "store crashed (simulated)");
        } else {
            info!(logger, "store stopped");
        }
    }
}

/// Starts a replica for every region with a state on disk; returns how many.
fn recover(shared: &Shared) -> Result<usize, Error> {
    let mut recovered = 0;
    for state in shared.engine.region_states()? {
        if shared.create_peer(state.get_region().get_id())? {
            recovered += 1;
        }
    }
    Ok(recovered)
}

/// Keeps the store's timestamp limit near PD's TSO (see `ts_limit.rs`): a timestamp every
/// `interval`, in a task of its own so a slow TSO never holds the heartbeats back.
async fn ts_limit_loop(
    pd: Arc<dyn PdClient>,
    shared: Arc<Shared>,
    interval: Duration,
    logger: Logger,
) {
    loop {
        match tokio::time::timeout(interval, pd.get_ts()).await {
            Ok(Ok(ts)) => shared.txn.ts_limit().observe_tso(ts),
            Ok(Err(e)) => warn!(logger, "cannot fetch a TSO timestamp"; "error" => %e),
            Err(_) => warn!(logger, "cannot fetch a TSO timestamp"; "error" => "timed out"),
        }
        tokio::time::sleep(interval).await;
    }
}

async fn heartbeat_loop(
    pd: Arc<dyn PdClient>,
    shared: Arc<Shared>,
    interval: Duration,
    mut lock_mirror_on: bool,
    logger: Logger,
) {
    let mut bootstrapped = false;
    loop {
        if lock_mirror_on && shared.engine.lock_mirror_len().is_none() {
            warn!(
                logger,
                "the in-memory lock mirror is off until the next start (past its limit, or \
                after a panic): lock reads go to RocksDB"
            );
            lock_mirror_on = false;
        }
        let poisoned = shared.shell.log_writer.poison_reason();
        let mut hb = StoreHeartbeatRequest::new();
        hb.set_store_id(shared.store_id);
        hb.set_region_count(shared.router.region_ids().len() as u32);
        hb.set_leader_count(shared.router.leader_count() as u32);
        hb.set_poisoned_reason(poisoned.unwrap_or_default());
        match pd.store_heartbeat(hb).await {
            Ok(resp) => {
                shared.txn.observe_pd_safe_point(resp.get_gc_safe_point());
                for region in resp.get_bootstrap_regions() {
                    // A poisoned store starts no replica (its disk may hold a bootstrap
                    // that is visible but not durable).
                    if shared.shell.log_writer.poison_reason().is_some()
                        || shared.router.get(region.get_id()).is_some()
                    {
                        continue;
                    }
                    let created = match bootstrap_region(&shared.engine, region) {
                        Ok(_) => shared.create_peer(region.get_id()),
                        Err(e) => {
                            // The disk failed us (its state may even be visible without
                            // being durable): poison the store, as on any failed write,
                            // instead of starting a replica on it at the next heartbeat.
                            shared.shell.log_writer.poison(format!(
                                "bootstrapping region {} failed: {e}",
                                region.get_id()
                            ));
                            Err(Error::from(e))
                        }
                    };
                    match created {
                        Ok(true) => {
                            info!(logger, "bootstrapped region"; "region_id" => region.get_id())
                        }
                        Ok(false) => {}
                        Err(e) => {
                            warn!(logger, "bootstrapping region failed"; "region_id" => region.get_id(), "error" => %e)
                        }
                    }
                }
                bootstrapped = resp.get_bootstrapped();
            }
            // Until PD has its initial stores: expected, and polled fast below.
            Err(e @ PdError::NotBootstrapped(_)) => {
                debug!(logger, "waiting for the cluster's bootstrap"; "pd" => %e)
            }
            Err(e) => warn!(logger, "store heartbeat failed"; "error" => %e),
        }
        // Poll fast until PD has bootstrapped the cluster.
        let wait = if bootstrapped {
            interval
        } else {
            Duration::from_millis(100)
        };
        tokio::time::sleep(wait).await;
    }
}
