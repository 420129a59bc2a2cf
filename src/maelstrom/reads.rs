//! The read-strategy messages of the JSON-lines node (`shared/PROTOCOL-JSON.md`, "Reads"):
//! each runs a real read through the store with one `ReadConsistency` and reports what the
//! serving replica measured (`ReadInfo`): nothing here is assumed or constant.

use super::fields::{key, num, opt_bool, opt_key, opt_num, opt_strings};
use super::{dec, enc, error_code, request, Fail, Node};
use regatta_proto::kvrpcpb::{GetRequest, KvResponse, PutRequest, ReadConsistency, ReadInfo};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest `num_reads` / `total_ops` a benchmark message may ask for.
const MAX_BENCH_OPS: u64 = 200_000;

/// A read's answer: value, how it was served, and by which node.
struct Served {
    value: Value,
    info: ReadInfo,
    served_by: String,
    latency: Duration,
}

fn get(
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
}

fn key_of(body: &Value) -> Result<Vec<u8>, Fail> {
    key(body, "key")
}

fn ms(d: Duration) -> f64 {
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
            let s = node
                .read(get(key_of(body)?, ReadConsistency::FOLLOWER, |c| {
                    c.set_max_staleness_ms(bound)
                }))
                .await?;
            let mut out = json!({
                "type": "follower_read_ok",
                "value": s.value,
                "actual_staleness_ms": ms(Duration::from_micros(s.info.get_staleness_us())),
                "served_by": s.served_by,
                "linearizable": s.info.get_linearizable(),
            });
            if s.served_by != node.me && s.info.get_linearizable() {
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
            let s = node
                .read(get(key_of(body)?, consistency, |c| {
                    c.set_min_applied_index(index)
                }))
                .await?;
            let mut out = json!({
                "type": "ryw_read_ok",
                "value": s.value,
                "served_by": s.served_by,
                "follower_applied_index": s.info.get_applied_index(),
                "waited_ms": ms(Duration::from_micros(s.info.get_waited_us())),
                "linearizable": s.info.get_linearizable(),
            });
            if prefer_follower && s.served_by != node.me {
                out["reason"] = json!("follower_behind_redirected_to_leader");
            }
            Ok(out)
        }
        "read_benchmark" => read_benchmark(node, body).await,
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
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    ms(sorted[i.min(sorted.len() - 1)])
}

/// `read_benchmark`: for each strategy, `total_ops` operations (read_pct% reads) from 16
/// concurrent workers through this node, over 1,000 keys, measured end to end.
async fn read_benchmark(node: &Arc<Node>, body: &Value) -> Result<Value, Fail> {
    let total = num(body, "total_ops")?.clamp(1, MAX_BENCH_OPS);
    let read_pct = opt_num(body, "read_pct")?.unwrap_or(80).min(100);
    let strategies: Vec<String> = opt_strings(body, "strategies")?
        .unwrap_or_else(|| vec!["linearizable".into(), "lease".into(), "follower".into()]);
    let mut results = Vec::new();
    for strategy in strategies {
        let (consistency, label) = match strategy.as_str() {
            "linearizable" | "read_index" | "read-index" => {
                (ReadConsistency::LINEARIZABLE, "linearizable")
            }
            "log" | "read_via_log" => (ReadConsistency::LOG_READ, "linearizable"),
            "lease" => (
                ReadConsistency::LEASE,
                "linearizable (lease, docs/CLOCKS.md)",
            ),
            "follower" => (ReadConsistency::FOLLOWER, "bounded_staleness (1000 ms)"),
            "ryw" | "read_your_writes" => (ReadConsistency::READ_YOUR_WRITES, "read_your_writes"),
            other => return Err(Fail(12, format!("unknown strategy {other:?}"))),
        };
        let workers = 16u64;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..workers {
            let node = Arc::clone(node);
            let ops = total / workers + u64::from(w < total % workers);
            tasks.push(tokio::spawn(async move {
                let mut lat = (Vec::new(), Vec::new());
                let mut last_write = 0u64;
                for i in 0..ops {
                    let key = enc(&json!(format!("bench-{}", (w * 7919 + i * 104_729) % 1000)));
                    let t = Instant::now();
                    if (i * 37 + w * 11) % 100 < read_pct {
                        let kv = get(key, consistency, |c| {
                            c.set_max_staleness_ms(1000);
                            c.set_min_applied_index(last_write);
                        });
                        if node.read(kv).await.is_ok() {
                            lat.0.push(t.elapsed());
                        }
                    } else {
                        let kv = request(|r| {
                            let mut p = PutRequest::new();
                            p.set_key(key);
                            p.set_value(vec![b'v'; 128]);
                            r.set_put(p);
                        });
                        if let Ok(resp) = node.execute(kv).await {
                            if !resp.has_error() {
                                last_write =
                                    last_write.max(resp.get_response().get_put().get_index());
                                lat.1.push(t.elapsed());
                            }
                        }
                    }
                }
                lat
            }));
        }
        let (mut reads, mut writes) = (Vec::new(), Vec::new());
        for t in tasks {
            if let Ok((r, w)) = t.await {
                reads.extend(r);
                writes.extend(w);
            }
        }
        let elapsed = started.elapsed().as_secs_f64().max(1e-9);
        reads.sort();
        writes.sort();
        let mut all: Vec<Duration> = reads.iter().chain(writes.iter()).copied().collect();
        all.sort();
        results.push(json!({
            "strategy": strategy,
            "throughput_ops": ((reads.len() + writes.len()) as f64 / elapsed).round(),
            "p50_ms": pct(&all, 0.5),
            "p99_ms": pct(&all, 0.99),
            "read_p50_ms": pct(&reads, 0.5),
            "read_p99_ms": pct(&reads, 0.99),
            "write_p50_ms": pct(&writes, 0.5),
            "write_p99_ms": pct(&writes, 0.99),
            "ops_ok": reads.len() + writes.len(),
            "consistency": label,
        }));
    }
    Ok(json!({"type": "read_benchmark_ok", "results": results}))
}
