//! Transactions on a 3-store cluster under faults, through the transaction client: a bank
//! whose history is checked for snapshot isolation (`common/si.rs`) through partitions,
//! leader kills, store restarts, leader transfers and a split; concurrent increments of
//! one key that never lose an update; locks of a client that died after prewrite, resolved
//! by others once their TTL ran out; a committed primary whose secondaries were never
//! committed, resolved to committed.

mod common;
#[path = "common/si.rs"]
mod si;

use common::{commit_req, prewrite_req, wait_until, Cluster};
use rand::Rng;
use regatta_client::{Config, Error, Transaction, TxnClient, TxnMode, TxnOptions};
use regatta_proto::txnpb::TxnRequest;
use si::{Outcome, SnapshotRead, Txn};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ACCOUNTS: usize = 12;
const INITIAL: i64 = 100;

fn account(i: usize) -> Vec<u8> {
    format!("bank/{i:03}").into_bytes()
}

fn accounts() -> Vec<Vec<u8>> {
    (0..ACCOUNTS).map(account).collect()
}

async fn txn_client(cluster: &Cluster) -> TxnClient {
    let cfg = Config {
        op_timeout: Duration::from_secs(30),
        rpc_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    TxnClient::connect_with(&[cluster.pg.pd_addr()], cfg)
        .await
        .expect("transaction client connects")
}

/// The writer and balance of a tagged account value.
fn read_account(value: Option<Vec<u8>>) -> (i64, u64) {
    let v = value.expect("an account is never deleted");
    let (payload, writer) = si::untag(&v);
    (payload.parse().expect("a balance"), writer)
}

/// One transfer attempt, recorded whatever its end. Reads both accounts, moves `amount`
/// if the source has it (writing both, tagged with `id`), commits.
async fn transfer(txns: &TxnClient, mode: TxnMode, id: u64, from: usize, to: usize) -> Txn {
    let opts = TxnOptions {
        mode,
        ..TxnOptions::default()
    };
    let mut rec = Txn {
        id,
        start_ts: 0,
        reads_at_start: mode == TxnMode::Optimistic,
        reads: Vec::new(),
        writes: Vec::new(),
        outcome: Outcome::Aborted,
    };
    let mut t = match txns.begin_with(opts).await {
        Ok(t) => t,
        Err(_) => return rec,
    };
    rec.start_ts = t.start_ts();
    async fn read(t: &mut Transaction, mode: TxnMode, key: &[u8]) -> Result<(i64, u64), Error> {
        let v = match mode {
            TxnMode::Optimistic => t.get(key).await?,
            TxnMode::Pessimistic => t.get_for_update(key).await?,
        };
        Ok(read_account(v))
    }
    let (a, b) = (account(from), account(to));
    let reads = async {
        let ra = read(&mut t, mode, &a).await?;
        let rb = read(&mut t, mode, &b).await?;
        Ok::<_, Error>((ra, rb))
    }
    .await;
    let ((bal_a, wa), (bal_b, wb)) = match reads {
        Ok(r) => r,
        Err(_) => {
            let _ = t.rollback().await;
            return rec;
        }
    };
    rec.reads = vec![(a.clone(), wa), (b.clone(), wb)];
    let amount = 1 + (id % 7) as i64;
    if bal_a >= amount {
        t.put(&a, &si::tag(&(bal_a - amount).to_string(), id));
        t.put(&b, &si::tag(&(bal_b + amount).to_string(), id));
        rec.writes = vec![a, b];
    }
    rec.outcome = match t.commit().await {
        Ok(ts) => Outcome::Committed(ts),
        Err(Error::CommitUndetermined { .. }) => Outcome::Unknown,
        Err(_) => Outcome::Aborted,
    };
    rec
}

/// Reads every account in one snapshot at a fresh ts; `None` if the read failed (a fault
/// window). Asserts the total.
async fn audit(txns: &TxnClient) -> Option<SnapshotRead> {
    let ts = txns.current_timestamp().await.ok()?;
    let values = txns.snapshot(ts).batch_get(&accounts()).await.ok()?;
    let mut total = 0;
    let mut reads = Vec::new();
    for (key, v) in accounts().into_iter().zip(values) {
        let (bal, writer) = read_account(v);
        total += bal;
        reads.push((key, writer));
    }
    assert_eq!(
        total,
        INITIAL * ACCOUNTS as i64,
        "a snapshot at {ts} does not sum to the total"
    );
    Some(SnapshotRead { ts, reads })
}

/// Goal: the bank's history stays snapshot-isolated, every snapshot sums to the total and
/// nothing acknowledged is lost, through a leader isolated by a partition, a store crash
/// and restart, a split of a region under the accounts, a leader transfer and a minority
/// partition. Method: 6 clients (half optimistic, half pessimistic) transfer between
/// random accounts over two regions, an auditor reads all accounts in snapshots, a nemesis
/// runs one fault after each 25 more commits; then the whole history goes to the checker.
#[actix_rt::test]
async fn bank_history_is_snapshot_isolated_through_partitions_crashes_and_splits() {
    let mut cluster = Cluster::new(3, 1).await;
    let admin = cluster.client().await;
    admin.split(&account(ACCOUNTS / 2)).await.expect("split");
    let txns = txn_client(&cluster).await;

    // Open the accounts in one 2PC transaction across both regions.
    let mut open = txns.begin_optimistic().await.unwrap();
    for key in accounts() {
        open.put(&key, &si::tag(&INITIAL.to_string(), si::SETUP_TXN));
    }
    let setup_ts = open.commit().await.expect("accounts open");

    let history = Arc::new(Mutex::new(Vec::<Txn>::new()));
    let snapshots = Arc::new(Mutex::new(Vec::<SnapshotRead>::new()));
    let commits = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for c in 0..6u64 {
        let (txns, history, commits, stop, next_id) = (
            txns.clone(),
            history.clone(),
            commits.clone(),
            stop.clone(),
            next_id.clone(),
        );
        let mut rng = cluster.rng();
        let mode = if c % 2 == 0 {
            TxnMode::Optimistic
        } else {
            TxnMode::Pessimistic
        };
        tasks.push(actix_rt::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let from = rng.gen_range(0..ACCOUNTS);
                let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let rec = transfer(&txns, mode, id, from, to).await;
                if matches!(rec.outcome, Outcome::Committed(_)) {
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                history.lock().unwrap().push(rec);
            }
        }));
    }
    {
        let (txns, snapshots, stop) = (txns.clone(), snapshots.clone(), stop.clone());
        tasks.push(actix_rt::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(s) = audit(&txns).await {
                    snapshots.lock().unwrap().push(s);
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }
    // Each nemesis step waits for `n` more commits and one more audited snapshot.
    let more_commits = |n: u64| {
        let (commits, snapshots) = (commits.clone(), snapshots.clone());
        let target = commits.load(Ordering::Relaxed) + n;
        let audited = snapshots.lock().unwrap().len() + 1;
        async move {
            wait_until(
                &format!("{target} commits and {audited} snapshots"),
                Duration::from_secs(90),
                || async {
                    commits.load(Ordering::Relaxed) >= target
                        && snapshots.lock().unwrap().len() >= audited
                },
            )
            .await
        }
    };

    more_commits(25).await;
    let left = cluster.region_of(&account(0)).await;
    let right = cluster.region_of(&account(ACCOUNTS - 1)).await;
    // 1. The left region's leader cut off until the majority elects another.
    cluster.isolate_leader(left).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.heal();
    more_commits(25).await;
    // 2. The right region's leader's store crashes, then restarts from disk.
    let victim = cluster.wait_leader(right).await;
    cluster.crash(victim).await;
    more_commits(15).await;
    cluster.restart(victim).await;
    more_commits(25).await;
    // 3. A split in the middle of the left region's accounts.
    admin
        .split(&account(ACCOUNTS / 4))
        .await
        .expect("split under load");
    more_commits(25).await;
    // 4. A leader transfer in the right region.
    let leader = cluster.wait_leader(right).await;
    let other = if leader == 1 { 2 } else { 1 };
    cluster.request_leadership(other, right);
    more_commits(25).await;
    // 5. A minority partition: one store cut from the other two, then healed.
    cluster.partition(&[3], &[1, 2]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.heal();
    more_commits(25).await;

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    // The final state, in one snapshot after every client stopped.
    let last = audit(&txns).await.expect("final read");
    let history = history.lock().unwrap().clone();
    let snapshots = snapshots.lock().unwrap().clone();
    let committed = history
        .iter()
        .filter(|t| matches!(t.outcome, Outcome::Committed(_)))
        .count();
    assert!(committed >= 165, "only {committed} commits");
    let count = |o: fn(&Outcome) -> bool| history.iter().filter(|t| o(&t.outcome)).count();
    eprintln!(
        "bank: {} attempts, {committed} committed, {} aborted, {} undetermined, {} snapshots",
        history.len(),
        count(|o| *o == Outcome::Aborted),
        count(|o| *o == Outcome::Unknown),
        snapshots.len()
    );
    let errors = si::check(&history, &snapshots, setup_ts, &last.reads);
    assert!(
        errors.is_empty(),
        "{} violations of snapshot isolation in {} transactions (seed {}), first: {:#?}",
        errors.len(),
        history.len(),
        cluster.seed,
        &errors[..errors.len().min(10)]
    );
}

/// Goal: concurrent read-modify-write increments of one key, optimistic and pessimistic,
/// never lose an update, also across a leader change: the final value is the number of
/// increments that committed. Method: 8 clients x 12 increments with `TxnClient::run`
/// (retries on conflicts), a leader transfer in the middle.
#[actix_rt::test]
async fn concurrent_increments_of_one_key_lose_no_update() {
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    let key = b"counter".to_vec();
    let done = Arc::new(AtomicU64::new(0));
    let undetermined = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..8u64 {
        let (txns, key, done, undetermined) = (
            txns.clone(),
            key.clone(),
            done.clone(),
            undetermined.clone(),
        );
        tasks.push(actix_rt::spawn(async move {
            let opts = if c % 2 == 0 {
                TxnOptions::optimistic()
            } else {
                TxnOptions::pessimistic()
            };
            let opts = TxnOptions {
                retry_timeout: Duration::from_secs(60),
                ..opts
            };
            for _ in 0..12 {
                let r = txns
                    .run(opts.clone(), |t| {
                        let key = key.clone();
                        let mode = opts.mode;
                        Box::pin(async move {
                            let v = match mode {
                                TxnMode::Optimistic => t.get(&key).await?,
                                TxnMode::Pessimistic => t.get_for_update(&key).await?,
                            };
                            let n: u64 = v.map_or(0, |v| {
                                String::from_utf8_lossy(&v).parse().expect("a count")
                            });
                            t.put(&key, (n + 1).to_string().as_bytes());
                            Ok(())
                        })
                    })
                    .await;
                match r {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(Error::CommitUndetermined { .. }) => {
                        undetermined.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => panic!("an increment failed: {e}"),
                };
            }
        }));
    }
    let region = cluster.region_of(&key).await;
    wait_until("30 increments", Duration::from_secs(60), || async {
        done.load(Ordering::Relaxed) >= 30
    })
    .await;
    let leader = cluster.wait_leader(region).await;
    cluster.request_leadership(if leader == 1 { 2 } else { 1 }, region);
    for t in tasks {
        t.await.unwrap();
    }
    let snap = txns.snapshot(txns.current_timestamp().await.unwrap());
    let v: u64 = String::from_utf8_lossy(&snap.get(&key).await.unwrap().expect("counter"))
        .parse()
        .unwrap();
    let (done, undetermined) = (
        done.load(Ordering::Relaxed),
        undetermined.load(Ordering::Relaxed),
    );
    assert!(
        v >= done && v <= done + undetermined,
        "counter {v} after {done} committed increments ({undetermined} undetermined)"
    );
}

/// Sends a transactional command to the leader of `route_key`'s region; it must succeed.
async fn send(cluster: &Cluster, route_key: &[u8], txn: TxnRequest) {
    let resp = cluster.send_txn(route_key, txn).await;
    assert!(!resp.has_error(), "store error: {:?}", resp.get_error());
    let t = resp.get_response().get_txn();
    assert!(!t.has_key_error(), "{:?}", t.get_key_error());
}

/// Goal: a client that died after prewriting in two regions (its locks left behind, no
/// heartbeat) blocks nobody past its TTL: a reader gets the old values, and a writer
/// commits over the keys. And a transaction whose primary committed but whose secondary
/// was never committed reads as committed everywhere. Method: the dead clients' commands
/// are sent by hand, as a client would have sent them before dying.
#[actix_rt::test]
async fn locks_of_a_dead_client_are_resolved_by_others() {
    let cluster = Cluster::new(3, 1).await;
    let admin = cluster.client().await;
    admin.split(b"m").await.expect("split");
    let txns = txn_client(&cluster).await;
    let (a, z) = (b"a-key".to_vec(), b"z-key".to_vec());
    let mut t = txns.begin_optimistic().await.unwrap();
    t.put(&a, b"a0");
    t.put(&z, b"z0");
    t.commit().await.unwrap();

    // Dead client 1: prewrote both keys with a 1.5 s TTL, then died.
    let dead = txns.current_timestamp().await.unwrap();
    send(
        &cluster,
        &a,
        prewrite_req(&a, &[(&a, b"a-dead")], dead, 1_500),
    )
    .await;
    send(
        &cluster,
        &z,
        prewrite_req(&a, &[(&z, b"z-dead")], dead, 1_500),
    )
    .await;
    let snap = txns.snapshot(txns.current_timestamp().await.unwrap());
    assert_eq!(snap.get(&z).await.unwrap(), Some(b"z0".to_vec()));
    assert_eq!(snap.get(&a).await.unwrap(), Some(b"a0".to_vec()));
    // A writer over both keys commits (after resolving the expired locks).
    txns.run(TxnOptions::optimistic(), |t| {
        Box::pin(async move {
            t.put(b"a-key", b"a1");
            t.put(b"z-key", b"z1");
            Ok(())
        })
    })
    .await
    .expect("a writer commits over the dead client's locks");

    // Dead client 2: prewrote both, committed the primary `a`, died before `z`.
    let start = txns.current_timestamp().await.unwrap();
    send(
        &cluster,
        &a,
        prewrite_req(&a, &[(&a, b"a2")], start, 60_000),
    )
    .await;
    send(
        &cluster,
        &z,
        prewrite_req(&a, &[(&z, b"z2")], start, 60_000),
    )
    .await;
    let commit_ts = txns.current_timestamp().await.unwrap();
    send(&cluster, &a, commit_req(&[&a], start, commit_ts)).await;
    // Its secondary's lock lives for a minute, but the primary says committed: a reader
    // resolves it at once and sees the whole transaction.
    let snap = txns.snapshot(txns.current_timestamp().await.unwrap());
    let both = snap.batch_get(&[a.clone(), z.clone()]).await.unwrap();
    assert_eq!(both, vec![Some(b"a2".to_vec()), Some(b"z2".to_vec())]);
    // And at a ts before its commit, neither.
    let before = txns.snapshot(commit_ts - 1);
    assert_eq!(
        before.batch_get(&[a.clone(), z.clone()]).await.unwrap(),
        vec![Some(b"a1".to_vec()), Some(b"z1".to_vec())]
    );
}
