//! `regatta bench`: benchmarks against an embedded 3-store playground (default) or an
//! existing cluster (`--pd`). Progress and diagnostics on stderr, results on stdout.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use regatta::bench::{self, bench_key, KvBench, KvBenchResult, ReadStrategy, Workload};
use regatta::logging;
use regatta::playground::{Playground, PlaygroundConfig};
use regatta_client::Client;
use regatta_server::MetricsSnapshot;
use std::process::ExitCode;
use std::time::Duration;

/// `regatta bench`.
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Closed-loop clients doing put / get / mixed 80:20 over 10k keys.
    Kv(KvArgs),
    /// The 80:20 get/put mix once per read strategy: log, read-index, lease, follower, ryw.
    Reads(ReadsArgs),
    /// Cost of many regions on 3 stores: CPU, memory and raft traffic once they hibernate,
    /// then under a 64-client load spread over every region.
    Regions(RegionsArgs),
    /// Load while regions split: ops/s before, during and after, and client errors.
    Split(SplitArgs),
    /// Uncontended 2-account transfers: optimistic / pessimistic, one region (1PC) or two
    /// (2PC): commits/s, latency, aborts, raft entries per commit.
    Txn(super::bench_txn::TxnBenchArgs),
    /// Many clients incrementing one hot key, per strategy (occ, mvcc_snapshot,
    /// serializable, cas): commits/s, aborts, latency, fairness; the final value checked.
    Contention(super::bench_contention::ContentionArgs),
}

/// `regatta bench split`.
#[derive(Args)]
struct SplitArgs {
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds per phase (before, during, after the splits).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Manual splits during the middle phase (the region count goes 1 -> splits + 1).
    #[arg(long, default_value_t = 7)]
    splits: usize,
    /// Automatic splits instead of manual ones: when the middle phase starts, every
    /// store's split threshold drops to this many keys (of the 10k loaded), so the
    /// region splits by itself under the load (split checks run every second).
    #[arg(long)]
    auto: Option<u64>,
    /// Workload: put, get or mixed.
    #[arg(long, default_value = "mixed")]
    workload: String,
    /// One JSON object per result line instead of a table.
    #[arg(long)]
    json: bool,
}

/// `regatta bench regions`.
#[derive(Args)]
struct RegionsArgs {
    /// Region counts to run, comma-separated (each in a fresh process).
    #[arg(long, default_value = "1000,10000", value_delimiter = ',')]
    regions: Vec<usize>,
    /// Seconds to let the regions settle (elect, then hibernate) before measuring.
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// Seconds to measure idle.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Seconds of load after the idle measurement: 64 clients, 80:20 get/put over keys
    /// spread across every region (0: idle only).
    #[arg(long, default_value_t = 10)]
    load_seconds: u64,
    /// One JSON object per result line instead of a table.
    #[arg(long)]
    json: bool,
    /// Print the result row only (used when one run spawns one process per count).
    #[arg(long, hide = true)]
    no_header: bool,
}

/// Settings every scenario shares.
#[derive(Args)]
struct Common {
    /// Client counts to run, comma-separated.
    #[arg(long, default_value = "64", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Size of the key space.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 128)]
    value_size: usize,
    /// Regions of the embedded playground.
    #[arg(long, default_value_t = 1)]
    regions: usize,
    /// Benchmark an existing cluster instead of an embedded playground.
    #[arg(long)]
    pd: Option<String>,
    /// One JSON object per result line instead of a table.
    #[arg(long)]
    json: bool,
}

impl Common {
    /// One run of `workload` with `reads` per client count.
    fn runs(&self, workload: Workload, reads: ReadStrategy) -> Result<Vec<KvBench>> {
        self.clients
            .iter()
            .map(|&clients| {
                anyhow::ensure!(clients >= 1, "--clients must be at least 1");
                Ok(KvBench {
                    workload,
                    clients,
                    duration: Duration::from_secs(self.seconds.max(1)),
                    keys: self.keys.max(1),
                    value_size: self.value_size,
                    reads,
                })
            })
            .collect()
    }

    fn setup(self, table: Table) -> Setup {
        Setup {
            pd: self.pd,
            regions: self.regions,
            keys: self.keys,
            value_size: self.value_size,
            json: self.json,
            table,
        }
    }
}

/// `regatta bench kv`.
#[derive(Args)]
struct KvArgs {
    /// Workloads to run, comma-separated: put, get, mixed.
    #[arg(long, default_value = "put,get,mixed", value_delimiter = ',')]
    workload: Vec<String>,
    #[command(flatten)]
    common: Common,
}

/// `regatta bench reads`.
#[derive(Args)]
struct ReadsArgs {
    /// Read strategies, comma-separated: log, read-index, lease, follower, ryw.
    #[arg(
        long,
        default_value = "log,read-index,lease,follower,ryw",
        value_delimiter = ','
    )]
    strategies: Vec<String>,
    #[command(flatten)]
    common: Common,
}

/// Runs `regatta bench`.
pub fn bench(a: BenchArgs) -> Result<ExitCode> {
    match a.scenario {
        Scenario::Kv(k) => {
            let mut runs = Vec::new();
            for w in &k.workload {
                let workload = Workload::parse(w)
                    .with_context(|| format!("unknown workload {w:?} (put, get, mixed)"))?;
                runs.extend(k.common.runs(workload, ReadStrategy::ReadIndex)?);
            }
            execute(k.common.setup(Table::Kv), runs)
        }
        Scenario::Regions(r) => regions_bench(r),
        Scenario::Split(s) => split_bench(s),
        Scenario::Txn(t) => super::bench_txn::bench_txn(t),
        Scenario::Contention(c) => super::bench_contention::bench_contention(c),
        Scenario::Reads(r) => {
            let mut runs = Vec::new();
            for name in &r.strategies {
                let reads = ReadStrategy::parse(name).with_context(|| {
                    format!("unknown strategy {name:?} (log, read-index, lease, follower, ryw)")
                })?;
                runs.extend(r.common.runs(Workload::Mixed, reads)?);
            }
            execute(r.common.setup(Table::Reads), runs)
        }
    }
}

fn sum(stores: &[MetricsSnapshot]) -> MetricsSnapshot {
    stores
        .iter()
        .fold(MetricsSnapshot::default(), |a, s| a.plus(*s))
}

/// Store-side figures of one run (embedded playground only), summed over the 3 stores:
/// fsyncs of the LogWriters, raft entries per fsync (an entry carries every command of
/// one actor turn) and client commands per fsync (each command is synced by 3 stores).
#[derive(serde::Serialize)]
struct SyncFigures {
    fsyncs_per_sec: f64,
    entries_per_fsync: f64,
    cmds_per_fsync: f64,
    /// Mean time of one synced group write (WAL write + fdatasync), in µs.
    sync_us: f64,
    /// Share of the run each store's LogWriter spent in synced writes (mean of the
    /// stores), in %: near 100 the fsync cadence bounds the write path.
    sync_busy_pct: f64,
    /// Where a write spent its time on its leader (means over the leaders' commands or
    /// entries, in µs; `WriteStages`): a command's arrival → its entry proposed.
    stage_wait_us: f64,
    /// An entry proposed → its leader handling the notice that its own write is durable
    /// (the LogWriter's round and the notice's wait for the replica's turn).
    stage_persist_us: f64,
    /// An entry proposed → known committed on its leader (a quorum durable).
    stage_commit_us: f64,
    /// An entry known committed → applied and answered (the apply of its turn).
    stage_apply_us: f64,
}

fn sync_figures(before: MetricsSnapshot, after: MetricsSnapshot, seconds: f64) -> SyncFigures {
    let syncs = (after.syncs - before.syncs).max(1) as f64;
    let entries = (after.synced_entries - before.synced_entries) as f64;
    // Commands a leader proposed, each synced by the leader and by both followers.
    let cmds = (after.proposed_cmds - before.proposed_cmds) as f64 * 3.0;
    let micros = (after.sync_micros - before.sync_micros) as f64;
    let (wait, persist, commit, apply) = after.stages.since(before.stages).means();
    SyncFigures {
        fsyncs_per_sec: syncs / seconds,
        entries_per_fsync: entries / syncs,
        cmds_per_fsync: cmds / syncs,
        sync_us: micros / syncs,
        sync_busy_pct: micros / (seconds * 1e6 * 3.0) * 100.0,
        stage_wait_us: wait,
        stage_persist_us: persist,
        stage_commit_us: commit,
        stage_apply_us: apply,
    }
}

/// Which table a scenario prints.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Kv,
    Reads,
}

fn report(r: &KvBenchResult, sync: Option<&SyncFigures>, json: bool, table: Table) {
    if table == Table::Reads && !json {
        println!(
            "{:<11} {:>7} {:>10.0} {:>9.0} {:>8.2} {:>8.2} {:>9.0} {:>8.2} {:>8.2} {:>7}  {}",
            r.reads,
            r.clients,
            r.ops_per_sec,
            r.read_ops_per_sec,
            r.read_p50_ms,
            r.read_p99_ms,
            r.write_ops_per_sec,
            r.write_p50_ms,
            r.write_p99_ms,
            r.errors,
            ReadStrategy::parse(r.reads).map_or("", ReadStrategy::guarantee),
        );
        return;
    }
    if json {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        if let (Some(s), Some(obj)) = (sync, v.as_object_mut()) {
            obj.insert("store".into(), serde_json::to_value(s).unwrap_or_default());
        }
        println!("{v}");
        return;
    }
    let store = sync.map_or(String::new(), |s| {
        format!(
            "  {:>8.0}  {:>13.2}  {:>10.2}  {:>7.0}  {:>6.0}  {:>7.0}  {:>10.0}  {:>9.0}  {:>8.0}",
            s.fsyncs_per_sec,
            s.entries_per_fsync,
            s.cmds_per_fsync,
            s.sync_us,
            s.sync_busy_pct,
            s.stage_wait_us,
            s.stage_persist_us,
            s.stage_commit_us,
            s.stage_apply_us,
        )
    });
    println!(
        "{:<8} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>9.0} {:>5}{store}",
        r.workload,
        r.clients,
        r.ops_per_sec,
        r.p50_ms,
        r.p99_ms,
        r.p999_ms,
        r.errors,
        r.cpu_us_per_op,
        r.box_busy_pct
            .map_or_else(|| "-".to_string(), |p| format!("{p:.0}"))
    );
}

fn header(with_store: bool, json: bool, table: Table) {
    if json {
        return;
    }
    if table == Table::Reads {
        println!(
            "{:<11} {:>7} {:>10} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>7}  consistency",
            "strategy",
            "clients",
            "ops/s",
            "reads/s",
            "r p50",
            "r p99",
            "writes/s",
            "w p50",
            "w p99",
            "errors"
        );
        return;
    }
    let store = if with_store {
        "  fsyncs/s  entries/fsync  cmds/fsync  sync us  sync %  wait us  persist us  commit us  apply us"
    } else {
        ""
    };
    println!(
        "{:<8} {:>7} {:>10} {:>8} {:>8} {:>8} {:>7} {:>9} {:>5}{store}",
        "workload",
        "clients",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "errors",
        "cpu us/op",
        "box %"
    );
}

/// Runs `b` with `client`; read-your-writes runs get one client per worker.
async fn run_one(client: &Client, pd: &str, b: &KvBench) -> Result<KvBenchResult> {
    let mut clients = vec![client.clone()];
    if b.reads == ReadStrategy::Ryw {
        for _ in 1..b.clients {
            clients.push(Client::connect(&[pd]).await?);
        }
    }
    eprint!("{} {} x{}: ", b.workload.name(), b.reads.name(), b.clients);
    let r = bench::run(&clients, b, |ops| eprint!("{ops} ")).await;
    eprintln!();
    Ok(r)
}

/// Where and how a scenario runs.
struct Setup {
    pd: Option<String>,
    regions: usize,
    keys: usize,
    value_size: usize,
    json: bool,
    table: Table,
}

fn execute(a: Setup, runs: Vec<KvBench>) -> Result<ExitCode> {
    if let Some(pd) = a.pd.clone() {
        let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        return rt.block_on(async move {
            let client = Client::connect(std::slice::from_ref(&pd))
                .await
                .with_context(|| format!("connecting to PD at {pd}"))?;
            eprintln!("preloading {} keys", a.keys);
            bench::preload(&client, a.keys, a.value_size, 64).await?;
            header(false, a.json, a.table);
            let mut all = Vec::new();
            for b in &runs {
                let r = run_one(&client, &pd, b).await?;
                report(&r, None, a.json, a.table);
                all.push(r);
            }
            print_ratios(&all, a.json, a.table);
            Ok(ExitCode::SUCCESS)
        });
    }
    // Embedded: the playground runs on this thread's actix system; the clients on a tokio
    // runtime of their own, so the two do not share one thread.
    let dir = tempfile::Builder::new()
        .prefix("regatta-bench-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let mut cfg = PlaygroundConfig::local(3, a.regions, dir.path().to_path_buf());
    cfg.store_config = regatta_server::StoreConfig::default();
    let logger = logging::logger();
    let sys = actix::System::new();
    sys.block_on(async move {
        eprintln!("starting a 3-store playground with {} region(s)", a.regions);
        let pg = Playground::start(cfg, logger).await?;
        let pd = pg.pd_addr();
        let clients_rt = regatta::bench::clients_runtime()?;
        let client = {
            let pd = pd.clone();
            clients_rt
                .spawn(async move { Client::connect(&[pd]).await })
                .await??
        };
        eprintln!("preloading {} keys", a.keys);
        {
            let (c, keys, vs) = (client.clone(), a.keys, a.value_size);
            clients_rt
                .spawn(async move { bench::preload(&c, keys, vs, 64).await })
                .await??;
        }
        header(true, a.json, a.table);
        let mut all = Vec::new();
        for b in runs {
            let before = sum(&pg.stores().map(|s| s.metrics()).collect::<Vec<_>>());
            let (c, pd) = (client.clone(), pd.clone());
            let r = clients_rt
                .spawn(async move { run_one(&c, &pd, &b).await })
                .await??;
            let after = sum(&pg.stores().map(|s| s.metrics()).collect::<Vec<_>>());
            if a.table == Table::Reads {
                eprintln!(
                    "  local reads: {} by leaders' leases, {} by followers; {} follower/RYW reads redirected to the leader",
                    after.local_reads_leader - before.local_reads_leader,
                    after.local_reads_follower - before.local_reads_follower,
                    after.follower_redirects - before.follower_redirects
                );
            }
            report(
                &r,
                Some(&sync_figures(before, after, r.seconds)),
                a.json,
                a.table,
            );
            all.push(r);
        }
        print_ratios(&all, a.json, a.table);
        clients_rt.shutdown_background();
        pg.stop().await;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// After a `bench reads` table: how the strategies' read throughputs compare.
fn print_ratios(results: &[KvBenchResult], json: bool, table: Table) {
    if table == Table::Reads && !json {
        for line in bench::read_ratios(results) {
            println!("{line}");
        }
    }
}

/// CPU seconds (user + system) this process has used ([`bench::process_cpu_time`]).
fn cpu_seconds() -> f64 {
    bench::process_cpu_time().as_secs_f64()
}

/// Resident memory of this process in MiB (from /proc/self/status).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What one `bench regions` run measured.
#[derive(serde::Serialize)]
struct RegionsResult {
    regions: usize,
    stores: usize,
    startup_seconds: f64,
    hibernating_pct: f64,
    idle_cpu_pct_per_store: f64,
    idle_raft_msgs_per_sec_per_store: f64,
    rss_mib_per_store: f64,
    load_ops_per_sec: f64,
    load_cpu_pct_per_store: f64,
    load_raft_msgs_per_sec_per_store: f64,
    load_errors: u64,
}

fn regions_bench(a: RegionsArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        a.regions.iter().all(|&n| n >= 1),
        "--regions counts must be at least 1"
    );
    let header = || {
        println!(
            "{:>8} {:>7} {:>10} {:>12} {:>15} {:>15} {:>14} {:>10} {:>15} {:>15} {:>7}",
            "regions",
            "stores",
            "startup s",
            "hibernating",
            "idle CPU/store",
            "idle msgs/s/st",
            "RSS/store MiB",
            "load ops/s",
            "load CPU/store",
            "load msgs/s/st",
            "errors"
        )
    };
    if a.regions.len() > 1 {
        // One process per region count, so memory figures do not carry over.
        let exe = std::env::current_exe().context("finding this executable")?;
        if !a.json {
            header();
        }
        for n in &a.regions {
            let status = std::process::Command::new(&exe)
                .args(["bench", "regions", "--regions", &n.to_string()])
                .args(["--settle", &a.settle.to_string()])
                .args(["--seconds", &a.seconds.to_string()])
                .args(["--load-seconds", &a.load_seconds.to_string()])
                .args(if a.json {
                    vec!["--json"]
                } else {
                    vec!["--no-header"]
                })
                .status()
                .context("running a region-count bench")?;
            anyhow::ensure!(status.success(), "the run with {n} regions failed");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let n = *a.regions.first().context("--regions needs a count")?;
    if !a.json && !a.no_header {
        header();
    }
    let dir = tempfile::Builder::new()
        .prefix("regatta-bench-regions-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let cfg = PlaygroundConfig::local(3, n, dir.path().to_path_buf());
    let logger = logging::logger();
    let json = a.json;
    actix::System::new().block_on(async move {
        eprintln!("starting 3 stores with {n} regions");
        let t0 = std::time::Instant::now();
        let pg = Playground::start(cfg, logger).await?;
        let startup = t0.elapsed().as_secs_f64();
        eprintln!(
            "all {n} regions have leaders after {startup:.1} s; settling {} s",
            a.settle
        );
        tokio::time::sleep(Duration::from_secs(a.settle)).await;
        // Then until the cluster is quiet: every replica hibernating (PD's leader balancing
        // wakes regions while it moves leaders), for at most another minute.
        let quiet_deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (asleep, all) = hibernating(&pg).await;
            if asleep == all || std::time::Instant::now() >= quiet_deadline {
                eprintln!("{asleep} of {all} replicas hibernate; measuring");
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let msgs = |pg: &Playground| sum(&pg.stores().map(|s| s.metrics()).collect::<Vec<_>>()).raft_messages_sent;
        let (cpu0, m0, w0) = (cpu_seconds(), msgs(&pg), std::time::Instant::now());
        tokio::time::sleep(Duration::from_secs(a.seconds.max(1))).await;
        let idle_secs = w0.elapsed().as_secs_f64();
        let cpu = (cpu_seconds() - cpu0) / idle_secs;
        let idle_msgs = (msgs(&pg) - m0) as f64 / idle_secs / 3.0;
        let (asleep, replicas) = hibernating(&pg).await;
        eprintln!("after measuring, {asleep} of {replicas} replicas hibernate");
        let rss = rss_mib() / 3.0;
        // Under load: every region gets keys (at least 4 each), so every region wakes.
        let (mut load_ops, mut load_cpu, mut load_msgs, mut load_errors) = (0.0, 0.0, 0.0, 0);
        if a.load_seconds > 0 {
            let b = KvBench {
                workload: Workload::Mixed,
                clients: 64,
                duration: Duration::from_secs(a.load_seconds),
                keys: (4 * n).max(10_000),
                value_size: 128,
                reads: ReadStrategy::ReadIndex,
            };
            eprint!("load: 64 clients, 80:20 over {} keys: ", b.keys);
            let pd = pg.pd_addr();
            let clients_rt = regatta::bench::clients_runtime()?;
            let (cpu0, m0, w0) = (cpu_seconds(), msgs(&pg), std::time::Instant::now());
            let r = clients_rt
                .spawn(async move {
                    let c = Client::connect(&[pd]).await?;
                    anyhow::Ok(bench::run(&[c], &b, |ops| eprint!("{ops} ")).await)
                })
                .await??;
            eprintln!();
            let secs = w0.elapsed().as_secs_f64();
            load_cpu = 100.0 * (cpu_seconds() - cpu0) / secs / 3.0;
            load_msgs = (msgs(&pg) - m0) as f64 / secs / 3.0;
            load_ops = r.ops_per_sec;
            load_errors = r.errors;
            clients_rt.shutdown_background();
        }
        let r = RegionsResult {
            regions: n,
            stores: 3,
            startup_seconds: startup,
            hibernating_pct: 100.0 * asleep as f64 / replicas.max(1) as f64,
            idle_cpu_pct_per_store: 100.0 * cpu / 3.0,
            idle_raft_msgs_per_sec_per_store: idle_msgs,
            rss_mib_per_store: rss,
            load_ops_per_sec: load_ops,
            load_cpu_pct_per_store: load_cpu,
            load_raft_msgs_per_sec_per_store: load_msgs,
            load_errors,
        };
        if json {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        } else {
            println!(
                "{:>8} {:>7} {:>10.1} {:>11.1}% {:>14.2}% {:>15.0} {:>14.1} {:>10.0} {:>14.1}% {:>15.0} {:>7}",
                r.regions,
                r.stores,
                r.startup_seconds,
                r.hibernating_pct,
                r.idle_cpu_pct_per_store,
                r.idle_raft_msgs_per_sec_per_store,
                r.rss_mib_per_store,
                r.load_ops_per_sec,
                r.load_cpu_pct_per_store,
                r.load_raft_msgs_per_sec_per_store,
                r.load_errors
            );
        }
        pg.stop().await;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// How many of the playground's replicas hibernate, of how many.
async fn hibernating(pg: &Playground) -> (usize, usize) {
    let (mut asleep, mut all) = (0, 0);
    for s in pg.stores() {
        for st in s.region_statuses().await {
            all += 1;
            asleep += usize::from(st.hibernating);
        }
    }
    (asleep, all)
}

fn split_bench(a: SplitArgs) -> Result<ExitCode> {
    let workload = Workload::parse(&a.workload)
        .with_context(|| format!("unknown workload {:?} (put, get, mixed)", a.workload))?;
    anyhow::ensure!(a.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(
        a.auto.is_none_or(|k| k >= 2),
        "--auto needs a threshold of at least 2 keys"
    );
    let keys = 10_000;
    let dir = tempfile::Builder::new()
        .prefix("regatta-bench-split-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let mut cfg = PlaygroundConfig::local(3, 1, dir.path().to_path_buf());
    if a.auto.is_some() {
        cfg.store_config.split_check_interval_ms = 1_000;
    }
    let logger = logging::logger();
    actix::System::new().block_on(async move {
        eprintln!("starting a 3-store playground with one region");
        let pg = Playground::start(cfg, logger).await?;
        let pd = pg.pd_addr();
        let rt = regatta::bench::clients_runtime()?;
        let client = rt
            .spawn(async move {
                let client = Client::connect(&[pd.as_str()]).await?;
                eprintln!("preloading {keys} keys");
                bench::preload(&client, keys, 128, 64).await?;
                anyhow::Ok(client)
            })
            .await??;
        let b = KvBench {
            workload,
            clients: a.clients,
            duration: Duration::from_secs(a.seconds.max(1)),
            keys,
            value_size: 128,
            reads: ReadStrategy::ReadIndex,
        };
        let mut results = Vec::new();
        for phase in ["before", "during", "after"] {
            eprint!("{phase}: ");
            let during = phase == "during";
            if let (true, Some(threshold)) = (during, a.auto) {
                for s in pg.stores() {
                    s.set_split_keys(threshold).map_err(anyhow::Error::msg)?;
                }
            }
            let (c, b) = (client.clone(), b.clone());
            let (manual, splits) = (a.auto.is_none(), a.splits);
            let (phase_result, regions) = rt
                .spawn(async move {
                    let regions_before = c.pd().scan_regions(b"", b"", 0).await?.len();
                    let splitter = (during && manual).then(|| {
                        let (c, secs) = (c.clone(), b.duration.as_secs());
                        tokio::spawn(async move {
                            let gap = Duration::from_millis(secs * 1000 / (splits as u64 + 1));
                            for i in 1..=splits {
                                tokio::time::sleep(gap).await;
                                let _ = c.split(&bench_key(i * keys / (splits + 1), keys)).await;
                            }
                        })
                    });
                    let r = bench::run(std::slice::from_ref(&c), &b, |ops| eprint!("{ops} ")).await;
                    eprintln!();
                    if let Some(t) = splitter {
                        let _ = t.await;
                    }
                    let regions = c.pd().scan_regions(b"", b"", 0).await?.len();
                    anyhow::Ok((r, (regions_before, regions)))
                })
                .await??;
            let (before, after) = regions;
            results.push((phase, phase_result, after.saturating_sub(before), after));
        }
        if !a.json {
            println!(
                "{:<7} {:>7} {:>10} {:>8} {:>8} {:>7} {:>7} {:>8}",
                "phase", "clients", "ops/s", "p50 ms", "p99 ms", "errors", "splits", "regions"
            );
        }
        for (phase, r, splits, regions) in &results {
            if a.json {
                let v = serde_json::json!({"phase": phase, "result": r, "splits": splits, "regions": regions});
                println!("{v}");
            } else {
                println!(
                    "{:<7} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>7} {:>7} {:>8}",
                    phase, r.clients, r.ops_per_sec, r.p50_ms, r.p99_ms, r.errors, splits, regions
                );
            }
        }
        rt.shutdown_background();
        pg.stop().await;
        let errors: u64 = results.iter().map(|(_, r, _, _)| r.errors).sum();
        anyhow::Ok(if errors == 0 {
            ExitCode::SUCCESS
        } else {
            eprintln!("clients saw {errors} error(s)");
            ExitCode::from(1)
        })
    })
}
