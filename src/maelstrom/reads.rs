//! The read-strategy messages of the JSON-lines node (`docs/PROTOCOL.md`, "Reads"):
//! each runs a real read through the store with one `ReadConsistency` and reports what the
//! serving replica measured (`ReadInfo`): nothing here is assumed or constant.

use super::fields::{key, num, opt_bool, opt_key};
use super::gateway::FORWARD_TIMEOUT;
use super::{dec, enc, error_code, request, Fail, Node};
use regatta_proto::framepb::Frame_oneof_body;
use regatta_proto::kvrpcpb::{GetRequest, KvResponse, ReadConsistency, ReadInfo};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest `num_reads` / `total_ops` a benchmark message may ask for.
pub(super) const MAX_BENCH_OPS: u64 = 200_000;

/// A read's answer: value, how it was served, and by which node.
struct Served {
    value: Value,
    info: ReadInfo,
    served_by: String,
    latency: Duration,
}

pub(super) fn get(
    key: Vec<u8>,
    consistency: ReadConsistency,
    tune: impl FnOnce(&mut regatta_proto::kvrpcpb::Context),
) -> regatta_proto::kvrpcpb::KvRequest {
    let mut kv = request(|r| {
        let mut g = GetRequest::new();
        g.set_key(key);
        r.set_get(g);
    });
    kv.mut_context().set_consistency(consistency);
    tune(kv.mut_context());
    kv
}

impl Node {
    pub(super) fn name_of(&self, store_id: u64) -> String {
        self.name_of_store(store_id)
            .map_or_else(|| format!("store-{store_id}"), str::to_string)
    }

    /// Turns a read's response into [`Served`], or its error into a protocol error.
    fn served(&self, mut resp: KvResponse, started: Instant) -> Result<Served, Fail> {
        if resp.has_error() {
            return Err(error_code(&resp));
        }
        let info = resp.take_read_info();
        let g = resp.mut_response().take_get();
        Ok(Served {
            value: if g.get_found() {
                dec(g.get_value())
            } else {
                Value::Null
            },
            served_by: self.name_of(info.get_served_by_store()),
            info,
            latency: started.elapsed(),
        })
    }

    /// A read served wherever its consistency allows: here if possible, else forwarded to
    /// the leader.
    async fn read(&self, kv: regatta_proto::kvrpcpb::KvRequest) -> Result<Served, Fail> {
        let started = Instant::now();
        let resp = self.execute(kv).await?;
        self.served(resp, started)
    }

    /// Runs `kv` as a client connected to node `at`: `at` serves it when its replica can,
    /// else forwards it to the leader (here, or there through a routed `forward`).
    pub(super) async fn execute_at(
        &self,
        at: &str,
        kv: regatta_proto::kvrpcpb::KvRequest,
    ) -> Result<KvResponse, Fail> {
        if at == self.me {
            return self.execute(kv).await;
        }
        let body = Frame_oneof_body::kv_request(kv);
        match self.remote_with(at, body, FORWARD_TIMEOUT, true).await {
            Ok(Frame_oneof_body::kv_response(resp)) => Ok(resp),
            Ok(_) => Err(Fail(0, format!("{at} answered with something else"))),
            Err(e) => Err(Fail(0, e)),
        }
    }

    /// Whether this node's replica of the region holding `key` leads it.
    fn leads(&self, key: &[u8]) -> bool {
        let rid = self.region_of(key).get_id();
        self.store
            .router()
            .delegate(rid)
            .is_some_and(|d| d.is_leader())
    }

    /// A read that prefers a follower (`follower_read`, `ryw_read`): served here when this
    /// node follows (its replica serves it, or it goes on to the leader); when this node
    /// leads, sent to a follower instead, so that the read offloads the leader as asked —
    /// the leader serves it only when that follower cannot (not fresh enough, behind).
    async fn read_preferring_follower(
        &self,
        key: &[u8],
        kv: regatta_proto::kvrpcpb::KvRequest,
    ) -> Result<Served, Fail> {
        let started = Instant::now();
        let others: Vec<&String> = self.names.iter().filter(|n| **n != self.me).collect();
        let resp = if !others.is_empty() && self.leads(key) {
            let follower = others[rand::random::<usize>() % others.len()];
            self.execute_at(follower, kv).await?
        } else {
            self.execute(kv).await?
        };
        self.served(resp, started)
    }
}

fn key_of(body: &Value) -> Result<Vec<u8>, Fail> {
    key(body, "key")
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Handles one read-strategy message.
pub(super) async fn handle(node: &Arc<Node>, kind: &str, body: &Value) -> Result<Value, Fail> {
    match kind {
        "read_index" => {
            let s = node
                .read(get(key_of(body)?, ReadConsistency::LINEARIZABLE, |_| {}))
                .await?;
            Ok(json!({
                "type": "read_index_ok",
                "value": s.value,
                "read_at_index": s.info.get_read_index(),
                "heartbeat_confirmed": s.info.get_network_round_trips() > 0,
                "linearizable": s.info.get_linearizable(),
                "served_by": s.served_by,
            }))
        }
        "read_via_log" => {
            let s = node
                .read(get(key_of(body)?, ReadConsistency::LOG_READ, |_| {}))
                .await?;
            Ok(json!({
                "type": "read_via_log_ok",
                "value": s.value,
                "log_index_used": s.info.get_read_index(),
                "latency_ms": ms(s.latency),
                "linearizable": s.info.get_linearizable(),
            }))
        }
        "compare_read_methods" => {
            let n = num(body, "num_reads")?.clamp(1, MAX_BENCH_OPS);
            let key = opt_key(body, "key")?.unwrap_or_else(|| enc(&json!("__compare")));
            let mut both = true;
            let mut avg = [0f64; 2];
            for (slot, c) in [ReadConsistency::LINEARIZABLE, ReadConsistency::LOG_READ]
                .into_iter()
                .enumerate()
            {
                warm_up(node, get(key.clone(), c, |_| {})).await;
                let started = Instant::now();
                for _ in 0..n {
                    let s = node.read(get(key.clone(), c, |_| {})).await?;
                    both &= s.info.get_linearizable();
                }
                avg[slot] = ms(started.elapsed()) / n as f64;
            }
            Ok(json!({
                "type": "compare_read_methods_ok",
                "num_reads": n,
                "read_index_avg_ms": avg[0],
                "read_via_log_avg_ms": avg[1],
                "both_linearizable": both,
            }))
        }
        "lease_read" => {
            let s = node
                .read(get(key_of(body)?, ReadConsistency::LEASE, |_| {}))
                .await?;
            let mut out = json!({
                "type": "lease_read_ok",
                "value": s.value,
                "lease_valid": s.info.get_lease_used(),
                "network_round_trips": s.info.get_network_round_trips(),
                "served_by": s.served_by,
                "linearizable": s.info.get_linearizable(),
            });
            if !s.info.get_lease_used() {
                out["fallback"] = json!("read_index");
            }
            Ok(out)
        }
        "lease_read_config" => lease_config(node, body),
        "follower_read" => {
            let bound = num(body, "max_staleness_ms")?;
            let key = key_of(body)?;
            let kv = get(key.clone(), ReadConsistency::FOLLOWER, |c| {
                c.set_max_staleness_ms(bound)
            });
            // No staleness allowed: only the leader can serve it.
            let s = if bound == 0 {
                node.read(kv).await?
            } else {
                node.read_preferring_follower(&key, kv).await?
            };
            let mut out = json!({
                "type": "follower_read_ok",
                "value": s.value,
                "actual_staleness_ms": ms(Duration::from_micros(s.info.get_staleness_us())),
                "served_by": s.served_by,
                "linearizable": s.info.get_linearizable(),
            });
            // Linearizable: the leader served it (none of its followers was fresh enough).
            if s.info.get_linearizable() {
                out["reason"] = json!("redirected_to_leader");
            }
            Ok(out)
        }
        "ryw_read" => {
            let index = num(body, "last_write_index")?;
            let prefer_follower = opt_bool(body, "prefer_follower")?.unwrap_or(true);
            let consistency = if prefer_follower {
                ReadConsistency::READ_YOUR_WRITES
            } else {
                ReadConsistency::LINEARIZABLE
            };
            let key = key_of(body)?;
            let kv = get(key.clone(), consistency, |c| c.set_min_applied_index(index));
            let s = if prefer_follower {
                node.read_preferring_follower(&key, kv).await?
            } else {
                node.read(kv).await?
            };
            let mut out = json!({
                "type": "ryw_read_ok",
                "value": s.value,
                "served_by": s.served_by,
                "follower_applied_index": s.info.get_applied_index(),
                "waited_ms": ms(Duration::from_micros(s.info.get_waited_us())),
                "linearizable": s.info.get_linearizable(),
            });
            // Linearizable: the leader served it (the follower had not applied the index).
            if prefer_follower && s.info.get_linearizable() {
                out["reason"] = json!("follower_behind_redirected_to_leader");
            }
            Ok(out)
        }
        "read_benchmark" => super::read_bench::read_benchmark(node, body).await,
        other => Err(Fail(10, format!("message type {other:?} is not supported"))),
    }
}

/// `lease_read_config`: the protocol's rule (effective = lease - skew; safe iff effective <
/// election timeout), and this node's own (docs/CLOCKS.md): the lease it applies is capped
/// so that `lease + skew` fits in its real minimum election timeout.
fn lease_config(node: &Node, body: &Value) -> Result<Value, Fail> {
    let lease = num(body, "lease_duration_ms")?;
    let election = num(body, "election_timeout_ms")?;
    let skew = num(body, "max_clock_skew_ms")?;
    let effective = lease.saturating_sub(skew);
    if effective >= election || effective == 0 {
        let reason = if effective == 0 {
            format!("clock skew {skew} ms leaves no lease out of {lease} ms")
        } else {
            format!(
                "effective lease {effective} ms (lease {lease} - skew {skew}) is not below the \
                 election timeout {election} ms: a new leader could be elected while the old \
                 one still serves reads from its lease"
            )
        };
        return Ok(json!({
            "type": "lease_read_config_ok",
            "safe": false,
            "effective_lease_ms": effective,
            "reason": reason,
        }));
    }
    let node_max = node
        .store
        .config()
        .min_election_timeout_ms()
        .saturating_sub(skew);
    let applied = effective.min(node_max);
    if let Err(reason) = node.store.set_lease(applied, skew) {
        return Ok(json!({
            "type": "lease_read_config_ok",
            "safe": false,
            "effective_lease_ms": effective,
            "reason": reason,
        }));
    }
    Ok(json!({
        "type": "lease_read_config_ok",
        "safe": true,
        "effective_lease_ms": effective,
        "applied_lease_ms": applied,
        "node_election_timeout_ms": node.store.config().min_election_timeout_ms(),
    }))
}

/// Percentile of sorted latencies.
pub(super) fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    ms(sorted[i.min(sorted.len() - 1)])
}

/// One untimed read before a measurement: it waits out an election a fresh group may still
/// be holding (and a new leader's first commit), so the figures measure the read path, not
/// the start-up. Its error, if any, shows again in the measured reads.
pub(super) async fn warm_up(node: &Node, kv: regatta_proto::kvrpcpb::KvRequest) {
    let _ = node.read(kv).await;
}

/// [`warm_up`] through every node of the group, as the benchmark's clients read: each
/// node's replica has then heard from the leader (a follower knows its freshness).
pub(super) async fn warm_up_everywhere(node: &Node, kv: regatta_proto::kvrpcpb::KvRequest) {
    warm_up(node, kv.clone()).await;
    for at in &node.names {
        let _ = node.execute_at(at, kv.clone()).await;
    }
}
