//! In-memory pessimistic locks on a real 3-store cluster (docs/ARCHITECTURE.md, "In-memory
//! pessimistic locks"): a lock that meets nothing is granted in the leader's memory and
//! enters the log with the next command on its key; it follows the region through a
//! leader transfer and a split, is written to the log when its TTL runs out (so resolvers
//! find it), and is lost with a leader that dies — its transaction then commits nothing.
//! Where a lock lives is read from the leader's count (`RegionStatus::observed`,
//! `IN_MEMORY_LOCKS`) and from `scan_lock`, which reads the log's applied state only.

use crate::common::{check_status_req, lock_req, prewrite_req, wait_until, Cluster};
use regatta_client::{Error, Transaction, TxnClient, TxnOptions};
use regatta_proto::txnpb::{
    LockInfo, PessimisticRollbackRequest, TxnHeartbeatRequest, TxnRequest, TxnResponse,
    TxnScanLockRequest, TxnStatusKind,
};
use regatta_server::{StoreConfig, TxnConfig};
use std::time::Duration;

async fn txn_client(cluster: &Cluster) -> TxnClient {
    cluster
        .txn_client_with_deadline(Duration::from_secs(20))
        .await
}

/// Pessimistic, with a long TTL and a heartbeat too slow to matter here (a heartbeat's
/// TTL is raised in memory too, but the tests' counts stay simpler without it).
fn pessimistic() -> TxnOptions {
    TxnOptions {
        lock_ttl_ms: 120_000,
        heartbeat_interval: Duration::from_secs(60),
        ..TxnOptions::pessimistic()
    }
}

async fn ts(cluster: &Cluster) -> u64 {
    cluster.client().await.pd().get_ts().await.expect("TSO")
}

/// Locks the leader of the region holding `key` keeps in memory.
async fn in_memory(cluster: &Cluster, key: &[u8]) -> u64 {
    let region = cluster.region_of(key).await;
    let leader = cluster.wait_leader(region).await;
    cluster
        .status(leader, region)
        .await
        .map_or(0, |s| s.observed(regatta_server::IN_MEMORY_LOCKS))
}

/// The locks in the applied state of the region holding `key` (not those in memory).
async fn logged_locks(cluster: &Cluster, key: &[u8]) -> Vec<LockInfo> {
    let mut s = TxnScanLockRequest::new();
    s.set_max_ts(u64::MAX >> 1);
    let mut req = TxnRequest::new();
    req.set_scan_lock(s);
    let mut resp = cluster.send_txn(key, req).await;
    assert!(!resp.has_error(), "store error: {resp:?}");
    resp.mut_response()
        .mut_txn()
        .take_scan_lock()
        .take_locks()
        .into_vec()
}

/// Begins a transaction with `opts` that locks `keys` (all in one region) and holds them
/// in the leader's memory. A leader just elected (its term's first entry not applied
/// yet) or handing over replicates a lock instead, which a loaded machine can meet: then
/// the transaction is rolled back and begun again, a bounded number of times.
async fn begin_holding(
    cluster: &Cluster,
    txns: &TxnClient,
    opts: TxnOptions,
    keys: &[&[u8]],
) -> Transaction {
    for _ in 0..ATTEMPTS {
        let mut t = txns.begin_with(opts.clone()).await.unwrap();
        let owned: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        t.lock_keys(&owned).await.unwrap();
        if in_memory(cluster, keys[0]).await == keys.len() as u64 {
            return t;
        }
        t.rollback().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no lock of {keys:?} was held in memory in {ATTEMPTS} attempts");
}

/// Locks `key` for a transaction of a fresh start ts (no client behind it, TTL `ttl_ms`)
/// until the leader holds the lock in memory (see [`begin_holding`]); returns the ts.
async fn lock_held(cluster: &Cluster, key: &[u8], ttl_ms: u64) -> u64 {
    for _ in 0..ATTEMPTS {
        let start = ts(cluster).await;
        let r = send(cluster, key, lock_req(&[key], start, ttl_ms, 0)).await;
        assert!(!r.has_key_error(), "{r:?}");
        if in_memory(cluster, key).await == 1 {
            return start;
        }
        unlock(cluster, key, start).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no lock of {key:?} was held in memory in {ATTEMPTS} attempts");
}

/// Rolls back transaction `start`'s pessimistic lock of `key`, wherever it is held.
async fn unlock(cluster: &Cluster, key: &[u8], start: u64) {
    let mut undo = PessimisticRollbackRequest::new();
    undo.set_keys(vec![key.to_vec()].into());
    undo.set_start_ts(start);
    undo.set_for_update_ts(start);
    let mut req = TxnRequest::new();
    req.set_pessimistic_rollback(undo);
    let r = send(cluster, key, req).await;
    assert!(!r.has_key_error(), "{r:?}");
}

/// A resolver's `check_txn_status` of transaction `start` on `primary`, now, rolling it
/// back if it finds no lock (as a resolver meeting a lost primary does).
async fn check_status(cluster: &Cluster, primary: &[u8], start: u64) -> TxnResponse {
    let now = ts(cluster).await;
    let r = send(cluster, primary, check_status_req(primary, start, now)).await;
    assert!(!r.has_key_error(), "{r:?}");
    r
}

/// How many times a scenario's first lock is tried until it is held in memory.
const ATTEMPTS: usize = 20;

async fn send(cluster: &Cluster, key: &[u8], req: TxnRequest) -> TxnResponse {
    let mut resp = cluster.send_txn(key, req).await;
    assert!(!resp.has_error(), "store error: {resp:?}");
    resp.mut_response().take_txn()
}

#[actix_rt::test]
async fn a_lock_is_held_in_memory_until_its_prewrite_carries_it_into_the_log() {
    // Goal: the fast path does what a replicated lock did. Method: a pessimistic
    // transaction locks k: the leader holds one lock in memory and the log none; its commit writes the value and leaves no lock anywhere.
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    let mut t = begin_holding(&cluster, &txns, pessimistic(), &[b"k"]).await;
    assert!(logged_locks(&cluster, b"k").await.is_empty());
    t.put(b"k", b"v1");
    t.commit().await.expect("commits");
    assert_eq!(in_memory(&cluster, b"k").await, 0);
    assert!(logged_locks(&cluster, b"k").await.is_empty());
    let r = txns.begin_optimistic().await.unwrap();
    assert_eq!(r.get(b"k").await.unwrap(), Some(b"v1".to_vec()));
}

#[actix_rt::test]
async fn another_transactions_prewrite_meets_a_lock_held_in_memory() {
    // Goal: a lock in memory stops writers as a replicated one does. Method: t1 locks k
    // (in memory); a prewrite of t2 on k is answered `locked` by t1, and the lock is now
    // in the log; t1 still commits.
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    let mut t1 = begin_holding(&cluster, &txns, pessimistic(), &[b"k"]).await;
    let t2 = ts(&cluster).await;
    let r = send(
        &cluster,
        b"k",
        prewrite_req(b"k", &[(b"k", b"t2")], t2, 3_000),
    )
    .await;
    assert!(r.has_key_error(), "t2's prewrite must fail: {r:?}");
    let locked = r.get_key_error().get_locked();
    assert_eq!(locked.get_start_ts(), t1.start_ts(), "{r:?}");
    assert_eq!(in_memory(&cluster, b"k").await, 0);
    assert_eq!(logged_locks(&cluster, b"k").await.len(), 1);
    t1.put(b"k", b"t1");
    t1.commit().await.expect("t1 commits");
    let r = txns.begin_optimistic().await.unwrap();
    assert_eq!(r.get(b"k").await.unwrap(), Some(b"t1".to_vec()));
}

/// How leadership moves in a transfer test.
#[derive(Clone, Copy)]
enum Transfer {
    /// A follower asks the leader for it (`MsgTransferLeader`).
    Asked,
    /// The leader is told to hand it over, as PD's leader balance does.
    Ordered,
}

/// t1 locks two keys (in memory), leadership moves to another store; the new leader
/// holds nothing in memory, the log holds both locks, and t1 commits.
async fn locks_follow(how: Transfer) {
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    let mut t1 = begin_holding(&cluster, &txns, pessimistic(), &[b"a", b"b"]).await;
    let region = cluster.region_of(b"a").await;
    let old = match how {
        Transfer::Asked => cluster.move_leader(region).await,
        Transfer::Ordered => cluster.order_transfer(region).await,
    };
    assert_ne!(cluster.wait_leader(region).await, old);
    assert_eq!(in_memory(&cluster, b"a").await, 0);
    assert_eq!(logged_locks(&cluster, b"a").await.len(), 2);
    t1.put(b"a", b"1");
    t1.put(b"b", b"2");
    t1.commit().await.expect("t1 commits after the transfer");
    let r = txns.begin_optimistic().await.unwrap();
    assert_eq!(r.get(b"b").await.unwrap(), Some(b"2".to_vec()));
}

#[actix_rt::test]
async fn locks_in_memory_follow_a_leader_transfer() {
    // Goal: a planned leader change keeps the locks. Method: `locks_follow`, a follower
    // asking for leadership.
    locks_follow(Transfer::Asked).await;
}

#[actix_rt::test]
async fn locks_in_memory_follow_a_transfer_pd_orders() {
    // Goal: PD's leader balance keeps the locks too. Method: `locks_follow`, the leader
    // told to transfer (`TransferLeader`).
    locks_follow(Transfer::Ordered).await;
}

#[actix_rt::test]
async fn a_resolver_finds_a_primary_held_in_memory_alive() {
    // Goal: check_txn_status (which rolls back a primary it does not find) sees a lock
    // held in memory. Method: a lock with a long TTL in memory; check_txn_status on it
    // with rollback_if_not_exist answers alive, and the lock is now in the log.
    let cluster = Cluster::new(3, 1).await;
    let start = lock_held(&cluster, b"p", 20_000).await;
    let r = check_status(&cluster, b"p", start).await;
    assert_eq!(
        r.get_check_txn_status().get_status(),
        TxnStatusKind::ALIVE,
        "{r:?}"
    );
    assert_eq!(in_memory(&cluster, b"p").await, 0);
    assert_eq!(logged_locks(&cluster, b"p").await.len(), 1);
}

#[actix_rt::test]
async fn a_heartbeat_raises_a_primarys_ttl_in_memory() {
    // Goal: a long transaction's heartbeats keep its primary out of the log (as TiKV's).
    // Method: a lock held in memory with a 20 s TTL; a heartbeat advising 60 s answers
    // 60 s, a second advising less keeps 60 s; the lock is still only in memory, and a
    // resolver's check then finds it alive with that TTL.
    let cluster = Cluster::new(3, 1).await;
    let start = lock_held(&cluster, b"p", 20_000).await;
    for (advise, expect) in [(60_000, 60_000), (30_000, 60_000)] {
        let mut h = TxnHeartbeatRequest::new();
        h.set_primary(b"p".to_vec());
        h.set_start_ts(start);
        h.set_advise_ttl_ms(advise);
        let mut req = TxnRequest::new();
        req.set_heartbeat(h);
        let r = send(&cluster, b"p", req).await;
        assert!(!r.has_key_error(), "{r:?}");
        assert_eq!(r.get_heartbeat().get_lock_ttl_ms(), expect);
        assert_eq!(in_memory(&cluster, b"p").await, 1);
        assert!(logged_locks(&cluster, b"p").await.is_empty());
    }
    let r = check_status(&cluster, b"p", start).await;
    let status = r.get_check_txn_status();
    assert_eq!(status.get_status(), TxnStatusKind::ALIVE, "{r:?}");
    assert_eq!(status.get_lock().get_ttl_ms(), 60_000, "{r:?}");
}

#[actix_rt::test]
async fn a_transactions_own_logged_lock_is_raised_through_the_log() {
    // Goal: relocking a key whose lock is already in the log (at a newer for_update_ts)
    // changes that lock, not a copy in memory that apply would drop. Method: a lock in
    // memory is moved into the log by a transfer; the same transaction locks again at
    // a newer for_update_ts: nothing is held in memory, and the logged lock has it.
    let cluster = Cluster::new(3, 1).await;
    let start = lock_held(&cluster, b"k", 20_000).await;
    let region = cluster.region_of(b"k").await;
    cluster.move_leader(region).await;
    assert_eq!(logged_locks(&cluster, b"k").await.len(), 1);
    let newer = ts(&cluster).await;
    let mut again = lock_req(&[b"k"], start, 20_000, 0);
    again.mut_pessimistic_lock().set_for_update_ts(newer);
    let r = send(&cluster, b"k", again).await;
    assert!(!r.has_key_error(), "{r:?}");
    assert_eq!(in_memory(&cluster, b"k").await, 0);
    let locks = logged_locks(&cluster, b"k").await;
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].get_for_update_ts(), newer, "{locks:?}");
}

#[actix_rt::test]
async fn locks_in_memory_follow_a_split() {
    // Goal: a split keeps the locks on both sides. Method: t1 locks a and m (in memory),
    // the region splits at m; each half's log holds its lock, and t1 commits across the
    // two regions.
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    let mut t1 = begin_holding(&cluster, &txns, pessimistic(), &[b"a", b"m"]).await;
    let client = cluster.client().await;
    client.split(b"m").await.expect("split");
    assert_ne!(cluster.region_of(b"a").await, cluster.region_of(b"m").await);
    for key in [b"a", b"m"] {
        assert_eq!(in_memory(&cluster, key).await, 0);
        let locks = logged_locks(&cluster, key).await;
        assert_eq!(locks.len(), 1, "{key:?}: {locks:?}");
        assert_eq!(locks[0].get_key(), key);
    }
    t1.put(b"a", b"1");
    t1.put(b"m", b"2");
    t1.commit().await.expect("t1 commits after the split");
    let r = txns.begin_optimistic().await.unwrap();
    assert_eq!(r.get(b"m").await.unwrap(), Some(b"2".to_vec()));
}

#[actix_rt::test]
async fn a_lock_lost_with_its_leader_lets_its_transaction_commit_nothing() {
    // Goal: a leader lost without a transfer takes its locks with it, and the owner
    // cannot then commit over another writer (no lost update). Method: t1 locks k (in
    // memory) and then its leader is cut off; t2 writes k under the
    // new leader; t1's commit fails, and k holds t2's value.
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    let mut setup = txns.begin_optimistic().await.unwrap();
    setup.put(b"k", b"0");
    setup.commit().await.unwrap();
    let opts = TxnOptions {
        try_one_pc: false,
        ..pessimistic()
    };
    let mut t1 = begin_holding(&cluster, &txns, opts, &[b"k"]).await;
    let region = cluster.region_of(b"k").await;
    cluster.isolate_leader(region).await;
    let mut t2 = txns.begin_optimistic().await.unwrap();
    t2.put(b"k", b"t2");
    t2.commit().await.expect("t2 commits under the new leader");
    cluster.heal();
    t1.put(b"k", b"t1");
    let r = t1.commit().await;
    assert!(r.is_err(), "t1 lost its lock: it must not commit: {r:?}");
    assert!(
        !matches!(r, Err(Error::CommitUndetermined { .. })),
        "nothing of t1 landed: {r:?}"
    );
    let r = txns.begin_optimistic().await.unwrap();
    assert_eq!(r.get(b"k").await.unwrap(), Some(b"t2".to_vec()));
}

#[actix_rt::test]
async fn an_abandoned_lock_enters_the_log_when_its_ttl_runs_out_and_is_resolved() {
    // Goal: a dead client's lock held in memory cannot hide from resolvers (and hold GC
    // back) for as long as the leader lives. Method: a lock request with a 2 s TTL
    // and no transaction behind it; once the TTL ran out the lock is in the log, and a
    // pessimistic transaction takes the key (resolving it).
    let cluster = Cluster::new(3, 1).await;
    lock_held(&cluster, b"k", 2_000).await;
    wait_until(
        "the expired lock is in the log",
        Duration::from_secs(20),
        || async { logged_locks(&cluster, b"k").await.len() == 1 },
    )
    .await;
    assert_eq!(in_memory(&cluster, b"k").await, 0);
    let txns = txn_client(&cluster).await;
    let mut t = txns.begin_with(pessimistic()).await.unwrap();
    t.get_for_update(b"k")
        .await
        .expect("the dead lock is resolved");
    t.put(b"k", b"v");
    t.commit().await.expect("commits");
}

#[actix_rt::test]
async fn a_lock_below_pds_safe_point_is_kept_out_of_memory_before_the_log_has_it() {
    // Goal: once PD's GC safe point reached the store, a lock below it is not granted in
    // memory, even while no leader has brought the safe point into its region's log yet
    // (apply refuses what the applied safe point covers; a grant that only looked at the
    // log could answer a lock whose carrying entry lands behind the safe point's).
    // Method: PD's safe point trails its clock by 2 s, region reports come every 200 ms,
    // and leaders compare safe points only every 10 min (the default), so PD's reaches
    // the store long before any log. A lock at `old` is held in memory; it is rolled
    // back; once the leader's store reports PD's safe point at or past `old`, a lock at
    // `old` goes through the log while the same leader, in the same term, with its
    // region's applied safe point still below `old`, holds a fresh lock in memory.
    let store = StoreConfig {
        region_heartbeat_interval_ms: 200,
        hibernate_after_ms: 0,
        ..StoreConfig::default()
    };
    let txn = TxnConfig::default();
    assert!(
        txn.gc_interval_ms >= 600_000,
        "leaders must not log PD's safe point here"
    );
    let cluster = Cluster::with_gc_life_time(3, 1, (store, txn), Duration::from_secs(2)).await;
    let key: &[u8] = b"old";
    let region = cluster.region_of(key).await;
    let old = lock_held(&cluster, key, 60_000).await;
    unlock(&cluster, key, old).await;
    // Where the leader is and what it knows, read from its own status.
    let leader_status = || async {
        let leader = cluster.wait_leader(region).await;
        let s = cluster
            .status(leader, region)
            .await
            .expect("the leader's status");
        (leader, s)
    };
    wait_until(
        "the leader's store heard of PD's safe point past the lock",
        Duration::from_secs(60),
        || async {
            let (_, s) = leader_status().await;
            s.observed(regatta_server::PD_GC_SAFE_POINT) >= old
        },
    )
    .await;
    let (leader, before) = leader_status().await;
    let r = send(&cluster, key, lock_req(&[key], old, 60_000, 0)).await;
    assert!(!r.has_key_error(), "{r:?}");
    assert_eq!(
        in_memory(&cluster, key).await,
        0,
        "a lock at {old} is kept out of memory"
    );
    let logged = logged_locks(&cluster, key).await;
    assert_eq!(logged.len(), 1, "the lock went through the log: {logged:?}");
    unlock(&cluster, key, old).await;
    let fresh = ts(&cluster).await;
    let r = send(&cluster, key, lock_req(&[key], fresh, 60_000, 0)).await;
    assert!(!r.has_key_error(), "{r:?}");
    let (leader_after, after) = leader_status().await;
    assert_eq!(
        (leader_after, after.term),
        (leader, before.term),
        "no leader change"
    );
    assert_eq!(
        in_memory(&cluster, key).await,
        1,
        "a lock at a fresh ts is held in memory"
    );
    let applied = after.observed(regatta_server::GC_SAFE_POINT);
    assert!(
        applied < old,
        "the region's log has a safe point ({applied}) past {old}"
    );
}
