//! Commit, rollback and resolve_lock (TinyKV 4B "commit": conflict race, repeat, missing
//! prewrite, after rollback; 4C "rollback of a committed key", "resolve lock").

use super::*;

fn commit_makes_the_value_visible_from_its_commit_ts_and_drops_the_lock<E: Fresh>() {
    let env = Env::<E>::new();
    env.prewrite(
        vec![
            Mutation::put(b"p".to_vec(), b"1".to_vec()),
            Mutation::put(b"s".to_vec(), vec![9; 300]),
        ],
        10,
    )
    .unwrap();
    env.commit(&[b"p"], 10, 20).unwrap();
    assert!(env.lock(b"p").is_none());
    assert_eq!(env.value(b"p", 20), Some(b"1".to_vec()));
    let w = env.write_at(b"p", 20).unwrap();
    assert_eq!((w.kind, w.start_ts), (WriteKind::Put, 10));
    assert!(
        env.get(b"s", 20).is_err(),
        "the secondary waits for its commit"
    );
    env.commit(&[b"s"], 10, 20).unwrap();
    assert_eq!(env.value(b"s", 20), Some(vec![9; 300]));
}

fn a_repeated_commit_is_idempotent<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"k".to_vec(), b"v".to_vec())], 10, 20);
    let ks = keys(&[b"k"]);
    let (out, writes) = env.run_counted(|s, wb| commit(s, wb, &ks, 10, 20));
    out.unwrap();
    assert_eq!(writes, 0);
    assert_eq!(env.writes(b"k").len(), 1);
}

fn commit_without_prewrite_is_txn_lock_not_found<E: Fresh>() {
    let env = Env::<E>::new();
    match env.commit(&[b"k"], 10, 20) {
        Err(e @ Error::TxnLockNotFound { .. }) => assert!(!e.is_retryable()),
        other => panic!("expected TxnLockNotFound, got {other:?}"),
    }
    assert_eq!(env.count(Cf::Write), 0);
}

fn commit_racing_another_txns_lock_fails_and_leaves_it<E: Fresh>() {
    // Goal: our lock was cleaned up and another txn locked the key meanwhile; the commit
    // must neither succeed nor disturb that lock.
    let env = Env::<E>::new();
    env.prewrite(vec![Mutation::put(b"k".to_vec(), b"ours".to_vec())], 10)
        .unwrap();
    env.rollback(&[b"k"], 10).unwrap();
    env.prewrite(vec![Mutation::put(b"k".to_vec(), b"theirs".to_vec())], 15)
        .unwrap();
    assert!(matches!(
        env.commit(&[b"k"], 10, 20),
        Err(Error::AlreadyRolledBack { .. })
    ));
    assert_eq!(env.lock(b"k").unwrap().start_ts, 15);
    let env = Env::<E>::new();
    env.prewrite(vec![Mutation::put(b"k".to_vec(), b"theirs".to_vec())], 15)
        .unwrap();
    assert!(matches!(
        env.commit(&[b"k"], 10, 20),
        Err(Error::TxnLockNotFound { .. })
    ));
    assert_eq!(env.lock(b"k").unwrap().start_ts, 15);
}

fn commit_after_rollback_is_refused<E: Fresh>() {
    let env = Env::<E>::new();
    env.prewrite(vec![Mutation::put(b"k".to_vec(), b"v".to_vec())], 10)
        .unwrap();
    env.rollback(&[b"k"], 10).unwrap();
    match env.commit(&[b"k"], 10, 20) {
        Err(Error::AlreadyRolledBack { key, start_ts }) => {
            assert_eq!((key.as_slice(), start_ts), (&b"k"[..], 10))
        }
        other => panic!("expected AlreadyRolledBack, got {other:?}"),
    }
    assert_eq!(env.value(b"k", 30), None);
}

fn commit_of_a_pessimistic_lock_is_refused<E: Fresh>() {
    let env = Env::<E>::new();
    let req = PessimisticLockRequest {
        primary: b"k".to_vec(),
        start_ts: 10,
        for_update_ts: 10,
        lock_ttl_ms: TTL_MS,
        need_value: false,
        keys: keys(&[b"k"]),
    };
    env.run(|s, wb| acquire_pessimistic_lock(s, wb, &req))
        .unwrap();
    assert!(matches!(
        env.commit(&[b"k"], 10, 20),
        Err(Error::TxnLockNotFound { .. })
    ));
}

fn rollback_drops_lock_and_value_and_leaves_a_record<E: Fresh>() {
    let env = Env::<E>::new();
    env.prewrite(
        vec![
            Mutation::put(b"p".to_vec(), vec![1; 300]),
            Mutation::put(b"s".to_vec(), b"v".to_vec()),
        ],
        10,
    )
    .unwrap();
    env.rollback(&[b"p", b"s"], 10).unwrap();
    assert_eq!(env.count(Cf::Lock), 0);
    assert_eq!(env.count(Cf::Default), 0, "the large value is gone");
    let p = env.write_at(b"p", 10).unwrap();
    let s = env.write_at(b"s", 10).unwrap();
    assert_eq!(
        (p.kind, p.protected),
        (WriteKind::Rollback, true),
        "primary"
    );
    assert_eq!(
        (s.kind, s.protected),
        (WriteKind::Rollback, false),
        "secondary"
    );
    let (out, writes) = env.run_counted(|sn, wb| rollback(sn, wb, &keys(&[b"p", b"s"]), 10));
    out.expect("rolling back twice is harmless");
    assert_eq!(writes, 0);
}

fn rollback_of_a_committed_key_is_refused<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"k".to_vec(), b"v".to_vec())], 10, 20);
    match env.rollback(&[b"k"], 10) {
        Err(Error::Committed { commit_ts, .. }) => assert_eq!(commit_ts, 20),
        other => panic!("expected Committed, got {other:?}"),
    }
    assert_eq!(env.value(b"k", 20), Some(b"v".to_vec()));
}

fn a_rollback_on_another_txns_commit_slot_marks_it_overlapped<E: Fresh>() {
    // Goal: a commit ts may equal another txn's start ts (1PC / async commit). Method:
    // txn A commits at 20; txn B (start 20) is rolled back on the same key; then B's late
    // prewrite arrives and must fail, and A's value must stay.
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"k".to_vec(), b"a".to_vec())], 10, 20);
    env.rollback(&[b"k"], 20).unwrap();
    let w = env.write_at(b"k", 20).unwrap();
    assert_eq!(
        (w.kind, w.start_ts, w.overlapped_rollback),
        (WriteKind::Put, 10, true)
    );
    assert_eq!(env.value(b"k", 20), Some(b"a".to_vec()));
    assert!(matches!(
        env.prewrite(vec![Mutation::put(b"k".to_vec(), b"b".to_vec())], 20),
        Err(Error::AlreadyRolledBack { .. })
    ));
    // The other way round: a rollback record first, then a commit onto its slot.
    let env = Env::<E>::new();
    env.rollback(&[b"k"], 20).unwrap();
    let req = env.request(b"k", 10, vec![Mutation::put(b"k".to_vec(), b"a".to_vec())]);
    env.run(|s, wb| one_pc(s, wb, &req, 20)).unwrap();
    assert!(env.write_at(b"k", 20).unwrap().overlapped_rollback);
    assert!(matches!(
        env.prewrite(vec![Mutation::put(b"k".to_vec(), b"b".to_vec())], 20),
        Err(Error::AlreadyRolledBack { .. })
    ));
}

fn rollback_over_another_txns_lock_records_ours_and_keeps_theirs<E: Fresh>() {
    // Goal: TinyKV 4C "rollback other txn". Our prewrite never landed because another
    // txn holds the key; rolling us back must not touch their lock.
    let env = Env::<E>::new();
    env.prewrite(vec![Mutation::put(b"k".to_vec(), vec![5; 300])], 20)
        .unwrap();
    env.rollback(&[b"k"], 10).unwrap();
    let theirs = env.lock(b"k").unwrap();
    assert_eq!(theirs.start_ts, 20);
    let w = env.write_at(b"k", 10).unwrap();
    assert_eq!(
        (w.kind, w.start_ts, w.protected),
        (WriteKind::Rollback, 10, true)
    );
    assert_eq!(env.count(Cf::Default), 1, "their large value stays");
    env.commit(&[b"k"], 20, 30).unwrap();
    assert_eq!(env.value(b"k", 30), Some(vec![5; 300]));
}

fn cleanup_rolls_back_only_an_expired_lock<E: Fresh>() {
    let env = Env::<E>::new();
    let start = at_ms(1_000);
    env.prewrite(vec![Mutation::put(b"k".to_vec(), b"v".to_vec())], start)
        .unwrap();
    let alive = at_ms(1_000 + TTL_MS - 1);
    assert!(matches!(
        env.run(|s, wb| cleanup(s, wb, b"k", start, alive)),
        Err(Error::KeyIsLocked { .. })
    ));
    env.run(|s, wb| cleanup(s, wb, b"k", start, at_ms(1_000 + TTL_MS)))
        .unwrap();
    assert!(env.lock(b"k").is_none());
    assert_eq!(env.write_at(b"k", start).unwrap().kind, WriteKind::Rollback);
}

fn cleanup_refuses_a_secondary_whose_primary_decides<E: Fresh>() {
    let env = Env::<E>::new();
    let start = at_ms(1_000);
    env.prewrite(
        vec![
            Mutation::put(b"p".to_vec(), b"1".to_vec()),
            Mutation::put(b"s".to_vec(), b"2".to_vec()),
        ],
        start,
    )
    .unwrap();
    let commit_ts = at_ms(1_001);
    env.commit(&[b"p"], start, commit_ts).unwrap();
    // The secondary's TTL ran out; its transaction committed on the primary.
    let expired = at_ms(1_000 + TTL_MS);
    assert!(matches!(
        env.run(|s, wb| cleanup(s, wb, b"s", start, expired)),
        Err(Error::InvalidRequest(_))
    ));
    assert!(env.lock(b"s").is_some(), "the secondary's lock stays");
    let ks = keys(&[b"s"]);
    env.run(|s, wb| resolve_lock(s, wb, &ks, start, commit_ts))
        .unwrap();
    assert_eq!(env.value(b"s", commit_ts), Some(b"2".to_vec()));
}

fn resolve_lock_commits_or_rolls_back_only_that_txns_locks<E: Fresh>() {
    let env = Env::<E>::new();
    env.prewrite(
        vec![
            Mutation::put(b"a".to_vec(), b"1".to_vec()),
            Mutation::put(b"b".to_vec(), b"2".to_vec()),
        ],
        10,
    )
    .unwrap();
    env.prewrite(
        vec![
            Mutation::put(b"c".to_vec(), b"3".to_vec()),
            Mutation::put(b"d".to_vec(), b"4".to_vec()),
        ],
        11,
    )
    .unwrap();
    let all = keys(&[b"a", b"b", b"c", b"d", b"none"]);
    assert_eq!(
        env.run(|s, wb| resolve_lock(s, wb, &all, 10, 20)).unwrap(),
        2
    );
    assert_eq!(env.value(b"a", 20), Some(b"1".to_vec()));
    assert_eq!(env.value(b"b", 20), Some(b"2".to_vec()));
    assert_eq!(
        env.lock(b"c").unwrap().start_ts,
        11,
        "another txn's lock stays"
    );
    assert_eq!(
        env.run(|s, wb| resolve_lock(s, wb, &all, 11, 0)).unwrap(),
        2
    );
    assert_eq!(env.count(Cf::Lock), 0);
    assert_eq!(env.value(b"c", 30), None);
    assert_eq!(env.write_at(b"d", 11).unwrap().kind, WriteKind::Rollback);
    assert_eq!(
        env.run(|s, wb| resolve_lock(s, wb, &all, 11, 0)).unwrap(),
        0,
        "twice"
    );
}

fn resolving_a_committed_txn_drops_its_unprewritten_pessimistic_locks<E: Fresh>() {
    let env = Env::<E>::new();
    let req = PessimisticLockRequest {
        primary: b"p".to_vec(),
        start_ts: 10,
        for_update_ts: 10,
        lock_ttl_ms: TTL_MS,
        need_value: false,
        keys: keys(&[b"p", b"extra"]),
    };
    env.run(|s, wb| acquire_pessimistic_lock(s, wb, &req))
        .unwrap();
    let mut pw = env.request(
        b"p",
        10,
        vec![Mutation::put(b"p".to_vec(), b"v".to_vec()).pessimistic()],
    );
    pw.for_update_ts = 10;
    env.run(|s, wb| prewrite(s, wb, &pw)).unwrap();
    env.commit(&[b"p"], 10, 20).unwrap();
    let extra = keys(&[b"extra"]);
    assert_eq!(
        env.run(|s, wb| resolve_lock(s, wb, &extra, 10, 20))
            .unwrap(),
        1
    );
    assert!(env.lock(b"extra").is_none());
    assert!(
        env.writes(b"extra").is_empty(),
        "the txn wrote nothing there"
    );
}

on_both!(
    commit_makes_the_value_visible_from_its_commit_ts_and_drops_the_lock,
    commit_after_rollback_is_refused,
    rollback_of_a_committed_key_is_refused,
    resolve_lock_commits_or_rolls_back_only_that_txns_locks,
);

on_mem!(
    a_repeated_commit_is_idempotent,
    commit_without_prewrite_is_txn_lock_not_found,
    commit_racing_another_txns_lock_fails_and_leaves_it,
    commit_of_a_pessimistic_lock_is_refused,
    rollback_drops_lock_and_value_and_leaves_a_record,
    a_rollback_on_another_txns_commit_slot_marks_it_overlapped,
    rollback_over_another_txns_lock_records_ours_and_keeps_theirs,
    resolving_a_committed_txn_drops_its_unprewritten_pessimistic_locks,
    cleanup_rolls_back_only_an_expired_lock,
    cleanup_refuses_a_secondary_whose_primary_decides,
);
