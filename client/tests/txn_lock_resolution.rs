//! Lock resolution by the transaction client, against the fake transactional store.
//! Goal: a reader or writer that meets another transaction's lock asks its primary and
//! rolls back a dead one (TTL run out), commits the secondary of a committed one, waits
//! for a live one and gives up at its deadline with `KeyIsLocked`; a long transaction
//! keeps its primary alive by heartbeats. Method: locks are left straight on the fake's
//! engine by the real actions (a client that prewrote and died), then the public API
//! reads or writes; the engine and the command counts show what was resolved and how.

use crate::support::FakeCluster;
use regatta_client::{Config, Error, TxnClient, TxnMode, TxnOptions};
use std::time::{Duration, Instant};

fn config(op_timeout: Duration) -> Config {
    Config {
        op_timeout,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(20),
        ..Config::default()
    }
}

async fn connect(fake: &FakeCluster, op_timeout: Duration) -> TxnClient {
    TxnClient::connect_with(&[&fake.addr], config(op_timeout))
        .await
        .expect("connect to the fake")
}

/// A snapshot at a fresh timestamp (above every lock the test left).
async fn snapshot_now(txns: &TxnClient) -> regatta_client::Snapshot {
    txns.snapshot(txns.current_timestamp().await.expect("ts"))
        .await
        .expect("snapshot")
}

#[tokio::test]
async fn a_reader_rolls_back_the_locks_of_a_dead_transaction_whose_ttl_ran_out() {
    let fake = FakeCluster::start(&[b"m"]).await;
    let txns = connect(&fake, Duration::from_secs(10)).await;
    // A client prewrote "a" (primary) and "z" with a 1 ms TTL, then died.
    let start_ts = fake.ts();
    fake.prewrite_directly(b"a", &[(b"a", b"1")], start_ts, 1);
    fake.prewrite_directly(b"a", &[(b"z", b"2")], start_ts, 1);
    let snap = snapshot_now(&txns).await;
    assert_eq!(snap.get(b"z").await.expect("resolved"), None);
    assert!(fake.count("check_txn_status") >= 1);
    assert!(fake.count("resolve_lock") >= 1);
    assert!(
        fake.lock_on(b"z").is_none(),
        "the secondary was rolled back"
    );
    assert!(
        fake.lock_on(b"a").is_none(),
        "the expired primary was rolled back"
    );
    // The dead client's late commit can no longer land.
    let late = fake.commit_directly(&[b"a"], start_ts, fake.ts());
    assert!(
        matches!(late, Err(regatta_txn::Error::AlreadyRolledBack { .. })),
        "{late:?}"
    );
}

#[tokio::test]
async fn a_reader_resolves_the_secondary_of_a_committed_primary_to_committed() {
    let fake = FakeCluster::start(&[b"m"]).await;
    let txns = connect(&fake, Duration::from_secs(10)).await;
    // The primary committed; the client died before committing the secondary.
    let start_ts = fake.ts();
    fake.prewrite_directly(b"a", &[(b"a", b"1")], start_ts, 60_000);
    fake.prewrite_directly(b"a", &[(b"z", b"2")], start_ts, 60_000);
    let commit_ts = fake.ts();
    fake.commit_directly(&[b"a"], start_ts, commit_ts)
        .expect("commit the primary");
    let snap = snapshot_now(&txns).await;
    assert_eq!(snap.get(b"z").await.expect("resolved"), Some(b"2".to_vec()));
    assert_eq!(fake.count("resolve_lock"), 1);
    assert!(fake.lock_on(b"z").is_none(), "the secondary was committed");
    // A reader below the commit ts still does not see it.
    let before = txns.snapshot(commit_ts - 1).await.expect("snapshot");
    assert_eq!(before.get(b"z").await.expect("read"), None);
}

#[tokio::test]
async fn a_reader_waits_for_a_live_lock_then_fails_with_key_is_locked() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake, Duration::from_millis(300)).await;
    let start_ts = fake.ts();
    fake.prewrite_directly(b"k", &[(b"k", b"v")], start_ts, 60_000);
    let snap = snapshot_now(&txns).await;
    let err = snap.get(b"k").await.expect_err("the lock lives");
    match &err {
        Error::KeyIsLocked {
            key,
            primary,
            lock_ts,
            ..
        } => {
            assert_eq!((key.as_slice(), primary.as_slice()), (&b"k"[..], &b"k"[..]));
            assert_eq!(*lock_ts, start_ts);
        }
        other => panic!("expected KeyIsLocked, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(
        fake.count("check_txn_status") >= 2,
        "it asked again while waiting"
    );
    assert!(fake.lock_on(b"k").is_some(), "a live lock is left alone");
}

#[tokio::test]
async fn a_writer_resolves_a_dead_lock_and_commits() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake, Duration::from_secs(10)).await;
    let start_ts = fake.ts();
    fake.prewrite_directly(b"k", &[(b"k", b"dead")], start_ts, 1);
    let mut t = txns.begin_optimistic().await.expect("begin");
    t.put(b"k", b"alive");
    t.commit().await.expect("commit after resolving");
    assert!(fake.count("resolve_lock") >= 1);
    let snap = snapshot_now(&txns).await;
    assert_eq!(snap.get(b"k").await.expect("read"), Some(b"alive".to_vec()));
}

#[tokio::test]
async fn a_long_transaction_keeps_its_primary_alive_by_heartbeats() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake, Duration::from_secs(10)).await;
    let opts = TxnOptions {
        mode: TxnMode::Pessimistic,
        heartbeat_interval: Duration::from_millis(20),
        ..TxnOptions::default()
    };
    let mut t = txns.begin_with(opts).await.expect("begin");
    t.lock_keys(&[b"p".to_vec()]).await.expect("lock");
    let first_ttl = fake.lock_on(b"p").expect("locked").ttl_ms;
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.lock_on(b"p").map_or(0, |l| l.ttl_ms) <= first_ttl {
        assert!(Instant::now() < deadline, "the TTL was never extended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(fake.count("heartbeat") >= 1);
    t.put(b"p", b"done");
    t.commit().await.expect("commit");
}

/// Goal: the primary is kept alive from its first lock, not from the end of the
/// statement's last lock round (issue 20, hole 5: while the second round waited, the
/// primary's TTL lapsed and a resolver could roll back a live transaction). Method: lock
/// `p` and `s` in one call while another (live) transaction holds `s`; while the second
/// round waits, `p`'s TTL must grow.
#[tokio::test]
async fn the_primary_is_heartbeated_while_a_later_lock_round_waits() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake, Duration::from_secs(10)).await;
    let blocker = fake.ts();
    fake.prewrite_directly(b"s", &[(b"s", b"held")], blocker, 60_000);
    let opts = TxnOptions {
        mode: TxnMode::Pessimistic,
        heartbeat_interval: Duration::from_millis(20),
        ..TxnOptions::default()
    };
    let mut t = txns.begin_with(opts).await.expect("begin");
    let locking = tokio::spawn(async move {
        let r = t.lock_keys(&[b"p".to_vec(), b"s".to_vec()]).await;
        (t, r)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let first_ttl = loop {
        if let Some(l) = fake.lock_on(b"p") {
            break l.ttl_ms;
        }
        assert!(Instant::now() < deadline, "the primary was never locked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    while fake.lock_on(b"p").map_or(0, |l| l.ttl_ms) <= first_ttl {
        assert!(
            Instant::now() < deadline,
            "the primary's TTL was not extended while the second round waited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!locking.is_finished(), "still waiting for `s`");
    fake.commit_directly(&[b"s"], blocker, fake.ts())
        .expect("the blocker commits");
    let (mut t, r) = locking.await.expect("task");
    r.expect("locked once the blocker is gone");
    t.put(b"p", b"done");
    t.commit().await.expect("commit");
}

#[tokio::test]
async fn a_scan_across_regions_resolves_the_locks_it_meets() {
    let fake = FakeCluster::start(&[b"m"]).await;
    let txns = connect(&fake, Duration::from_secs(10)).await;
    let mut seed = txns.begin_optimistic().await.expect("begin");
    seed.put(b"a", b"1");
    seed.put(b"y", b"2");
    seed.commit().await.expect("seed");
    // A dead transaction committed its primary "b"; its secondary "z" is still locked.
    let start_ts = fake.ts();
    fake.prewrite_directly(b"b", &[(b"b", b"3")], start_ts, 60_000);
    fake.prewrite_directly(b"b", &[(b"z", b"4")], start_ts, 60_000);
    fake.commit_directly(&[b"b"], start_ts, fake.ts())
        .expect("commit the primary");
    let snap = snapshot_now(&txns).await;
    let all = snap.scan(b"", b"", 0).await.expect("scan");
    let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, vec![&b"a"[..], b"b", b"y", b"z"]);
    assert!(fake.lock_on(b"z").is_none());
}

#[tokio::test]
async fn an_explicit_rollback_releases_pessimistic_locks_and_fences_the_transaction() {
    let fake = FakeCluster::start(&[]).await;
    let txns = connect(&fake, Duration::from_secs(10)).await;
    let mut t = txns.begin_pessimistic().await.expect("begin");
    assert_eq!(t.get_for_update(b"k").await.expect("lock"), None);
    assert!(fake.lock_on(b"k").is_some());
    t.rollback().await.expect("rollback");
    assert!(fake.lock_on(b"k").is_none());
    assert!(matches!(t.commit().await, Err(Error::InvalidArgument(_))));
    // Another transaction may now take the key at once.
    let mut other = txns.begin_pessimistic().await.expect("begin");
    other.lock_keys(&[b"k".to_vec()]).await.expect("lock");
    other.put(b"k", b"v");
    other.commit().await.expect("commit");
}
