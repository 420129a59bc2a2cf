//! `regatta demo txn`: the multi-region bank. N accounts spread over several regions, C
//! clients moving money between random pairs in transactions (half optimistic, half
//! pessimistic), a live line every second with the sum of all balances read in one
//! snapshot (it never changes), and with `--chaos` a region split and a store restart in
//! the middle. Ends by checking the invariant; exit 1 if the total ever changed.

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::Rng;
use regatta::logging;
use regatta::playground::{Playground, PlaygroundConfig};
use regatta_client::{Client, Error, Transaction, TxnClient, TxnOptions};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `regatta demo txn`.
#[derive(Args)]
pub struct TxnDemoArgs {
    /// Accounts (each opened with 1,000).
    #[arg(long, default_value_t = 1_000)]
    accounts: usize,
    /// Concurrent transfer clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// How long the transfers run.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Split a region a third of the way in and restart a store at two thirds (the
    /// restart only on the embedded playground).
    #[arg(long)]
    chaos: bool,
    /// Use a running cluster (PD address) instead of an embedded playground.
    #[arg(long)]
    pd: Option<String>,
}

const INITIAL: i64 = 1_000;
/// Regions of the embedded playground (the accounts spread over all of them).
const REGIONS: usize = 4;

/// Account `i` of `n`: a two-byte prefix spreads the accounts over the key space, so
/// over the pre-split regions.
fn account(i: usize, n: usize) -> Vec<u8> {
    let prefix = ((i * 65_536 / n.max(1)) as u16).to_be_bytes();
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("acct/{i:07}").as_bytes());
    k
}

fn balance(v: Option<Vec<u8>>) -> Result<i64, Error> {
    let Some(v) = v else { return Ok(0) };
    String::from_utf8_lossy(&v)
        .parse()
        .map_err(|e| Error::InvalidArgument(format!("a balance that is not a number: {e}")))
}

/// Counters shared by the clients and the reporter.
#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    aborts: AtomicU64,
    errors: AtomicU64,
}

/// Runs `regatta demo txn`.
pub fn txn_demo(a: TxnDemoArgs) -> Result<ExitCode> {
    if a.accounts < 2 || a.clients == 0 || a.seconds == 0 {
        bail!("need --accounts >= 2, --clients >= 1 and --seconds >= 1");
    }
    if let Some(pd) = a.pd.clone() {
        let rt = regatta::bench::clients_runtime()?;
        return rt.block_on(run(a, pd, None));
    }
    let dir = tempfile::Builder::new()
        .prefix("regatta-demo-txn-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let cfg = PlaygroundConfig::local(3, REGIONS, dir.path().to_path_buf());
    let logger = logging::logger();
    actix::System::new().block_on(async move {
        eprintln!("starting a 3-store playground with {REGIONS} regions");
        let mut pg = Playground::start(cfg, logger).await?;
        let pd = pg.pd_addr();
        let rt = regatta::bench::clients_runtime()?;
        let restart_at = Arc::new(AtomicBool::new(false));
        let work = rt.spawn(run(a, pd, Some(restart_at.clone())));
        // The store restart happens here, where the stores run.
        while !work.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if restart_at.swap(false, Ordering::AcqRel) {
                let victim = 2;
                eprintln!("chaos: restarting store {victim}");
                pg.stop_store(victim).await;
                pg.start_store(victim).await?;
                eprintln!("chaos: store {victim} is back");
            }
        }
        let code = work.await??;
        rt.shutdown_background();
        pg.stop().await;
        Ok(code)
    })
}

/// The bank: open the accounts, run the transfers with a live line, check the total.
async fn run(a: TxnDemoArgs, pd: String, restart: Option<Arc<AtomicBool>>) -> Result<ExitCode> {
    let raw = Client::connect(&[pd.as_str()]).await?;
    let txns = TxnClient::connect(&[pd.as_str()]).await?;
    let n = a.accounts;
    eprintln!("opening {n} accounts with {INITIAL} each");
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let mut t = txns.begin_optimistic().await?;
        for &i in chunk {
            t.put(&account(i, n), INITIAL.to_string().as_bytes());
        }
        t.commit().await.context("opening accounts")?;
    }
    let expected = INITIAL * n as i64;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..a.clients {
        let (txns, counters, stop) = (txns.clone(), counters.clone(), stop.clone());
        let opts = if c % 2 == 0 {
            TxnOptions::optimistic()
        } else {
            TxnOptions::pessimistic()
        };
        clients.push(tokio::spawn(async move {
            transfers(&txns, opts, n, &counters, &stop).await;
        }));
    }
    println!(
        "{:>5}  {:>9}  {:>7}  {:>7}  {:>7}  {:>12}",
        "time", "commits/s", "aborts", "errors", "regions", "total"
    );
    let started = Instant::now();
    let run_for = Duration::from_secs(a.seconds);
    let (mut split_done, mut restart_done) = (false, false);
    let mut last = (Instant::now(), 0u64);
    let mut changed = false;
    while started.elapsed() < run_for {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if a.chaos && !split_done && started.elapsed() >= run_for / 3 {
            split_done = true;
            let at = account(rand::thread_rng().gen_range(1..n), n);
            match raw.split(&at).await {
                Ok((l, r)) => eprintln!(
                    "chaos: split region {} at {:?} (new region {})",
                    l.get_id(),
                    String::from_utf8_lossy(&at),
                    r.get_id()
                ),
                Err(e) => eprintln!("chaos: split refused: {e}"),
            }
        }
        if a.chaos && !restart_done && started.elapsed() >= run_for * 2 / 3 {
            restart_done = true;
            match &restart {
                Some(flag) => flag.store(true, Ordering::Release),
                None => eprintln!("chaos: no store restart against --pd (not our stores)"),
            }
        }
        let total = snapshot_total(&txns, n).await;
        let commits = counters.commits.load(Ordering::Relaxed);
        let rate = (commits - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), commits);
        let regions = raw
            .pd()
            .scan_region_infos(b"", b"", 0)
            .await
            .map_or(0, |r| r.len());
        let shown = match &total {
            Ok(t) => {
                changed |= *t != expected;
                t.to_string()
            }
            Err(e) => format!("(read failed: {e})"),
        };
        println!(
            "{:>4.0}s  {:>9.0}  {:>7}  {:>7}  {:>7}  {:>12}",
            started.elapsed().as_secs_f64(),
            rate,
            counters.aborts.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed),
            regions,
            shown
        );
    }
    stop.store(true, Ordering::Release);
    for c in clients {
        c.await?;
    }
    let total = snapshot_total(&txns, n)
        .await
        .context("the final snapshot read")?;
    changed |= total != expected;
    let (commits, aborts, errors) = (
        counters.commits.load(Ordering::Relaxed),
        counters.aborts.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
    );
    println!(
        "{commits} transfers committed in {:.1} s ({:.0}/s), {aborts} aborted and retried, {errors} failed",
        started.elapsed().as_secs_f64(),
        commits as f64 / started.elapsed().as_secs_f64()
    );
    if changed {
        println!("FAILED: the total moved away from {expected} (now {total})");
        return Ok(ExitCode::from(1));
    }
    println!("the total stayed {expected} in every snapshot");
    Ok(ExitCode::SUCCESS)
}

/// The sum of all balances, read in one snapshot at a fresh timestamp.
async fn snapshot_total(txns: &TxnClient, n: usize) -> Result<i64, Error> {
    let ts = txns.current_timestamp().await?;
    let keys: Vec<Vec<u8>> = (0..n).map(|i| account(i, n)).collect();
    let values = txns.snapshot(ts).await?.batch_get(&keys).await?;
    values.into_iter().map(balance).sum()
}

/// One client: transfers between random accounts until `stop`.
async fn transfers(txns: &TxnClient, opts: TxnOptions, n: usize, c: &Counters, stop: &AtomicBool) {
    let mut backoff = Duration::from_millis(2);
    while !stop.load(Ordering::Acquire) {
        let (from, to, amount) = {
            let mut rng = rand::thread_rng();
            let from = rng.gen_range(0..n);
            let mut to = rng.gen_range(0..n - 1);
            if to >= from {
                to += 1;
            }
            (from, to, rng.gen_range(1..=100i64))
        };
        let outcome = match txns.begin_with(opts.clone()).await {
            Ok(mut t) => match transfer(&mut t, &account(from, n), &account(to, n), amount).await {
                Ok(()) => t.commit().await.map(|_| ()),
                Err(e) => {
                    let _ = t.rollback().await;
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                c.commits.fetch_add(1, Ordering::Relaxed);
                backoff = Duration::from_millis(2);
            }
            Err(e) if e.is_retryable() => {
                c.aborts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
            Err(_) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Moves `amount` from `from` to `to` when `from` has it (else moves nothing).
async fn transfer(t: &mut Transaction, from: &[u8], to: &[u8], amount: i64) -> Result<(), Error> {
    let have = balance(t.get_for_update(from).await?)?;
    if have < amount {
        return Ok(());
    }
    let other = balance(t.get_for_update(to).await?)?;
    t.put(from, (have - amount).to_string().as_bytes());
    t.put(to, (other + amount).to_string().as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::account;

    #[test]
    fn accounts_spread_over_the_key_space_in_order_and_never_collide() {
        let n = 1000;
        let keys: Vec<Vec<u8>> = (0..n).map(|i| account(i, n)).collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "ascending, so distinct"
        );
        // A quarter of the accounts under each of the playground's 4 static regions.
        let quarter = |k: &Vec<u8>| k[0] / 0x40;
        for q in 0..4u8 {
            assert_eq!(keys.iter().filter(|k| quarter(k) == q).count(), n / 4);
        }
    }
}
