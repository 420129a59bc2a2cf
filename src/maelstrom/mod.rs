//! `regatta maelstrom`: one Regatta node speaking the Maelstrom JSON-lines protocol
//! (`docs/PROTOCOL.md`) on stdin/stdout. It runs the real store — regions,
//! PeerActor, LogWriter, RocksDB — with a transport that sends raft messages as JSON lines
//! (`{"type":"raft","data":<hex>}`) to the other nodes through the harness. The group is one
//! region over the whole key space with a replica on every node of `init`'s `node_ids`.
//!
//! Requests to a follower are forwarded to the leader (`forward` / `forward_ok`) and
//! answered by the node that received them. Error codes follow the protocol: 11 only when
//! the request was certainly not proposed, 0 when the outcome is unknown. A request that
//! finds no leader waits for one (bounded); one client's requests are served in the order
//! they arrived (`sessions`); replies write their keys in the protocol's order.

mod fields;
mod gateway;
mod input;
mod lifecycle;
mod read_bench;
mod reads;
mod regions;
mod seed;
mod sessions;
mod transactions;
mod tso;
mod txn;

pub use lifecycle::run;

use anyhow::Result;
use fields::{field, key, num, opt_bool, text};
use protobuf::Message as _;
use regatta_proto::framepb::Frame_oneof_body;
use regatta_proto::kvrpcpb::{
    CasRequest, DeleteRequest, GetRequest, KvRequest, KvResponse, PutRequest, Request,
};
use regatta_proto::metapb::Region;
use regatta_proto::raft_serverpb::RaftMessage;
use regatta_server::{
    Campaign, CompactLog, KvCommand, MemPd, PdClient, RaftMessageIn, Store, StoreConfig,
    StoreOptions, Transport,
};
use serde_json::{json, Value};
use slog::{warn, Logger};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// Lines to stdout go through one writer thread.
#[derive(Clone)]
struct Out {
    tx: std::sync::mpsc::Sender<String>,
    /// The `msg_id` of the next reply (0, 1, 2, ... over every reply, before `init` too).
    next_msg_id: Arc<AtomicU64>,
}

impl Out {
    fn send(&self, src: &str, dest: &str, body: Value) {
        let line = json!({"src": src, "dest": dest, "body": body}).to_string();
        let _ = self.tx.send(line);
    }

    /// Sends `body` from `src` to `to` as the reply to the message `in_reply_to`, its keys
    /// in the protocol's order: `type`, `in_reply_to`, the body's other fields as the
    /// handler wrote them, `msg_id` last (a line-comparing harness sees the same line).
    fn reply(&self, src: &str, to: &str, in_reply_to: &Value, body: Value) {
        let msg_id = json!(self.next_msg_id.fetch_add(1, Ordering::Relaxed));
        self.send(src, to, reply_body(body, in_reply_to, msg_id));
    }

    fn fail(&self, src: &str, to: &str, in_reply_to: &Value, f: Fail) {
        self.reply(
            src,
            to,
            in_reply_to,
            json!({"type": "error", "code": f.0, "text": f.1}),
        );
    }
}

/// `body` as a reply: `type` first, then `in_reply_to`, the other fields in their order,
/// `msg_id` last.
fn reply_body(body: Value, in_reply_to: &Value, msg_id: Value) -> Value {
    let Value::Object(fields) = body else {
        return body;
    };
    let mut out = serde_json::Map::with_capacity(fields.len() + 2);
    if let Some(t) = fields.get("type") {
        out.insert("type".into(), t.clone());
    }
    out.insert("in_reply_to".into(), in_reply_to.clone());
    for (k, v) in fields {
        if !matches!(k.as_str(), "type" | "in_reply_to" | "msg_id") {
            out.insert(k, v);
        }
    }
    out.insert("msg_id".into(), msg_id);
    Value::Object(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Raft messages as JSON lines to node `n<store id>`.
struct JsonTransport {
    me: String,
    names: Vec<String>,
    out: Out,
}

impl Transport for JsonTransport {
    fn send(&self, msg: RaftMessage) {
        let to = msg.get_to_peer().get_store_id() as usize;
        let Some(dest) = to.checked_sub(1).and_then(|i| self.names.get(i)) else {
            return;
        };
        let Ok(bytes) = msg.write_to_bytes() else {
            return;
        };
        self.out
            .send(&self.me, dest, json!({"type": "raft", "data": hex(&bytes)}));
    }
}

/// The running node after `init`.
struct Node {
    me: String,
    names: Vec<String>,
    store: Store,
    region: Region,
    out: Out,
    next_fwd: AtomicU64,
    /// Requests forwarded to other nodes, waiting for their answer (`gateway`): by
    /// `fwd_id`, the node asked and the waiter.
    forwards: Mutex<HashMap<u64, (String, oneshot::Sender<Frame_oneof_body>)>>,
    /// The group's timestamp oracle, when this node leads it.
    tso: tso::Tso,
    /// The client the transaction messages run on (made on first use).
    client: tokio::sync::OnceCell<regatta_client::Client>,
    /// The next `occ_begin` id.
    next_txn_id: AtomicU64,
    /// Each client's requests, served in order (`sessions`).
    sessions: sessions::Sessions,
    /// The node's own tasks (client sessions, forwarded requests, benchmark workers),
    /// aborted when the node stops so that none keeps the store from stopping.
    tasks: Mutex<Tasks>,
    /// Set when the node starts stopping: the store's timestamp source and the
    /// transaction client's wire, which reach the node through weak references, refuse
    /// from then on instead of holding it.
    stopping: AtomicBool,
}

/// Abort handles of running tasks, pruned of finished ones as it grows.
#[derive(Default)]
struct Tasks {
    handles: Vec<tokio::task::AbortHandle>,
    prune_at: usize,
}

/// A protocol error: code and text.
struct Fail(u64, String);

impl Node {
    /// Runs `task` on the runtime as one of the node's tasks (see [`Node::tasks`]).
    fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = tokio::spawn(task);
        let mut tasks = self.tasks.lock().expect("tasks lock");
        if tasks.handles.len() >= tasks.prune_at {
            tasks.handles.retain(|h| !h.is_finished());
            tasks.prune_at = (2 * tasks.handles.len()).max(64);
        }
        tasks.handles.push(handle.abort_handle());
        handle
    }

    /// `node` upgraded, unless the node is stopping.
    fn live(node: &Weak<Node>) -> Option<Arc<Node>> {
        node.upgrade()
            .filter(|n| !n.stopping.load(Ordering::Acquire))
    }

    /// Aborts every task of the node still running.
    fn abort_tasks(&self) {
        for h in self.tasks.lock().expect("tasks lock").handles.drain(..) {
            h.abort();
        }
    }

    fn reply(&self, to: &str, req_msg_id: &Value, body: Value) {
        self.out.reply(&self.me, to, req_msg_id, body);
    }

    fn fail(&self, to: &str, req_msg_id: &Value, f: Fail) {
        self.out.fail(&self.me, to, req_msg_id, f);
    }

    /// The actor of this node's replica.
    fn replica(&self) -> Result<actix::Addr<regatta_server::PeerActor>, Fail> {
        self.store
            .router()
            .get(self.region.get_id())
            .ok_or_else(|| Fail(11, "the replica is not running yet".into()))
    }

    /// The region (as this node's replica knows it) whose range holds `key`.
    fn region_of(&self, key: &[u8]) -> Region {
        self.store
            .router()
            .locate(key)
            .unwrap_or_else(|| self.region.clone())
    }

    /// Runs `kv` on this node's replica of the region holding its key (or of the region
    /// its context names: the transaction client routes its requests itself).
    async fn local(&self, mut kv: KvRequest) -> KvResponse {
        if kv.get_context().get_region_id() == 0 {
            let region = match request_key(kv.get_request()) {
                Some(k) => self.region_of(k),
                None => self.region.clone(),
            };
            kv.mut_context().set_region_id(region.get_id());
            kv.mut_context()
                .set_region_epoch(region.get_region_epoch().clone());
        }
        let rid = kv.get_context().get_region_id();
        let router = self.store.router();
        if let Some(resp) = router.delegate(rid).and_then(|d| d.try_read(&kv)) {
            return resp; // a local read (lease, follower, read-your-writes)
        }
        let Some(addr) = router.get(rid) else {
            return regatta_server::Error::RegionNotFound(rid).into_response();
        };
        let (tx, rx) = oneshot::channel();
        addr.do_send(KvCommand { req: kv, tx });
        rx.await.unwrap_or_else(|_| {
            regatta_server::Error::Timeout("replica dropped the request".into()).into_response()
        })
    }

    /// The value of `key` (null when absent), read linearizably through the leader.
    async fn get_value(&self, key: Vec<u8>) -> Result<Value, Fail> {
        Ok(self.raw_get(key).await?.map_or(Value::Null, |v| dec(&v)))
    }

    /// The stored bytes of `key` (`None` when absent), read linearizably through the
    /// leader.
    async fn raw_get(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, Fail> {
        let mut resp = self
            .execute(request(|r| {
                let mut g = GetRequest::new();
                g.set_key(key);
                r.set_get(g);
            }))
            .await?;
        if resp.has_error() {
            return Err(error_code(&resp));
        }
        let mut g = resp.mut_response().take_get();
        Ok(g.get_found().then(|| g.take_value()))
    }

    /// Puts the bytes `value` at `key` through the leader; the log index it committed at.
    async fn raw_put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<u64, Fail> {
        let resp = self
            .execute(request(|r| {
                let mut p = PutRequest::new();
                p.set_key(key);
                p.set_value(value);
                r.set_put(p);
            }))
            .await?;
        if resp.has_error() {
            return Err(error_code(&resp));
        }
        Ok(resp.get_response().get_put().get_index())
    }

    /// Runs `kv` here, or forwards it to the leader when this replica is not leading.
    /// While no leader is known (an election under way, or none held yet), it waits for
    /// one — the replica holds the request until a leader is known, up to its
    /// `leader_wait_ms` — and asks again until [`LEADER_DEADLINE`] after it began, as a
    /// client library would; only then it fails with 11 (never proposed: definite).
    async fn execute(&self, kv: KvRequest) -> Result<KvResponse, Fail> {
        let deadline = tokio::time::Instant::now() + LEADER_DEADLINE;
        let dest = loop {
            let resp = self.local(kv.clone()).await;
            if !resp.get_error().has_not_leader() {
                return Ok(resp);
            }
            let leader = resp
                .get_error()
                .get_not_leader()
                .get_leader()
                .get_store_id();
            if let Some(dest) = self.name_of_store(leader) {
                break dest;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Fail(11, "no leader known yet".into()));
            }
            // The replica held the request for a while already; a short pause keeps a
            // replica that answers at once (a full queue) from being asked in a spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let body = Frame_oneof_body::kv_request(kv);
        match self.remote(dest, body, gateway::FORWARD_TIMEOUT).await {
            Ok(Frame_oneof_body::kv_response(resp)) => Ok(resp),
            Ok(_) => Err(Fail(0, format!("{dest} answered with something else"))),
            Err(e) => Err(Fail(0, e)),
        }
    }
}

/// How long a request that finds no leader keeps waiting for one (elections take up to
/// ~1 s with the default timings; this covers two).
const LEADER_DEADLINE: Duration = Duration::from_secs(3);

/// The key a request routes by.
fn request_key(req: &Request) -> Option<&[u8]> {
    use regatta_proto::kvrpcpb::Request_oneof_cmd as C;
    match req.cmd.as_ref()? {
        C::get(g) => Some(g.get_key()),
        C::put(p) => Some(p.get_key()),
        C::delete(d) => Some(d.get_key()),
        C::cas(c) => Some(c.get_key()),
        C::scan(s) => Some(s.get_start_key()),
        C::split(s) => Some(s.get_split_key()),
        C::batch_get(b) => b.get_keys().first().map(|k| k.as_slice()),
        C::batch_put(b) => b.get_pairs().first().map(|p| p.get_key()),
        C::batch_delete(b) => b.get_keys().first().map(|k| k.as_slice()),
        // Transactional commands come routed by the client.
        C::txn(_) => None,
    }
}

/// Maps a store error to the protocol's code: definite failures vs unknown outcomes.
fn error_code(resp: &KvResponse) -> Fail {
    let e = resp.get_error();
    let text = if e.get_message().is_empty() {
        format!("{e:?}")
    } else {
        e.get_message().to_string()
    };
    let code = if e.has_not_leader()
        || e.has_stale_command()
        || e.has_server_is_busy()
        || e.has_region_not_found()
        || e.has_epoch_not_match()
    {
        11 // refused before (or instead of) taking effect
    } else if e.has_invalid_argument() || e.has_key_not_in_region() {
        12
    } else {
        0 // timeouts and anything else: the outcome is unknown
    };
    Fail(code, text)
}

/// A JSON value as stored bytes (its canonical JSON text).
fn enc(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn dec(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into()))
}

/// A client id from the protocol (number or string) as a nonzero u64.
fn session_id(v: &Value) -> u64 {
    match v.as_u64() {
        Some(n) if n != 0 => n,
        _ => {
            // FNV-1a of the JSON text.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in v.to_string().bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            h | 1
        }
    }
}

fn request(cmd: impl FnOnce(&mut Request)) -> KvRequest {
    let mut req = Request::new();
    cmd(&mut req);
    let mut kv = KvRequest::new();
    kv.set_request(req);
    kv
}

async fn serve_client(node: Arc<Node>, src: String, body: Value) {
    let msg_id = body.get("msg_id").cloned().unwrap_or(Value::Null);
    let kind = body
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let result = handle_client(&node, &kind, &body).await;
    match result {
        Ok(reply) => node.reply(&src, &msg_id, reply),
        Err(f) => node.fail(&src, &msg_id, f),
    }
}

async fn handle_client(node: &Arc<Node>, kind: &str, body: &Value) -> Result<Value, Fail> {
    match kind {
        "read" => {
            let value = node.get_value(key(body, "key")?).await?;
            Ok(json!({"type": "read_ok", "value": value}))
        }
        "write" => {
            let (key, value) = (key(body, "key")?, enc(field(body, "value")?));
            let mut kv = request(|r| {
                let mut p = PutRequest::new();
                p.set_key(key);
                p.set_value(value);
                r.set_put(p);
            });
            if let (Some(c), Some(_)) = (body.get("client_id"), body.get("seq")) {
                let seq = num(body, "seq")?;
                kv.mut_context().set_client_id(session_id(c));
                kv.mut_context().set_seq(seq);
            }
            let resp = node.execute(kv).await?;
            if resp.has_error() {
                return Err(error_code(&resp));
            }
            let index = resp.get_response().get_put().get_index();
            Ok(json!({"type": "write_ok", "commit_index": index}))
        }
        "delete" => {
            let key = key(body, "key")?;
            let resp = node
                .execute(request(|r| {
                    let mut d = DeleteRequest::new();
                    d.set_key(key);
                    r.set_delete(d);
                }))
                .await?;
            if resp.has_error() {
                return Err(error_code(&resp));
            }
            Ok(json!({"type": "delete_ok"}))
        }
        "cas" => {
            let key = key(body, "key")?;
            let from = enc(field(body, "from")?);
            let to = enc(field(body, "to")?);
            let create = opt_bool(body, "create_if_not_exists")?.unwrap_or(false);
            // `create_if_not_exists` is "equals from, or absent": two atomic CASes, tried in
            // turn until one succeeds or one observes a present value other than `from`.
            let mut expect_absent = false;
            for _ in 0..8 {
                let (k, f, t) = (key.clone(), from.clone(), to.clone());
                let mut resp = node
                    .execute(request(move |r| {
                        let mut c = CasRequest::new();
                        c.set_key(k);
                        if expect_absent {
                            c.set_expect_absent(true);
                        } else {
                            c.set_expected(f);
                        }
                        c.set_new_value(t);
                        r.set_cas(c);
                    }))
                    .await?;
                if resp.has_error() {
                    return Err(error_code(&resp));
                }
                let c = resp.mut_response().take_cas();
                if c.get_succeeded() {
                    return Ok(json!({"type": "cas_ok"}));
                }
                if !c.get_found() {
                    if create {
                        expect_absent = true;
                        continue;
                    }
                    return Err(Fail(20, "key does not exist".into()));
                }
                if create && c.get_previous() == from.as_slice() {
                    expect_absent = false;
                    continue;
                }
                return Err(Fail(
                    22,
                    format!("expected {}, found {}", dec(&from), dec(c.get_previous())),
                ));
            }
            Err(Fail(
                11,
                "cas kept racing with other writers; not applied".into(),
            ))
        }
        "become_leader" => {
            if let Some(addr) = node.store.router().get(node.region.get_id()) {
                addr.do_send(Campaign);
            }
            for _ in 0..100 {
                let led = node.store.region_statuses().await.iter().any(|s| {
                    s.region.get_id() == node.region.get_id()
                        && s.leader_id != 0
                        && s.leader_id == s.peer_id
                });
                if led {
                    return Ok(json!({"type": "become_leader_ok"}));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(Fail(11, "campaigned but did not win the election".into()))
        }
        "read_index"
        | "read_via_log"
        | "compare_read_methods"
        | "lease_read"
        | "lease_read_config"
        | "follower_read"
        | "ryw_read"
        | "read_benchmark" => reads::handle(node, kind, body).await,
        "region_put" | "region_get" | "region_info" | "region_split" => {
            regions::handle(node, kind, body).await
        }
        "mvcc_put" | "mvcc_get" => txn::handle(node, kind, body).await,
        "txn_execute" | "occ_begin" | "occ_read" | "occ_commit" | "contention_benchmark" => {
            transactions::handle(node, kind, body).await
        }
        "seed_state" => seed::seed_state(node, body).await,
        "take_snapshot" => {
            let up_to = num(body, "up_to_index")?;
            let addr = node.replica()?;
            match addr.send(CompactLog(up_to)).await {
                Ok(Ok((index, term))) => Ok(json!({
                    "type": "snapshot_ok",
                    "last_included_index": index,
                    "last_included_term": term,
                })),
                Ok(Err(e)) => Err(Fail(13, e.to_string())),
                Err(e) => Err(Fail(13, format!("replica unavailable: {e}"))),
            }
        }
        other => Err(Fail(10, format!("message type {other:?} is not supported"))),
    }
}
