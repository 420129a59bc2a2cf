//! The cluster harness of the integration tests: a [`Cluster`] of real stores (TCP on
//! loopback, RocksDB in a temp dir) with a real PD, whose raft traffic passes through a
//! fault-injecting [`Network`] (drop, delay, duplicate, partition — TiKV's transport
//! filters), whose stores can crash (as by SIGKILL: raft writes not yet handed to RocksDB
//! are lost) or stop gracefully and restart from disk, and a [`Recorder`] that logs client
//! operations for the [`linearizability`] checker.
//!
//! Seeds: every random choice of the harness and the tests — the transport's drops,
//! delays and duplicates, the workloads' operations and keys, the nemesis schedules —
//! comes from RNGs seeded by [`test_seed`]: `REGATTA_TEST_SEED` if set, else a fresh seed,
//! printed to stderr (`cargo test` shows it when a test fails). Running a test again with
//! that seed replays its random choices; thread timing is not replayed, so a replay takes
//! the same decisions but not necessarily in the same interleaving. The cluster's own
//! randomness (raft-rs election timeouts, the client's backoff jitter) is not seeded.
//!
//! Waiting: tests wait for a condition with a deadline ([`wait_until`]); the fixed
//! durations left are fault windows (how long a partition lasts), never stand-ins for a
//! condition.

pub mod bank;
pub mod linearizability;
pub mod machine;
pub mod maelstrom;
pub mod process;
pub mod si;
pub mod txn_requests;

use linearizability::{Event, Op};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use regatta::playground::{Playground, PlaygroundConfig, TransportWrap};
use regatta_client::{Client, Config, ReadConsistency, TxnClient};
use regatta_proto::kvrpcpb::{KvResponse, Request};
use regatta_proto::metapb::Region;
use regatta_proto::raft_serverpb::RaftMessage;
use regatta_proto::region::key_in_range;
use regatta_proto::txnpb::TxnRequest;
use regatta_server::{StoreConfig, TcpTransport, Transport, TxnConfig};
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
pub use txn_requests::{check_status_req, commit_req, lock_req, prewrite_req};

/// The seed of this test run (one for the whole test binary): `REGATTA_TEST_SEED` if set, else one
/// drawn from the clock. Printed to stderr on every call, so that the output of each test
/// that uses it (which `cargo test` shows on failure) names the seed that replays it.
pub fn test_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    let seed = *SEED.get_or_init(|| match std::env::var("REGATTA_TEST_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("REGATTA_TEST_SEED={v:?} is not a u64")),
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("the clock is after 1970");
            mix(now.as_nanos() as u64, u64::from(std::process::id()))
        }
    });
    eprintln!("REGATTA_TEST_SEED={seed} (set it to replay this run's random choices)");
    seed
}

/// An RNG for `stream` of this run: the same seed and stream give the same sequence.
pub fn seeded_rng(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(mix(seed, stream))
}

/// Mixes two words into a seed (splitmix64's finalizer over both).
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_add(0x9e37_79b9_7f4a_7c15).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The faults currently injected into raft traffic between stores.
#[derive(Default)]
pub struct Network {
    rules: Mutex<Rules>,
}

#[derive(Default, Clone)]
struct Rules {
    /// (from store, to store) pairs whose messages are dropped.
    blocked: HashSet<(u64, u64)>,
    drop_prob: f64,
    duplicate_prob: f64,
    max_delay_ms: u64,
}

impl Network {
    fn rules(&self) -> Rules {
        self.rules.lock().expect("rules lock").clone()
    }

    fn update(&self, f: impl FnOnce(&mut Rules)) {
        f(&mut self.rules.lock().expect("rules lock"));
    }
}

/// A store's transport with the [`Network`]'s faults in front of the TCP one.
struct FaultyTransport {
    store_id: u64,
    inner: TcpTransport,
    net: Arc<Network>,
    rt: tokio::runtime::Handle,
    /// Draws the faults; seeded from the run's seed.
    rng: Mutex<StdRng>,
}

impl Transport for FaultyTransport {
    fn send(&self, msg: RaftMessage) {
        let to = msg.get_to_peer().get_store_id();
        let rules = self.net.rules();
        if rules.blocked.contains(&(self.store_id, to)) {
            return;
        }
        let mut rng = self.rng.lock().expect("rng lock");
        if rules.drop_prob > 0.0 && rng.gen_bool(rules.drop_prob) {
            return;
        }
        let copies = if rules.duplicate_prob > 0.0 && rng.gen_bool(rules.duplicate_prob) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if rules.max_delay_ms == 0 {
                self.inner.send(msg.clone());
            } else {
                let delay = Duration::from_millis(rng.gen_range(0..=rules.max_delay_ms));
                let (inner, msg) = (self.inner.clone(), msg.clone());
                self.rt.spawn(async move {
                    tokio::time::sleep(delay).await;
                    inner.send(msg);
                });
            }
        }
    }
}

/// A cluster under test. Create it inside an actix system (`#[actix_rt::test]`).
pub struct Cluster {
    pub pg: Playground,
    pub net: Arc<Network>,
    /// The run's seed ([`test_seed`]).
    pub seed: u64,
    /// RNGs handed out so far (each gets its own stream).
    rngs: AtomicU64,
    _dir: tempfile::TempDir,
    /// Held while the cluster runs (dropped last, after the stores).
    _machine: machine::Shared,
}

fn test_logger() -> slog::Logger {
    // Set REGATTA_TEST_LOG=1 to see the cluster's logs.
    if std::env::var_os("REGATTA_TEST_LOG").is_some() {
        regatta::logging::logger()
    } else {
        slog::Logger::root(slog::Discard, slog::o!())
    }
}

impl Cluster {
    /// `stores` stores, `regions` regions, default store configuration.
    pub async fn new(stores: usize, regions: usize) -> Cluster {
        Self::with_config(stores, regions, StoreConfig::default()).await
    }

    /// With a given store configuration.
    pub async fn with_config(stores: usize, regions: usize, config: StoreConfig) -> Cluster {
        let (txn, life) = (TxnConfig::default(), regatta_pd::gc::DEFAULT_GC_LIFE_TIME);
        Self::start(stores, regions, (config, txn), life, 1).await
    }

    /// With a given store configuration (raftstore and transactional layer) and PD's GC
    /// life time (how far its GC safe point trails its clock).
    pub async fn with_gc_life_time(
        stores: usize,
        regions: usize,
        config: (StoreConfig, TxnConfig),
        gc_life_time: Duration,
    ) -> Cluster {
        Self::start(stores, regions, config, gc_life_time, 1).await
    }

    /// Default configuration, PD's TSO reading its clock in steps of `step_ms` (many
    /// timestamps share one physical millisecond).
    pub async fn with_tso_clock_step_ms(stores: usize, regions: usize, step_ms: u64) -> Cluster {
        let life = regatta_pd::gc::DEFAULT_GC_LIFE_TIME;
        let config = (StoreConfig::default(), TxnConfig::default());
        Self::start(stores, regions, config, life, step_ms).await
    }

    async fn start(
        stores: usize,
        regions: usize,
        (config, txn): (StoreConfig, TxnConfig),
        gc_life_time: Duration,
        tso_clock_step_ms: u64,
    ) -> Cluster {
        let machine = machine::shared();
        let dir = tempfile::tempdir().expect("temp dir");
        let seed = test_seed();
        let net = Arc::new(Network::default());
        let n = net.clone();
        let rt = tokio::runtime::Handle::current();
        // Each (re)start of a store draws its transport's seed from this one, in order.
        let transport_seeds = Mutex::new(seeded_rng(seed, u64::MAX));
        let wrap: TransportWrap = Arc::new(move |store_id, tcp| {
            let seed = transport_seeds.lock().expect("rng lock").gen();
            Arc::new(FaultyTransport {
                store_id,
                inner: tcp,
                net: n.clone(),
                rt: rt.clone(),
                rng: Mutex::new(StdRng::seed_from_u64(seed)),
            }) as Arc<dyn Transport>
        });
        let mut cfg = PlaygroundConfig::local(stores, regions, dir.path().to_path_buf());
        cfg.store_config = config;
        cfg.txn_config = txn;
        cfg.transport = Some(wrap);
        cfg.gc_life_time = gc_life_time;
        cfg.tso_clock_step_ms = tso_clock_step_ms;
        cfg.engine_config = regatta_server::EngineConfig::short_lived();
        let pg = Playground::start(cfg, test_logger())
            .await
            .expect("cluster starts");
        Cluster {
            pg,
            net,
            seed,
            rngs: AtomicU64::new(0),
            _dir: dir,
            _machine: machine,
        }
    }

    /// A new RNG from the run's seed, with a stream of its own: the n-th RNG a test asks
    /// for is the same in every run with the same seed.
    pub fn rng(&self) -> StdRng {
        seeded_rng(self.seed, self.rngs.fetch_add(1, Ordering::Relaxed))
    }

    /// A client of this cluster with short retry delays and the given op deadline.
    pub async fn client_with_deadline(&self, op_timeout: Duration) -> Client {
        self.client_with(Config {
            op_timeout,
            rpc_timeout: Duration::from_secs(2),
            ..Config::default()
        })
        .await
    }

    /// A transaction client of this cluster with short retry delays and the given op
    /// deadline (over a raw client as [`Cluster::client_with_deadline`] makes).
    pub async fn txn_client_with_deadline(&self, op_timeout: Duration) -> TxnClient {
        TxnClient::from_client(self.client_with_deadline(op_timeout).await)
    }

    /// A client with an explicit configuration.
    pub async fn client_with(&self, cfg: Config) -> Client {
        Client::connect_with(&[self.pg.pd_addr()], cfg)
            .await
            .expect("client connects")
    }

    /// Store ids whose replica of `region_id` believes it leads, with its term.
    pub async fn claimed_leaders(&self, region_id: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for s in self.pg.stores() {
            for st in s.region_statuses().await {
                if st.region.get_id() == region_id
                    && st.leader_id != 0
                    && st.leader_id == st.peer_id
                {
                    out.push((s.store_id, st.term));
                }
            }
        }
        out
    }

    /// The status of `region_id`'s replica on store `store_id`.
    pub async fn status(
        &self,
        store_id: u64,
        region_id: u64,
    ) -> Option<regatta_server::RegionStatus> {
        let store = self.pg.store(store_id)?;
        store
            .region_statuses()
            .await
            .into_iter()
            .find(|st| st.region.get_id() == region_id)
    }

    /// A client with a 20 s op deadline.
    pub async fn client(&self) -> Client {
        self.client_with_deadline(Duration::from_secs(20)).await
    }

    /// Cuts raft traffic between the groups both ways (messages within a group flow).
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        self.net.update(|r| {
            for &x in a {
                for &y in b {
                    r.blocked.insert((x, y));
                    r.blocked.insert((y, x));
                }
            }
        });
    }

    /// Cuts store `id` off from every other store.
    pub fn isolate(&self, id: u64) {
        let others: Vec<u64> = (1..=self.pg.store_count() as u64)
            .filter(|&s| s != id)
            .collect();
        self.partition(&[id], &others);
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.net.update(|r| *r = Rules::default());
    }

    /// Drops, duplicates and delays (up to `max_delay_ms`) raft messages at random.
    pub fn unreliable(&self, drop_prob: f64, duplicate_prob: f64, max_delay_ms: u64) {
        self.net.update(|r| {
            r.drop_prob = drop_prob;
            r.duplicate_prob = duplicate_prob;
            r.max_delay_ms = max_delay_ms;
        });
    }

    /// Crashes store `id` as SIGKILL would: its raft writes queued for the LogWriter and
    /// not yet written are lost, nothing is reported or flushed on the way out; what was
    /// handed to RocksDB stays (see `Store::crash`).
    pub async fn crash(&mut self, id: u64) {
        self.pg.crash_store(id).await;
    }

    /// Stalls (or resumes) store `id`'s disk: its raft writes queue up unwritten, so its
    /// replicas acknowledge nothing new (`Store::stall_log_writer`).
    pub fn stall_disk(&self, id: u64, stalled: bool) {
        self.pg
            .store(id)
            .expect("store running")
            .stall_log_writer(stalled);
    }

    /// Starts store `id` again from its data directory.
    pub async fn restart(&mut self, id: u64) {
        self.pg.start_store(id).await.expect("store restarts");
    }

    /// Stops PD and starts it again from its data directory on the same address.
    pub async fn restart_pd(&mut self) {
        self.pg.restart_pd().await.expect("PD restarts");
    }

    /// The store leading region `region_id`, if a running store leads it.
    pub async fn leader_of(&self, region_id: u64) -> Option<u64> {
        for s in self.pg.stores() {
            for st in s.region_statuses().await {
                if st.region.get_id() == region_id
                    && st.leader_id != 0
                    && st.leader_id == st.peer_id
                {
                    return Some(s.store_id);
                }
            }
        }
        None
    }

    /// The id of the region holding `key` (per PD).
    pub async fn region_of(&self, key: &[u8]) -> u64 {
        let client = self.client().await;
        client
            .pd()
            .get_region(key)
            .await
            .expect("PD routes")
            .0
            .get_id()
    }

    /// Waits until a store leads `region_id`; returns it.
    pub async fn wait_leader(&self, region_id: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.leader_of(region_id).await {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "region {region_id} elected no leader in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Cluster {
    /// Sends a get of `key` with `consistency` straight to store `store_id`'s replica of
    /// `region_id` (no client routing, no retries): what that replica itself answers.
    pub async fn direct_get(
        &self,
        store_id: u64,
        region_id: u64,
        key: &[u8],
        consistency: regatta_proto::kvrpcpb::ReadConsistency,
        tune: impl FnOnce(&mut regatta_proto::kvrpcpb::Context),
    ) -> regatta_proto::kvrpcpb::KvResponse {
        use regatta_proto::kvrpcpb::{GetRequest, Request};
        let mut g = GetRequest::new();
        g.set_key(key.to_vec());
        let mut req = Request::new();
        req.set_get(g);
        self.direct_request(store_id, region_id, req, |ctx| {
            ctx.set_consistency(consistency);
            tune(ctx);
        })
        .await
    }

    /// Sends `req` straight to store `store_id`'s replica of `region_id`, with that
    /// replica's current epoch (no client routing, no retries): what the replica answers.
    pub async fn direct_request(
        &self,
        store_id: u64,
        region_id: u64,
        req: regatta_proto::kvrpcpb::Request,
        tune: impl FnOnce(&mut regatta_proto::kvrpcpb::Context),
    ) -> regatta_proto::kvrpcpb::KvResponse {
        use regatta_proto::framepb::Frame_oneof_body;
        use regatta_proto::kvrpcpb::KvRequest;
        let store = self.pg.store(store_id).expect("store running");
        let status = self.status(store_id, region_id).await.expect("replica");
        let mut kv = KvRequest::new();
        kv.mut_context().set_region_id(region_id);
        kv.mut_context()
            .set_region_epoch(status.region.get_region_epoch().clone());
        tune(kv.mut_context());
        kv.set_request(req);
        let conn = regatta_proto::rpc::Connection::connect(
            &store.addr.to_string(),
            Duration::from_secs(2),
        )
        .await
        .expect("store reachable");
        match conn
            .call(Frame_oneof_body::kv_request(kv), Duration::from_secs(10))
            .await
            .expect("store answers")
            .body
        {
            Some(Frame_oneof_body::kv_response(r)) => r,
            other => panic!("not a KV answer: {other:?}"),
        }
    }

    /// A running store other than `store_id`.
    fn another_store(&self, store_id: u64) -> u64 {
        self.pg
            .stores()
            .map(|s| s.store_id)
            .find(|s| *s != store_id)
            .expect("another store")
    }

    /// Moves the leadership of `region_id` to another store (by transfer, asked again
    /// until it happened); returns the old leader's store.
    pub async fn move_leader(&self, region_id: u64) -> u64 {
        let old = self.wait_leader(region_id).await;
        let target = self.another_store(old);
        wait_until("leadership moves", Duration::from_secs(30), || async {
            self.request_leadership(target, region_id);
            self.leader_of(region_id).await.is_some_and(|s| s != old)
        })
        .await;
        old
    }

    /// Moves the leadership of `region_id` to another store the way PD's leader balance
    /// does: the leader is told to transfer to that store's peer (asked again until it
    /// happened); returns the old leader's store.
    pub async fn order_transfer(&self, region_id: u64) -> u64 {
        let old = self.wait_leader(region_id).await;
        let target = self.another_store(old);
        let to = self
            .status(target, region_id)
            .await
            .expect("a replica on the target")
            .peer_id;
        wait_until(
            "the ordered transfer happens",
            Duration::from_secs(30),
            || async {
                if let Some(addr) = self.pg.store(old).and_then(|s| s.router().get(region_id)) {
                    addr.do_send(regatta_server::TransferLeader(to));
                }
                self.leader_of(region_id).await.is_some_and(|s| s != old)
            },
        )
        .await;
        old
    }

    /// Asks store `store_id`'s replica of `region_id` to become leader (by transfer).
    pub fn request_leadership(&self, store_id: u64, region_id: u64) {
        let store = self.pg.store(store_id).expect("store running");
        if let Some(addr) = store.router().get(region_id) {
            addr.do_send(regatta_server::Campaign);
        }
    }

    /// Cuts the leader of `region_id` off from the other stores and waits until the
    /// majority elects another; returns the old leader.
    pub async fn isolate_leader(&self, region_id: u64) -> u64 {
        let old = self.wait_leader(region_id).await;
        self.isolate(old);
        wait_until(
            "the majority elects a new leader",
            Duration::from_secs(30),
            || async {
                self.claimed_leaders(region_id)
                    .await
                    .iter()
                    .any(|(s, _)| *s != old)
            },
        )
        .await;
        old
    }

    /// The running store leading the region that holds `key`, and its region, if one
    /// claims it.
    pub async fn leader_for_key(&self, key: &[u8]) -> Option<(u64, Region)> {
        for s in self.pg.stores() {
            for st in s.region_statuses().await {
                if st.leader_id != 0 && st.leader_id == st.peer_id && key_in_range(&st.region, key)
                {
                    return Some((s.store_id, st.region));
                }
            }
        }
        None
    }

    /// Sends the transactional command `req` to the leader of the region holding
    /// `route_key`, retrying routing errors and back-pressure (a leader change, a split)
    /// for up to 30 s until an answer comes; returns the whole response.
    pub async fn send_txn(&self, route_key: &[u8], req: TxnRequest) -> KvResponse {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((store, region)) = self.leader_for_key(route_key).await {
                let mut r = Request::new();
                r.set_txn(req.clone());
                let resp = self.direct_request(store, region.get_id(), r, |_| {}).await;
                if !is_routing_error(&resp) {
                    return resp;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no answer for a txn command on {route_key:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cuts raft traffic from `from` to `to` only.
    pub fn cut_one_way(&self, from: u64, to: u64) {
        self.net.update(|r| {
            r.blocked.insert((from, to));
        });
    }
}

/// Whether a store's answer is a routing error or back-pressure (retry elsewhere or later),
/// not an answer to the command.
pub fn is_routing_error(resp: &KvResponse) -> bool {
    let e = resp.get_error();
    resp.has_error()
        && (e.has_not_leader()
            || e.has_epoch_not_match()
            || e.has_region_not_found()
            || e.has_server_is_busy()
            || e.has_stale_command()
            || e.has_timeout())
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records client operations (with their invocation and answer times) for the checker.
#[derive(Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
}

/// How an operation's answer is recorded.
pub enum Outcome {
    /// The answer came: the op with its observed result.
    Known(Op),
    /// No definite answer (timeout): the op as invoked, may or may not have happened.
    Unknown(Op),
    /// A definite failure: the op did not happen; not recorded.
    Failed,
}

impl Recorder {
    /// Runs `f` and records its outcome.
    pub async fn record<Fut>(&self, key: &[u8], f: Fut) -> Outcome
    where
        Fut: Future<Output = Outcome>,
    {
        let invoked = Instant::now();
        let outcome = f.await;
        let returned = Instant::now();
        let event = match &outcome {
            Outcome::Known(op) => Some((op.clone(), Some(returned))),
            Outcome::Unknown(op) => Some((op.clone(), None)),
            Outcome::Failed => None,
        };
        if let Some((op, returned)) = event {
            self.events.lock().expect("events lock").push(Event {
                key: key.to_vec(),
                op,
                invoked,
                returned,
            });
        }
        outcome
    }

    /// How many recorded operations got an answer (for progress checks).
    pub fn answered(&self) -> usize {
        self.events
            .lock()
            .expect("events lock")
            .iter()
            .filter(|e| e.returned.is_some())
            .count()
    }

    /// Every recorded event.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events lock").clone()
    }

    /// Asserts the recorded history is linearizable.
    pub fn assert_linearizable(&self) {
        let events = self.events();
        if let Err(e) = linearizability::check(&events) {
            panic!(
                "history of {} operations is not linearizable: {e}",
                events.len()
            );
        }
    }
}

/// One random operation (drawn from `rng`) on `key` through `client`, recorded; gets use
/// `reads`. A put writes a unique value.
pub async fn random_op_with(
    client: &Client,
    rec: &Recorder,
    key: &[u8],
    unique: u64,
    reads: ReadConsistency,
    rng: &mut StdRng,
) -> Outcome {
    let choice = rng.gen_range(0..10);
    let value = format!("v{unique}").into_bytes();
    rec.record(key, async {
        match choice {
            0..=3 => match client.get_with(key, reads).await {
                Ok(v) => Outcome::Known(Op::Get(v.map(|v| v.value))),
                Err(_) => Outcome::Failed, // a failed read changes nothing
            },
            4..=6 => settle(
                client.put(key, &value).await.map(|_| ()),
                Op::Put(value.clone()),
            ),
            7 => settle(client.delete(key).await.map(|_| ()), Op::Delete),
            _ => {
                let expected = client.get(key).await.ok().flatten().map(|v| v.value);
                match client.cas(key, expected.as_deref(), &value).await {
                    Ok(out) => Outcome::Known(Op::Cas {
                        expected,
                        new: value.clone(),
                        succeeded: out.succeeded,
                    }),
                    Err(e) => unknown_or_failed(
                        &e,
                        Op::Cas {
                            expected,
                            new: value.clone(),
                            succeeded: false,
                        },
                    ),
                }
            }
        }
    })
    .await
}

fn settle(r: Result<(), regatta_client::Error>, op: Op) -> Outcome {
    match r {
        Ok(()) => Outcome::Known(op),
        Err(e) => unknown_or_failed(&e, op),
    }
}

/// A timeout or a store-side failure leaves a write's outcome unknown; other errors are
/// definite failures.
fn unknown_or_failed(e: &regatta_client::Error, op: Op) -> Outcome {
    match e {
        regatta_client::Error::Timeout { .. }
        | regatta_client::Error::Storage(_)
        | regatta_client::Error::Server(_) => Outcome::Unknown(op),
        _ => Outcome::Failed,
    }
}

/// `clients` concurrent closed-loop clients, each doing `ops` random operations on `keys`
/// (which must not have been written outside `rec`: the checker starts from absent keys);
/// everything recorded in `rec`. Returns how many operations got a definite answer.
pub async fn run_workload(
    cluster: &Cluster,
    rec: &Recorder,
    clients: usize,
    ops: usize,
    keys: &[Vec<u8>],
    op_timeout: Duration,
) -> usize {
    run_workload_with(
        cluster,
        rec,
        clients,
        ops,
        keys,
        op_timeout,
        ReadConsistency::Linearizable,
    )
    .await
}

/// [`run_workload`] whose gets use `reads`.
pub async fn run_workload_with(
    cluster: &Cluster,
    rec: &Recorder,
    clients: usize,
    ops: usize,
    keys: &[Vec<u8>],
    op_timeout: Duration,
    reads: ReadConsistency,
) -> usize {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let client = cluster.client_with_deadline(op_timeout).await;
        let (rec, keys, mut rng) = (rec.clone(), keys.to_vec(), cluster.rng());
        set.spawn(async move {
            let mut known = 0;
            for _ in 0..ops {
                let key = &keys[rng.gen_range(0..keys.len())];
                let unique = next_unique();
                let op = random_op_with(&client, &rec, key, unique, reads, &mut rng);
                if let Outcome::Known(_) = op.await {
                    known += 1;
                }
            }
            known
        });
    }
    let mut known = 0;
    while let Some(r) = set.join_next().await {
        known += r.expect("client task");
    }
    known
}

/// A number no other call in this process returns: makes every written value unique.
pub fn next_unique() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// `n` keys spread over the whole key space (so that every region gets some).
pub fn spread_keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let prefix = ((i * 65_536 / n.max(1)) as u16).to_be_bytes();
            let mut k = prefix.to_vec();
            k.extend_from_slice(format!("key{i}").as_bytes());
            k
        })
        .collect()
}
