//! The fake's network face: PD's answers, the TSO, the region map with its epochs and
//! the store's routing checks; commands that pass them go to `actions`.

use super::actions::run;
use regatta_engine::{Engine, MemEngine};
use regatta_proto::frame::{encode, MAX_FRAME_LEN};
use regatta_proto::framepb::{Frame, Frame_oneof_body};
use regatta_proto::kvrpcpb::{self, KvRequest, KvResponse};
use regatta_proto::metapb::{Peer, Region, Store};
use regatta_proto::pdpb::{PdRequest_oneof_req, PdResponse};
use regatta_proto::region::key_in_range;
use regatta_proto::rpc::{serve_connection, InboundLimits, ReadBudget};
use regatta_proto::txnpb::TxnRequest_oneof_cmd as Cmd;
use regatta_txn as txn;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Holds prewrites until `want` are in flight at once (or a bound passes), to show that
/// the client sends a transaction's prewrites in parallel.
#[derive(Default)]
struct Gate {
    want: AtomicUsize,
    released: AtomicBool,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    notify: Notify,
}

/// How long a held prewrite waits for the others before it is answered anyway (a client
/// that sends them one by one then shows `max_in_flight == 1`, and the test fails instead
/// of hanging).
const GATE_BOUND: Duration = Duration::from_secs(3);

impl Gate {
    async fn pass(&self) {
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(n, Ordering::SeqCst);
        let want = self.want.load(Ordering::SeqCst);
        if want == 0 || n >= want {
            self.released.store(true, Ordering::SeqCst);
            self.notify.notify_waiters();
            return;
        }
        let wait = async {
            loop {
                let notified = self.notify.notified();
                if self.released.load(Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(GATE_BOUND, wait).await;
        self.released.store(true, Ordering::SeqCst);
    }

    fn done(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) struct State {
    pub(super) engine: MemEngine,
    pub(super) regions: Vec<Region>,
    pub(super) last_ts: u64,
    pub(super) counts: HashMap<&'static str, usize>,
    /// Commands served but never answered (a lost answer).
    pub(super) muted: HashSet<&'static str>,
    /// The next 1PC prewrite is lost on its way (neither applied nor answered), and
    /// another transaction commits its keys meanwhile.
    pub(super) lose_one_pc: bool,
    /// With `lose_one_pc`: the region is also split here once the 1PC is lost (its retry
    /// meets the new epoch and is re-cut).
    pub(super) split_after_loss: Option<Vec<u8>>,
    /// The TSO is stepped by hand: each timestamp is the last plus one, whatever the
    /// clock says (many timestamps in one millisecond; a test places others between).
    pub(super) manual_tso: bool,
    /// The next pessimistic lock is served as the store's lock-wait queue serves a
    /// hand-over: with `allow_lock_with_conflict`.
    pub(super) hand_over_next_lock: bool,
    /// 1: the next commit is applied and its answer lost; 2: the one after is refused
    /// with a storage error, without being applied.
    pub(super) lose_then_fail_commit: u8,
}

/// The fake cluster (PD + one store on one port).
#[derive(Clone)]
pub struct FakeCluster {
    /// PD's (and the store's) address.
    pub addr: String,
    state: Arc<Mutex<State>>,
    gate: Arc<Gate>,
}

fn store_peer() -> Peer {
    let mut p = Peer::new();
    p.set_id(11);
    p.set_store_id(1);
    p
}

fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> Region {
    let mut r = Region::new();
    r.set_id(id);
    r.set_start_key(start.to_vec());
    r.set_end_key(end.to_vec());
    r.mut_region_epoch().set_version(version);
    r.mut_region_epoch().set_conf_ver(1);
    r.mut_peers().push(store_peer());
    r
}

impl FakeCluster {
    /// Serves regions cut at `split_keys` (ascending) on a fresh loopback port.
    pub async fn start(split_keys: &[&[u8]]) -> FakeCluster {
        let mut regions = Vec::new();
        let mut start: Vec<u8> = Vec::new();
        for (i, k) in split_keys.iter().enumerate() {
            regions.push(region(i as u64 + 1, &start, k, 1));
            start = k.to_vec();
        }
        regions.push(region(split_keys.len() as u64 + 1, &start, b"", 1));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr").to_string();
        let cluster = FakeCluster {
            addr: addr.clone(),
            state: Arc::new(Mutex::new(State {
                engine: MemEngine::new(),
                regions,
                last_ts: 0,
                counts: HashMap::new(),
                muted: HashSet::new(),
                lose_one_pc: false,
                split_after_loss: None,
                manual_tso: false,
                hand_over_next_lock: false,
                lose_then_fail_commit: 0,
            })),
            gate: Arc::new(Gate::default()),
        };
        let (keep, shutdown) = tokio::sync::watch::channel(false);
        let me = cluster.clone();
        tokio::spawn(async move {
            let _keep = keep;
            while let Ok((stream, _)) = listener.accept().await {
                let me = me.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let limits = InboundLimits::new(MAX_FRAME_LEN);
                    let budget = ReadBudget::unlimited();
                    serve_connection(stream, &limits, &budget, shutdown, move |frame, tx| {
                        let (me, tx) = (me.clone(), tx.clone());
                        tokio::spawn(async move {
                            let body = match frame.body {
                                Some(Frame_oneof_body::pd_request(r)) => {
                                    Frame_oneof_body::pd_response(me.pd_answer(r.req))
                                }
                                Some(Frame_oneof_body::kv_request(r)) => {
                                    match me.kv_answer(r).await {
                                        Some(answer) => Frame_oneof_body::kv_response(answer),
                                        None => return, // muted: served, never answered
                                    }
                                }
                                _ => return,
                            };
                            let mut out = Frame::new();
                            out.set_id(frame.id);
                            out.body = Some(body);
                            if let Ok(bytes) = encode(&out) {
                                let _ = tx.send(bytes).await;
                            }
                        });
                        Ok(())
                    })
                    .await;
                });
            }
        });
        cluster
    }

    /// A transaction client of this fake: a 10 s operation deadline, millisecond
    /// backoffs.
    pub async fn txn_client(&self) -> regatta_client::TxnClient {
        let cfg = regatta_client::Config {
            op_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(20),
            ..regatta_client::Config::default()
        };
        regatta_client::TxnClient::connect_with(&[&self.addr], cfg)
            .await
            .expect("connect to the fake")
    }

    /// How many commands named `name` the store served (`prewrite` counts 2PC prewrites,
    /// `prewrite_1pc` the ones asking for 1PC; `epoch_not_match` counts refusals).
    pub fn count(&self, name: &str) -> usize {
        let s = self.state.lock().expect("fake state");
        s.counts.get(name).copied().unwrap_or(0)
    }

    /// From now on, commands named `name` (as in [`FakeCluster::count`]) are applied but
    /// never answered, as if every answer were lost.
    pub fn mute(&self, name: &'static str) {
        self.state.lock().expect("fake state").muted.insert(name);
    }

    /// The next 1PC prewrite is lost before it reaches the store (as a line a harness
    /// delays), and another transaction commits a write to its keys meanwhile: a retry of
    /// it meets that write.
    pub fn lose_next_one_pc(&self) {
        self.state.lock().expect("fake state").lose_one_pc = true;
    }

    /// From now on the TSO is stepped by hand: each timestamp is the last one plus one
    /// (as when many share one millisecond), and [`FakeCluster::ts`] steps it.
    pub fn step_tso_by_hand(&self) {
        self.state.lock().expect("fake state").manual_tso = true;
    }

    /// The next pessimistic lock request is served as a hand-over from the store's
    /// lock-wait queue: locked even above a newer commit, at that commit's ts.
    pub fn hand_over_next_lock(&self) {
        self.state.lock().expect("fake state").hand_over_next_lock = true;
    }

    /// The next commit is applied but its answer is lost; its retry is then refused with
    /// a storage error (a definite-looking failure that does not undo the first).
    pub fn lose_then_fail_next_commit(&self) {
        self.state.lock().expect("fake state").lose_then_fail_commit = 1;
    }

    /// Holds prewrites until `n` are in flight at once (for at most a few seconds).
    pub fn hold_prewrites_until(&self, n: usize) {
        self.gate.want.store(n, Ordering::SeqCst);
    }

    /// The most prewrites that were in flight at once.
    pub fn max_prewrites_in_flight(&self) -> usize {
        self.gate.max_in_flight.load(Ordering::SeqCst)
    }

    /// Splits the region holding `key` at `key`: both halves get a newer epoch, so a
    /// client's cached region is refused with `EpochNotMatch`.
    pub fn split(&self, key: &[u8]) {
        split(&mut self.state.lock().expect("fake state"), key);
    }

    /// [`FakeCluster::lose_next_one_pc`], and once that 1PC is lost the region is split at
    /// `key`, so its retry is re-cut into other requests.
    pub fn lose_next_one_pc_and_split(&self, key: &[u8]) {
        let mut s = self.state.lock().expect("fake state");
        s.lose_one_pc = true;
        s.split_after_loss = Some(key.to_vec());
    }

    /// A transaction client of this cluster that retries fast (1-20 ms backoff, 10 s per
    /// operation).
    pub async fn client(&self) -> regatta_client::TxnClient {
        let cfg = regatta_client::Config {
            op_timeout: std::time::Duration::from_secs(10),
            backoff_base: std::time::Duration::from_millis(1),
            backoff_max: std::time::Duration::from_millis(20),
            ..regatta_client::Config::default()
        };
        regatta_client::TxnClient::connect_with(&[&self.addr], cfg)
            .await
            .expect("connect to the fake")
    }

    /// A fresh timestamp from the fake TSO (as a client that then died would take one).
    pub fn ts(&self) -> u64 {
        next_ts(&mut self.state.lock().expect("fake state"), 1)
    }
}

/// Put mutations of `pairs`.
fn puts(pairs: &[(&[u8], &[u8])]) -> Vec<txn::Mutation> {
    pairs
        .iter()
        .map(|(k, v)| txn::Mutation::put(k.to_vec(), v.to_vec()))
        .collect()
}

/// Runs `req` straight on `e` (its keys must be free).
fn prewrite_on(e: &MemEngine, req: &txn::PrewriteRequest) {
    let snap = e.snapshot();
    let mut wb = e.write_batch();
    txn::prewrite(&snap, &mut wb, req).expect("prewrite on a fresh key");
    drop(snap);
    e.write(wb, false).expect("the memory engine writes");
}

/// Splits the region of `s` holding `key` at `key` (see [`FakeCluster::split`]).
fn split(s: &mut State, key: &[u8]) {
    let next_id = s.regions.iter().map(|r| r.get_id()).max().unwrap_or(0) + 1;
    let i = s
        .regions
        .iter()
        .position(|r| key_in_range(r, key))
        .expect("some region holds every key");
    let old = s.regions[i].clone();
    let version = old.get_region_epoch().get_version() + 1;
    s.regions[i] = region(old.get_id(), old.get_start_key(), key, version);
    s.regions
        .insert(i + 1, region(next_id, key, old.get_end_key(), version));
}

impl FakeCluster {
    /// Runs `f` on the store's engine, between commands (to play a client that died).
    pub fn with_engine<T>(&self, f: impl FnOnce(&MemEngine) -> T) -> T {
        f(&self.state.lock().expect("fake state").engine)
    }

    /// The lock on `key`, if any.
    pub fn lock_on(&self, key: &[u8]) -> Option<txn::Lock> {
        self.with_engine(|e| {
            let snap = e.snapshot();
            txn::MvccReader::new(&snap)
                .load_lock(key)
                .expect("lock decodes")
        })
    }

    /// Prewrites `pairs` as transaction `start_ts` with `primary` and `ttl_ms`, straight
    /// on the engine: a client that prewrote and then died.
    pub fn prewrite_directly(
        &self,
        primary: &[u8],
        pairs: &[(&[u8], &[u8])],
        start_ts: u64,
        ttl_ms: u64,
    ) {
        self.with_engine(|e| {
            let req = txn::PrewriteRequest {
                primary: primary.to_vec(),
                start_ts,
                lock_ttl_ms: ttl_ms,
                for_update_ts: 0,
                min_commit_ts: 0,
                async_commit_secondaries: None,
                read_versions: Vec::new(),
                mutations: puts(pairs),
            };
            prewrite_on(e, &req);
        })
    }

    /// Prewrites `pairs` of async-commit transaction `start_ts` straight on the engine,
    /// with `min_commit_ts` as a leader would have chosen it (the primary's lock lists
    /// `secondaries`): a client that prewrote and then died.
    pub fn prewrite_async_directly(
        &self,
        primary: &[u8],
        secondaries: &[&[u8]],
        pairs: &[(&[u8], &[u8])],
        start_ts: u64,
        min_commit_ts: u64,
    ) {
        self.with_engine(|e| {
            let req = txn::PrewriteRequest {
                primary: primary.to_vec(),
                start_ts,
                lock_ttl_ms: 1,
                for_update_ts: 0,
                min_commit_ts,
                async_commit_secondaries: Some(secondaries.iter().map(|k| k.to_vec()).collect()),
                read_versions: Vec::new(),
                mutations: puts(pairs),
            };
            prewrite_on(e, &req);
        })
    }

    /// Commits transaction `start_ts` on `keys` at `commit_ts`, straight on the engine.
    pub fn commit_directly(
        &self,
        keys: &[&[u8]],
        start_ts: u64,
        commit_ts: u64,
    ) -> txn::Result<()> {
        self.with_engine(|e| {
            let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
            let snap = e.snapshot();
            let mut wb = e.write_batch();
            txn::commit(&snap, &mut wb, &keys, start_ts, commit_ts)?;
            drop(snap);
            e.write(wb, false).expect("the memory engine writes");
            Ok(())
        })
    }

    fn pd_answer(&self, req: Option<PdRequest_oneof_req>) -> PdResponse {
        let mut resp = PdResponse::new();
        let mut s = self.state.lock().expect("fake state");
        let find = |s: &State, key: &[u8]| {
            s.regions
                .iter()
                .find(|r| key_in_range(r, key))
                .cloned()
                .expect("regions cover every key")
        };
        match req {
            Some(PdRequest_oneof_req::get_all_stores(_)) => {
                resp.mut_get_all_stores();
            }
            Some(PdRequest_oneof_req::get_region(r)) => {
                let g = resp.mut_get_region();
                g.set_region(find(&s, r.get_key()));
                g.set_leader(store_peer());
            }
            Some(PdRequest_oneof_req::get_region_by_id(r)) => {
                if let Some(found) = s.regions.iter().find(|x| x.get_id() == r.get_region_id()) {
                    let g = resp.mut_get_region();
                    g.set_region(found.clone());
                    g.set_leader(store_peer());
                }
            }
            Some(PdRequest_oneof_req::get_store(_)) => {
                let mut store = Store::new();
                store.set_id(1);
                store.set_address(self.addr.clone());
                resp.mut_get_store().set_store(store);
            }
            Some(PdRequest_oneof_req::tso(t)) => {
                let first = next_ts(&mut s, u64::from(t.get_count().max(1)));
                resp.mut_tso().set_first(first);
                *s.counts.entry("tso").or_insert(0) += 1;
            }
            _ => resp
                .mut_error()
                .set_message("not served by the fake".into()),
        }
        resp
    }

    async fn kv_answer(&self, mut req: KvRequest) -> Option<KvResponse> {
        let ctx = req.take_context();
        let cmd = match req.take_request().cmd {
            Some(kvrpcpb::Request_oneof_cmd::txn(t)) => t.cmd,
            _ => {
                return Some(kv_error(|e| {
                    e.set_message("the fake serves txn commands only".into())
                }))
            }
        };
        let Some(cmd) = cmd else {
            return Some(kv_error(|e| e.set_message("empty txn command".into())));
        };
        let is_prewrite = matches!(cmd, Cmd::prewrite(_));
        if is_prewrite {
            self.gate.pass().await;
        }
        let resp = self.serve(&ctx, cmd);
        if is_prewrite {
            self.gate.done();
        }
        resp
    }

    fn serve(&self, ctx: &kvrpcpb::Context, cmd: Cmd) -> Option<KvResponse> {
        let mut s = self.state.lock().expect("fake state");
        let Some(region) = s
            .regions
            .iter()
            .find(|r| r.get_id() == ctx.get_region_id())
            .cloned()
        else {
            return Some(kv_error(|e| {
                e.mut_region_not_found().set_region_id(ctx.get_region_id());
            }));
        };
        if region.get_region_epoch().get_version() != ctx.get_region_epoch().get_version() {
            *s.counts.entry("epoch_not_match").or_insert(0) += 1;
            let current = s.regions.clone();
            return Some(kv_error(move |e| {
                e.mut_epoch_not_match().set_current_regions(current.into())
            }));
        }
        if let Some(k) = keys_of(&cmd)
            .into_iter()
            .find(|k| !key_in_range(&region, k))
        {
            return Some(kv_error(|e| e.mut_key_not_in_region().set_key(k.clone())));
        }
        if s.lose_one_pc && matches!(&cmd, Cmd::prewrite(p) if p.get_try_one_pc()) {
            s.lose_one_pc = false;
            let keys = keys_of(&cmd);
            let start_ts = next_ts(&mut s, 2);
            let mut req = txn::PrewriteRequest {
                primary: keys[0].clone(),
                start_ts,
                lock_ttl_ms: 3_000,
                for_update_ts: 0,
                min_commit_ts: 0,
                async_commit_secondaries: None,
                read_versions: Vec::new(),
                mutations: Vec::new(),
            };
            for k in &keys {
                req.mutations
                    .push(txn::Mutation::put(k.clone(), b"other".to_vec()));
            }
            let engine = s.engine.clone();
            let snap = engine.snapshot();
            let mut wb = engine.write_batch();
            txn::prewrite(&snap, &mut wb, &req).expect("the other prewrite");
            drop(snap);
            engine.write(wb, false).expect("the memory engine writes");
            let snap = engine.snapshot();
            let mut wb = engine.write_batch();
            txn::commit(&snap, &mut wb, &keys, start_ts, start_ts + 1).expect("its commit");
            drop(snap);
            engine.write(wb, false).expect("the memory engine writes");
            if let Some(at) = s.split_after_loss.take() {
                split(&mut s, &at);
            }
            return None;
        }
        let is_commit = matches!(cmd, Cmd::commit(_));
        if is_commit && s.lose_then_fail_commit == 2 {
            s.lose_then_fail_commit = 0;
            return Some(kv_error(|e| {
                e.set_message("disk on fire".into());
                e.mut_storage_error();
            }));
        }
        let (name, answer) = run(&mut s, &region, cmd);
        let txn_resp = match answer {
            Ok(resp) => resp,
            // As a store answers it: a refused command as its key error, else a
            // region or storage error.
            Err(e) => return Some(e.into_response()),
        };
        if is_commit && s.lose_then_fail_commit == 1 {
            s.lose_then_fail_commit = 2;
            return None;
        }
        *s.counts.entry(name).or_insert(0) += 1;
        if s.muted.contains(name) {
            return None;
        }
        let mut resp = KvResponse::new();
        resp.mut_response().set_txn(txn_resp);
        Some(resp)
    }
}

pub(super) fn next_ts(s: &mut State, count: u64) -> u64 {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let first = if s.manual_tso {
        s.last_ts + 1
    } else {
        (s.last_ts + 1).max(regatta_proto::ts::compose(now_ms, 0))
    };
    s.last_ts = first + count - 1;
    first
}

fn kv_error(set: impl FnOnce(&mut kvrpcpb::Error)) -> KvResponse {
    let mut resp = KvResponse::new();
    set(resp.mut_error());
    resp
}

fn keys_of(cmd: &Cmd) -> Vec<Vec<u8>> {
    match cmd {
        Cmd::get(g) => vec![g.get_key().to_vec()],
        Cmd::batch_get(b) => b.get_keys().to_vec(),
        Cmd::scan(s) => vec![s.get_start_key().to_vec()],
        Cmd::prewrite(p) => p
            .get_mutations()
            .iter()
            .map(|m| m.get_key().to_vec())
            .collect(),
        Cmd::commit(c) => c.get_keys().to_vec(),
        Cmd::rollback(r) => r.get_keys().to_vec(),
        Cmd::cleanup(c) => vec![c.get_key().to_vec()],
        Cmd::check_txn_status(c) => vec![c.get_primary().to_vec()],
        Cmd::resolve_lock(r) => r.get_keys().to_vec(),
        Cmd::heartbeat(h) => vec![h.get_primary().to_vec()],
        Cmd::pessimistic_lock(l) => l.get_keys().to_vec(),
        Cmd::pessimistic_rollback(r) => r.get_keys().to_vec(),
        Cmd::check_secondary_locks(c) => c.get_keys().to_vec(),
        Cmd::scan_lock(s) => vec![s.get_start_key().to_vec()],
    }
}
