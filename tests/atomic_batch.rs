//! Atomic batches on a 3-store cluster, through `TxnClient::atomic`: gets see the batch's
//! earlier writes; batches across two regions stay all or nothing while a split cuts
//! their keys apart; a batch whose leader crashes between proposing it and applying it
//! is applied whole or not at all.

use crate::common;
use crate::common::Cluster;
use regatta_client::{AtomicOp, Error, TxnClient};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Every scenario ends within this (each client call has its own deadline too).
const SCENARIO_BOUND: Duration = Duration::from_secs(120);

async fn txn_client(cluster: &Cluster) -> TxnClient {
    cluster
        .txn_client_with_deadline(Duration::from_secs(30))
        .await
}

fn get(k: &[u8]) -> AtomicOp {
    AtomicOp::Get(k.to_vec())
}

fn put(k: &[u8], v: &[u8]) -> AtomicOp {
    AtomicOp::Put(k.to_vec(), v.to_vec())
}

/// The values of `keys` read in one atomic batch.
async fn read_all(txns: &TxnClient, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
    let ops: Vec<AtomicOp> = keys.iter().map(|k| get(k)).collect();
    txns.atomic(&ops).await.expect("read batch").results
}

/// Goal: each get of a batch sees the batch's own earlier puts and deletes, and keys it
/// did not write as stored; a one-region batch answers the log index it applied at.
/// Method: one batch of put, get, delete, get, get of an untouched key; then a read.
#[actix_rt::test]
async fn gets_see_the_batchs_earlier_writes() {
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    tokio::time::timeout(SCENARIO_BOUND, async {
        let first = txns.atomic(&[put(b"other", b"o")]).await.unwrap();
        assert!(first.results.is_empty() && first.log_index > 0, "{first:?}");
        let out = txns
            .atomic(&[
                get(b"k"),
                put(b"k", b"1"),
                get(b"k"),
                AtomicOp::Delete(b"k".to_vec()),
                get(b"k"),
                put(b"j", b"2"),
                get(b"other"),
                get(b"j"),
            ])
            .await
            .unwrap();
        assert_eq!(
            out.results,
            vec![
                None,
                Some(b"1".to_vec()),
                None,
                Some(b"o".to_vec()),
                Some(b"2".to_vec())
            ]
        );
        assert!(out.log_index > first.log_index, "{out:?} after {first:?}");
        assert_eq!(out.attempts, 1);
        let after = read_all(&txns, &[b"k".to_vec(), b"j".to_vec()]).await;
        assert_eq!(after, vec![None, Some(b"2".to_vec())]);
        // The raw client offers the same batches (on the transactional keys).
        let raw = cluster.client().await;
        let via_raw = raw.atomic(&[get(b"j")]).await.unwrap();
        assert_eq!(via_raw.results, vec![Some(b"2".to_vec())]);
        // Bad input is refused, not applied.
        assert!(matches!(
            txns.atomic(&[put(b"", b"x")]).await,
            Err(Error::InvalidArgument(_))
        ));
    })
    .await
    .expect("scenario bound");
}

/// Keys on both sides of `m` and of the later split key `f`.
fn spread() -> Vec<Vec<u8>> {
    [&b"a"[..], b"c", b"g", b"k", b"p", b"z"]
        .iter()
        .map(|k| k.to_vec())
        .collect()
}

/// Goal: batches over keys in two regions apply all or nothing, also while a split cuts
/// their keys apart. Method: 4 writers, each batch first reads every key (they must all
/// be equal: it reads one state) then writes its own number to every key; meanwhile a
/// reader batch checks that all keys are equal, and the left region splits at `f`. At the
/// end all keys hold the number of one batch.
#[actix_rt::test]
async fn batches_across_regions_are_all_or_nothing_under_a_split() {
    let cluster = Cluster::new(3, 1).await;
    let admin = cluster.client().await;
    admin.split(b"m").await.expect("split");
    let txns = txn_client(&cluster).await;
    let keys = spread();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let init: Vec<AtomicOp> = keys.iter().map(|k| put(k, b"0")).collect();
    txns.atomic(&init).await.expect("initial batch");
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (txns, keys, done, stop) = (txns.clone(), keys.clone(), done.clone(), stop.clone());
        // tokio::spawn: the client's futures are Send (an application's runtime may move them).
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let value = format!("{w}-{i}");
                let mut ops: Vec<AtomicOp> = keys.iter().map(|k| get(k)).collect();
                ops.extend(keys.iter().map(|k| put(k, value.as_bytes())));
                match txns.atomic(&ops).await {
                    Ok(out) => {
                        let first = &out.results[0];
                        assert!(
                            out.results.iter().all(|r| r == first),
                            "a batch read a mixed state: {:?}",
                            out.results
                        );
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.is_retryable() => {}
                    Err(e) => panic!("a batch failed: {e}"),
                }
            }
        }));
    }
    tokio::time::timeout(SCENARIO_BOUND, async {
        common::wait_until("10 batches", Duration::from_secs(60), || async {
            done.load(Ordering::Relaxed) >= 10
        })
        .await;
        admin.split(b"f").await.expect("split under load");
        let after_split = done.load(Ordering::Relaxed);
        common::wait_until("10 more batches", Duration::from_secs(60), || async {
            done.load(Ordering::Relaxed) >= after_split + 10
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("writer task");
        }
        assert_ne!(cluster.region_of(b"c").await, cluster.region_of(b"g").await);
        let state = read_all(&txns, &keys).await;
        assert!(
            state.iter().all(|v| *v == state[0]) && state[0].is_some(),
            "keys from different batches: {state:?}"
        );
    })
    .await
    .expect("scenario bound");
}

/// Goal: a batch proposed by a leader that crashes before the entry applies is applied
/// whole or not at all, and the client's answer says which (or that it cannot know).
/// Method: one region; cut the leader off from its followers so its proposal cannot
/// commit, send a batch writing 4 keys (it reaches the cut-off leader, which proposes
/// it), crash that leader, heal, restart it; then read the keys in one batch.
#[actix_rt::test]
async fn a_batch_is_all_or_nothing_across_a_leader_crash_between_proposal_and_apply() {
    let mut cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    let keys: Vec<Vec<u8>> = (0..4).map(|i| format!("key{i}").into_bytes()).collect();
    tokio::time::timeout(SCENARIO_BOUND, async {
        let init: Vec<AtomicOp> = keys.iter().map(|k| put(k, b"old")).collect();
        txns.atomic(&init).await.expect("initial batch");
        let region = cluster.region_of(&keys[0]).await;
        let leader = cluster.wait_leader(region).await;
        let others: Vec<u64> = (1..=3).filter(|&s| s != leader).collect();
        cluster.partition(&[leader], &others);
        let batch = {
            let (txns, ops) = (
                txns.clone(),
                keys.iter().map(|k| put(k, b"new")).collect::<Vec<_>>(),
            );
            actix_rt::spawn(async move { txns.atomic(&ops).await })
        };
        // The cut-off leader holds the batch's entry, proposed and never committed.
        common::wait_until("the batch proposed", Duration::from_secs(10), || async {
            cluster
                .status(leader, region)
                .await
                .is_some_and(|st| st.last_index > st.commit_index)
        })
        .await;
        assert!(!batch.is_finished(), "answered before its entry committed");
        cluster.crash(leader).await;
        cluster.heal();
        let outcome = batch.await.expect("batch task");
        cluster.restart(leader).await;
        let state = read_all(&txns, &keys).await;
        let all = |v: &[u8]| state.iter().all(|s| s.as_deref() == Some(v));
        match outcome {
            Ok(_) => assert!(all(b"new"), "acknowledged but {state:?}"),
            Err(Error::CommitUndetermined { .. }) | Err(Error::Timeout { .. }) => {
                assert!(all(b"new") || all(b"old"), "applied in part: {state:?}")
            }
            Err(e) => panic!("unexpected {e}"),
        }
    })
    .await
    .expect("scenario bound");
}
