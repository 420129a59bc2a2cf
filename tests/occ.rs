//! OCC with read versions on a 3-store cluster, through `TxnClient::occ_begin`: a commit
//! whose versions match applies every write; a stale version aborts with nothing applied
//! and names the key; an abort across regions releases every lock it took; a transaction
//! built from a read set made elsewhere commits; concurrent increments with retries lose
//! no update; a partition and a leader kill in the middle of cross-region commits leave
//! every commit all or nothing.

use crate::common;
use crate::common::{prewrite_req, Cluster};
use regatta_client::{Error, OccOutcome, TxnClient};
use regatta_proto::txnpb::{RollbackRequest, TxnRequest};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Every scenario ends within this (each client call has its own deadline too).
const SCENARIO_BOUND: Duration = Duration::from_secs(120);

async fn txn_client(cluster: &Cluster) -> TxnClient {
    cluster
        .txn_client_with_deadline(Duration::from_secs(30))
        .await
}

fn num(v: Option<Vec<u8>>) -> i64 {
    v.map_or(0, |v| {
        String::from_utf8_lossy(&v)
            .parse()
            .expect("a number was stored")
    })
}

/// Writes `key = value` by an OCC transaction with no reads.
async fn set(txns: &TxnClient, key: &[u8], value: &[u8]) -> u64 {
    let mut t = txns.occ_begin();
    t.write(key, value);
    let out = t.commit().await.expect("blind write");
    assert!(
        out.committed,
        "a blind write of a fresh key commits: {out:?}"
    );
    out.commit_ts
}

/// Goal: a commit whose read versions still hold applies every write, and the versions
/// reads answer are the commit ts of each key's newest write (0 for one never written).
/// Method: write a, read a and the unwritten b, write b, commit; read both again.
#[actix_rt::test]
async fn a_commit_with_matching_versions_applies_every_write() {
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    tokio::time::timeout(SCENARIO_BOUND, async {
        let a_ts = set(&txns, b"a", b"1").await;
        let mut t = txns.occ_begin();
        assert_eq!(t.read(b"a").await.unwrap(), (Some(b"1".to_vec()), a_ts));
        assert_eq!(t.read(b"b").await.unwrap(), (None, 0));
        t.write(b"b", b"2");
        assert_eq!(
            t.read(b"b").await.unwrap(),
            (Some(b"2".to_vec()), 0),
            "own write"
        );
        let out = t.commit().await.unwrap();
        assert!(out.committed && out.changed_key.is_none(), "{out:?}");
        assert!(out.commit_ts > a_ts && out.log_index > 0, "{out:?}");
        let mut check = txns.occ_begin();
        assert_eq!(check.read(b"a").await.unwrap(), (Some(b"1".to_vec()), a_ts));
        assert_eq!(
            check.read(b"b").await.unwrap(),
            (Some(b"2".to_vec()), out.commit_ts)
        );
        // A delete is a version too: reading it answers no value at the delete's ts.
        let mut d = txns.occ_begin();
        d.delete(b"b");
        let del = d.commit().await.unwrap();
        assert!(del.committed);
        let mut check = txns.occ_begin();
        assert_eq!(check.read(b"b").await.unwrap(), (None, del.commit_ts));
    })
    .await
    .expect("scenario bound");
}

/// Goal: a read version that changed before the commit aborts it, names the key, and
/// applies none of its writes. Method: read a, let another writer change a, then commit
/// a write of b and of a.
#[actix_rt::test]
async fn a_stale_version_aborts_and_applies_nothing() {
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    tokio::time::timeout(SCENARIO_BOUND, async {
        set(&txns, b"a", b"1").await;
        let mut t = txns.occ_begin();
        let (_, version) = t.read(b"a").await.unwrap();
        let newer = set(&txns, b"a", b"5").await;
        t.write(b"a", b"2");
        t.write(b"b", b"2");
        let out = t.commit().await.unwrap();
        assert_eq!(
            out,
            OccOutcome {
                committed: false,
                changed_key: Some(b"a".to_vec()),
                commit_ts: 0,
                log_index: 0,
            }
        );
        assert!(newer > version);
        let mut check = txns.occ_begin();
        assert_eq!(
            check.read(b"a").await.unwrap(),
            (Some(b"5".to_vec()), newer)
        );
        assert_eq!(
            check.read(b"b").await.unwrap(),
            (None, 0),
            "nothing applied"
        );
    })
    .await
    .expect("scenario bound");
}

/// Goal: an abort across two regions releases every lock the attempt took, so a writer
/// that comes after the answer meets none. Method: two regions; read `a` (left) and `z`
/// (right), change `z` behind the transaction's back, commit writes of both (the left
/// region validates and locks, the right one refuses); then prewrite both keys directly
/// as another transaction and expect no lock.
#[actix_rt::test]
async fn an_abort_across_regions_releases_every_lock() {
    let cluster = Cluster::new(3, 1).await;
    let admin = cluster.client().await;
    admin.split(b"m").await.expect("split");
    let txns = txn_client(&cluster).await;
    tokio::time::timeout(SCENARIO_BOUND, async {
        set(&txns, b"a", b"1").await;
        set(&txns, b"z", b"1").await;
        assert_ne!(cluster.region_of(b"a").await, cluster.region_of(b"z").await);
        for round in 0..3 {
            let mut t = txns.occ_begin();
            t.read(b"a").await.unwrap();
            t.read(b"z").await.unwrap();
            set(&txns, b"z", format!("{}", 10 + round).as_bytes()).await;
            t.write(b"a", b"x");
            t.write(b"z", b"x");
            let out = t.commit().await.unwrap();
            assert!(!out.committed, "{out:?}");
            assert_eq!(out.changed_key.as_deref(), Some(&b"z"[..]));
            let start_ts = txns.current_timestamp().await.unwrap();
            for key in [&b"a"[..], b"z"] {
                let resp = cluster
                    .send_txn(key, prewrite_req(key, &[(key, b"y")], start_ts, 3_000))
                    .await;
                let txn = resp.get_response().get_txn();
                assert!(
                    !resp.has_error() && !txn.has_key_error(),
                    "round {round}: a later writer of {key:?} met {resp:?}"
                );
                let mut r = RollbackRequest::new();
                r.set_keys(vec![key.to_vec()].into());
                r.set_start_ts(start_ts);
                let mut cmd = TxnRequest::new();
                cmd.set_rollback(r);
                cluster.send_txn(key, cmd).await;
            }
            let mut check = txns.occ_begin();
            assert_eq!(check.read(b"a").await.unwrap().0, Some(b"1".to_vec()));
        }
    })
    .await
    .expect("scenario bound");
}

/// Goal: a transaction that never read anything itself (a JSON client whose `occ_begin`
/// went to another node: an unknown txn id) commits from the read set it is given, and
/// aborts when that read set is stale. Method: read versions with one OccTxn, drop it,
/// build another with `occ_from_reads`.
#[actix_rt::test]
async fn an_occ_txn_built_from_a_read_set_commits_or_aborts_by_it() {
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    tokio::time::timeout(SCENARIO_BOUND, async {
        set(&txns, b"k", b"1").await;
        // Read through another handle: the raw client's, on the same key space.
        let raw = cluster.client().await;
        let mut reader = raw.occ_begin();
        let (_, version) = reader.read(b"k").await.unwrap();
        drop(reader);
        let mut t = txns.occ_from_reads([(b"k".to_vec(), version)]);
        assert_eq!(t.read_versions(), vec![(b"k".to_vec(), version)]);
        t.write(b"k", b"2");
        let out = t.commit().await.unwrap();
        assert!(out.committed, "{out:?}");
        // The same read set again is stale now.
        let mut t = txns.occ_from_reads([(b"k".to_vec(), version)]);
        t.write(b"k", b"3");
        let out = t.commit().await.unwrap();
        assert_eq!(
            (out.committed, out.changed_key),
            (false, Some(b"k".to_vec()))
        );
        let mut check = txns.occ_begin();
        assert_eq!(check.read(b"k").await.unwrap().0, Some(b"2".to_vec()));
    })
    .await
    .expect("scenario bound");
}

/// Goal: concurrent read-modify-write increments of one key, retried from the read on
/// abort, never lose an update. Method: 6 clients x 8 increments; the final value must
/// equal the number of commits, and some attempts must have aborted.
#[actix_rt::test]
async fn concurrent_occ_increments_never_lose_an_update() {
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    let commits = Arc::new(AtomicU64::new(0));
    let aborts = Arc::new(AtomicU64::new(0));
    tokio::time::timeout(SCENARIO_BOUND, async {
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (txns, commits, aborts) = (txns.clone(), commits.clone(), aborts.clone());
            // tokio::spawn: the client's futures are Send (an application's runtime may move them).
            tasks.push(tokio::spawn(async move {
                for _ in 0..8 {
                    loop {
                        let mut t = txns.occ_begin();
                        let n = num(t.read(b"counter").await.expect("read").0);
                        t.write(b"counter", (n + 1).to_string().as_bytes());
                        match t.commit().await {
                            Ok(out) if out.committed => {
                                commits.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Ok(_) => {
                                aborts.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("an increment failed: {e}"),
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("client task");
        }
        let mut check = txns.occ_begin();
        let final_value = num(check.read(b"counter").await.unwrap().0);
        assert_eq!(final_value, 48);
        assert_eq!(commits.load(Ordering::Relaxed), 48);
    })
    .await
    .expect("scenario bound");
}

/// Goal: cross-region OCC commits stay all or nothing when a leader is cut off by a
/// partition and another is killed while they run. Method: two regions, two accounts
/// `a` (left) and `z` (right) summing to 100; 4 clients move 1 from one to the other by
/// OCC (read both, write both), retrying aborts; the left leader is isolated and healed,
/// then the right leader's store crashes and restarts. At the end the sum is still 100,
/// and `z` moved by exactly the committed moves, give or take the undetermined ones.
#[actix_rt::test]
async fn a_partition_and_a_leader_kill_mid_commit_leave_all_or_nothing() {
    let mut cluster = Cluster::new(3, 1).await;
    let admin = cluster.client().await;
    admin.split(b"m").await.expect("split");
    let txns = txn_client(&cluster).await;
    let moved = Arc::new(AtomicU64::new(0));
    let undetermined = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    set(&txns, b"a", b"100").await;
    set(&txns, b"z", b"0").await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (txns, moved, undetermined, stop) = (
            txns.clone(),
            moved.clone(),
            undetermined.clone(),
            stop.clone(),
        );
        tasks.push(actix_rt::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let attempt = async {
                    let mut t = txns.occ_begin();
                    let a = num(t.read(b"a").await?.0);
                    let z = num(t.read(b"z").await?.0);
                    t.write(b"a", (a - 1).to_string().as_bytes());
                    t.write(b"z", (z + 1).to_string().as_bytes());
                    t.commit().await
                };
                match attempt.await {
                    Ok(out) if out.committed => {
                        moved.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(Error::CommitUndetermined { .. }) => {
                        undetermined.fetch_add(1, Ordering::Relaxed);
                    }
                    // Faults may outlast one operation's deadline; the attempt did not
                    // commit and the next one starts from the reads.
                    Err(e) if e.is_retryable() => {}
                    Err(e) => panic!("a move failed: {e}"),
                }
            }
        }));
    }
    tokio::time::timeout(SCENARIO_BOUND, async {
        let progress = |n: u64| {
            let moved = moved.clone();
            async move {
                common::wait_until("moves", Duration::from_secs(60), || {
                    let moved = moved.clone();
                    async move { moved.load(Ordering::Relaxed) >= n }
                })
                .await
            }
        };
        progress(5).await;
        let left = cluster.region_of(b"a").await;
        let right = cluster.region_of(b"z").await;
        cluster.isolate_leader(left).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.heal();
        let m = moved.load(Ordering::Relaxed);
        progress(m + 5).await;
        let victim = cluster.wait_leader(right).await;
        cluster.crash(victim).await;
        let m = moved.load(Ordering::Relaxed);
        progress(m + 5).await;
        cluster.restart(victim).await;
        let m = moved.load(Ordering::Relaxed);
        progress(m + 5).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("client task");
        }
        let mut check = txns.occ_begin();
        let a = num(check.read(b"a").await.unwrap().0);
        let z = num(check.read(b"z").await.unwrap().0);
        assert_eq!(a + z, 100, "a = {a}, z = {z}: a move applied in part");
        let (m, u) = (
            moved.load(Ordering::Relaxed) as i64,
            undetermined.load(Ordering::Relaxed) as i64,
        );
        assert!(
            z >= m && z <= m + u,
            "z = {z} after {m} acknowledged and {u} undetermined moves"
        );
    })
    .await
    .expect("scenario bound");
}
