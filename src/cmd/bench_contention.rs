//! `regatta bench contention`: many clients incrementing one hot key (or a few), once per
//! concurrency-control strategy (see `regatta::contention`): commits/s, aborts, retries,
//! commit latency, fairness, and the final value checked against the commits.

use anyhow::Result;
use clap::Args;
use regatta::contention::{self, ContentionConfig, ContentionResult, Strategy};
use regatta_client::{Client, TxnClient};
use std::process::ExitCode;
use std::time::Duration;

/// `regatta bench contention`.
#[derive(Args)]
pub struct ContentionArgs {
    /// Client counts, comma-separated: more than one sweeps them (e.g. 1,10,100,1000).
    #[arg(long, default_value = "100", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Increments each client commits.
    #[arg(long, default_value_t = 10)]
    ops_per_client: usize,
    /// Prefix of the hot keys (each strategy and run gets fresh keys under it).
    #[arg(long, default_value = "hot")]
    key: String,
    /// Hot keys: client c increments key c % keys.
    #[arg(long, default_value_t = 1)]
    keys: usize,
    /// Strategies, comma-separated: occ, mvcc_snapshot, serializable, cas.
    #[arg(
        long,
        default_value = "occ,mvcc_snapshot,serializable,cas",
        value_delimiter = ','
    )]
    strategies: Vec<String>,
    /// Give up one increment after this many seconds of retries (counted as an error).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    op_timeout_secs: u64,
    /// Benchmark an existing cluster (PD address) instead of an embedded playground.
    #[arg(long)]
    pd: Option<String>,
    /// Print one JSON object `{"results": [...]}` instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `regatta bench contention`.
pub fn bench_contention(a: ContentionArgs) -> Result<ExitCode> {
    let strategies = a
        .strategies
        .iter()
        .map(|s| Strategy::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let configs = a
        .clients
        .iter()
        .map(|&clients| ContentionConfig {
            clients,
            ops_per_client: a.ops_per_client,
            key: a.key.clone(),
            keys: a.keys,
            op_timeout: Duration::from_secs(a.op_timeout_secs),
        })
        .collect::<Vec<_>>();
    for c in &configs {
        c.validate()?;
    }
    let json = a.json;
    let results = regatta::bench::with_cluster(a.pd.clone(), 1, move |pd| async move {
        let client = Client::connect(&[pd.as_str()]).await?;
        let txns = TxnClient::connect(&[pd.as_str()]).await?;
        // Distinct keys per invocation, so runs against one cluster never share a counter.
        let base = txns.current_timestamp().await?;
        let mut results = Vec::new();
        if !json {
            header();
        }
        for (i, cfg) in configs.iter().enumerate() {
            for (j, &s) in strategies.iter().enumerate() {
                eprintln!(
                    "{}: {} clients x {} increments of {} key(s)",
                    s.name(),
                    cfg.clients,
                    cfg.ops_per_client,
                    cfg.keys
                );
                let run_id = base + (i * strategies.len() + j) as u64;
                let r = contention::run(&client, &txns, s, cfg, run_id).await?;
                if !json {
                    row(&r);
                }
                results.push(r);
            }
        }
        anyhow::Ok(results)
    })?;
    if json {
        println!("{}", serde_json::json!({ "results": results }));
    }
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    if errors > 0 {
        eprintln!("{errors} increment(s) failed with errors that are not conflicts");
    }
    Ok(ExitCode::SUCCESS)
}

fn header() {
    println!(
        "{:<14} {:>7} {:>8} {:>8} {:>8} {:>8} {:>10} {:>9} {:>9} {:>9} {:>7} {:>8}",
        "strategy",
        "clients",
        "commits",
        "aborts",
        "abort %",
        "retries",
        "commits/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "spread",
        "final"
    );
}

fn row(r: &ContentionResult) {
    println!(
        "{:<14} {:>7} {:>8} {:>8} {:>8.1} {:>8.2} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>7.2} {:>8}",
        r.strategy,
        r.clients,
        r.total_commits,
        r.total_aborts,
        r.abort_rate_pct,
        r.avg_retries,
        r.throughput_commits_sec,
        r.commit_p50_ms,
        r.commit_p99_ms,
        r.commit_max_ms,
        r.client_time_spread,
        r.final_value
    );
}
