//! Snapshot isolation at the edges the transaction client must keep itself (issue 20):
//! a pessimistic `get` then `put` loses no update, a key handed over at another
//! transaction's commit ts commits above it, and a snapshot beyond the TSO is refused.
//! Method: the public API against the fake transactional store (real `regatta_txn`
//! actions over a `MemEngine`), whose TSO a test may step by hand and which may serve a
//! lock as the store's queue serves a hand-over; interleavings built step by step.

use crate::support::FakeCluster;
use regatta_client::{Error, TxnClient, TxnOptions};

async fn read_at(txns: &TxnClient, ts: u64, key: &[u8]) -> Option<Vec<u8>> {
    txns.snapshot(ts)
        .await
        .expect("snapshot")
        .get(key)
        .await
        .expect("read")
}

/// Goal: a pessimistic transaction that read a key with a plain `get` (at its start ts)
/// and then writes it does not overwrite a commit made since (hole 2, a lost update).
/// Method: T1 reads `n`; T2 increments it and commits; T1 writes its increment: its
/// commit must fail with a retryable `WriteConflict`, and the value stays T2's.
#[tokio::test]
async fn a_pessimistic_get_then_put_conflicts_with_a_commit_since_the_read() {
    let fake = FakeCluster::start(&[]).await;
    let txns = fake.txn_client().await;
    let mut t1 = txns.begin_pessimistic().await.expect("begin t1");
    assert_eq!(t1.get(b"n").await.expect("t1 reads"), None);
    let mut t2 = txns.begin_pessimistic().await.expect("begin t2");
    assert_eq!(t2.get(b"n").await.expect("t2 reads"), None);
    t2.put(b"n", b"1");
    t2.commit().await.expect("t2 commits");
    t1.put(b"n", b"1");
    match t1.commit().await {
        Err(e @ Error::WriteConflict { .. }) => assert!(e.is_retryable()),
        other => panic!("t1 must not overwrite t2's increment: {other:?}"),
    }
    let now = txns.current_timestamp().await.expect("ts");
    assert_eq!(read_at(&txns, now, b"n").await, Some(b"1".to_vec()));
    // Run again, the body sees the committed value and the increment lands.
    let got = txns
        .run(TxnOptions::pessimistic(), |t| {
            Box::pin(async move {
                let n: u64 = t
                    .get(b"n")
                    .await?
                    .map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap_or(0));
                t.put(b"n", (n + 1).to_string().as_bytes());
                Ok(n + 1)
            })
        })
        .await
        .expect("run");
    assert_eq!(got, 2);
}

/// Goal: a transaction whose pessimistic lock failed cannot commit afterwards — the store
/// may hold that lock, taken over a write the transaction never read, and committing it
/// would lose that write. Method: T1 reads `n` at its start ts; T2 commits `n`; T1's
/// `get_for_update(n)` fails with a write conflict; T1 writes `n` anyway and commits: the
/// commit is refused and T2's value stands.
#[tokio::test]
async fn a_transaction_whose_lock_failed_cannot_commit_over_the_write_it_missed() {
    let fake = FakeCluster::start(&[]).await;
    let txns = fake.txn_client().await;
    let mut t1 = txns.begin_pessimistic().await.expect("begin t1");
    assert_eq!(t1.get(b"n").await.expect("t1 reads"), None);
    let mut t2 = txns.begin_optimistic().await.expect("begin t2");
    t2.put(b"n", b"t2");
    t2.commit().await.expect("t2 commits");
    match t1.get_for_update(b"n").await {
        Err(e @ Error::WriteConflict { .. }) => assert!(e.is_retryable()),
        other => panic!("the lock must meet t2's commit: {other:?}"),
    }
    t1.put(b"n", b"t1 over a stale read");
    match t1.commit().await {
        Err(Error::InvalidArgument(why)) => assert!(why.contains("run it again"), "{why}"),
        other => panic!("t1 must not commit after its lock failed: {other:?}"),
    }
    let now = txns.current_timestamp().await.expect("ts");
    assert_eq!(read_at(&txns, now, b"n").await, Some(b"t2".to_vec()));
}

/// Goal: a pessimistic transaction's `get` of a key it already locked returns the value
/// its lock was taken over (the one `get_for_update` returned), not the older one at its
/// start ts — a write made from that would lose the commit in between. Method: T1
/// begins; T2 commits `k`; T1 locks `k` (sees T2's value), then reads it with `get`,
/// `batch_get` and `scan`.
#[tokio::test]
async fn a_pessimistic_get_of_a_locked_key_sees_the_locked_value() {
    let fake = FakeCluster::start(&[]).await;
    let txns = fake.txn_client().await;
    let mut t1 = txns.begin_pessimistic().await.expect("begin t1");
    let mut t2 = txns.begin_optimistic().await.expect("begin t2");
    t2.put(b"k", b"t2");
    t2.commit().await.expect("t2 commits");
    let locked = t1.get_for_update(b"k").await.expect("lock");
    assert_eq!(locked, Some(b"t2".to_vec()));
    assert_eq!(t1.get(b"k").await.expect("get"), locked);
    assert_eq!(
        t1.batch_get(&[b"k".to_vec(), b"other".to_vec()])
            .await
            .expect("batch_get"),
        vec![locked.clone(), None]
    );
    let scanned = t1.scan(b"", b"", 0).await.expect("scan");
    assert_eq!(scanned, vec![(b"k".to_vec(), b"t2".to_vec())], "scan too");
    t1.put(b"k", b"t1");
    t1.commit().await.expect("t1 commits");
}

/// Goal: a key handed to a waiter at its holder's commit ts `c` (which a 1PC may have
/// chosen above anything the TSO handed out) is committed by the waiter above `c`, never
/// at or below it (hole 1: the waiter's version replaced the holder's, or hid under it).
/// Method: the TSO stepped by hand; the holder commits at `c`, three steps above the
/// TSO; the waiter is handed the key at `c`, writes and commits by 2PC; its commit ts
/// must exceed `c`, and a snapshot at a fresh TSO ts sees the waiter's write while one
/// at `c` still sees the holder's.
#[tokio::test]
async fn a_key_handed_over_at_a_commit_ts_above_the_tso_commits_above_it() {
    let fake = FakeCluster::start(&[]).await;
    fake.ts(); // from the clock's millisecond on, by hand
    fake.step_tso_by_hand();
    let txns = fake.txn_client().await;
    let opts = TxnOptions {
        try_one_pc: false,
        ..TxnOptions::pessimistic()
    };
    let mut waiter = txns.begin_with(opts).await.expect("begin the waiter");
    let holder = fake.ts();
    fake.prewrite_directly(b"k", &[(b"k", b"holder")], holder, 3_000);
    let c = holder + 3;
    fake.commit_directly(&[b"k"], holder, c)
        .expect("the holder commits");
    fake.hand_over_next_lock();
    let got = waiter.get_for_update(b"k").await.expect("handed the key");
    assert_eq!(got, Some(b"holder".to_vec()), "the holder's value");
    waiter.put(b"k", b"waiter");
    let commit_ts = waiter.commit().await.expect("the waiter commits");
    assert!(
        commit_ts > c,
        "the waiter committed at {commit_ts}, not above {c}"
    );
    let now = txns.current_timestamp().await.expect("ts");
    assert_eq!(read_at(&txns, now, b"k").await, Some(b"waiter".to_vec()));
    assert_eq!(read_at(&txns, c, b"k").await, Some(b"holder".to_vec()));
}

/// Goal: a snapshot beyond every timestamp the TSO handed out is refused, typed and not
/// retryable (hole 0), and one at a timestamp it handed out is served.
#[tokio::test]
async fn a_snapshot_beyond_the_tso_is_refused() {
    let fake = FakeCluster::start(&[]).await;
    let txns = fake.txn_client().await;
    let now = txns.current_timestamp().await.expect("ts");
    assert!(txns.snapshot(now).await.is_ok());
    match txns.snapshot(u64::MAX).await {
        Err(e @ Error::TimestampTooFarAhead { ts: u64::MAX, .. }) => assert!(!e.is_retryable()),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a snapshot at u64::MAX was accepted"),
    }
}
