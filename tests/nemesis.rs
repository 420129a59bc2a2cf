//! Everything at once: region splits, partitions, a lossy network, store crashes and log
//! compactions under concurrent clients. Method: six clients (half reading by lease, half
//! by ReadIndex) do random gets / puts / deletes / CASes on 16 keys spread over the key
//! space while a seeded nemesis splits regions, isolates a store, makes the network drop,
//! duplicate and delay messages, and crashes and restarts stores (logs compact after 30
//! entries, so replicas that fall behind catch up by snapshot, some past a split). The
//! history must be linearizable, and afterwards every store must host every region,
//! caught up.
//!
//! The nemesis's schedule, the clients' operations and keys and the network's faults all
//! come from the run's seed: `REGATTA_TEST_SEED=N` replays a run (the seed is printed and
//! listed with the faults on failure), `REGATTA_NEMESIS_ROUNDS` (default 12) lengthens it.
//! Between two faults the clients must get answers again; afterwards, healed, the cluster
//! must answer a full workload.

use crate::common;
use crate::common::{random_op_with, run_workload, wait_until, Cluster, Recorder};
use rand::Rng;
use regatta_client::ReadConsistency;
use regatta_server::StoreConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[actix_rt::test]
async fn splits_partitions_and_crashes_together_stay_linearizable() {
    nemesis(1).await;
}

/// The same with each store's regions and connections spread over two raft threads
/// (`StoreConfig::raft_threads`): a split's two halves usually land on different threads.
#[actix_rt::test]
async fn splits_partitions_and_crashes_on_two_raft_threads_stay_linearizable() {
    nemesis(2).await;
}

async fn nemesis(raft_threads: usize) {
    let config = StoreConfig {
        raft_log_gc_count_limit: 30,
        raft_threads,
        ..StoreConfig::default()
    };
    let mut cluster = Cluster::with_config(3, 1, config).await;
    let keys = common::spread_keys(16);
    let rec = Recorder::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..6 {
        // Half the clients read by lease, half by ReadIndex: both must stay linearizable.
        let reads = if i % 2 == 0 {
            ReadConsistency::Lease
        } else {
            ReadConsistency::Linearizable
        };
        let client = cluster.client_with_deadline(Duration::from_secs(8)).await;
        let (rec, keys, stop) = (rec.clone(), keys.clone(), stop.clone());
        let mut rng = cluster.rng();
        workers.push(actix_rt::spawn(async move {
            let mut known = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let key = keys[rng.gen_range(0..keys.len())].clone();
                let unique = common::next_unique();
                let op = random_op_with(&client, &rec, &key, unique, reads, &mut rng);
                if let common::Outcome::Known(_) = op.await {
                    known += 1;
                }
            }
            known
        }));
    }

    let admin = cluster.client_with_deadline(Duration::from_secs(8)).await;
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut rng = cluster.rng();
    let mut faults = vec![format!("REGATTA_TEST_SEED={}", cluster.seed)];
    for round in 0..env("REGATTA_NEMESIS_ROUNDS", 12) {
        // Before each fault the clients get answers again: the last one did not wedge
        // the cluster.
        let answered = rec.answered();
        wait_until(
            &format!("10 more answers after {faults:?}"),
            Duration::from_secs(60),
            || async { rec.answered() >= answered + 10 },
        )
        .await;
        let store = rng.gen_range(1..=3u64);
        match round % 4 {
            0 => {
                // A key that starts a region already is refused: that is fine.
                let key = &keys[rng.gen_range(1..keys.len())];
                let split = admin.split(key).await.is_ok();
                faults.push(format!("split at {key:?}: {split}"));
            }
            1 => {
                cluster.isolate(store);
                tokio::time::sleep(Duration::from_millis(800)).await;
                cluster.heal();
                faults.push(format!("isolated store {store}"));
            }
            2 => {
                cluster.unreliable(0.1, 0.05, 30);
                tokio::time::sleep(Duration::from_millis(800)).await;
                cluster.heal();
                faults.push("dropped, duplicated and delayed messages".into());
            }
            _ => {
                cluster.crash(store).await;
                tokio::time::sleep(Duration::from_millis(600)).await;
                cluster.restart(store).await;
                faults.push(format!("crashed and restarted store {store}"));
            }
        }
    }
    let answered = rec.answered();
    wait_until(
        &format!("10 more answers after {faults:?}"),
        Duration::from_secs(60),
        || async { rec.answered() >= answered + 10 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut known = 0;
    for w in workers {
        known += w.await.expect("worker");
    }
    // Healed, the cluster answers every operation of a fresh workload on the same keys
    // (recorded in the same history).
    let healthy = run_workload(&cluster, &rec, 4, 25, &keys, Duration::from_secs(20)).await;
    assert_eq!(
        healthy,
        4 * 25,
        "the healed cluster left operations unanswered ({known} answered under the \
         nemesis); faults: {faults:?}"
    );
    rec.assert_linearizable();

    let regions = admin.pd().scan_regions(b"", b"", 0).await.unwrap();
    assert!(
        regions.len() > 1,
        "no split took effect; faults: {faults:?}"
    );
    wait_until(
        "every store hosts every region, caught up",
        Duration::from_secs(60),
        || async {
            for (r, _) in &regions {
                let leader = cluster.wait_leader(r.get_id()).await;
                let Some(ls) = cluster.status(leader, r.get_id()).await else {
                    return false;
                };
                for store in 1..=3 {
                    match cluster.status(store, r.get_id()).await {
                        Some(st)
                            if st.applied_index >= ls.commit_index
                                && st.region.get_region_epoch() == ls.region.get_region_epoch() => {
                        }
                        _ => return false,
                    }
                }
            }
            true
        },
    )
    .await;
}
