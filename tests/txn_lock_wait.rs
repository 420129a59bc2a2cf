//! Pessimistic lock waits on a real 3-store cluster (one region): a lock request that
//! meets another transaction's lock waits in the key's FIFO queue on the leader and is
//! handed the key when it is released; deadlocks are refused by PD's waits-for graph;
//! waits end at their timeout, and a dead holder's lock is resolved after its TTL.
//! Transactions go through `TxnClient`; arrivals are sequenced by watching the leader's
//! count of waiters (`RegionStatus::observed`, `LOCK_WAITERS`), never by sleeping.

use crate::common::{lock_req, wait_until, Cluster};
use regatta_client::{Error, Transaction, TxnClient, TxnOptions};
use regatta_proto::kvrpcpb::{KvResponse, Request};
use regatta_proto::txnpb::{CommitRequest, Mutation, PrewriteRequest, TxnRequest, TxnResponse};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every scenario must end well within this (the waits in them are at most a few seconds).
const SCENARIO_BOUND: Duration = Duration::from_secs(60);

async fn txn_client(cluster: &Cluster) -> TxnClient {
    cluster
        .txn_client_with_deadline(Duration::from_secs(20))
        .await
}

fn pessimistic(lock_wait_timeout_ms: u64) -> TxnOptions {
    TxnOptions {
        lock_wait_timeout_ms,
        ..TxnOptions::pessimistic()
    }
}

/// How many lock requests wait on the leader of the (only) region.
async fn waiters(cluster: &Cluster) -> usize {
    let region = cluster.region_of(b"k").await;
    let Some(leader) = cluster.leader_of(region).await else {
        return 0;
    };
    cluster
        .status(leader, region)
        .await
        .map_or(0, |s| s.observed(regatta_server::LOCK_WAITERS) as usize)
}

async fn wait_for_waiters(cluster: &Cluster, n: usize) {
    wait_until(
        &format!("{n} lock waiters on the leader"),
        Duration::from_secs(20),
        || async { waiters(cluster).await == n },
    )
    .await;
}

/// Sends `cmd` once to the leader of the region holding `key`: one request, no retry.
async fn send_once(cluster: &Cluster, key: &[u8], cmd: TxnRequest) -> KvResponse {
    send_once_in_session(cluster, key, cmd, 0).await
}

/// As [`send_once`], under at-most-once session `client_id` (0: none), seq 1.
async fn send_once_in_session(
    cluster: &Cluster,
    key: &[u8],
    cmd: TxnRequest,
    client_id: u64,
) -> KvResponse {
    let mut req = Request::new();
    req.set_txn(cmd);
    let region = cluster.region_of(key).await;
    let leader = cluster.wait_leader(region).await;
    cluster
        .direct_request(leader, region, req, |ctx| {
            if client_id != 0 {
                ctx.set_client_id(client_id);
                ctx.set_seq(1);
            }
        })
        .await
}

fn answered(resp: &KvResponse) -> &TxnResponse {
    assert!(!resp.has_error(), "store error: {resp:?}");
    let t = resp.get_response().get_txn();
    assert!(!t.has_key_error(), "key error: {resp:?}");
    t
}

fn number(v: Option<Vec<u8>>) -> u64 {
    v.map_or(0, |b| {
        String::from_utf8_lossy(&b)
            .parse()
            .expect("a counter holds a number")
    })
}

#[actix_rt::test]
async fn two_transactions_locking_in_opposite_orders_end_with_one_commit_and_one_deadlock() {
    // Goal: A-then-B against B-then-A cannot hang. Method: t1 locks A, t2 locks B; t1
    // asks for B and waits; t2 asks for A, which would close the cycle: PD refuses it.
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    let outcome = tokio::time::timeout(SCENARIO_BOUND, async {
        let mut t1 = txns.begin_with(pessimistic(10_000)).await.unwrap();
        let mut t2 = txns.begin_with(pessimistic(10_000)).await.unwrap();
        t1.get_for_update(b"A").await.unwrap();
        t2.get_for_update(b"B").await.unwrap();
        let first = tokio::spawn(async move {
            let r = t1.get_for_update(b"B").await;
            (t1, r)
        });
        wait_for_waiters(&cluster, 1).await;
        let second = t2.get_for_update(b"A").await;
        assert!(
            matches!(second, Err(Error::Deadlock { .. })),
            "the wait that closes the cycle is refused: {second:?}"
        );
        assert!(second.as_ref().unwrap_err().is_retryable());
        t2.rollback().await.unwrap();
        let (mut t1, r) = first.await.unwrap();
        r.expect("t1 is handed B once t2 rolls back");
        t1.put(b"A", b"t1");
        t1.put(b"B", b"t1");
        t1.commit().await.expect("t1 commits")
    })
    .await;
    assert!(outcome.is_ok(), "the deadlock did not end in time");
    let check = txns.begin_optimistic().await.unwrap();
    assert_eq!(check.get(b"A").await.unwrap(), Some(b"t1".to_vec()));
    assert_eq!(check.get(b"B").await.unwrap(), Some(b"t1".to_vec()));
}

#[actix_rt::test]
async fn a_deadlock_through_a_queue_behind_another_waiter_is_found() {
    // Goal: a waiter's edge goes to the waiter ahead of it, and a cycle through that queue
    // is still a deadlock found at once. Method: t1 locks A, t2 locks B; t3 queues for B
    // (behind t2), then t1 queues for B behind t3; t2 asking for A closes
    // t2 -> t1 -> t3 -> t2 and is refused. After t2 rolls back, t3 and then t1 get B.
    let cluster = Cluster::new(3, 1).await;
    let txns = Arc::new(txn_client(&cluster).await);
    let outcome = tokio::time::timeout(SCENARIO_BOUND, async {
        let mut t1 = txns.begin_with(pessimistic(10_000)).await.unwrap();
        let mut t2 = txns.begin_with(pessimistic(10_000)).await.unwrap();
        let mut t3 = txns.begin_with(pessimistic(10_000)).await.unwrap();
        t1.get_for_update(b"A").await.unwrap();
        t2.get_for_update(b"B").await.unwrap();
        let third = tokio::spawn(async move {
            t3.get_for_update(b"B").await?;
            t3.put(b"B", b"t3");
            t3.commit().await.map(|_| ())
        });
        wait_for_waiters(&cluster, 1).await;
        let first = tokio::spawn(async move {
            let r = t1.get_for_update(b"B").await;
            (t1, r)
        });
        wait_for_waiters(&cluster, 2).await;
        let second = t2.get_for_update(b"A").await;
        assert!(
            matches!(second, Err(Error::Deadlock { .. })),
            "the wait that closes the cycle through the queue is refused: {second:?}"
        );
        t2.rollback().await.unwrap();
        third
            .await
            .unwrap()
            .expect("t3 is handed B first, and commits");
        let (mut t1, r) = first.await.unwrap();
        r.expect("t1 is handed B after t3");
        t1.put(b"B", b"t1");
        t1.commit().await.expect("t1 commits")
    })
    .await;
    assert!(outcome.is_ok(), "the deadlock did not end in time");
    let check = txns.begin_optimistic().await.unwrap();
    assert_eq!(check.get(b"B").await.unwrap(), Some(b"t1".to_vec()));
}

#[actix_rt::test]
async fn concurrent_pessimistic_increments_of_a_hot_key_all_commit_at_the_first_attempt() {
    // Goal: on a hot key every waiter is handed the lock in turn, with the holder's write
    // already visible, so no increment fails or retries. Method: 16 transactions
    // get_for_update the key at once, each writes value + 1 and commits; none may fail.
    const N: u64 = 16;
    let cluster = Cluster::new(3, 1).await;
    let txns = Arc::new(txn_client(&cluster).await);
    let done = tokio::time::timeout(SCENARIO_BOUND, async {
        let mut tasks = Vec::new();
        for _ in 0..N {
            let txns = txns.clone();
            tasks.push(tokio::spawn(async move {
                let mut t = txns.begin_with(pessimistic(15_000)).await?;
                let v = number(t.get_for_update(b"hot").await?);
                t.put(b"hot", (v + 1).to_string().as_bytes());
                t.commit().await.map(|_| v)
            }));
        }
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap().expect("every increment commits at once"));
        }
        seen
    })
    .await
    .expect("the increments ended in time");
    let mut seen = done;
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..N).collect::<Vec<_>>(),
        "each read its predecessor's write"
    );
    let check = txns.begin_optimistic().await.unwrap();
    assert_eq!(number(check.get(b"hot").await.unwrap()), N);
}

#[actix_rt::test]
async fn a_waiter_behind_a_live_holder_times_out_and_one_behind_a_dead_holder_gets_the_key() {
    // Goal: no wait outlives its timeout. Method: a live transaction (heartbeating) holds
    // k1: a waiter gets LockWaitTimeout. A holder that died (a bare lock, TTL 300 ms, no
    // heartbeat) holds k2: the waiter's wait times out, the client resolves the expired
    // lock and takes the key.
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    tokio::time::timeout(SCENARIO_BOUND, async {
        let mut holder = txns.begin_with(pessimistic(1_000)).await.unwrap();
        holder.get_for_update(b"k1").await.unwrap();
        let mut waiter = txns.begin_with(pessimistic(300)).await.unwrap();
        let r = waiter.get_for_update(b"k1").await;
        assert!(
            matches!(r, Err(Error::LockWaitTimeout { .. })),
            "a live holder keeps the key: {r:?}"
        );
        waiter.rollback().await.unwrap();
        holder.rollback().await.unwrap();

        // A lock left by a client that died: nobody will commit, roll back or heartbeat it.
        let dead_ts = txns.current_timestamp().await.unwrap();
        answered(&send_once(&cluster, b"k2", lock_req(&[b"k2"], dead_ts, 300, 0)).await);
        let mut t = txns.begin_with(pessimistic(1_000)).await.unwrap();
        assert_eq!(t.get_for_update(b"k2").await.unwrap(), None);
        t.put(b"k2", b"after");
        t.commit()
            .await
            .expect("commits once the dead lock is resolved");
    })
    .await
    .expect("no wait hung");
    assert_eq!(waiters(&cluster).await, 0);
}

#[actix_rt::test]
async fn waiters_are_handed_the_key_in_arrival_order() {
    // Goal: FIFO, not by timestamp and not random, and one raft round per hand-over.
    // Method: a holder locks the key; five waiters arrive one at a time (each starts once
    // the leader counts the previous one waiting), started newest-timestamp first; the
    // holder commits; each waiter records when it got the key and commits, which hands the
    // key to the next, in the commit's own entry.
    const N: usize = 5;
    let cluster = Cluster::new(3, 1).await;
    let txns = Arc::new(txn_client(&cluster).await);
    let order = Arc::new(Mutex::new(Vec::new()));
    tokio::time::timeout(SCENARIO_BOUND, async {
        let mut holder = txns.begin_with(pessimistic(15_000)).await.unwrap();
        holder.get_for_update(b"k").await.unwrap();
        // Begin them all first, then make them arrive in reverse start_ts order.
        let mut waiting: Vec<Transaction> = Vec::new();
        for _ in 0..N {
            waiting.push(txns.begin_with(pessimistic(15_000)).await.unwrap());
        }
        let mut tasks = Vec::new();
        for (arrival, mut t) in waiting.into_iter().rev().enumerate() {
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let v = number(t.get_for_update(b"k").await?);
                order.lock().unwrap().push(arrival);
                t.put(b"k", (v + 1).to_string().as_bytes());
                t.commit().await.map(|_| ())
            }));
            wait_for_waiters(&cluster, arrival + 1).await;
        }
        let log_end = || async {
            let region = cluster.region_of(b"k").await;
            let leader = cluster.wait_leader(region).await;
            let status = cluster.status(leader, region).await;
            status.map_or(0, |s| s.last_index)
        };
        let before = log_end().await;
        holder.put(b"k", b"0");
        holder.commit().await.unwrap();
        for t in tasks {
            t.await.unwrap().expect("every waiter commits");
        }
        // One raft entry per hand-over: each commit's entry carries the next waiter's lock
        // (two per waiter if the lock followed the commit's apply). Slack for an entry of
        // the cluster's own (a GC safe point).
        let entries = log_end().await - before;
        assert!(
            entries <= N as u64 + 3,
            "{entries} log entries for the holder's commit and {N} waiters' locks and commits"
        );
    })
    .await
    .expect("the waiters ended in time");
    assert_eq!(*order.lock().unwrap(), (0..N).collect::<Vec<_>>());
    let check = txns.begin_optimistic().await.unwrap();
    assert_eq!(number(check.get(b"k").await.unwrap()), N as u64);
}

#[actix_rt::test]
async fn a_queued_request_is_answered_by_its_hand_over_with_the_holders_write() {
    // Goal: no retry round trip, and no write conflict on the write waited for. Method: one
    // raw lock request (sent once, never retried) waits behind a holder that then
    // prewrites and commits the key; that same request's answer is the lock, with the
    // holder's value and the holder's commit ts as its new for_update_ts. The request
    // carries a session: the hand-over must not be answered from it (the cached `locked`).
    let cluster = Cluster::new(3, 1).await;
    let txns = txn_client(&cluster).await;
    let holder = txns.current_timestamp().await.unwrap();
    answered(&send_once(&cluster, b"k", lock_req(&[b"k"], holder, 10_000, 0)).await);
    let waiter = txns.current_timestamp().await.unwrap();
    let (waited, commit_ts) = tokio::time::timeout(SCENARIO_BOUND, async {
        tokio::join!(
            send_once_in_session(&cluster, b"k", lock_req(&[b"k"], waiter, 10_000, 8_000), 77),
            async {
                wait_for_waiters(&cluster, 1).await;
                let mut m = Mutation::new();
                m.set_key(b"k".to_vec());
                m.set_value(b"holder's".to_vec());
                m.set_pessimistic(true);
                let mut p = PrewriteRequest::new();
                p.mut_mutations().push(m);
                p.set_primary(b"k".to_vec());
                p.set_start_ts(holder);
                p.set_for_update_ts(holder);
                p.set_lock_ttl_ms(10_000);
                let mut cmd = TxnRequest::new();
                cmd.set_prewrite(p);
                answered(&send_once(&cluster, b"k", cmd).await);
                let commit_ts = txns.current_timestamp().await.unwrap();
                let mut c = CommitRequest::new();
                c.mut_keys().push(b"k".to_vec());
                c.set_start_ts(holder);
                c.set_commit_ts(commit_ts);
                let mut cmd = TxnRequest::new();
                cmd.set_commit(c);
                answered(&send_once(&cluster, b"k", cmd).await);
                commit_ts
            }
        )
    })
    .await
    .expect("the waiter was answered in time");
    let locked = answered(&waited).get_pessimistic_lock();
    assert_eq!(locked.get_values()[0].get_value(), b"holder's");
    assert_eq!(locked.get_locked_with_conflict_ts(), commit_ts);
    assert_eq!(waiters(&cluster).await, 0);
}

#[actix_rt::test]
async fn waiters_are_answered_on_a_leader_change_and_a_split_and_wait_again_where_the_key_went() {
    // Goal: a waiter never hangs on a replica that stopped leading or no longer holds its
    // key. Method: a waiter queues behind a holder; leadership moves: the old leader
    // answers it NotLeader and the client queues it on the new one; the region splits
    // with the key in the new half: answered EpochNotMatch, it queues on the new region's
    // leader. Then the holder commits and the waiter is handed the key, with its value.
    let cluster = Cluster::new(3, 1).await;
    let txns = Arc::new(txn_client(&cluster).await);
    tokio::time::timeout(SCENARIO_BOUND, async {
        let mut holder = txns.begin_with(pessimistic(15_000)).await.unwrap();
        holder.get_for_update(b"k").await.unwrap();
        let t = txns.clone();
        let waiter = tokio::spawn(async move {
            let mut w = t.begin_with(pessimistic(15_000)).await?;
            let v = w.get_for_update(b"k").await?;
            w.put(b"k", b"waiter's");
            w.commit().await.map(|_| v)
        });
        wait_for_waiters(&cluster, 1).await;

        let region = cluster.region_of(b"k").await;
        let old = cluster.move_leader(region).await;
        wait_until(
            "the old leader answered its waiter",
            Duration::from_secs(20),
            || async {
                cluster
                    .status(old, region)
                    .await
                    .unwrap()
                    .observed(regatta_server::LOCK_WAITERS)
                    == 0
            },
        )
        .await;
        wait_for_waiters(&cluster, 1).await;

        cluster.client().await.split(b"j").await.expect("split");
        wait_until(
            "the waiter queues in the new region",
            Duration::from_secs(30),
            || async { cluster.region_of(b"k").await != region && waiters(&cluster).await == 1 },
        )
        .await;
        for s in [1, 2, 3] {
            let st = cluster
                .status(s, region)
                .await
                .expect("a replica of the left half");
            assert_eq!(
                st.observed(regatta_server::LOCK_WAITERS),
                0,
                "store {s} kept a waiter of a moved key"
            );
        }

        holder.put(b"k", b"holder's");
        holder.commit().await.unwrap();
        let got = waiter.await.unwrap().expect("the waiter commits");
        assert_eq!(got, Some(b"holder's".to_vec()));
    })
    .await
    .expect("the waiter ended in time");
    let check = txns.begin_optimistic().await.unwrap();
    assert_eq!(check.get(b"k").await.unwrap(), Some(b"waiter's".to_vec()));
}
