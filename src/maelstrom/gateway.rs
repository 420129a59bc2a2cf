//! How requests travel between the nodes of a `regatta maelstrom` group, and the client
//! each node runs for the transaction messages.
//!
//! Nodes reach each other only through the harness's lines. A request for another node
//! goes as `{"type":"forward","fwd_id":N,"req":<hex Frame>}` and comes back as
//! `forward_ok` with the answer frame; the receiver runs it on its own replica (a forward
//! is never forwarded again). A frame is a store request (`kv_request`) or a timestamp
//! request (`pd_request` with `tso`).
//!
//! The transaction messages run the real client (`regatta_client::TxnClient`: routing,
//! retries, TSO batching, Percolator, OCC) over [`HarnessWire`], which carries its frames
//! the same way, so partitions the harness makes cut them too. The client's PD is this
//! node: regions and leaders as its own replicas know them, store `i` addressed as the
//! node's name, and timestamps from the group's oracle (`tso`).

use super::tso::TsoError;
use super::{hex, unhex, Node};
use protobuf::Message as _;
use regatta_client::{Client, Config, TxnClient, Wire, WireError, WireFuture};
use regatta_proto::framepb::{Frame, Frame_oneof_body};
use regatta_proto::metapb::{Peer, Region, Store};
use regatta_proto::pdpb::{
    PdRequest, PdRequest_oneof_req as Req, PdResponse, RegionWithLeader, TsoResponse,
};
use regatta_proto::region::key_in_range;
use serde_json::{json, Value};
use slog::{warn, Logger};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// The address the node's client knows its PD by.
const PD_ADDR: &str = "pd";

/// How long a forwarded request waits for its answer.
pub(super) const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's deadlines: one operation (retries included) fits well inside a harness
/// client's patience, and one hop is short enough that a dead leader leaves time to find
/// the next (a request waiting for a lock gets its wait on top).
fn client_config() -> Config {
    Config {
        op_timeout: Duration::from_secs(10),
        rpc_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

impl Node {
    /// Sends `body` to node `dest` as a `forward` and waits up to `timeout` for the answer
    /// frame. `Err`: no answer (the request may have been served).
    pub(super) async fn remote(
        &self,
        dest: &str,
        body: Frame_oneof_body,
        timeout: Duration,
    ) -> Result<Frame_oneof_body, String> {
        self.remote_with(dest, body, timeout, false).await
    }

    /// [`remote`](Self::remote), and with `route` the receiver runs a store request as a
    /// request from its own client (`Node::execute`: forwarded on to the leader when its
    /// replica cannot serve it) instead of on its replica only. How a benchmark acts as
    /// clients connected to other nodes. The receiver's own forward is never routed again.
    pub(super) async fn remote_with(
        &self,
        dest: &str,
        body: Frame_oneof_body,
        timeout: Duration,
        route: bool,
    ) -> Result<Frame_oneof_body, String> {
        let mut frame = Frame::new();
        frame.body = Some(body);
        let bytes = frame.write_to_bytes().map_err(|e| e.to_string())?;
        let fwd_id = self.next_fwd.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.forwards
            .lock()
            .expect("forwards lock")
            .insert(fwd_id, (dest.to_string(), tx));
        // Removes the waiter however this ends (answered, timed out, or cancelled by the
        // caller's own deadline).
        let _waiting = Waiting { node: self, fwd_id };
        let mut line = json!({"type": "forward", "fwd_id": fwd_id, "req": hex(&bytes)});
        if route {
            line["route"] = json!(true);
        }
        self.out.send(&self.me, dest, line);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(body)) => Ok(body),
            _ => Err(format!("forwarded to {dest}; no answer in {timeout:?}")),
        }
    }

    /// Serves a frame another node forwarded here, on this node only.
    async fn serve_frame(&self, body: Frame_oneof_body) -> Frame_oneof_body {
        match body {
            Frame_oneof_body::kv_request(kv) => Frame_oneof_body::kv_response(self.local(kv).await),
            Frame_oneof_body::pd_request(mut req) => {
                let resp = match req.req.take() {
                    Some(Req::tso(t)) => match self.tso.allocate(self, t.get_count()).await {
                        Ok(first) => tso_answer(first, t.get_count()),
                        Err(TsoError::NotLeader(_)) => {
                            pd_error(format!("{} does not lead the timestamp oracle", self.me))
                        }
                        Err(TsoError::Failed(e)) => pd_error(e),
                    },
                    _ => pd_error("only timestamp requests are forwarded".into()),
                };
                Frame_oneof_body::pd_response(resp)
            }
            _ => Frame_oneof_body::pd_response(pd_error("not a request".into())),
        }
    }

    /// `count` fresh timestamps from the group's oracle (here, or at the leader); the
    /// first.
    pub(super) async fn timestamps(&self, count: u32) -> Result<u64, String> {
        let leader = match self.tso.allocate(self, count).await {
            Ok(first) => return Ok(first),
            Err(TsoError::Failed(e)) => return Err(e),
            Err(TsoError::NotLeader(leader)) => leader,
        };
        let Some(dest) = leader.and_then(|s| self.name_of_store(s)) else {
            return Err("no leader known yet for the timestamp oracle".into());
        };
        let mut t = regatta_proto::pdpb::TsoRequest::new();
        t.set_count(count);
        let mut req = PdRequest::new();
        req.set_tso(t);
        match self
            .remote(dest, Frame_oneof_body::pd_request(req), FORWARD_TIMEOUT)
            .await?
        {
            Frame_oneof_body::pd_response(r) if r.has_error() => {
                Err(r.get_error().get_message().to_string())
            }
            Frame_oneof_body::pd_response(r) if r.has_tso() => Ok(r.get_tso().get_first()),
            _ => Err(format!(
                "{dest} answered a timestamp request with something else"
            )),
        }
    }

    /// The node name of store `store_id`.
    pub(super) fn name_of_store(&self, store_id: u64) -> Option<&str> {
        let i = usize::try_from(store_id).ok()?.checked_sub(1)?;
        self.names.get(i).map(String::as_str)
    }

    /// The regions this node's replicas know, with their leaders (`None`: unknown).
    async fn routes(&self) -> Vec<(Region, Option<Peer>)> {
        let mut out: Vec<(Region, Option<Peer>)> = self
            .store
            .region_statuses()
            .await
            .into_iter()
            .map(|s| {
                let leader = s
                    .region
                    .get_peers()
                    .iter()
                    .find(|p| s.leader_id != 0 && p.get_id() == s.leader_id)
                    .cloned();
                (s.region, leader)
            })
            .collect();
        out.sort_by(|a, b| a.0.get_start_key().cmp(b.0.get_start_key()));
        out
    }

    /// Answers the client's PD request from this node's view (timestamps from the group's
    /// oracle).
    async fn pd_answer(&self, mut req: PdRequest) -> PdResponse {
        let mut resp = PdResponse::new();
        match req.req.take() {
            Some(Req::get_region(g)) => {
                match self
                    .routes()
                    .await
                    .into_iter()
                    .find(|(r, _)| key_in_range(r, g.get_key()))
                {
                    Some((r, leader)) => set_route(resp.mut_get_region(), r, leader),
                    None => return pd_error("no region holds the key here yet".into()),
                }
            }
            Some(Req::get_region_by_id(g)) => {
                match self
                    .routes()
                    .await
                    .into_iter()
                    .find(|(r, _)| r.get_id() == g.get_region_id())
                {
                    Some((r, leader)) => set_route(resp.mut_get_region(), r, leader),
                    None => return pd_error(format!("no region {}", g.get_region_id())),
                }
            }
            Some(Req::scan_regions(s)) => {
                let (start, end) = (s.get_start_key(), s.get_end_key());
                let limit = s.get_limit() as usize;
                for (r, leader) in self.routes().await {
                    let after_start = r.get_end_key().is_empty() || r.get_end_key() > start;
                    let before_end = end.is_empty() || r.get_start_key() < end;
                    if !(after_start && before_end) {
                        continue;
                    }
                    let mut rl = RegionWithLeader::new();
                    rl.set_region(r);
                    if let Some(l) = leader {
                        rl.set_leader(l);
                    }
                    resp.mut_scan_regions().mut_regions().push(rl);
                    if limit != 0 && resp.get_scan_regions().get_regions().len() >= limit {
                        break;
                    }
                }
            }
            Some(Req::get_store(g)) => match self.name_of_store(g.get_store_id()) {
                Some(name) => resp
                    .mut_get_store()
                    .set_store(store(g.get_store_id(), name)),
                None => return pd_error(format!("no store {}", g.get_store_id())),
            },
            Some(Req::get_all_stores(_)) => {
                for (i, name) in self.names.iter().enumerate() {
                    let s = store(i as u64 + 1, name);
                    resp.mut_get_all_stores().mut_stores().push(s);
                }
            }
            Some(Req::tso(t)) => match self.timestamps(t.get_count()).await {
                Ok(first) => return tso_answer(first, t.get_count()),
                Err(e) => return pd_error(e),
            },
            _ => return pd_error("the JSON node's PD serves routing and timestamps only".into()),
        }
        resp
    }

    /// The transactional client of this node (made on first use).
    pub(super) async fn txn_client(self: &Arc<Self>) -> Result<(Client, TxnClient), String> {
        let client = self
            .client
            .get_or_try_init(|| async {
                let wire = Arc::new(HarnessWire {
                    node: Arc::downgrade(self),
                });
                Client::connect_over(&[PD_ADDR], client_config(), wire)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await?;
        Ok((client.clone(), TxnClient::from_client(client.clone())))
    }
}

fn store(id: u64, name: &str) -> Store {
    let mut s = Store::new();
    s.set_id(id);
    s.set_address(name.to_string());
    s
}

fn set_route(r: &mut regatta_proto::pdpb::GetRegionResponse, region: Region, leader: Option<Peer>) {
    r.set_region(region);
    if let Some(l) = leader {
        r.set_leader(l);
    }
}

fn tso_answer(first: u64, count: u32) -> PdResponse {
    let mut t = TsoResponse::new();
    t.set_first(first);
    t.set_count(count.max(1));
    let mut resp = PdResponse::new();
    resp.set_tso(t);
    resp
}

fn pd_error(message: String) -> PdResponse {
    let mut resp = PdResponse::new();
    resp.mut_error().set_message(message);
    resp
}

/// A forwarded request's waiter, removed when this drops.
struct Waiting<'a> {
    node: &'a Node,
    fwd_id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.node
            .forwards
            .lock()
            .expect("forwards lock")
            .remove(&self.fwd_id);
    }
}

/// The client's [`Wire`] inside a node: PD requests are answered by this node, store
/// requests run here or go to the addressed node as a `forward`.
struct HarnessWire {
    /// Weak: the node owns its client, which owns this wire.
    node: Weak<Node>,
}

impl Wire for HarnessWire {
    fn call<'a>(
        &'a self,
        addr: &'a str,
        body: Frame_oneof_body,
        timeout: Duration,
    ) -> WireFuture<'a> {
        Box::pin(async move {
            let node = Node::live(&self.node)
                .ok_or_else(|| WireError::Unreachable("the node is stopping".into()))?;
            let served = tokio::time::timeout(timeout, deliver(&node, addr, body, timeout));
            served.await.unwrap_or_else(|_| {
                Err(WireError::NoAnswer(format!(
                    "{addr}: no answer in {timeout:?}"
                )))
            })
        })
    }
}

/// Serves one frame of the client: PD requests here, store requests here or at `addr`.
async fn deliver(
    node: &Arc<Node>,
    addr: &str,
    body: Frame_oneof_body,
    timeout: Duration,
) -> Result<Frame_oneof_body, WireError> {
    match body {
        Frame_oneof_body::pd_request(req) if addr == PD_ADDR => {
            Ok(Frame_oneof_body::pd_response(node.pd_answer(req).await))
        }
        Frame_oneof_body::kv_request(kv) if addr == node.me => {
            Ok(Frame_oneof_body::kv_response(node.local(kv).await))
        }
        body if node.names.iter().any(|n| n == addr) => node
            .remote(addr, body, timeout)
            .await
            .map_err(WireError::NoAnswer),
        _ => Err(WireError::Unreachable(format!("no node is named {addr:?}"))),
    }
}

/// A `forward` from node `src`: served here, answered with `forward_ok`.
pub(super) fn on_forward(node: &Arc<Node>, src: String, body: &Value, logger: &Logger) {
    let fwd_id = body.get("fwd_id").cloned().unwrap_or(Value::Null);
    let Some(req) = body
        .get("req")
        .and_then(Value::as_str)
        .and_then(unhex)
        .and_then(|b| Frame::parse_from_bytes(&b).ok())
        .and_then(|f| f.body)
    else {
        // The forwarding node times out and answers its client 0 (unknown).
        warn!(logger, "forward skipped: req is not a hex frame"; "src" => &src);
        return;
    };
    let route = body.get("route").and_then(Value::as_bool).unwrap_or(false);
    let n = node.clone();
    node.spawn(async move {
        let serve = async {
            match req {
                Frame_oneof_body::kv_request(kv) if route => {
                    let resp = n.execute(kv).await.unwrap_or_else(failed);
                    Frame_oneof_body::kv_response(resp)
                }
                req => n.serve_frame(req).await,
            }
        };
        // The forwarder waits no longer than this: past it, nobody reads the answer.
        let Ok(body) = tokio::time::timeout(FORWARD_TIMEOUT, serve).await else {
            return;
        };
        let mut frame = Frame::new();
        frame.body = Some(body);
        let bytes = frame.write_to_bytes().unwrap_or_default();
        n.out.send(
            &n.me,
            &src,
            json!({"type": "forward_ok", "fwd_id": fwd_id, "resp": hex(&bytes)}),
        );
    });
}

/// A routed request's protocol error as a store error that maps back to the same code
/// (`error_code`): 11 as `ServerIsBusy` (certainly not applied), 12 as `InvalidArgument`,
/// anything else as an untyped error (0, outcome unknown).
fn failed(f: super::Fail) -> regatta_proto::kvrpcpb::KvResponse {
    let e = match f.0 {
        11 => regatta_server::Error::ServerIsBusy(f.1),
        12 => regatta_server::Error::InvalidArgument(f.1),
        _ => {
            let mut resp = regatta_proto::kvrpcpb::KvResponse::new();
            resp.mut_error().set_message(f.1);
            return resp;
        }
    };
    e.into_response()
}

/// A `forward_ok`: hands the answer to the request waiting for it.
pub(super) fn on_forward_ok(node: &Node, src: &str, body: &Value, logger: &Logger) {
    let id = body.get("fwd_id").and_then(Value::as_u64).unwrap_or(0);
    let resp = body
        .get("resp")
        .and_then(Value::as_str)
        .and_then(unhex)
        .and_then(|b| Frame::parse_from_bytes(&b).ok())
        .and_then(|f| f.body);
    let waiter = {
        let mut forwards = node.forwards.lock().expect("forwards lock");
        // Only the node asked answers: an id some other node echoes matches nothing.
        match forwards.get(&id) {
            Some((asked, _)) if asked == src => forwards.remove(&id).map(|(_, w)| w),
            _ => None,
        }
    };
    match (waiter, resp) {
        (Some(w), Some(resp)) => {
            let _ = w.send(resp);
        }
        (_, None) => warn!(logger, "forward_ok skipped: resp is not a hex frame";
            "src" => src, "fwd_id" => id),
        (None, Some(_)) => {} // its waiter gave up already
    }
}
