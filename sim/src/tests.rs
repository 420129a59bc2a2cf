//! The simulator's own checks: a seed replays exactly, and the KV workload holds over
//! many seeds (`SIM_SEEDS` sets how many; `regatta sim --seeds N` runs more).

use super::*;

fn seeds() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

#[test]
fn one_seed_replays_exactly() {
    let cfg = SimConfig::with_seed(42);
    let (a, b) = (run(&cfg), run(&cfg));
    assert_eq!(a.trace_hash, b.trace_hash, "same seed, same trace");
    assert_eq!(a.steps, b.steps);
    assert_eq!(a.trace, b.trace);
    let other = run(&SimConfig::with_seed(43));
    assert_ne!(a.trace_hash, other.trace_hash, "another seed, another run");
}

/// Runs `make(seed)` for the seeds; each must pass, faults must have struck without
/// stopping the cluster (most operations end definitely), and writes must have taken
/// effect (a history of failures checks nothing). Returns the reports' sums of
/// cross-region async commits, cross-region secondaries' checks and deadlocks.
fn many_seeds(make: fn(u64) -> SimConfig, what: &str) -> (usize, usize, usize) {
    let n = seeds();
    let (mut ops, mut completed, mut faults, mut committed) = (0, 0, 0, 0);
    let (mut cross, mut checks, mut deadlocks) = (0, 0, 0);
    for seed in 0..n {
        let r = run(&make(seed));
        assert!(
            r.result.is_ok(),
            "{what} seed {seed} (trace hash {:016x}): {:?}\nlast decisions:\n{}",
            r.trace_hash,
            r.result,
            r.trace.join("\n")
        );
        ops += r.ops;
        completed += r.completed;
        faults += r.faults;
        committed += r.committed;
        cross += r.cross_region_async_commits;
        checks += r.cross_region_secondary_checks;
        deadlocks += r.deadlocks;
    }
    assert!(
        completed * 2 > ops,
        "{what}: {completed} of {ops} operations ended definitely over {n} seeds"
    );
    assert!(
        faults >= n as usize,
        "{what}: only {faults} faults over {n} seeds"
    );
    // A run where nothing takes effect checks nothing.
    assert!(
        committed * 5 > ops,
        "{what}: only {committed} of {ops} operations were writes that took effect"
    );
    (cross, checks, deadlocks)
}

#[test]
fn the_kv_workload_is_linearizable_under_faults_over_many_seeds() {
    let _ = many_seeds(SimConfig::with_seed, "kv");
}

#[test]
#[ignore]
fn print_some_runs() {
    for seed in 0..8 {
        let r = run(&SimConfig::with_seed(seed));
        println!(
            "seed {seed}: steps {} simulated {:?} ops {} completed {} hash {:016x}",
            r.steps, r.simulated, r.ops, r.completed, r.trace_hash
        );
        if seed == 0 {
            println!("{}", r.trace[r.trace.len().saturating_sub(60)..].join("\n"));
        }
    }
}

#[test]
fn one_bank_seed_replays_exactly() {
    let cfg = SimConfig::bank(42);
    let (a, b) = (run(&cfg), run(&cfg));
    assert_eq!(a.trace_hash, b.trace_hash, "same seed, same trace");
    assert_eq!(a.trace, b.trace);
}

#[test]
fn the_bank_workload_is_snapshot_isolated_under_faults_over_many_seeds() {
    let (cross, checks, deadlocks) = many_seeds(SimConfig::bank, "bank");
    // Two regions by default: async commits span them, and resolvers decided such
    // transactions from the other region's secondaries (a few per seed: counted over
    // enough seeds to be sure to see some).
    if seeds() >= 100 {
        assert!(cross > 0, "no async commit across two regions committed");
        assert!(
            checks > 0,
            "no async-commit lock decided by another region's secondaries"
        );
    }
    // Pessimistic transfers lock region by region, so two can close a cycle across two
    // leaders; PD's graph refuses one (a few per hundred seeds).
    if seeds() >= 300 {
        assert!(deadlocks > 0, "no deadlock was detected");
    }
}

#[test]
fn the_bank_workload_holds_on_one_region_too() {
    let _ = many_seeds(
        |seed| SimConfig {
            regions: 1,
            ..SimConfig::bank(seed)
        },
        "bank, one region",
    );
}

#[test]
#[ignore]
fn print_some_bank_runs() {
    for seed in 0..8 {
        let r = run(&SimConfig::bank(seed));
        println!(
            "seed {seed}: steps {} simulated {:?} ops {} completed {} hash {:016x} {:?}",
            r.steps, r.simulated, r.ops, r.completed, r.trace_hash, r.result
        );
        if r.result.is_err() || seed == 0 {
            let keep = [
                "bank", "crash", "restart", "isolate", "heal", "view", "fail",
            ];
            let lines: Vec<&String> = r
                .trace
                .iter()
                .filter(|l| keep.iter().any(|k| l.contains(k)))
                .collect();
            for l in lines {
                println!("{l}");
            }
        }
    }
}
