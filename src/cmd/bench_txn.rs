//! `regatta bench txn`: uncontended transfers (read 2 accounts, write 2) over many
//! accounts, optimistic and pessimistic, with both accounts in one region (1PC) or in two
//! (2PC): commits/s, latency p50/p99 of the whole transfer and of the commit call alone,
//! abort rate and, on the embedded playground, raft entries proposed per commit.

use anyhow::{bail, Context, Result};
use clap::Args;
use regatta::playground::{Playground, PlaygroundConfig};
use regatta::{bench, logging};
use regatta_client::{TxnClient, TxnOptions};
use regatta_server::MetricsSnapshot;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Regions of the embedded playground: accounts spread over all of them.
const REGIONS: usize = 4;

/// `regatta bench txn`.
#[derive(Args)]
pub struct TxnBenchArgs {
    /// Client counts to run, comma-separated.
    #[arg(long, default_value = "1,64", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Accounts (16-byte keys).
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// The embedded playground's leaders replicate every pessimistic lock before
    /// answering it (as `regatta store --no-in-memory-locks`); ignored with `--pd`.
    #[arg(long)]
    no_in_memory_locks: bool,
    /// Value size in bytes.
    #[arg(long, default_value_t = 128)]
    value_size: usize,
    /// Modes, comma-separated: optimistic, pessimistic.
    #[arg(long, default_value = "optimistic,pessimistic", value_delimiter = ',')]
    modes: Vec<String>,
    /// Where a transfer's two accounts live, comma-separated: same (one region: 1PC),
    /// cross (two regions: async commit or 2PC, see --commit).
    #[arg(long, default_value = "same,cross", value_delimiter = ',')]
    placement: Vec<String>,
    /// How cross-region transfers commit, comma-separated: async (async commit, the
    /// client's default: answered after the prewrites), 2pc (a TSO commit ts and the
    /// primary's commit before the answer). Shown as placement `cross` / `cross-2pc`.
    #[arg(long, default_value = "async", value_delimiter = ',')]
    commit: Vec<String>,
    /// Benchmark an existing cluster (PD address) instead of an embedded playground.
    #[arg(long)]
    pd: Option<String>,
    /// One JSON object per result line instead of a table.
    #[arg(long)]
    json: bool,
}

/// One configuration to run.
#[derive(Clone, Copy, Debug)]
struct Run {
    pessimistic: bool,
    cross: bool,
    /// Cross-region transfers commit by 2PC (async commit off).
    two_pc: bool,
    clients: usize,
}

/// What one run measured.
#[derive(Debug, serde::Serialize)]
struct TxnResult {
    mode: &'static str,
    placement: &'static str,
    clients: usize,
    commits: u64,
    aborts: u64,
    errors: u64,
    commits_per_sec: f64,
    abort_rate_pct: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The commit call alone (prewrite + commit, or the 1PC prewrite), median.
    commit_p50_ms: f64,
    /// The commit call alone, 99th percentile.
    commit_p99_ms: f64,
    /// Raft entries proposed per commit (embedded playground only).
    entries_per_commit: Option<f64>,
    /// Where the leaders' writes spent their time (embedded playground only; means over
    /// every entry the leaders proposed, prewrites and commits alike, in µs): proposed →
    /// the leader's own write durable, proposed → committed (a quorum durable), committed
    /// → applied and answered (`WriteStages`, as in `bench kv`).
    stage_persist_us: Option<f64>,
    /// See `stage_persist_us`.
    stage_commit_us: Option<f64>,
    /// See `stage_persist_us`.
    stage_apply_us: Option<f64>,
    /// Mean time of one synced LogWriter group write (WAL write + fdatasync) over the
    /// three stores, in µs (embedded playground only; as `sync us` in `bench kv`).
    sync_us: Option<f64>,
    /// Share of commits done by 1PC.
    one_pc_pct: f64,
    /// CPU time of this process per commit, in µs: clients, stores and PD together on
    /// the embedded playground (the client alone with `--pd`). `cores * 1e6 / this` is
    /// the most commits per second this machine can do, whatever the concurrency.
    cpu_us_per_commit: f64,
}

/// Account `i` of `n`, 16 bytes: a two-byte prefix spreads them over the key space.
fn account(i: usize, n: usize) -> Vec<u8> {
    regatta::bench::bench_key(i, n)
}

fn parse_runs(a: &TxnBenchArgs) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut commits = Vec::new();
    for c in &a.commit {
        commits.push(match c.as_str() {
            "async" => false,
            "2pc" => true,
            other => bail!("unknown commit {other:?} (async, 2pc)"),
        });
    }
    if commits.is_empty() {
        bail!("--commit needs at least one of async, 2pc");
    }
    for m in &a.modes {
        let pessimistic = match m.as_str() {
            "optimistic" => false,
            "pessimistic" => true,
            other => bail!("unknown mode {other:?} (optimistic, pessimistic)"),
        };
        for p in &a.placement {
            let cross = match p.as_str() {
                "same" => false,
                "cross" => true,
                other => bail!("unknown placement {other:?} (same, cross)"),
            };
            // One region commits by 1PC whatever --commit says.
            let ways = if cross { commits.clone() } else { vec![false] };
            for two_pc in ways {
                for &clients in &a.clients {
                    if clients == 0 {
                        bail!("--clients must be at least 1");
                    }
                    runs.push(Run {
                        pessimistic,
                        cross,
                        two_pc,
                        clients,
                    });
                }
            }
        }
    }
    if a.accounts < 2 * REGIONS {
        bail!("--accounts must be at least {}", 2 * REGIONS);
    }
    Ok(runs)
}

/// Runs `regatta bench txn`.
pub fn bench_txn(a: TxnBenchArgs) -> Result<ExitCode> {
    let runs = parse_runs(&a)?;
    let a = Arc::new(a);
    if let Some(pd) = a.pd.clone() {
        let rt = regatta::bench::clients_runtime()?;
        return rt.block_on(async move {
            let txns = TxnClient::connect(&[pd.as_str()]).await?;
            open_accounts(&txns, &a).await?;
            header(a.json);
            for r in runs {
                let res = run_one(&txns, &a, r).await?;
                report(&res, a.json);
            }
            Ok(ExitCode::SUCCESS)
        });
    }
    let dir = tempfile::Builder::new()
        .prefix("regatta-bench-txn-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let mut cfg = PlaygroundConfig::local(3, REGIONS, dir.path().to_path_buf());
    cfg.txn_config.in_memory_pessimistic_locks = !a.no_in_memory_locks;
    let logger = logging::logger();
    actix::System::new().block_on(async move {
        eprintln!("starting a 3-store playground with {REGIONS} regions");
        let pg = Playground::start(cfg, logger).await?;
        let pd = pg.pd_addr();
        let rt = regatta::bench::clients_runtime()?;
        let txns = {
            let a = a.clone();
            rt.spawn(async move {
                let txns = TxnClient::connect(&[pd.as_str()]).await?;
                open_accounts(&txns, &a).await?;
                anyhow::Ok(txns)
            })
            .await??
        };
        header(a.json);
        for r in runs {
            let metrics = |pg: &Playground| {
                pg.stores()
                    .map(|s| s.metrics())
                    .fold(MetricsSnapshot::default(), MetricsSnapshot::plus)
            };
            let before = metrics(&pg);
            let (t, a2) = (txns.clone(), a.clone());
            let mut res = rt.spawn(async move { run_one(&t, &a2, r).await }).await??;
            let after = metrics(&pg);
            let proposed = after.proposed_entries - before.proposed_entries;
            res.entries_per_commit =
                (res.commits > 0).then(|| proposed as f64 / res.commits as f64);
            let (_, persist, commit, apply) = after.stages.since(before.stages).means();
            res.stage_persist_us = Some(persist);
            res.stage_commit_us = Some(commit);
            res.stage_apply_us = Some(apply);
            let syncs = (after.syncs - before.syncs).max(1) as f64;
            res.sync_us = Some((after.sync_micros - before.sync_micros) as f64 / syncs);
            report(&res, a.json);
        }
        rt.shutdown_background();
        pg.stop().await;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// Opens every account (in transactions of 500 keys), with a progress line on stderr.
async fn open_accounts(txns: &TxnClient, a: &TxnBenchArgs) -> Result<()> {
    eprintln!("opening {} accounts", a.accounts);
    let value = vec![b'0'; a.value_size.max(1)];
    for (n, chunk) in (0..a.accounts).collect::<Vec<_>>().chunks(500).enumerate() {
        let mut t = txns.begin_optimistic().await?;
        for &i in chunk {
            t.put(&account(i, a.accounts), &value);
        }
        t.commit().await.context("opening accounts")?;
        if (n + 1) % 4 == 0 {
            eprint!(".");
        }
    }
    eprintln!();
    Ok(())
}

async fn run_one(txns: &TxnClient, a: &TxnBenchArgs, r: Run) -> Result<TxnResult> {
    eprintln!(
        "{} transfers, {} region(s) each, {} client(s), {} s",
        if r.pessimistic {
            "pessimistic"
        } else {
            "optimistic"
        },
        if r.cross { "two" } else { "one" },
        r.clients,
        a.seconds
    );
    let deadline = Instant::now() + Duration::from_secs(a.seconds.max(1));
    let started = Instant::now();
    let cpu_before = bench::process_cpu_time();
    let mut tasks = Vec::new();
    for _ in 0..r.clients {
        let (txns, n, vs) = (txns.clone(), a.accounts, a.value_size.max(1));
        tasks.push(tokio::spawn(async move {
            let opts = TxnOptions {
                async_commit: !r.two_pc,
                ..if r.pessimistic {
                    TxnOptions::pessimistic()
                } else {
                    TxnOptions::optimistic()
                }
            };
            let (mut lat, mut aborts, mut errors, mut one_pc) = (Vec::new(), 0u64, 0u64, 0u64);
            let mut commit_lat = Vec::new();
            let value = vec![b'1'; vs];
            while Instant::now() < deadline {
                let (x, y) = bench::transfer_pair(n, REGIONS, r.cross, &mut rand::thread_rng());
                let t0 = Instant::now();
                match bench::transfer(&txns, &opts, &account(x, n), &account(y, n), &value).await {
                    Ok((by_1pc, commit)) => {
                        lat.push(t0.elapsed());
                        commit_lat.push(commit);
                        one_pc += u64::from(by_1pc);
                    }
                    Err(e) if e.is_retryable() => aborts += 1,
                    Err(_) => errors += 1,
                }
            }
            (lat, commit_lat, aborts, errors, one_pc)
        }));
    }
    let (mut lat, mut commit_lat, mut aborts, mut errors, mut one_pc) =
        (Vec::new(), Vec::new(), 0, 0, 0);
    for t in tasks {
        let (l, cl, ab, er, op) = t.await?;
        lat.extend(l);
        commit_lat.extend(cl);
        aborts += ab;
        errors += er;
        one_pc += op;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = bench::process_cpu_time().saturating_sub(cpu_before);
    lat.sort_unstable();
    commit_lat.sort_unstable();
    let pct = |v: &[Duration], p: f64| -> f64 {
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let commits = lat.len() as u64;
    Ok(TxnResult {
        mode: if r.pessimistic {
            "pessimistic"
        } else {
            "optimistic"
        },
        placement: match (r.cross, r.two_pc) {
            (false, _) => "same",
            (true, false) => "cross",
            (true, true) => "cross-2pc",
        },
        clients: r.clients,
        commits,
        aborts,
        errors,
        commits_per_sec: commits as f64 / secs,
        abort_rate_pct: if commits + aborts > 0 {
            aborts as f64 * 100.0 / (commits + aborts) as f64
        } else {
            0.0
        },
        p50_ms: pct(&lat, 0.50),
        p99_ms: pct(&lat, 0.99),
        commit_p50_ms: pct(&commit_lat, 0.50),
        commit_p99_ms: pct(&commit_lat, 0.99),
        entries_per_commit: None,
        stage_persist_us: None,
        stage_commit_us: None,
        stage_apply_us: None,
        sync_us: None,
        one_pc_pct: if commits > 0 {
            one_pc as f64 * 100.0 / commits as f64
        } else {
            0.0
        },
        cpu_us_per_commit: if commits > 0 {
            cpu.as_secs_f64() * 1e6 / commits as f64
        } else {
            0.0
        },
    })
}

/// A figure the embedded playground has, "-" on a process cluster.
fn dash(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"))
}

fn header(json: bool) {
    if !json {
        println!(
            "{:<12} {:<9} {:>7} {:>10} {:>8} {:>8} {:>10} {:>10} {:>8} {:>9} {:>6} {:>10} {:>10} {:>9} {:>8} {:>8}",
            "mode",
            "place",
            "clients",
            "commits/s",
            "p50 ms",
            "p99 ms",
            "commit p50",
            "commit p99",
            "abort %",
            "entries/c",
            "1PC %",
            "cpu us/c",
            "persist us",
            "commit us",
            "apply us",
            "sync us"
        );
    }
}

fn report(r: &TxnResult, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(r) {
            println!("{line}");
        }
        return;
    }
    println!(
        "{:<12} {:<9} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>10.2} {:>10.2} {:>8.2} {:>9} {:>6.0} {:>10.0} {:>10} {:>9} {:>8} {:>8}",
        r.mode,
        r.placement,
        r.clients,
        r.commits_per_sec,
        r.p50_ms,
        r.p99_ms,
        r.commit_p50_ms,
        r.commit_p99_ms,
        r.abort_rate_pct,
        r.entries_per_commit
            .map_or_else(|| "-".to_string(), |e| format!("{e:.2}")),
        r.one_pc_pct,
        r.cpu_us_per_commit,
        dash(r.stage_persist_us),
        dash(r.stage_commit_us),
        dash(r.stage_apply_us),
        dash(r.sync_us)
    );
    if r.errors > 0 {
        eprintln!(
            "  {} transfer(s) failed with errors that are not retryable",
            r.errors
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TxnBenchArgs,
    }

    fn runs(argv: &[&str]) -> Result<Vec<Run>> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .expect("arguments parse");
        parse_runs(&cli.args)
    }

    #[test]
    fn commit_ways_apply_to_cross_region_transfers_only() {
        let r = runs(&[
            "--modes",
            "optimistic",
            "--clients",
            "1",
            "--commit",
            "async,2pc",
        ])
        .unwrap();
        let shown: Vec<(bool, bool)> = r.iter().map(|r| (r.cross, r.two_pc)).collect();
        assert_eq!(
            shown,
            [(false, false), (true, false), (true, true)],
            "one region is 1PC whatever --commit says"
        );
        assert!(
            runs(&["--commit", "3pc"]).is_err(),
            "an unknown way is refused"
        );
        let default = runs(&["--modes", "optimistic", "--clients", "1"]).unwrap();
        assert!(default.iter().all(|r| !r.two_pc), "async commit by default");
    }
}
