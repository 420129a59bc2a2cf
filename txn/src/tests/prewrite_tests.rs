//! Prewrite and 1PC (TinyKV 4B "prewrite": locked, written, older write, empty; TiKV's
//! idempotence, late prewrite, pessimistic and async-commit variants).

use super::*;

fn prewrite_locks_each_key_naming_the_primary<E: Fresh>() {
    let env = Env::<E>::new();
    let big = vec![1u8; 1000];
    env.prewrite(
        vec![
            Mutation::put(b"p".to_vec(), b"v".to_vec()),
            Mutation::put(b"s1".to_vec(), big.clone()),
            Mutation::delete(b"s2".to_vec()),
            Mutation::lock(b"s3".to_vec()),
        ],
        10,
    )
    .unwrap();
    let kinds = [
        (&b"p"[..], LockKind::Put, Some(b"v".to_vec())),
        (b"s1", LockKind::Put, None),
        (b"s2", LockKind::Delete, None),
        (b"s3", LockKind::Lock, None),
    ];
    for (k, kind, short) in kinds {
        let l = env.lock(k).expect("locked");
        assert_eq!(
            (l.kind, l.primary.as_slice(), l.start_ts),
            (kind, &b"p"[..], 10)
        );
        assert_eq!((l.ttl_ms, l.short_value), (TTL_MS, short));
    }
    assert_eq!(env.count(Cf::Default), 1, "the large value only");
    assert_eq!(env.count(Cf::Write), 0, "nothing committed");
}

fn prewrite_with_no_mutations_writes_nothing<E: Fresh>() {
    let env = Env::<E>::new();
    let req = env.request(b"p", 10, vec![]);
    let (out, writes) = env.run_counted(|s, wb| prewrite(s, wb, &req));
    out.unwrap();
    assert_eq!(writes, 0);
}

fn prewrite_meets_another_txns_lock<E: Fresh>() {
    let env = Env::<E>::new();
    env.prewrite(vec![Mutation::put(b"k".to_vec(), b"a".to_vec())], 10)
        .unwrap();
    for start_ts in [5, 20] {
        match env.prewrite(vec![Mutation::put(b"k".to_vec(), b"b".to_vec())], start_ts) {
            Err(e @ Error::KeyIsLocked { .. }) => assert!(e.is_retryable()),
            other => panic!("expected KeyIsLocked, got {other:?}"),
        }
    }
    assert_eq!(
        env.lock(b"k").unwrap().start_ts,
        10,
        "the lock holder is untouched"
    );
}

fn prewrite_meets_a_write_committed_after_its_start_ts<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"k".to_vec(), b"a".to_vec())], 10, 20);
    for start_ts in [15, 19] {
        match env.prewrite(vec![Mutation::put(b"k".to_vec(), b"b".to_vec())], start_ts) {
            Err(e @ Error::WriteConflict { .. }) => {
                assert!(e.is_retryable());
                let Error::WriteConflict {
                    start_ts: s,
                    conflict_start_ts,
                    conflict_commit_ts,
                    ..
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(
                    (s, conflict_start_ts, conflict_commit_ts),
                    (start_ts, 10, 20)
                );
            }
            other => panic!("start {start_ts}: expected WriteConflict, got {other:?}"),
        }
    }
    assert!(env.lock(b"k").is_none());
    env.prewrite(vec![Mutation::put(b"k".to_vec(), b"c".to_vec())], 21)
        .expect("an older write is no conflict");
}

/// An async-commit or 1PC commit ts is computed, not drawn from the TSO, so a later
/// transaction may start at exactly that ts; its snapshot holds the write (TiKV's rule too).
fn a_write_committed_at_its_start_ts_is_no_conflict<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"k".to_vec(), b"a".to_vec())], 10, 20);
    env.prewrite(vec![Mutation::put(b"k".to_vec(), b"b".to_vec())], 20)
        .expect("a write committed at start_ts is in the snapshot");
    env.commit(&[b"k"], 20, 25).unwrap();
    assert_eq!(env.get(b"k", 30).unwrap(), Some(b"b".to_vec()));
    assert_eq!(
        env.get(b"k", 20).unwrap(),
        Some(b"a".to_vec()),
        "the earlier write stays at 20"
    );
}

fn another_txns_rollback_record_is_no_conflict<E: Fresh>() {
    let env = Env::<E>::new();
    env.rollback(&[b"k"], 30).unwrap();
    env.prewrite(vec![Mutation::put(b"k".to_vec(), b"v".to_vec())], 20)
        .expect("a rollback changes no data");
}

fn re_prewrite_of_own_lock_is_idempotent<E: Fresh>() {
    let env = Env::<E>::new();
    let req = env.request(b"k", 10, vec![Mutation::put(b"k".to_vec(), vec![2; 400])]);
    env.run(|s, wb| prewrite(s, wb, &req)).unwrap();
    let (out, writes) = env.run_counted(|s, wb| prewrite(s, wb, &req));
    out.unwrap();
    assert_eq!(writes, 0, "the second prewrite writes nothing");
    env.commit(&[b"k"], 10, 20).unwrap();
    let (out, writes) = env.run_counted(|s, wb| prewrite(s, wb, &req));
    out.expect("a prewrite after the commit is a stale duplicate");
    assert_eq!(writes, 0);
    assert!(env.lock(b"k").is_none());
}

fn a_late_prewrite_after_rollback_cannot_land<E: Fresh>() {
    // Goal: Percolator's protected rollback. Method: roll back a txn on a key it never
    // prewrote (the prewrite is "in flight"), then let the prewrite arrive.
    let env = Env::<E>::new();
    env.rollback(&[b"k"], 10).unwrap();
    let w = env.write_at(b"k", 10).expect("rollback record");
    assert_eq!((w.kind, w.protected), (WriteKind::Rollback, true));
    match env.prewrite(vec![Mutation::put(b"k".to_vec(), b"v".to_vec())], 10) {
        Err(e @ Error::AlreadyRolledBack { .. }) => assert!(!e.is_retryable()),
        other => panic!("expected AlreadyRolledBack, got {other:?}"),
    }
    assert!(env.lock(b"k").is_none());
}

fn a_key_twice_in_one_prewrite_is_refused<E: Fresh>() {
    let env = Env::<E>::new();
    let r = env.prewrite(
        vec![
            Mutation::put(b"k".to_vec(), b"1".to_vec()),
            Mutation::delete(b"k".to_vec()),
        ],
        10,
    );
    assert!(matches!(r, Err(Error::InvalidRequest(_))));
    assert!(env.lock(b"k").is_none());
}

fn async_commit_prewrite_records_secondaries_and_min_commit_ts<E: Fresh>() {
    let env = Env::<E>::new();
    let mut req = env.request(
        b"p",
        10,
        vec![
            Mutation::put(b"p".to_vec(), b"1".to_vec()),
            Mutation::put(b"s".to_vec(), b"2".to_vec()),
        ],
    );
    req.async_commit_secondaries = Some(keys(&[b"s"]));
    req.min_commit_ts = 25;
    let out = env.run(|s, wb| prewrite(s, wb, &req)).unwrap();
    assert_eq!(out.min_commit_ts, 25);
    let p = env.lock(b"p").unwrap();
    assert!(p.use_async_commit);
    assert_eq!(
        (p.secondaries.clone(), p.min_commit_ts),
        (keys(&[b"s"]), 25)
    );
    assert!(env.lock(b"s").unwrap().secondaries.is_empty());
    req.min_commit_ts = 0;
    let again = env.run(|s, wb| prewrite(s, wb, &req)).unwrap();
    assert_eq!(
        again.min_commit_ts, 25,
        "a retry reports the locks' min_commit_ts"
    );
    match env.commit(&[b"p", b"s"], 10, 24) {
        Err(e @ Error::CommitTsExpired { .. }) => assert!(e.is_retryable()),
        other => panic!("expected CommitTsExpired, got {other:?}"),
    }
    env.commit(&[b"p", b"s"], 10, 25).unwrap();
}

/// An async commit's ts is its locks' floor, answered without a TSO wait: a prewrite over
/// a pessimistic lock taken at a newer ts than the request names (a hand-over at another
/// transaction's commit ts, maybe above anything the TSO handed out) is refused, writing
/// nothing, until the request names it; and its primary is never cleaned up by TTL alone.
fn an_async_commit_over_a_lock_newer_than_the_request_knows_is_refused<E: Fresh>() {
    let env = Env::<E>::new();
    let mut req = locked_then_prewrite(&env, 30, b"v");
    req.for_update_ts = 25;
    req.async_commit_secondaries = Some(Vec::new());
    match env.run(|s, wb| prewrite(s, wb, &req)) {
        Err(Error::CommitTsExpired { min_commit_ts, .. }) => assert_eq!(min_commit_ts, 31),
        other => panic!("expected CommitTsExpired, got {other:?}"),
    }
    assert_eq!(
        env.lock(b"k").unwrap().kind,
        LockKind::Pessimistic,
        "nothing written"
    );
    req.for_update_ts = 30;
    let out = env.run(|s, wb| prewrite(s, wb, &req)).unwrap();
    assert_eq!(out.min_commit_ts, 31);
    let far_future = crate::ts::compose(crate::ts::physical_ms(15) + 3_600_000, 0);
    match env.run(|s, wb| crate::cleanup(s, wb, b"k", 15, far_future)) {
        Err(Error::InvalidRequest(why)) => assert!(why.contains("async-commit"), "{why}"),
        other => panic!("an async primary is not cleaned up by TTL: {other:?}"),
    }
    assert!(env.lock(b"k").unwrap().use_async_commit);
}

/// Transaction 15 locks `k` pessimistically at `for_update_ts`; returns its prewrite of
/// `k` to `value` (pessimistic, `for_update_ts` still to be set by the caller).
fn locked_then_prewrite<E: Fresh>(
    env: &Env<E>,
    for_update_ts: u64,
    value: &[u8],
) -> PrewriteRequest {
    let lock_req = PessimisticLockRequest {
        primary: b"k".to_vec(),
        start_ts: 15,
        for_update_ts,
        lock_ttl_ms: TTL_MS,
        need_value: false,
        keys: keys(&[b"k"]),
    };
    env.run(|s, wb| acquire_pessimistic_lock(s, wb, &lock_req))
        .unwrap();
    env.request(
        b"k",
        15,
        vec![Mutation::put(b"k".to_vec(), value.to_vec()).pessimistic()],
    )
}

fn pessimistic_prewrite_converts_its_own_lock_without_conflict_check<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"k".to_vec(), b"old".to_vec())], 10, 20);
    let mut req = locked_then_prewrite(&env, 25, b"new");
    req.for_update_ts = 25;
    env.run(|s, wb| prewrite(s, wb, &req))
        .expect("commit at 20 is below for_update_ts: no conflict");
    let l = env.lock(b"k").unwrap();
    assert_eq!((l.kind, l.for_update_ts), (LockKind::Put, 25));
    env.commit(&[b"k"], 15, 30).unwrap();
    assert_eq!(env.value(b"k", 30), Some(b"new".to_vec()));

    let mut lost = env.request(
        b"q",
        40,
        vec![Mutation::put(b"q".to_vec(), b"x".to_vec()).pessimistic()],
    );
    lost.for_update_ts = 40;
    match env.run(|s, wb| prewrite(s, wb, &lost)) {
        Err(Error::PessimisticLockNotFound { key, start_ts }) => {
            assert_eq!((key.as_slice(), start_ts), (&b"q"[..], 40))
        }
        other => panic!("expected PessimisticLockNotFound, got {other:?}"),
    }
}

fn one_pc_writes_commit_records_directly<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"c".to_vec(), b"0".to_vec())], 1, 2);
    let req = env.request(
        b"a",
        10,
        vec![
            Mutation::put(b"a".to_vec(), b"1".to_vec()),
            Mutation::put(b"b".to_vec(), vec![3; 600]),
            Mutation::delete(b"c".to_vec()),
        ],
    );
    env.run(|s, wb| one_pc(s, wb, &req, 15)).unwrap();
    assert_eq!(env.count(Cf::Lock), 0, "1PC leaves no lock");
    assert_eq!(env.value(b"a", 15), Some(b"1".to_vec()));
    assert_eq!(env.value(b"b", 15), Some(vec![3; 600]));
    assert_eq!(
        (env.value(b"c", 14), env.value(b"c", 15)),
        (Some(b"0".to_vec()), None)
    );
    // A retry, at the new ts the leader chose for it, writes nothing and reports the ts
    // the data carries; so does a commit of its keys by a 2PC fallback.
    let (out, writes) = env.run_counted(|s, wb| one_pc(s, wb, &req, 18));
    assert_eq!(
        out.expect("a retried 1PC is idempotent"),
        OnePcOutcome::Committed(15)
    );
    assert_eq!(writes, 0);
    let (out, writes) = env.run_counted(|s, wb| commit(s, wb, &[b"a".to_vec()], 10, 30));
    assert_eq!(out.expect("a commit after the 1PC is idempotent"), 15);
    assert_eq!(writes, 0);
    assert!(matches!(
        env.run(|s, wb| one_pc(s, wb, &req, 10)),
        Err(Error::InvalidRequest(_))
    ));
    let conflicting = env.request(b"a", 12, vec![Mutation::put(b"a".to_vec(), b"x".to_vec())]);
    assert!(matches!(
        env.run(|s, wb| one_pc(s, wb, &conflicting, 20)),
        Err(Error::WriteConflict { .. })
    ));
}

/// A prewrite proposed as a plain prewrite (1PC was not possible on the leader then)
/// whose answer was lost, retried as 1PC: the retry writes nothing and says the keys are
/// prewritten, so the client commits them by 2PC (found by the simulator's bank).
fn a_one_pc_retry_over_its_own_prewrite_answers_prewritten<E: Fresh>() {
    let env = Env::<E>::new();
    let req = env.request(
        b"a",
        10,
        vec![
            Mutation::put(b"a".to_vec(), b"1".to_vec()),
            Mutation::put(b"b".to_vec(), b"2".to_vec()),
        ],
    );
    env.run(|s, wb| prewrite(s, wb, &req).map(|_| ())).unwrap();
    let (out, writes) = env.run_counted(|s, wb| one_pc(s, wb, &req, 15));
    assert_eq!(
        out.expect("a 1PC retry over its own locks is no error"),
        OnePcOutcome::Prewritten { min_commit_ts: 0 }
    );
    assert_eq!(writes, 0, "the retry writes nothing");
    assert_eq!(env.count(Cf::Lock), 2, "the first attempt's locks stand");
    assert!(env.write_at(b"a", 15).is_none(), "nothing committed");
    env.run(|s, wb| commit(s, wb, &[b"a".to_vec(), b"b".to_vec()], 10, 20).map(|_| ()))
        .unwrap();
    assert_eq!(env.value(b"b", 20), Some(b"2".to_vec()));
}

on_both!(
    a_one_pc_retry_over_its_own_prewrite_answers_prewritten,
    prewrite_meets_another_txns_lock,
    prewrite_meets_a_write_committed_after_its_start_ts,
    a_write_committed_at_its_start_ts_is_no_conflict,
    a_late_prewrite_after_rollback_cannot_land,
    one_pc_writes_commit_records_directly,
);

on_mem!(
    prewrite_locks_each_key_naming_the_primary,
    prewrite_with_no_mutations_writes_nothing,
    another_txns_rollback_record_is_no_conflict,
    re_prewrite_of_own_lock_is_idempotent,
    a_key_twice_in_one_prewrite_is_refused,
    async_commit_prewrite_records_secondaries_and_min_commit_ts,
    an_async_commit_over_a_lock_newer_than_the_request_knows_is_refused,
    pessimistic_prewrite_converts_its_own_lock_without_conflict_check,
);
