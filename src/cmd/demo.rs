//! `regatta demo split`: an embedded 3-store playground that starts with one region and
//! small split thresholds; concurrent writers load keys while the region table grows as
//! regions split (shown every second), PD spreads the leaders, and at the end every key is
//! read back.

use crate::cmd::regions::print_table;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use regatta::bench::bench_key;
use regatta::logging;
use regatta::playground::{Playground, PlaygroundConfig};
use regatta_client::Client;
use regatta_server::StoreConfig;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `regatta demo`.
#[derive(Args)]
pub struct DemoArgs {
    #[command(subcommand)]
    demo: Demo,
}

#[derive(Subcommand)]
enum Demo {
    /// Load keys into one region and watch it split into many, led from every store.
    Split(SplitDemoArgs),
    /// The multi-region bank: concurrent transfers in transactions, the total checked in
    /// a snapshot every second (--chaos: a split and a store restart meanwhile).
    Txn(super::demo_txn::TxnDemoArgs),
}

/// `regatta demo split`.
#[derive(Args)]
struct SplitDemoArgs {
    /// Keys to load.
    #[arg(long, default_value_t = 20_000)]
    keys: usize,
    /// A region with more keys than this splits (the default store setting is 960,000).
    #[arg(long, default_value_t = 2_000)]
    split_keys: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 32)]
    writers: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 128)]
    value_size: usize,
}

/// Runs `regatta demo`.
pub fn demo(a: DemoArgs) -> Result<ExitCode> {
    match a.demo {
        Demo::Split(s) => split(s),
        Demo::Txn(t) => super::demo_txn::txn_demo(t),
    }
}

/// Leaders per store id, from PD's map.
fn leaders(regions: &[regatta_proto::pdpb::RegionWithLeader]) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for rl in regions {
        if rl.get_leader().get_store_id() != 0 {
            *out.entry(rl.get_leader().get_store_id()).or_default() += 1;
        }
    }
    out
}

fn split(a: SplitDemoArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        a.keys > 0 && a.writers > 0,
        "--keys and --writers must be positive"
    );
    let dir = tempfile::Builder::new()
        .prefix("regatta-demo-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let mut cfg = PlaygroundConfig::local(3, 1, dir.path().to_path_buf());
    cfg.store_config = StoreConfig {
        region_split_keys: a.split_keys.max(2),
        split_check_interval_ms: 200,
        split_check_diff_bytes: 0,
        region_heartbeat_interval_ms: 500,
        ..StoreConfig::default()
    };
    let logger = logging::logger();
    actix::System::new().block_on(async move {
        eprintln!(
            "starting a 3-store playground with one region (splits past {} keys)",
            a.split_keys
        );
        let pg = Playground::start(cfg, logger).await?;
        let pd = pg.pd_addr();
        let rt = regatta::bench::clients_runtime()?;
        let code = rt.spawn(async move { run(a, pd).await }).await??;
        rt.shutdown_background();
        pg.stop().await;
        Ok(code)
    })
}

async fn run(a: SplitDemoArgs, pd: String) -> Result<ExitCode> {
    let client = Client::connect(&[pd.as_str()]).await?;
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..a.writers {
        let (client, next, errors, n, vs) = (
            client.clone(),
            next.clone(),
            errors.clone(),
            a.keys,
            a.value_size,
        );
        writers.push(tokio::spawn(async move {
            let value = vec![b'v'; vs];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return;
                }
                if client.put(&bench_key(i, n), &value).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    println!(
        "{:>6}  {:>8}  {:>8}  {:>7}  leaders per store",
        "time", "loaded", "ops/s", "regions"
    );
    let mut last = (Instant::now(), 0u64);
    while writers.iter().any(|w| !w.is_finished()) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let done = next.load(Ordering::Relaxed).min(a.keys as u64);
        let regions = client.pd().scan_region_infos(b"", b"", 0).await?;
        let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), done);
        println!(
            "{:>5.0}s  {:>8}  {:>8.0}  {:>7}  {:?}",
            started.elapsed().as_secs_f64(),
            done,
            rate,
            regions.len(),
            leaders(&regions)
        );
    }
    for w in writers {
        w.await?;
    }
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "loaded {} keys in {:.1} s; errors seen by clients: {errors}",
        a.keys,
        started.elapsed().as_secs_f64()
    );
    eprintln!("waiting for the last splits and for PD to spread the leaders");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut regions = client.pd().scan_region_infos(b"", b"", 0).await?;
    loop {
        let spread = leaders(&regions);
        if (spread.len() == 3 && regions.iter().all(|r| r.get_leader().get_id() != 0))
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        regions = client.pd().scan_region_infos(b"", b"", 0).await?;
    }
    println!();
    print_table(&regions);
    println!("leaders per store: {:?}", leaders(&regions));
    eprint!("verifying every key: ");
    let mut missing = 0usize;
    for i in 0..a.keys {
        if client.get(&bench_key(i, a.keys)).await?.is_none() {
            missing += 1;
        }
        if (i + 1) % (a.keys / 10).max(1) == 0 {
            eprint!("{}% ", (i + 1) * 100 / a.keys);
        }
    }
    eprintln!();
    if missing > 0 || errors > 0 {
        println!("FAILED: {missing} key(s) missing, {errors} client error(s)");
        return Ok(ExitCode::from(1));
    }
    println!(
        "verified {} keys across {} regions; no client saw an error",
        a.keys,
        regions.len()
    );
    Ok(ExitCode::SUCCESS)
}
