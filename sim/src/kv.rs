//! The linearizable KV workload: clients put and read a few keys (writes under sessions,
//! reads linearizable or by lease), retrying at another store on a routing error or a
//! lost answer; the history is checked for linearizability
//! ([`crate::check::linearizability`]).

use crate::check::linearizability::{Event, Op};
use crate::world::{retryable, World};
use rand::Rng;
use regatta_proto::kvrpcpb::{GetRequest, KvRequest, KvResponse, PutRequest, ReadConsistency};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub(crate) enum Kind {
    Put(Vec<u8>),
    Get(ReadConsistency),
}

pub(crate) struct Pending {
    pub(crate) key: Vec<u8>,
    pub(crate) kind: Kind,
    pub(crate) seq: u64,
    pub(crate) invoked: Instant,
    /// Give up (outcome unknown) after this.
    pub(crate) deadline: Instant,
    pub(crate) rx: Option<oneshot::Receiver<KvResponse>>,
    /// The store it was last sent to.
    pub(crate) target: usize,
}

pub(crate) struct Client {
    pub(crate) id: u64,
    pub(crate) seq: u64,
    pub(crate) done: usize,
    pub(crate) pending: Option<Pending>,
}

/// The KV workload's key `i`.
pub(crate) fn key(i: usize) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

impl World {
    /// An idle client invokes its next operation at a random store.
    pub(crate) fn kv_invoke(&mut self) {
        let idle: Vec<usize> = (0..self.clients.len())
            .filter(|c| {
                self.clients[*c].pending.is_none()
                    && self.clients[*c].done < self.cfg.ops_per_client
            })
            .collect();
        let c = idle[self.rng.gen_range(0..idle.len())];
        let key = key(self.rng.gen_range(0..self.cfg.keys));
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
        let now = self.clock_now();
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
        self.kv_send(c);
    }

    /// Sends client `c`'s pending operation to its target store (a write keeps its
    /// session's seq, so a retry is applied at most once).
    fn kv_send(&mut self, c: usize) {
        let client_id = self.clients[c].id;
        let Some(key) = self.clients[c].pending.as_ref().map(|p| p.key.clone()) else {
            return;
        };
        let r = self.region_of(&key);
        let mut req = KvRequest::new();
        req.mut_context().set_region_id(self.regions[r].get_id());
        req.mut_context()
            .set_region_epoch(self.regions[r].get_region_epoch().clone());
        let Some(p) = self.clients[c].pending.as_mut() else {
            return;
        };
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
        match self.nodes[p.target].peers.get_mut(r) {
            Some(peer) => peer.on_kv(req, tx),
            None => drop(tx), // a down store: the client sees the connection fail
        }
    }

    /// Takes the answers that arrived; retries what may be retried.
    pub(crate) fn kv_poll(&mut self) {
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
                    let now = self.clock_now();
                    self.kv_record(&p, Some(now), read);
                    self.clients[c].done += 1;
                    continue;
                }
                // An error no correct store gives this client: a finding; the operation's
                // outcome stays unknown.
                Some(resp) if !retryable(resp.get_error()) => {
                    self.finding(format!("client {c}: {:?}", resp.get_error()));
                    if let Some(p) = self.clients[c].pending.take() {
                        self.kv_record(&p, None, None);
                        self.clients[c].done += 1;
                    }
                    continue;
                }
                // A write retried under its session is applied at most once.
                other => self.retry_target(other.as_ref()),
            };
            if let Some(p) = self.clients[c].pending.as_mut() {
                p.target = retry_at;
            }
            self.note(format!("client {c} retries at s{}", retry_at + 1));
            self.kv_send(c);
        }
    }

    /// Adds an operation to the history: `returned` `None` is an unknown outcome (a read
    /// without an answer constrains nothing and is left out).
    pub(crate) fn kv_record(
        &mut self,
        p: &Pending,
        returned: Option<Instant>,
        read: Option<Option<Vec<u8>>>,
    ) {
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
