//! `read_benchmark`: the read strategies set against each other on one mixed workload, run
//! through the group.
//!
//! Design, so that the figures compare the strategies and not the moments they ran in:
//! - **Clients spread over the group.** 16 closed-loop workers; worker `w` acts as a
//!   client connected to node `w mod N` (through a routed `forward` from here): that node
//!   serves what its replica can and forwards the rest to the leader. So each strategy
//!   pays the hops it costs a real client: a follower read is served where the client
//!   is; a lease or ReadIndex read from a follower's client goes on to the leader.
//! - **Paired and interleaved.** The strategies differ only in how they read, so they are
//!   compared on the same operations at the same moments: each worker runs one workload
//!   of `total_ops` operations (the same keys, reads and writes for every strategy); a
//!   read is done once per strategy, in turn (the order rotating per op), and a write —
//!   which does not depend on the read strategy — is done once and counts in every
//!   strategy's figures. A slow stretch of fsyncs then weighs on all strategies alike
//!   instead of on whichever ran then.
//! - **Warmed up.** Untimed reads through every node first ([`warm_up_everywhere`]): a
//!   fresh group's first election and a follower's first freshness proof are start-up,
//!   not the read path.
//! - **Throughput by Little's law.** `throughput_ops` is the workers' rate: a strategy's
//!   operations per second of the workers' time spent on them, times the 16 workers
//!   (concurrency over mean latency). With a few operations per worker, ops / wall time
//!   would be set by the one slowest worker.

use super::fields::{num, opt_num, opt_strings};
use super::reads::{get, pct, warm_up_everywhere, MAX_BENCH_OPS};
use super::{enc, request, Fail, Node};
use regatta_proto::kvrpcpb::{PutRequest, ReadConsistency};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent workers.
const WORKERS: u64 = 16;

/// One strategy's measurements.
#[derive(Default)]
struct Tally {
    reads: Vec<Duration>,
    writes: Vec<Duration>,
    /// Workers' time spent on this strategy's operations.
    busy: Duration,
    /// The largest index this worker's writes of the strategy were answered at (for
    /// read-your-writes).
    last_write: u64,
}

/// The consistency of a strategy name, and how the result describes it.
fn strategy(name: &str) -> Result<(ReadConsistency, &'static str), Fail> {
    Ok(match name {
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
    })
}

/// `read_benchmark {total_ops, [read_pct], [strategies]}` (see the module doc).
pub(super) async fn read_benchmark(node: &Arc<Node>, body: &Value) -> Result<Value, Fail> {
    let total = num(body, "total_ops")?.clamp(1, MAX_BENCH_OPS);
    let read_pct = opt_num(body, "read_pct")?.unwrap_or(80).min(100);
    let names: Vec<String> = opt_strings(body, "strategies")?
        .unwrap_or_else(|| vec!["linearizable".into(), "lease".into(), "follower".into()]);
    let mut plans = Vec::with_capacity(names.len());
    for name in &names {
        plans.push(strategy(name)?);
    }
    if plans.is_empty() {
        return Err(Fail(12, "strategies must name at least one".into()));
    }
    for (consistency, _) in &plans {
        let kv = get(enc(&json!("bench-0")), *consistency, |c| {
            c.set_max_staleness_ms(1000)
        });
        warm_up_everywhere(node, kv).await;
    }
    let consistencies: Arc<Vec<ReadConsistency>> = Arc::new(plans.iter().map(|p| p.0).collect());
    let mut tasks = Vec::new();
    let owner = Arc::clone(node);
    for w in 0..WORKERS {
        let node = Arc::clone(node);
        let consistencies = consistencies.clone();
        let at = node.names[w as usize % node.names.len()].clone();
        let ops = total / WORKERS + u64::from(w < total % WORKERS);
        tasks.push(owner.spawn(async move {
            let n = consistencies.len();
            let mut tallies: Vec<Tally> = (0..n).map(|_| Tally::default()).collect();
            for i in 0..ops {
                let key = enc(&json!(format!("bench-{}", (w * 7919 + i * 104_729) % 1000)));
                if (i * 37 + w * 11) % 100 >= read_pct {
                    // A write does not depend on the read strategy: done once, it counts in
                    // every strategy's figures (a paired comparison: the strategies differ
                    // in their reads only, and a slow fsync weighs on all of them alike).
                    let kv = request(|r| {
                        let mut p = PutRequest::new();
                        p.set_key(key.clone());
                        p.set_value(vec![b'v'; 128]);
                        r.set_put(p);
                    });
                    let t = Instant::now();
                    let resp = node.execute_at(&at, kv).await;
                    let took = t.elapsed();
                    let index = match resp {
                        Ok(r) if !r.has_error() => Some(r.get_response().get_put().get_index()),
                        _ => None,
                    };
                    for tally in &mut tallies {
                        tally.busy += took;
                        if let Some(index) = index {
                            tally.last_write = tally.last_write.max(index);
                            tally.writes.push(took);
                        }
                    }
                    continue;
                }
                for k in 0..n {
                    let s = (i as usize + k) % n;
                    let tally = &mut tallies[s];
                    let last_write = tally.last_write;
                    let kv = get(key.clone(), consistencies[s], |c| {
                        c.set_max_staleness_ms(1000);
                        c.set_min_applied_index(last_write);
                    });
                    let t = Instant::now();
                    let served = node.execute_at(&at, kv).await;
                    if served.is_ok_and(|r| !r.has_error()) {
                        tally.reads.push(t.elapsed());
                    }
                    tally.busy += t.elapsed();
                }
            }
            tallies
        }));
    }
    let mut merged: Vec<Tally> = (0..plans.len()).map(|_| Tally::default()).collect();
    for t in tasks {
        if let Ok(tallies) = t.await {
            for (m, t) in merged.iter_mut().zip(tallies) {
                m.reads.extend(t.reads);
                m.writes.extend(t.writes);
                m.busy += t.busy;
            }
        }
    }
    let mut results = Vec::with_capacity(plans.len());
    for ((name, (_, label)), mut m) in names.iter().zip(&plans).zip(merged) {
        m.reads.sort();
        m.writes.sort();
        let mut all: Vec<Duration> = m.reads.iter().chain(m.writes.iter()).copied().collect();
        all.sort();
        let done = all.len() as f64;
        let rate = WORKERS as f64 * done / m.busy.as_secs_f64().max(1e-9);
        results.push(json!({
            "strategy": name,
            "throughput_ops": rate.round(),
            "p50_ms": pct(&all, 0.5),
            "p99_ms": pct(&all, 0.99),
            "read_p50_ms": pct(&m.reads, 0.5),
            "read_p99_ms": pct(&m.reads, 0.99),
            "write_p50_ms": pct(&m.writes, 0.5),
            "write_p99_ms": pct(&m.writes, 0.99),
            "ops_ok": all.len(),
            "consistency": label,
        }));
    }
    Ok(json!({"type": "read_benchmark_ok", "results": results}))
}
