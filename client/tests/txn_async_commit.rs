//! Async commit against the fake transactional store. Goal: a transaction over two regions
//! is committed once its prewrites land — the client answers after that one round, at the
//! largest `min_commit_ts` the leaders chose — and a reader that meets the locks of a
//! writer that stopped there decides the same outcome from the locks alone: committed at
//! that ts when every prewrite landed, rolled back (for good) when one did not. Method:
//! drive the public API; play dead writers by prewriting straight on the fake's engine;
//! look at versions through snapshots at chosen timestamps.

use crate::support::{read, read_at, FakeCluster};
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_two_region_transaction_is_committed_after_its_prewrites_in_one_round() {
    let fake = FakeCluster::start(&[b"m"]).await;
    let txns = fake.client().await;
    // Commits are applied but never answered: an answer that needed one would not come.
    fake.mute("commit");
    let mut t = txns.begin_optimistic().await.expect("begin");
    t.put(b"a", b"left");
    t.put(b"z", b"right");
    let commit_ts = t.commit().await.expect("committed after the prewrites");
    assert!(!t.committed_by_one_pc());
    assert_eq!(fake.count("prewrite"), 2, "one prewrite per region");
    // The keys are committed in the background, at the answered ts exactly.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.lock_on(b"a").is_some() || fake.lock_on(b"z").is_some() {
        assert!(
            Instant::now() < deadline,
            "the background commit never landed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (k, v) in [(&b"a"[..], &b"left"[..]), (b"z", b"right")] {
        assert_eq!(read_at(&txns, k, commit_ts).await, Some(v.to_vec()));
        assert_eq!(
            read_at(&txns, k, commit_ts - 1).await,
            None,
            "not below its ts"
        );
    }
}

#[tokio::test]
async fn a_reader_commits_a_stalled_async_commit_whose_prewrites_all_landed() {
    let fake = FakeCluster::start(&[b"m"]).await;
    let txns = fake.client().await;
    let start_ts = fake.ts();
    // The leaders chose different floors; the writer answered the larger.
    let commit_ts = start_ts + 7;
    fake.prewrite_async_directly(b"a", &[b"z"], &[(b"a", b"1")], start_ts, start_ts + 3);
    fake.prewrite_async_directly(b"a", &[], &[(b"z", b"2")], start_ts, commit_ts);
    fake.ts(); // past the locks' 1 ms TTL
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(read(&txns, b"z").await, Some(b"2".to_vec()));
    assert_eq!(read(&txns, b"a").await, Some(b"1".to_vec()));
    assert!(fake.lock_on(b"a").is_none(), "the primary was resolved");
    assert_eq!(read_at(&txns, b"a", commit_ts).await, Some(b"1".to_vec()));
    assert_eq!(
        read_at(&txns, b"a", commit_ts - 1).await,
        None,
        "committed at the largest min_commit_ts, the ts the writer answered"
    );
}

#[tokio::test]
async fn a_stalled_async_commit_missing_a_prewrite_is_rolled_back_for_good() {
    let fake = FakeCluster::start(&[b"m"]).await;
    let txns = fake.client().await;
    let start_ts = fake.ts();
    // The primary landed; the prewrite of "z" never did.
    fake.prewrite_async_directly(b"a", &[b"z"], &[(b"a", b"1")], start_ts, start_ts + 1);
    fake.ts();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(read(&txns, b"a").await, None, "rolled back");
    assert!(fake.lock_on(b"a").is_none());
    // The check left a rollback record on "z": the late prewrite can never land.
    let late = fake.with_engine(|e| {
        let req = regatta_txn::PrewriteRequest {
            primary: b"a".to_vec(),
            start_ts,
            lock_ttl_ms: 1,
            for_update_ts: 0,
            min_commit_ts: start_ts + 1,
            async_commit_secondaries: Some(Vec::new()),
            read_versions: Vec::new(),
            mutations: vec![regatta_txn::Mutation::put(b"z".to_vec(), b"2".to_vec())],
        };
        let snap = regatta_engine::Engine::snapshot(e);
        let mut wb = regatta_engine::Engine::write_batch(e);
        regatta_txn::prewrite(&snap, &mut wb, &req)
    });
    assert!(
        late.is_err(),
        "a late prewrite meets the rollback: {late:?}"
    );
}
