//! `regatta sim`: runs the deterministic simulator (`regatta-sim`) over many seeds and
//! reports the first failing one with its shortest trace; `--seed S` replays one run.

use anyhow::Result;
use regatta_sim::{run, shrink, SimConfig};
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
    /// Operations per client in each run.
    #[arg(long, default_value_t = 12)]
    ops: usize,
    /// Clients in each run.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// No crashes, restarts, partitions or failed writes (delays, reorders, drops and
    /// duplicates stay).
    #[arg(long)]
    no_faults: bool,
}

impl SimArgs {
    fn config(&self, seed: u64) -> SimConfig {
        SimConfig {
            ops_per_client: self.ops,
            clients: self.clients,
            faults: !self.no_faults,
            ..SimConfig::with_seed(seed)
        }
    }
}

/// Runs the seeds; exit code 1 when one fails.
pub fn sim(a: SimArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        a.ops > 0 && a.clients > 0,
        "--ops and --clients must be positive"
    );
    if let Some(seed) = a.seed {
        let r = run(&a.config(seed));
        for line in &r.trace {
            eprintln!("{line}");
        }
        println!(
            "seed={seed} trace_hash={:016x} steps={} simulated_ms={} ops={} completed={} result={}",
            r.trace_hash,
            r.steps,
            r.simulated.as_millis(),
            r.ops,
            r.completed,
            match &r.result {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("FAILED: {e}"),
            }
        );
        return Ok(if r.result.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let started = Instant::now();
    let mut last_report = Instant::now();
    let (mut ops, mut completed) = (0usize, 0usize);
    let end = a.start.checked_add(a.seeds).ok_or_else(|| {
        anyhow::anyhow!(
            "--start {} plus --seeds {} passes the last seed",
            a.start,
            a.seeds
        )
    })?;
    for (n, seed) in (a.start..end).enumerate() {
        let r = run(&a.config(seed));
        ops += r.ops;
        completed += r.completed;
        if let Err(e) = &r.result {
            eprintln!("seed {seed} failed: {e}; shrinking");
            let (cfg, small) = shrink(&a.config(seed));
            for line in &small.trace {
                eprintln!("{line}");
            }
            println!(
                "seeds={} failed_seed={seed} trace_hash={:016x} shortest_ops_per_client={} \
                 error={e}",
                n + 1,
                small.trace_hash,
                cfg.ops_per_client
            );
            println!(
                "replay: regatta sim --seed {seed} --ops {}",
                cfg.ops_per_client
            );
            return Ok(ExitCode::FAILURE);
        }
        if last_report.elapsed().as_secs() >= 10 {
            last_report = Instant::now();
            let rate = (n + 1) as f64 / started.elapsed().as_secs_f64();
            eprintln!("{} seeds passed ({rate:.0} seeds/s)", n + 1);
        }
    }
    let secs = started.elapsed().as_secs_f64().max(f64::EPSILON);
    println!(
        "seeds={} failed=0 seeds_per_s={:.1} seeds_per_hour={:.0} ops={ops} completed={completed}",
        a.seeds,
        a.seeds as f64 / secs,
        a.seeds as f64 / secs * 3600.0
    );
    Ok(ExitCode::SUCCESS)
}
