//! Cluster subcommands: the embedded playground, a lone PD, a lone store.

use anyhow::{Context, Result};
use clap::Args;
use regatta::logging;
use regatta::pd_seam::TcpPd;
use regatta::playground::{Playground, PlaygroundConfig};
use regatta_server::{EngineConfig, PdClient, Store, StoreConfig, StoreOptions, TxnConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// `regatta playground`.
#[derive(Args)]
pub struct PlaygroundArgs {
    /// Number of stores.
    #[arg(long, default_value_t = 3)]
    stores: usize,
    /// Number of regions the key space starts cut into.
    #[arg(long, default_value_t = 1)]
    regions: usize,
    /// Data directory (kept); default: a fresh temporary directory, removed at exit.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// PD address.
    #[arg(long, default_value = regatta::DEFAULT_PD)]
    pd_addr: String,
    /// Port of store 1; store N listens on BASE + N - 1 (0 = any free ports).
    #[arg(long, default_value_t = 20160)]
    store_port: u16,
    /// How far PD's GC safe point trails its clock (e.g. `10m`, `90s`, `1500ms`): MVCC
    /// versions no read at or above it needs are dropped; reads below it are refused.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    gc_life_time: Duration,
    #[command(flatten)]
    gc: GcArgs,
    #[command(flatten)]
    locks: LockArgs,
}

/// MVCC GC on the stores (`regatta store`, the playground).
#[derive(Args)]
pub struct GcArgs {
    /// How often a region leader brings PD's GC safe point into its region, and how
    /// often a replica runs a GC pass once its safe point moved (e.g. `10m`, `500ms`).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    gc_interval: Duration,
}

impl GcArgs {
    fn apply(&self, config: &mut TxnConfig) {
        config.gc_interval_ms = u64::try_from(self.gc_interval.as_millis()).unwrap_or(u64::MAX);
    }
}

/// Pessimistic locks on the stores (`regatta store`, the playground).
#[derive(Args)]
pub struct LockArgs {
    /// Replicate every pessimistic lock before answering it, instead of granting one that
    /// meets no conflict in the leader's memory (the default, TiKV's in-memory
    /// pessimistic locks: one raft round less per lock; a lock held in memory is written
    /// to the log before a leader transfer or a split, and lost if its leader dies, which
    /// fails its transaction without committing anything).
    #[arg(long)]
    no_in_memory_locks: bool,
}

impl LockArgs {
    fn apply(&self, config: &mut TxnConfig) {
        config.in_memory_pessimistic_locks = !self.no_in_memory_locks;
    }
}

/// Parses `10m`, `90s`, `1500ms`, `2h` (a number and a unit).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} needs a unit: ms, s, m or h"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: ms, s, m or h")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// `regatta pd`.
#[derive(Args)]
pub struct PdArgs {
    /// Address to listen on.
    #[arg(long, default_value = regatta::DEFAULT_PD)]
    addr: String,
    /// PD's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// Stores to wait for before bootstrapping the first regions.
    #[arg(long, default_value_t = 3)]
    initial_stores: usize,
    /// Regions to bootstrap.
    #[arg(long, default_value_t = 1)]
    regions: usize,
    /// How far the GC safe point trails PD's clock (e.g. `10m`, `90s`; at least 1 s).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    gc_life_time: Duration,
    #[command(flatten)]
    net: NetArgs,
}

/// Deadlines of the server's connections (`regatta pd` and `regatta store`).
#[derive(Args)]
pub struct NetArgs {
    /// Close a connection that starts no frame for this long (default: 10 min).
    #[arg(long)]
    conn_idle_timeout_ms: Option<u64>,
    /// Close a connection that sends nothing for this long in the middle of a frame
    /// (default: 30 s).
    #[arg(long)]
    frame_stall_timeout_ms: Option<u64>,
}

impl NetArgs {
    /// `limits` with the deadlines given on the command line.
    fn apply(&self, limits: &mut regatta_proto::rpc::InboundLimits) {
        if let Some(ms) = self.conn_idle_timeout_ms {
            limits.idle_timeout = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = self.frame_stall_timeout_ms {
            limits.stall_timeout = std::time::Duration::from_millis(ms);
        }
    }
}

/// `regatta store`.
#[derive(Args)]
pub struct StoreArgs {
    /// Store id (nonzero, unique).
    #[arg(long)]
    id: u64,
    /// Address to listen on.
    #[arg(long)]
    addr: String,
    /// PD address(es), comma-separated.
    #[arg(long, default_value = regatta::DEFAULT_PD, value_delimiter = ',')]
    pd: Vec<String>,
    /// The store's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// Threads that run the store's regions and connections (region r on thread
    /// r % N). 1 keeps a write's path on one thread; more pays only on a machine with
    /// cores to spare beyond what the store's other threads and processes use.
    #[arg(long, default_value_t = 1)]
    raft_threads: usize,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    gc: GcArgs,
    #[command(flatten)]
    locks: LockArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

/// The store's engine: its write-ahead log and lock mirror (`regatta store`).
#[derive(Args)]
pub struct EngineArgs {
    /// MiB of WAL the store writes and syncs into each of two log files at every start,
    /// so that its synced writes overwrite blocks the log files already have (a cheaper
    /// `fdatasync`) from the first one on; 0 = none (the store's WAL files are reused
    /// once obsolete either way).
    #[arg(long, default_value_t = 64)]
    wal_prefill_mib: u16,
    /// MiB of live transaction locks (keys, values and ~128 bytes each) the store mirrors
    /// in memory, so that reading a lock (nearly every step of a transaction) skips
    /// RocksDB. Past this the mirror turns itself off, with a warning, and locks are read
    /// from RocksDB until a start finds fewer; 0 = no mirror.
    #[arg(long, default_value_t = 64)]
    lock_mirror_mib: u16,
}

impl EngineArgs {
    /// The engine configuration these flags ask for.
    fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            wal_prefill_bytes: usize::from(self.wal_prefill_mib) << 20,
            lock_mirror_bytes: usize::from(self.lock_mirror_mib) << 20,
            ..EngineConfig::default()
        }
    }
}

/// Runs the playground.
pub fn playground(a: PlaygroundArgs) -> Result<ExitCode> {
    anyhow::ensure!(a.stores >= 1, "--stores must be at least 1");
    let logger = logging::logger();
    // `tmp` (a temporary data directory, when none was given) is removed when it drops,
    // after the stop.
    let (dir, tmp) = regatta::data_dir_or_temp(a.data_dir.clone(), "regatta-playground-")?;
    let temp_path = tmp.as_ref().map(|t| t.path().to_path_buf());
    let mut txn_config = TxnConfig::default();
    a.gc.apply(&mut txn_config);
    a.locks.apply(&mut txn_config);
    let cfg = PlaygroundConfig {
        stores: a.stores,
        regions: a.regions,
        data_dir: dir.clone(),
        pd_addr: a.pd_addr.clone(),
        store_port: a.store_port,
        store_config: StoreConfig::default(),
        txn_config,
        engine_config: EngineConfig::default(),
        transport: None,
        gc_life_time: a.gc_life_time,
        tso_clock_step_ms: 1,
    };
    let sys = actix::System::new();
    sys.block_on(async move {
        let pg = Playground::start(cfg, logger.clone()).await?;
        // Listening from here on: until then Ctrl-C ends a start that hangs, as by default.
        let mut signals = regatta::StopSignals::new();
        let addrs: Vec<String> = pg.stores().map(|s| s.addr.to_string()).collect();
        println!(
            "ready pd={} stores={} regions={} data_dir={}",
            pg.pd_addr(),
            addrs.join(","),
            a.regions,
            dir.display()
        );
        signals.next().await;
        eprintln!("shutting down (Ctrl-C again to exit at once)");
        regatta::stop_unless_asked_again(pg.stop(), temp_path, &mut signals).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs a lone PD.
pub fn pd(a: PdArgs) -> Result<ExitCode> {
    let logger = logging::logger();
    let sys = actix::System::new();
    sys.block_on(async move {
        let mut config = regatta_pd::PdConfig::new(a.initial_stores, a.regions, a.data_dir.clone());
        a.net.apply(&mut config.inbound);
        config.gc_life_time = a.gc_life_time;
        let pd = regatta_pd::start(config, &a.addr, logger.clone())
            .await
            .with_context(|| format!("starting PD on {}", a.addr))?;
        let mut signals = regatta::StopSignals::new();
        println!("ready pd={}", pd.addr);
        // GC's resolve-locks phase, at the stores' default GC interval.
        let _resolver = regatta::gc_resolver::LockResolver::start(
            pd.addr.to_string(),
            a.gc_life_time,
            Duration::from_millis(TxnConfig::default().gc_interval_ms),
            logger.clone(),
        );
        signals.next().await;
        regatta::stop_unless_asked_again(pd.stop(), None, &mut signals).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs a lone store.
pub fn store(a: StoreArgs) -> Result<ExitCode> {
    let logger = logging::logger();
    let sys = actix::System::new();
    sys.block_on(async move {
        let mut config = StoreConfig {
            raft_threads: a.raft_threads,
            ..StoreConfig::default()
        };
        if let Some(ms) = a.net.conn_idle_timeout_ms {
            config.conn_idle_timeout_ms = ms;
        }
        if let Some(ms) = a.net.frame_stall_timeout_ms {
            config.frame_stall_timeout_ms = ms;
        }
        let mut txn = TxnConfig::default();
        a.gc.apply(&mut txn);
        a.locks.apply(&mut txn);
        let opts = StoreOptions {
            store_id: a.id,
            listen_addr: a.addr.clone(),
            data_dir: a.data_dir.clone(),
            config,
            txn,
            engine: a.engine.engine_config(),
        };
        let pd_client: Arc<dyn PdClient> = Arc::new(TcpPd::new(a.pd.clone())?);
        let store = Store::start(opts, pd_client, logger.clone())
            .await
            .with_context(|| format!("starting store {}", a.id))?;
        let mut signals = regatta::StopSignals::new();
        println!("ready store={} addr={}", store.store_id, store.addr);
        signals.next().await;
        regatta::stop_unless_asked_again(store.stop(), None, &mut signals).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_a_number_and_a_unit() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "10", "m", "1.5s", "10 m", "5d", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
