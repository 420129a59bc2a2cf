//! `regatta sim`: runs the deterministic simulator (`regatta-sim`) over many seeds and
//! reports the first failing one with its shortest trace; `--seed S` replays one run.
//! Each seed runs the linearizable KV workload, the bank, or both (`--workload`).

use anyhow::Result;
use regatta_sim::{run, shrink, SimConfig, Workload};
use std::process::ExitCode;
use std::time::Instant;

/// `regatta sim`.
#[derive(clap::Args)]
pub struct SimArgs {
    /// How many seeds to run (from --start).
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Replay this one seed and print its trace (ignores --seeds and --start).
    #[arg(long)]
    seed: Option<u64>,
    /// What each seed runs: the linearizable KV workload, the bank (transactions,
    /// checked for snapshot isolation), or both, one after the other.
    #[arg(long, value_enum, default_value_t = WorkloadArg::All)]
    workload: WorkloadArg,
    /// Operations per client in each run (default: 12 for kv, 8 for the bank).
    #[arg(long)]
    ops: Option<usize>,
    /// Clients in each run.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Regions the workload's keys are cut into (static, in key order; at most one per
    /// key): with 2 or more a transfer may span regions and commit by async commit
    /// across them.
    #[arg(long, default_value_t = 2)]
    regions: usize,
    /// No crashes, restarts, partitions or failed writes (delays, reorders, drops and
    /// duplicates stay).
    #[arg(long)]
    no_faults: bool,
}

/// `--workload`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WorkloadArg {
    Kv,
    Bank,
    All,
}

impl SimArgs {
    /// The runs of `seed`, one per workload.
    fn configs(&self, seed: u64) -> Vec<SimConfig> {
        let workloads: &[Workload] = match self.workload {
            WorkloadArg::Kv => &[Workload::Kv],
            WorkloadArg::Bank => &[Workload::Bank],
            WorkloadArg::All => &[Workload::Kv, Workload::Bank],
        };
        workloads
            .iter()
            .map(|w| {
                let base = match w {
                    Workload::Kv => SimConfig::with_seed(seed),
                    Workload::Bank => SimConfig::bank(seed),
                };
                SimConfig {
                    ops_per_client: self.ops.unwrap_or(base.ops_per_client),
                    clients: self.clients,
                    regions: self.regions,
                    faults: !self.no_faults,
                    ..base
                }
            })
            .collect()
    }
}

fn workload_name(w: Workload) -> &'static str {
    match w {
        Workload::Kv => "kv",
        Workload::Bank => "bank",
    }
}

/// Runs the seeds; exit code 1 when one fails.
pub fn sim(a: SimArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        a.ops != Some(0) && a.clients > 0 && a.regions > 0,
        "--ops, --clients and --regions must be positive"
    );
    if let Some(seed) = a.seed {
        let mut failed = false;
        for cfg in a.configs(seed) {
            let r = run(&cfg);
            for line in &r.trace {
                eprintln!("{line}");
            }
            println!(
                "seed={seed} workload={} trace_hash={:016x} steps={} simulated_ms={} ops={} \
                 completed={} cross_region_async_commits={} cross_region_secondary_checks={} \
                 deadlocks={} result={}",
                workload_name(cfg.workload),
                r.trace_hash,
                r.steps,
                r.simulated.as_millis(),
                r.ops,
                r.completed,
                r.cross_region_async_commits,
                r.cross_region_secondary_checks,
                r.deadlocks,
                match &r.result {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("FAILED: {e}"),
                }
            );
            failed |= r.result.is_err();
        }
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let started = Instant::now();
    let mut last_report = Instant::now();
    let (mut ops, mut completed) = (0usize, 0usize);
    let (mut cross, mut checks, mut deadlocks) = (0usize, 0usize, 0usize);
    let end = a.start.checked_add(a.seeds).ok_or_else(|| {
        anyhow::anyhow!(
            "--start {} plus --seeds {} passes the last seed",
            a.start,
            a.seeds
        )
    })?;
    for (n, seed) in (a.start..end).enumerate() {
        for cfg in a.configs(seed) {
            let r = run(&cfg);
            ops += r.ops;
            completed += r.completed;
            cross += r.cross_region_async_commits;
            checks += r.cross_region_secondary_checks;
            deadlocks += r.deadlocks;
            if let Err(e) = &r.result {
                let name = workload_name(cfg.workload);
                eprintln!("seed {seed} ({name}) failed: {e}; shrinking");
                let (small_cfg, small) = shrink(&cfg);
                for line in &small.trace {
                    eprintln!("{line}");
                }
                println!(
                    "seeds={} failed_seed={seed} workload={name} trace_hash={:016x} \
                     shortest_ops_per_client={} error={e}",
                    n + 1,
                    small.trace_hash,
                    small_cfg.ops_per_client
                );
                println!(
                    "replay: regatta sim --seed {seed} --workload {name} --ops {} --clients {} \
                     --regions {}{}",
                    small_cfg.ops_per_client,
                    small_cfg.clients,
                    small_cfg.regions,
                    if small_cfg.faults { "" } else { " --no-faults" }
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        if last_report.elapsed().as_secs() >= 10 {
            last_report = Instant::now();
            let rate = (n + 1) as f64 / started.elapsed().as_secs_f64();
            eprintln!("{} seeds passed ({rate:.0} seeds/s)", n + 1);
        }
    }
    let secs = started.elapsed().as_secs_f64().max(f64::EPSILON);
    println!(
        "seeds={} workload={} failed=0 seeds_per_s={:.1} seeds_per_hour={:.0} ops={ops} \
         completed={completed} cross_region_async_commits={cross} \
         cross_region_secondary_checks={checks} deadlocks={deadlocks}",
        a.seeds,
        match a.workload {
            WorkloadArg::Kv => "kv",
            WorkloadArg::Bank => "bank",
            WorkloadArg::All => "kv+bank",
        },
        a.seeds as f64 / secs,
        a.seeds as f64 / secs * 3600.0
    );
    Ok(ExitCode::SUCCESS)
}
