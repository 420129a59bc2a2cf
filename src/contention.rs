//! The hot-key contention benchmark: many clients each doing read-modify-write increments
//! of the same key(s), once per concurrency-control strategy, on the real cluster. Shared
//! by `regatta bench contention`, the criterion bench `benches/contention.rs` and the JSON
//! node's `contention_benchmark`.
//!
//! Each strategy increments keys of its own, fresh for every run and starting from 0, so
//! the final values must sum to the commits counted: the benchmark checks it itself
//! (`final_value == total_commits`, no update lost).
//!
//! Strategies (see `docs/ARCHITECTURE.md`, "Transactions"):
//! - `occ`: read with version, commit with validation (`OccTxn`); an abort (a changed
//!   version) is an answer, and the increment retries from the read.
//! - `mvcc_snapshot`: a pessimistic transaction (`get_for_update`, the key's FIFO lock-wait
//!   queue on the leader, then 1PC): conflicts wait instead of aborting.
//! - `serializable`: an optimistic transaction that also locks what it read at commit, so a
//!   read-write conflict aborts (`WriteConflict`) and is retried from the read.
//! - `cas`: a raw compare-and-swap loop in the raw key space (what etcd users do); a failed
//!   swap retries with the value it returned.

use anyhow::{bail, Context, Result};
use regatta_client::{Client, Error, TxnClient, TxnMode, TxnOptions};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A concurrency-control strategy for read-modify-write increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// OCC with read versions: validate at commit, retry from the read on abort.
    Occ,
    /// Pessimistic MVCC: lock on read, wait in the key's queue.
    MvccSnapshot,
    /// Optimistic MVCC with the read keys locked at commit: conflicts abort.
    Serializable,
    /// A raw compare-and-swap loop.
    Cas,
}

impl Strategy {
    /// Every strategy, in the order the benchmark runs them by default.
    pub const ALL: [Strategy; 4] = [
        Strategy::Occ,
        Strategy::MvccSnapshot,
        Strategy::Serializable,
        Strategy::Cas,
    ];

    /// The name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Occ => "occ",
            Strategy::MvccSnapshot => "mvcc_snapshot",
            Strategy::Serializable => "serializable",
            Strategy::Cas => "cas",
        }
    }

    /// Parses a name of [`Strategy::name`].
    pub fn parse(s: &str) -> Result<Strategy> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .with_context(|| {
                let known: Vec<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
                format!("unknown strategy {s:?} (known: {})", known.join(", "))
            })
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct ContentionConfig {
    /// Concurrent clients (tasks sharing one connection pool).
    pub clients: usize,
    /// Increments each client commits.
    pub ops_per_client: usize,
    /// Prefix of the hot keys; each run adds the strategy and a run id.
    pub key: String,
    /// Hot keys (client `c` increments key `c % keys`).
    pub keys: usize,
    /// Give up an increment (an error, counted in `errors`) after this long.
    pub op_timeout: Duration,
}

impl ContentionConfig {
    /// Rejects settings that cannot run.
    pub fn validate(&self) -> Result<()> {
        if self.clients == 0 || self.ops_per_client == 0 || self.keys == 0 {
            bail!("clients, ops per client and keys must be at least 1");
        }
        if self.key.is_empty() {
            bail!("the key prefix must not be empty");
        }
        Ok(())
    }
}

/// What one strategy measured (the shape of the JSON node's `contention_benchmark_ok`
/// rows, plus latency, fairness and the final value).
#[derive(Debug, Clone, Serialize)]
pub struct ContentionResult {
    /// Strategy name.
    pub strategy: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Hot keys.
    pub keys: usize,
    /// Increments committed.
    pub total_commits: u64,
    /// Attempts that aborted (a conflict or a lost race) and were retried.
    pub total_aborts: u64,
    /// aborts / (commits + aborts) x 100.
    pub abort_rate_pct: f64,
    /// aborts / commits.
    pub avg_retries: f64,
    /// Commits per second of wall time.
    pub throughput_commits_sec: f64,
    /// Median time from an increment's first attempt to its commit (ms).
    pub commit_p50_ms: f64,
    /// 99th percentile of the same (ms).
    pub commit_p99_ms: f64,
    /// Slowest increment (ms).
    pub commit_max_ms: f64,
    /// Fairness: the slowest client's total time over the fastest's (1.0 = even).
    pub client_time_spread: f64,
    /// Increments that failed with an error that is not a conflict (or timed out).
    pub errors: u64,
    /// The hot keys' values summed after the run: equals `total_commits` when no update
    /// was lost (up to the errors whose outcome is unknown: a lost answer).
    pub final_value: u64,
}

/// What one client did.
struct ClientRun {
    commits: u64,
    aborts: u64,
    errors: u64,
    /// Errors after which the increment may or may not have been applied.
    undetermined: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// The value of a counter (absent: 0).
fn count(v: Option<&[u8]>) -> Result<u64, Error> {
    match v {
        None => Ok(0),
        Some(v) => String::from_utf8_lossy(v)
            .parse()
            .map_err(|_| Error::Server(format!("a counter holds {v:?}"))),
    }
}

/// One attempt at an increment: `Ok(true)` committed, `Ok(false)` aborted (retry).
async fn attempt(
    strategy: Strategy,
    client: &Client,
    txns: &TxnClient,
    key: &[u8],
    cas_seen: &mut Option<Option<Vec<u8>>>,
) -> Result<bool, Error> {
    match strategy {
        Strategy::Occ => {
            let mut t = txns.occ_begin();
            let (v, _version) = t.read(key).await?;
            t.write(key, (count(v.as_deref())? + 1).to_string().as_bytes());
            Ok(t.commit().await?.committed)
        }
        Strategy::Cas => {
            let current = match cas_seen.take() {
                Some(v) => v,
                None => client.get(key).await?.map(|v| v.value),
            };
            let next = (count(current.as_deref())? + 1).to_string();
            // A swap whose answer was lost may have been applied: not an abort to retry.
            let out = client
                .cas(key, current.as_deref(), next.as_bytes())
                .await
                .map_err(|e| match e {
                    Error::Timeout { last_error, .. } => Error::CommitUndetermined {
                        start_ts: 0,
                        reason: format!("the swap went unanswered: {last_error}"),
                    },
                    e => e,
                })?;
            if !out.succeeded {
                // Retry from the value the swap saw, as an etcd client's txn would.
                *cas_seen = Some(out.previous);
            }
            Ok(out.succeeded)
        }
        Strategy::MvccSnapshot | Strategy::Serializable => {
            let mode = if strategy == Strategy::MvccSnapshot {
                TxnMode::Pessimistic
            } else {
                TxnMode::Optimistic
            };
            let mut t = txns
                .begin_with(TxnOptions {
                    mode,
                    ..TxnOptions::default()
                })
                .await?;
            let body = async {
                let v = match mode {
                    TxnMode::Pessimistic => t.get_for_update(key).await?,
                    TxnMode::Optimistic => {
                        let v = t.get(key).await?;
                        t.lock_keys(&[key.to_vec()]).await?;
                        v
                    }
                };
                t.put(key, (count(v.as_deref())? + 1).to_string().as_bytes());
                t.commit().await
            };
            match body.await {
                Ok(_) => Ok(true),
                Err(e) => {
                    let _ = t.rollback().await;
                    match e {
                        // Did not commit, and another try may: an abort.
                        e if e.is_retryable() => Ok(false),
                        e => Err(e),
                    }
                }
            }
        }
    }
}

async fn run_client(
    strategy: Strategy,
    client: Client,
    txns: TxnClient,
    key: Vec<u8>,
    cfg: Arc<ContentionConfig>,
) -> ClientRun {
    let started = Instant::now();
    let mut run = ClientRun {
        commits: 0,
        aborts: 0,
        errors: 0,
        undetermined: 0,
        latencies: Vec::with_capacity(cfg.ops_per_client),
        elapsed: Duration::ZERO,
    };
    for _ in 0..cfg.ops_per_client {
        let op_started = Instant::now();
        let mut cas_seen = None;
        loop {
            match attempt(strategy, &client, &txns, &key, &mut cas_seen).await {
                Ok(true) => {
                    run.commits += 1;
                    run.latencies.push(op_started.elapsed());
                    break;
                }
                Ok(false) if op_started.elapsed() < cfg.op_timeout => run.aborts += 1,
                Err(Error::CommitUndetermined { .. }) => {
                    run.errors += 1;
                    run.undetermined += 1;
                    break;
                }
                Ok(false) | Err(_) => {
                    run.errors += 1;
                    break;
                }
            }
        }
    }
    run.elapsed = started.elapsed();
    run
}

/// Runs `strategy` once: `cfg.clients` clients, each committing `cfg.ops_per_client`
/// increments of its hot key (fresh keys named after `run_id`), then reads the keys back.
/// Fails if the final values do not add up to the commits (a lost update).
pub async fn run(
    client: &Client,
    txns: &TxnClient,
    strategy: Strategy,
    cfg: &ContentionConfig,
    run_id: u64,
) -> Result<ContentionResult> {
    cfg.validate()?;
    let keys: Vec<Vec<u8>> = (0..cfg.keys)
        .map(|k| format!("{}/{}/{run_id}/{k}", cfg.key, strategy.name()).into_bytes())
        .collect();
    let shared = Arc::new(cfg.clone());
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(cfg.clients);
    for c in 0..cfg.clients {
        tasks.push(tokio::spawn(run_client(
            strategy,
            client.clone(),
            txns.clone(),
            keys[c % keys.len()].clone(),
            shared.clone(),
        )));
    }
    let mut runs = Vec::with_capacity(cfg.clients);
    for t in tasks {
        runs.push(t.await.context("a benchmark client panicked")?);
    }
    let secs = started.elapsed().as_secs_f64();
    let final_value = read_back(client, txns, strategy, &keys).await?;
    let commits: u64 = runs.iter().map(|r| r.commits).sum();
    let aborts: u64 = runs.iter().map(|r| r.aborts).sum();
    let errors: u64 = runs.iter().map(|r| r.errors).sum();
    let undetermined: u64 = runs.iter().map(|r| r.undetermined).sum();
    if final_value < commits || final_value > commits + undetermined {
        bail!(
            "{}: the hot keys sum to {final_value} after {commits} committed increments \
             ({undetermined} undetermined): an update was lost or applied twice",
            strategy.name()
        );
    }
    let mut lat: Vec<Duration> = runs.iter().flat_map(|r| r.latencies.clone()).collect();
    lat.sort_unstable();
    let ms = |p: f64| -> f64 {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let (slowest, fastest) = runs
        .iter()
        .fold((Duration::ZERO, Duration::MAX), |(s, f), r| {
            (s.max(r.elapsed), f.min(r.elapsed))
        });
    Ok(ContentionResult {
        strategy: strategy.name(),
        clients: cfg.clients,
        keys: cfg.keys,
        total_commits: commits,
        total_aborts: aborts,
        abort_rate_pct: if commits + aborts > 0 {
            aborts as f64 * 100.0 / (commits + aborts) as f64
        } else {
            0.0
        },
        avg_retries: if commits > 0 {
            aborts as f64 / commits as f64
        } else {
            0.0
        },
        throughput_commits_sec: commits as f64 / secs,
        commit_p50_ms: ms(0.50),
        commit_p99_ms: ms(0.99),
        commit_max_ms: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        client_time_spread: if fastest > Duration::ZERO && fastest != Duration::MAX {
            slowest.as_secs_f64() / fastest.as_secs_f64()
        } else {
            1.0
        },
        errors,
        final_value,
    })
}

/// The hot keys' values summed, read after every client stopped.
async fn read_back(
    client: &Client,
    txns: &TxnClient,
    strategy: Strategy,
    keys: &[Vec<u8>],
) -> Result<u64> {
    let mut sum = 0;
    match strategy {
        Strategy::Cas => {
            for k in keys {
                sum += count(client.get(k).await?.map(|v| v.value).as_deref())?;
            }
        }
        _ => {
            let snap = txns.snapshot(txns.current_timestamp().await?).await?;
            for v in snap.batch_get(keys).await? {
                sum += count(v.as_deref())?;
            }
        }
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(s.name()).unwrap(), s);
        }
        let e = Strategy::parse("2pl").unwrap_err().to_string();
        assert!(e.contains("mvcc_snapshot"), "{e}");
    }

    #[test]
    fn counters_parse_and_garbage_is_an_error() {
        assert_eq!(count(None).unwrap(), 0);
        assert_eq!(count(Some(b"41")).unwrap(), 41);
        assert!(count(Some(b"x")).is_err());
    }

    #[test]
    fn configs_that_cannot_run_are_refused() {
        let ok = ContentionConfig {
            clients: 1,
            ops_per_client: 1,
            key: "hot".into(),
            keys: 1,
            op_timeout: Duration::from_secs(1),
        };
        assert!(ok.validate().is_ok());
        for bad in [
            ContentionConfig {
                clients: 0,
                ..ok.clone()
            },
            ContentionConfig {
                keys: 0,
                ..ok.clone()
            },
            ContentionConfig {
                key: String::new(),
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err());
        }
    }
}
