//! The transaction client's commit paths against a fake transactional store (PD + one
//! store on loopback, running the real `regatta_txn` actions over a `MemEngine`). Goal:
//! a commit is visible exactly from its commit ts on; one region commits by 1PC in one
//! command; two regions go through 2PC (async commit off) with the prewrites in parallel
//! and the primary committed before the answer; a split re-cuts a commit; conflicts are typed and
//! retryable and `run` retries them; timestamp requests share PD calls. Method: drive the
//! public API, then look at the data through snapshots and at the commands the fake
//! counted.

use crate::support::{read, FakeCluster};
use regatta_client::{Config, Error, TxnClient, TxnOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config() -> Config {
    Config {
        op_timeout: Duration::from_secs(10),
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(20),
        ..Config::default()
    }
}

async fn connect(fake: &FakeCluster) -> TxnClient {
    TxnClient::connect_with(&[&fake.addr], config())
        .await
        .expect("connect to the fake")
}

/// Optimistic, committed by 2PC even across regions (no async commit).
fn two_pc() -> TxnOptions {
    TxnOptions {
        async_commit: false,
        ..TxnOptions::optimistic()
    }
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_commit_is_visible_at_later_timestamps_and_not_before() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake).await;
    let mut t = txns.begin_optimistic().await.expect("begin");
    t.put(b"acct/alice", b"90");
    t.put(b"acct/bob", b"110");
    let before = txns.current_timestamp().await.expect("ts");
    let commit_ts = t.commit().await.expect("commit");
    assert!(commit_ts > t.start_ts() && commit_ts > before);
    let old = txns.snapshot(before).await.expect("snapshot");
    assert_eq!(old.get(b"acct/alice").await.expect("read"), None);
    let now = txns
        .snapshot(txns.current_timestamp().await.expect("ts"))
        .await
        .expect("snapshot");
    assert_eq!(
        now.get(b"acct/alice").await.expect("read"),
        Some(b"90".to_vec())
    );
    let all = now.scan(b"acct/", b"acct0", 0).await.expect("scan");
    assert_eq!(
        all,
        vec![
            (b"acct/alice".to_vec(), b"90".to_vec()),
            (b"acct/bob".to_vec(), b"110".to_vec())
        ]
    );
    let got = now
        .batch_get(&[b"acct/bob".to_vec(), b"acct/carol".to_vec()])
        .await
        .expect("batch get");
    assert_eq!(got, vec![Some(b"110".to_vec()), None]);
}

#[tokio::test]
async fn a_transaction_reads_its_own_buffered_writes_first() {
    let fake = FakeCluster::start(&[b"m"]).await;
    let txns = connect(&fake).await;
    let mut seed = txns.begin_optimistic().await.expect("begin");
    seed.put(b"a", b"1");
    seed.put(b"b", b"2");
    seed.put(b"z", b"3");
    seed.commit().await.expect("seed");
    let mut t = txns.begin_optimistic().await.expect("begin");
    t.put(b"a", b"10");
    t.delete(b"b");
    t.put(b"c", b"30");
    assert_eq!(t.get(b"a").await.expect("get"), Some(b"10".to_vec()));
    assert_eq!(t.get(b"b").await.expect("get"), None);
    let keys = [b"a".to_vec(), b"b".to_vec(), b"z".to_vec()];
    let got = t.batch_get(&keys).await.expect("batch get");
    assert_eq!(got, vec![Some(b"10".to_vec()), None, Some(b"3".to_vec())]);
    let scanned = t.scan(b"", b"", 0).await.expect("scan");
    let want: Vec<(Vec<u8>, Vec<u8>)> = [("a", "10"), ("c", "30"), ("z", "3")]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    assert_eq!(scanned, want);
    assert_eq!(t.scan(b"", b"", 2).await.expect("scan"), want[..2].to_vec());
    // Nothing was sent: another reader still sees the committed state.
    assert_eq!(read(&txns, b"b").await, Some(b"2".to_vec()));
}

#[tokio::test]
async fn a_single_region_transaction_commits_by_one_pc_in_one_command() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake).await;
    let mut t = txns.begin_optimistic().await.expect("begin");
    t.put(b"k1", b"v1");
    t.put(b"k2", b"v2");
    t.commit().await.expect("commit");
    assert!(t.committed_by_one_pc());
    assert_eq!(fake.count("prewrite_1pc"), 1);
    assert_eq!(fake.count("prewrite"), 0);
    assert_eq!(fake.count("commit"), 0);
    assert!(fake.lock_on(b"k1").is_none() && fake.lock_on(b"k2").is_none());
    assert_eq!(read(&txns, b"k2").await, Some(b"v2".to_vec()));
}

#[tokio::test]
async fn a_two_region_transaction_prewrites_in_parallel_and_commits_the_primary_first() {
    let fake = FakeCluster::start(&[b"m"]).await;
    let txns = connect(&fake).await;
    fake.hold_prewrites_until(2);
    let mut t = txns.begin_with(two_pc()).await.expect("begin");
    t.put(b"a", b"left");
    t.put(b"z", b"right");
    t.commit().await.expect("commit");
    assert!(!t.committed_by_one_pc());
    assert_eq!(fake.count("prewrite"), 2);
    assert_eq!(fake.count("prewrite_1pc"), 0);
    assert_eq!(
        fake.max_prewrites_in_flight(),
        2,
        "the prewrites were sent together"
    );
    // The primary ("a", the first key) was committed before the answer.
    assert!(fake.lock_on(b"a").is_none());
    // The secondary is committed in the background.
    eventually("the secondary is committed", || {
        fake.lock_on(b"z").is_none()
    })
    .await;
    assert_eq!(read(&txns, b"a").await, Some(b"left".to_vec()));
    assert_eq!(read(&txns, b"z").await, Some(b"right".to_vec()));
}

#[tokio::test]
async fn a_split_after_the_region_was_cached_recuts_the_commit_into_two_regions() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake).await;
    // Cache the single region, then split it behind the client's back.
    assert_eq!(read(&txns, b"a").await, None);
    fake.split(b"m");
    let mut t = txns.begin_optimistic().await.expect("begin");
    t.put(b"a", b"1");
    t.put(b"z", b"2");
    t.commit().await.expect("commit");
    assert!(fake.count("epoch_not_match") >= 1);
    assert!(!t.committed_by_one_pc(), "the keys now span two regions");
    assert_eq!(fake.count("prewrite"), 2);
    assert_eq!(read(&txns, b"a").await, Some(b"1".to_vec()));
    assert_eq!(read(&txns, b"z").await, Some(b"2".to_vec()));
}

#[tokio::test]
async fn an_optimistic_write_conflict_is_typed_and_retryable() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake).await;
    let mut t1 = txns.begin_optimistic().await.expect("begin");
    assert_eq!(t1.get(b"counter").await.expect("get"), None);
    let mut t2 = txns.begin_optimistic().await.expect("begin");
    t2.put(b"counter", b"1");
    t2.commit().await.expect("t2 commits first");
    t1.put(b"counter", b"1");
    let err = t1
        .commit()
        .await
        .expect_err("t1 started before t2 committed");
    match &err {
        Error::WriteConflict { key, start_ts, .. } => {
            assert_eq!(key, b"counter");
            assert_eq!(*start_ts, t1.start_ts());
        }
        other => panic!("expected a write conflict, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(read(&txns, b"counter").await, Some(b"1".to_vec()));
}

#[tokio::test]
async fn run_retries_a_write_conflict_until_the_transaction_commits() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake).await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let (other, count) = (txns.clone(), attempts.clone());
    let value = txns
        .run(TxnOptions::optimistic(), move |t| {
            let (other, count) = (other.clone(), count.clone());
            Box::pin(async move {
                let n: u64 = match t.get(b"counter").await? {
                    Some(v) => String::from_utf8_lossy(&v).parse().unwrap_or(0),
                    None => 0,
                };
                if count.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Another transaction commits the key after this one read it.
                    let mut o = other.begin_optimistic().await?;
                    o.put(b"counter", b"100");
                    o.commit().await?;
                }
                t.put(b"counter", (n + 1).to_string().as_bytes());
                Ok(n + 1)
            })
        })
        .await
        .expect("run commits on the second attempt");
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(value, 101);
    assert_eq!(read(&txns, b"counter").await, Some(b"101".to_vec()));
}

#[tokio::test]
async fn run_does_not_retry_an_error_that_is_not_retryable() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake).await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let count = attempts.clone();
    let err = txns
        .run(TxnOptions::optimistic(), move |_t| {
            let count = count.clone();
            Box::pin(async move {
                count.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::InvalidArgument("the body refuses".into()))
            })
        })
        .await
        .expect_err("not retryable");
    assert!(matches!(err, Error::InvalidArgument(_)));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_pessimistic_commit_does_not_fail_on_a_write_committed_before_its_lock() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake).await;
    let mut t = txns.begin_pessimistic().await.expect("begin");
    let mut other = txns.begin_optimistic().await.expect("begin");
    other.put(b"counter", b"5");
    other.commit().await.expect("commit after t started");
    // Locked at a fresh for_update_ts: reads the newest value, and the commit holds.
    assert_eq!(
        t.get_for_update(b"counter").await.expect("lock"),
        Some(b"5".to_vec())
    );
    assert!(fake.lock_on(b"counter").is_some());
    t.put(b"counter", b"6");
    t.put(b"other", b"x");
    t.commit().await.expect("no write conflict");
    assert!(
        fake.count("pessimistic_lock") >= 2,
        "both written keys were locked"
    );
    assert_eq!(read(&txns, b"counter").await, Some(b"6".to_vec()));
}

#[tokio::test]
async fn a_transaction_dropped_without_commit_rolls_its_locks_back() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake).await;
    let mut t = txns.begin_pessimistic().await.expect("begin");
    t.lock_keys(&[b"k".to_vec()]).await.expect("lock");
    assert!(fake.lock_on(b"k").is_some());
    drop(t);
    eventually("the dropped transaction's lock is gone", || {
        fake.lock_on(b"k").is_none()
    })
    .await;
    assert!(fake.count("rollback") >= 1);
}

#[tokio::test]
async fn timestamp_requests_made_together_share_pd_calls() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake).await;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let t = txns.clone();
            tokio::spawn(async move { t.current_timestamp().await })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.expect("task").expect("ts"));
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 32, "every request got its own timestamp");
    assert!(
        fake.count("tso") < 32,
        "32 requests took {} PD calls",
        fake.count("tso")
    );
}

/// A client whose operations give up quickly (for answers that never come).
async fn impatient(fake: &FakeCluster) -> TxnClient {
    let cfg = Config {
        op_timeout: Duration::from_millis(400),
        rpc_timeout: Duration::from_millis(50),
        ..config()
    };
    TxnClient::connect_with(&[&fake.addr], cfg)
        .await
        .expect("connect to the fake")
}

#[tokio::test]
async fn a_lost_answer_to_a_one_pc_commit_is_undetermined_and_run_does_not_retry_it() {
    let fake = FakeCluster::start(&[]).await;
    let txns = impatient(&fake).await;
    fake.mute("prewrite_1pc");
    let attempts = Arc::new(AtomicUsize::new(0));
    let count = attempts.clone();
    let err = txns
        .run(TxnOptions::optimistic(), move |t| {
            let count = count.clone();
            Box::pin(async move {
                count.fetch_add(1, Ordering::SeqCst);
                t.put(b"k", b"once");
                Ok(())
            })
        })
        .await
        .expect_err("the answer never comes");
    assert!(matches!(err, Error::CommitUndetermined { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "an unknown outcome is not retried"
    );
    // The store did commit it: exactly once.
    assert_eq!(read(&txns, b"k").await, Some(b"once".to_vec()));
}

/// Goal: a 1PC prewrite that went unanswered may still commit later (a harness that
/// delays lines), so when its retry is refused (here: another transaction wrote the key
/// meanwhile) the outcome is undetermined, not a conflict the caller would retry.
#[tokio::test]
async fn a_refused_retry_of_a_lost_one_pc_prewrite_is_undetermined() {
    let fake = FakeCluster::start(&[]).await;
    let txns = impatient(&fake).await;
    fake.lose_next_one_pc();
    let mut t = txns.begin_optimistic().await.expect("begin");
    t.put(b"k", b"mine");
    let err = t
        .commit()
        .await
        .expect_err("the retry meets the other write");
    assert!(matches!(err, Error::CommitUndetermined { .. }), "{err:?}");
    assert_eq!(read(&txns, b"k").await, Some(b"other".to_vec()));
    // Without a lost attempt the same refusal is a plain, retryable conflict.
    let mut stale = txns.begin_optimistic().await.expect("begin");
    let mut other = txns.begin_optimistic().await.expect("begin");
    other.put(b"k", b"newer");
    other.commit().await.expect("commits");
    stale.put(b"k", b"late");
    let err = stale.commit().await.expect_err("a write conflict");
    assert!(matches!(err, Error::WriteConflict { .. }), "{err:?}");
}

/// Goal: a 1PC whose answer was lost, whose keys a split then moves apart, is
/// undetermined: re-cut as a 2PC, its prewrites would meet the write made meanwhile and
/// report a conflict the caller retries — a second apply if the first committed. Method:
/// the fake loses the 1PC (another transaction writes its keys meanwhile) and splits
/// between its two keys.
#[tokio::test]
async fn a_lost_one_pc_regrouped_by_a_split_is_undetermined() {
    let fake = FakeCluster::start(&[]).await;
    let txns = impatient(&fake).await;
    fake.lose_next_one_pc_and_split(b"m");
    let mut t = txns.begin_optimistic().await.expect("begin");
    t.put(b"a", b"mine");
    t.put(b"z", b"mine");
    let err = t.commit().await.expect_err("its outcome is not known");
    assert!(matches!(err, Error::CommitUndetermined { .. }), "{err:?}");
}

#[tokio::test]
async fn a_lost_answer_to_the_primary_commit_leaves_the_secondaries_for_readers_to_commit() {
    let fake = FakeCluster::start(&[b"m"]).await;
    let txns = impatient(&fake).await;
    fake.mute("commit");
    let mut t = txns.begin_with(two_pc()).await.expect("begin");
    t.put(b"a", b"1");
    t.put(b"z", b"2");
    let err = t.commit().await.expect_err("the answer never comes");
    assert!(matches!(err, Error::CommitUndetermined { .. }), "{err:?}");
    drop(t);
    // The primary committed; nothing was rolled back, so a reader resolves the
    // secondary's lock to committed.
    assert!(fake.lock_on(b"a").is_none());
    assert_eq!(read(&txns, b"z").await, Some(b"2".to_vec()));
    assert_eq!(fake.count("rollback"), 0);
}

/// Goal: after a primary commit whose answer was lost, any failure of its retry (not
/// only a refused 1PC) leaves the outcome undetermined and rolls nothing back (issue 20,
/// hole 4: a rollback on that word undid the secondaries of a committed transaction).
/// Method: the first commit is applied and its answer lost, the retry is refused with a
/// storage error; the commit must end `CommitUndetermined`, no rollback is sent, and a
/// reader resolves the secondary to committed.
#[tokio::test]
async fn a_failed_retry_of_a_lost_primary_commit_is_undetermined_and_rolls_nothing_back() {
    let fake = FakeCluster::start(&[b"m"]).await;
    let txns = impatient(&fake).await;
    fake.lose_then_fail_next_commit();
    let mut t = txns.begin_with(two_pc()).await.expect("begin");
    t.put(b"a", b"1");
    t.put(b"z", b"2");
    let err = t.commit().await.expect_err("the retry fails");
    assert!(matches!(err, Error::CommitUndetermined { .. }), "{err:?}");
    assert!(!err.is_retryable());
    drop(t);
    assert_eq!(fake.count("rollback"), 0, "nothing rolled back");
    assert_eq!(read(&txns, b"a").await, Some(b"1".to_vec()));
    assert_eq!(read(&txns, b"z").await, Some(b"2".to_vec()));
}
