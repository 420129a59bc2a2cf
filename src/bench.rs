//! The KV benchmark shared by `regatta bench kv` and `benches/raw_kv.rs`: closed-loop
//! clients doing puts, gets or an 80:20 get/put mix over a uniform key space of 16-byte
//! keys with 128-byte values (the project's standard workload, README "Measuring"). `regatta bench reads`
//! runs the mixed workload once per read strategy ([`ReadStrategy`]).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use regatta_client::{Client, ReadConsistency};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Only puts.
    Put,
    /// Only (linearizable) gets of preloaded keys.
    Get,
    /// 80% gets, 20% puts.
    Mixed,
}

impl Workload {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Workload> {
        match s {
            "put" => Some(Workload::Put),
            "get" => Some(Workload::Get),
            "mixed" => Some(Workload::Mixed),
            _ => None,
        }
    }
}

/// How the benchmark's gets are served (`regatta bench reads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStrategy {
    /// Through the raft log.
    Log,
    /// ReadIndex on the leader.
    ReadIndex,
    /// The leader's lease (ReadIndex when it lapses).
    Lease,
    /// Any replica at most 1 s stale.
    Follower,
    /// Any replica that applied the client's own writes.
    Ryw,
}

impl ReadStrategy {
    /// Every strategy, in report order.
    pub const ALL: [ReadStrategy; 5] = [
        ReadStrategy::Log,
        ReadStrategy::ReadIndex,
        ReadStrategy::Lease,
        ReadStrategy::Follower,
        ReadStrategy::Ryw,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ReadStrategy::Log => "log",
            ReadStrategy::ReadIndex => "read-index",
            ReadStrategy::Lease => "lease",
            ReadStrategy::Follower => "follower",
            ReadStrategy::Ryw => "ryw",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<ReadStrategy> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }

    /// The client consistency it reads with.
    pub fn consistency(self) -> ReadConsistency {
        match self {
            ReadStrategy::Log => ReadConsistency::LogRead,
            ReadStrategy::ReadIndex => ReadConsistency::Linearizable,
            ReadStrategy::Lease => ReadConsistency::Lease,
            ReadStrategy::Follower => ReadConsistency::Follower {
                max_staleness: Duration::from_secs(1),
            },
            ReadStrategy::Ryw => ReadConsistency::ReadYourWrites,
        }
    }

    /// What its reads promise.
    pub fn guarantee(self) -> &'static str {
        match self {
            ReadStrategy::Log | ReadStrategy::ReadIndex => "linearizable",
            ReadStrategy::Lease => "linearizable (clock bound)",
            ReadStrategy::Follower => "stale <= 1 s",
            ReadStrategy::Ryw => "read-your-writes",
        }
    }
}

/// One benchmark run.
#[derive(Debug, Clone)]
pub struct KvBench {
    /// The workload.
    pub workload: Workload,
    /// Concurrent closed-loop clients.
    pub clients: usize,
    /// How long to run.
    pub duration: Duration,
    /// Size of the key space.
    pub keys: usize,
    /// Value size in bytes.
    pub value_size: usize,
    /// How gets are served.
    pub reads: ReadStrategy,
}

/// What a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KvBenchResult {
    /// Workload name.
    pub workload: &'static str,
    /// Read strategy name.
    pub reads: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations completed.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Seconds measured.
    pub seconds: f64,
    /// Completed operations per second.
    pub ops_per_sec: f64,
    /// Median latency (ms).
    pub p50_ms: f64,
    /// 99th percentile latency (ms).
    pub p99_ms: f64,
    /// 99.9th percentile latency (ms).
    pub p999_ms: f64,
    /// Gets completed per second.
    pub read_ops_per_sec: f64,
    /// Median get latency (ms).
    pub read_p50_ms: f64,
    /// 99th percentile get latency (ms).
    pub read_p99_ms: f64,
    /// Puts completed per second.
    pub write_ops_per_sec: f64,
    /// Median put latency (ms).
    pub write_p50_ms: f64,
    /// 99th percentile put latency (ms).
    pub write_p99_ms: f64,
    /// CPU time of this process per operation, in µs (clients, stores and PD together on
    /// an embedded playground; see [`process_cpu_time`]).
    pub cpu_us_per_op: f64,
    /// How busy the whole machine's CPUs were during the run, in % (every process: with
    /// `--pd`, the cluster's too); `None` where `/proc/stat` cannot be read.
    pub box_busy_pct: Option<f64>,
}

/// Key `i` of the benchmark's key space: 16 bytes, its first two spread evenly over the
/// 2-byte prefix space so that every static region gets its share.
pub fn bench_key(i: usize, keys: usize) -> Vec<u8> {
    let prefix = ((i * 65_536 / keys.max(1)) as u16).to_be_bytes();
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{i:014}").as_bytes());
    k
}

/// Two distinct accounts of `n` (keys [`bench_key`]`(i, n)`), both in one of `regions`
/// equal slices of the key space (one static region of a playground with that many) or,
/// when `cross`, in two different slices.
pub fn transfer_pair(n: usize, regions: usize, cross: bool, rng: &mut impl Rng) -> (usize, usize) {
    let per = n / regions;
    let q1 = rng.gen_range(0..regions);
    let q2 = if cross {
        (q1 + rng.gen_range(1..regions)) % regions
    } else {
        q1
    };
    let a = q1 * per + rng.gen_range(0..per);
    let mut b = q2 * per + rng.gen_range(0..per);
    if b == a {
        b = q2 * per + (b - q2 * per + 1) % per;
    }
    (a, b)
}

/// One transfer of `regatta bench txn` and the criterion bench: reads both accounts
/// (locking them when pessimistic), writes both, commits. Returns whether it committed by
/// 1PC, and how long the commit call took.
pub async fn transfer(
    txns: &regatta_client::TxnClient,
    opts: &regatta_client::TxnOptions,
    from: &[u8],
    to: &[u8],
    value: &[u8],
) -> Result<(bool, std::time::Duration), regatta_client::Error> {
    let mut t = txns.begin_with(opts.clone()).await?;
    let pessimistic = opts.mode == regatta_client::TxnMode::Pessimistic;
    let read = async {
        if pessimistic {
            t.get_for_update(from).await?;
            t.get_for_update(to).await?;
        } else {
            t.get(from).await?;
            t.get(to).await?;
        }
        Ok::<(), regatta_client::Error>(())
    };
    if let Err(e) = read.await {
        let _ = t.rollback().await;
        return Err(e);
    }
    t.put(from, value);
    t.put(to, value);
    let c0 = std::time::Instant::now();
    t.commit().await?;
    Ok((t.committed_by_one_pc(), c0.elapsed()))
}

/// CPU time (user + system) this process has used so far: with an embedded playground,
/// clients, stores and PD together. Divided by the operations run in between, it is the
/// cost model of a benchmark on this machine: `cores / cpu_per_op` bounds the throughput
/// whatever the concurrency.
/// The one measure of CPU time in the binary (the `bench` commands use it too):
/// `getrusage(RUSAGE_SELF)`, every thread's, to the microsecond. Zero if the call fails.
pub fn process_cpu_time() -> std::time::Duration {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return std::time::Duration::ZERO;
    }
    let t = |tv: libc::timeval| {
        std::time::Duration::from_secs(tv.tv_sec as u64)
            + std::time::Duration::from_micros(tv.tv_usec as u64)
    };
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Writes every key once (so that gets find values), with `concurrency` writers.
pub async fn preload(
    client: &Client,
    keys: usize,
    value_size: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let value = vec![b'v'; value_size];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= keys {
                    return anyhow::Ok(());
                }
                client.put(&bench_key(i, keys), &value).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn percentile(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[idx]) / 1000.0
}

/// Runs `bench` against the cluster behind `clients` (worker `i` uses client
/// `i % clients.len()`: give read-your-writes runs one client per worker, so that each
/// reads its own writes). `progress` is called about once a second with the operations
/// completed so far.
pub async fn run(clients: &[Client], bench: &KvBench, progress: impl Fn(u64)) -> KvBenchResult {
    assert!(!clients.is_empty(), "bench::run needs a client");
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let cpu_before = process_cpu_time();
    let box_before = machine_cpu();
    let mut tasks = Vec::new();
    for c in 0..bench.clients {
        let client = clients[c % clients.len()].clone();
        let (done, errors, stop) = (done.clone(), errors.clone(), stop.clone());
        let b = bench.clone();
        tasks.push(tokio::spawn(async move {
            let value = vec![b'x'; b.value_size];
            let consistency = b.reads.consistency();
            let (mut read_us, mut write_us): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
            // One RNG per client task: uniform choices without a shared one.
            let mut rng = StdRng::seed_from_u64(c as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                let key = bench_key(rng.gen_range(0..b.keys), b.keys);
                let is_put = match b.workload {
                    Workload::Put => true,
                    Workload::Get => false,
                    Workload::Mixed => rng.gen_range(0..10) < 2,
                };
                let t0 = Instant::now();
                let ok = if is_put {
                    client.put(&key, &value).await.is_ok()
                } else {
                    client.get_with(&key, consistency).await.is_ok()
                };
                if ok {
                    let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    if is_put {
                        write_us.push(us);
                    } else {
                        read_us.push(us);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            (read_us, write_us)
        }));
    }
    while started.elapsed() < bench.duration {
        let left = bench.duration.saturating_sub(started.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        progress(done.load(Ordering::Relaxed));
    }
    stop.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let ops = done.load(Ordering::Relaxed);
    let cpu = process_cpu_time().saturating_sub(cpu_before);
    let box_busy_pct = busy_pct(box_before, machine_cpu());
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    for t in tasks {
        if let Ok((mut r, mut w)) = t.await {
            reads.append(&mut r);
            writes.append(&mut w);
        }
    }
    let mut all: Vec<u32> = reads.iter().chain(writes.iter()).copied().collect();
    all.sort_unstable();
    reads.sort_unstable();
    writes.sort_unstable();
    KvBenchResult {
        workload: bench.workload.name(),
        reads: bench.reads.name(),
        read_ops_per_sec: reads.len() as f64 / seconds,
        read_p50_ms: percentile(&reads, 0.50),
        read_p99_ms: percentile(&reads, 0.99),
        write_ops_per_sec: writes.len() as f64 / seconds,
        write_p50_ms: percentile(&writes, 0.50),
        write_p99_ms: percentile(&writes, 0.99),
        clients: bench.clients,
        ops,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        ops_per_sec: ops as f64 / seconds,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        p999_ms: percentile(&all, 0.999),
        cpu_us_per_op: if ops > 0 {
            cpu.as_secs_f64() * 1e6 / ops as f64
        } else {
            0.0
        },
        box_busy_pct,
    }
}

/// The machine's CPU time so far from `/proc/stat`'s first line: (busy, busy + idle), in
/// clock ticks; `None` where it cannot be read (not Linux).
pub fn machine_cpu() -> Option<(u64, u64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// `/proc/stat`'s `cpu` line: user nice system idle iowait irq softirq steal ...; idle
/// and iowait are idle, the rest busy.
fn parse_proc_stat(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    if f.len() < 5 {
        return None;
    }
    let idle = f[3] + f[4];
    let busy: u64 = f.iter().sum::<u64>() - idle;
    Some((busy, busy + idle))
}

/// Busy share between two [`machine_cpu`] readings, in %.
pub fn busy_pct(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (before?, after?);
    let total = t1.checked_sub(t0).filter(|t| *t > 0)?;
    Some(b1.saturating_sub(b0) as f64 * 100.0 / total as f64)
}

/// A playground running on a thread of its own (see [`background_playground`]). Dropping
/// it stops the cluster and removes its temporary directory.
#[must_use = "dropping the guard stops the playground"]
pub struct BackgroundPlayground {
    pd: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundPlayground {
    /// PD's address.
    pub fn pd_addr(&self) -> String {
        self.pd.clone()
    }
}

impl Drop for BackgroundPlayground {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a 3-store playground with `regions` regions on a thread of its own (with its
/// actix system, in a temporary directory), for the criterion benches, whose clients run
/// on a separate tokio runtime. It runs until the returned guard is dropped.
pub fn background_playground(regions: usize) -> BackgroundPlayground {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let dir = tempfile::Builder::new()
            .prefix("regatta-bench-")
            .tempdir()
            .expect("temp dir");
        let cfg = crate::playground::PlaygroundConfig::local(3, regions, dir.path().to_path_buf());
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        actix::System::new().block_on(async move {
            let pg = crate::playground::Playground::start(cfg, logger)
                .await
                .expect("playground starts");
            tx.send(pg.pd_addr()).expect("bench waits for the address");
            // A dropped guard (or a panicking bench) ends the wait too.
            let _ = stopped.await;
            pg.stop().await;
        });
        drop(dir);
    });
    let pd = rx.recv().expect("playground started");
    BackgroundPlayground {
        pd,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// Runs `work` against a cluster: the one whose PD is `pd`, else a 3-store playground with
/// `regions` regions embedded for the duration (in a temp dir, stopped afterwards).
/// `work` gets PD's address and runs on [`clients_runtime`], off the playground's threads.
pub fn with_cluster<T, F, Fut>(pd: Option<String>, regions: usize, work: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
{
    use anyhow::Context as _;
    let rt = clients_runtime()?;
    if let Some(pd) = pd {
        return rt.block_on(work(pd));
    }
    let dir = tempfile::Builder::new()
        .prefix("regatta-bench-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let cfg = crate::playground::PlaygroundConfig::local(3, regions, dir.path().to_path_buf());
    actix::System::new().block_on(async move {
        eprintln!("starting a 3-store playground with {regions} region(s)");
        let pg = crate::playground::Playground::start(cfg, crate::logging::logger()).await?;
        let result = rt.spawn(work(pg.pd_addr())).await;
        rt.shutdown_background();
        pg.stop().await;
        result.context("the benchmark's task panicked")?
    })
}

/// A tokio runtime of its own (2 workers) for benchmark and demo clients, so they do not
/// share a thread with an embedded playground's actors.
pub fn clients_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the clients' runtime")
}

/// One line per client count that ran the strategies being compared: read throughput of
/// lease vs log and vs ReadIndex, and of follower vs lease (e.g. `64 clients: lease 1.63x
/// log, 1.45x read-index; follower 0.90x lease`). Empty when no pair ran.
pub fn read_ratios(results: &[KvBenchResult]) -> Vec<String> {
    let mut counts: Vec<usize> = results.iter().map(|r| r.clients).collect();
    counts.sort_unstable();
    counts.dedup();
    let mut lines = Vec::new();
    for clients in counts {
        let reads = |name: &str| {
            results
                .iter()
                .find(|r| r.clients == clients && r.reads == name && r.read_ops_per_sec > 0.0)
                .map(|r| r.read_ops_per_sec)
        };
        let (log, ri, lease, follower) = (
            reads("log"),
            reads("read-index"),
            reads("lease"),
            reads("follower"),
        );
        let mut parts = Vec::new();
        if let Some(lease) = lease {
            let of: Vec<String> = [(log, "log"), (ri, "read-index")]
                .into_iter()
                .filter_map(|(base, name)| base.map(|b| format!("{:.2}x {name}", lease / b)))
                .collect();
            if !of.is_empty() {
                parts.push(format!("lease {}", of.join(", ")));
            }
            if let Some(f) = follower {
                parts.push(format!("follower {:.2}x lease", f / lease));
            }
        }
        if !parts.is_empty() {
            lines.push(format!("{clients} clients: {} (reads/s)", parts.join("; ")));
        }
    }
    lines
}

#[cfg(test)]
mod ratio_tests {
    use super::*;

    fn result(reads: &'static str, clients: usize, read_ops_per_sec: f64) -> KvBenchResult {
        KvBenchResult {
            workload: "mixed",
            reads,
            clients,
            ops: 1,
            errors: 0,
            seconds: 1.0,
            ops_per_sec: read_ops_per_sec,
            p50_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            read_ops_per_sec,
            read_p50_ms: 0.0,
            read_p99_ms: 0.0,
            write_ops_per_sec: 0.0,
            write_p50_ms: 0.0,
            write_p99_ms: 0.0,
            cpu_us_per_op: 0.0,
            box_busy_pct: None,
        }
    }

    #[test]
    fn the_machine_busy_share_counts_idle_and_iowait_as_idle() {
        let before = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5\n");
        assert_eq!(before, Some((150, 1000)));
        let after = parse_proc_stat("cpu  250 0 100 850 50 0 0 0 0 0\n");
        assert_eq!(busy_pct(before, after), Some(80.0), "200 busy of 250 ticks");
        assert_eq!(parse_proc_stat("intr 1 2 3"), None);
        assert_eq!(busy_pct(before, None), None);
    }

    #[test]
    fn ratios_compare_lease_with_log_and_read_index_and_follower_with_lease() {
        let rs = [
            result("log", 64, 20_000.0),
            result("read-index", 64, 25_000.0),
            result("lease", 64, 50_000.0),
            result("follower", 64, 45_000.0),
            result("log", 4, 1_000.0),
            result("lease", 4, 3_000.0),
        ];
        assert_eq!(
            read_ratios(&rs),
            vec![
                "4 clients: lease 3.00x log (reads/s)".to_string(),
                "64 clients: lease 2.50x log, 2.00x read-index; follower 0.90x lease (reads/s)"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn no_line_without_lease_or_a_baseline() {
        assert!(read_ratios(&[result("log", 64, 1.0), result("ryw", 64, 2.0)]).is_empty());
        assert!(read_ratios(&[result("lease", 64, 1.0)]).is_empty());
    }
}

#[cfg(test)]
mod workload_tests {
    use super::*;

    #[test]
    fn pairs_land_in_one_slice_or_in_two_and_never_twice_the_same_account() {
        let (n, regions) = (10_000, 4);
        let mut rng = rand::thread_rng();
        for _ in 0..2_000 {
            let (a, b) = transfer_pair(n, regions, false, &mut rng);
            assert_ne!(a, b);
            assert_eq!(a / (n / regions), b / (n / regions), "same region");
            let (a, b) = transfer_pair(n, regions, true, &mut rng);
            assert_ne!(a / (n / regions), b / (n / regions), "two regions");
        }
    }

    #[test]
    fn the_process_cpu_time_grows_with_work() {
        let before = process_cpu_time();
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(
            process_cpu_time() > before,
            "300 ms of spinning used no CPU time"
        );
    }
}
