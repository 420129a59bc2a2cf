//! Pessimistic locks: acquire (conflicts after for_update_ts, values, re-acquire) and
//! pessimistic rollback.

use super::*;

fn lock_req(
    ks: &[&[u8]],
    start_ts: u64,
    for_update_ts: u64,
    need_value: bool,
) -> PessimisticLockRequest {
    PessimisticLockRequest {
        primary: ks.first().map(|k| k.to_vec()).unwrap_or_default(),
        start_ts,
        for_update_ts,
        lock_ttl_ms: TTL_MS,
        need_value,
        keys: keys(ks),
    }
}

fn acquire_locks_and_returns_the_newest_values<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"a".to_vec(), b"1".to_vec())], 10, 20);
    env.committed(vec![Mutation::put(b"a".to_vec(), vec![2; 300])], 30, 40);
    let req = lock_req(&[b"a", b"b"], 50, 50, true);
    let values = env
        .run(|s, wb| acquire_pessimistic_lock(s, wb, &req))
        .unwrap();
    assert_eq!(values, vec![Some(vec![2; 300]), None]);
    let l = env.lock(b"a").unwrap();
    assert_eq!(
        (l.kind, l.start_ts, l.for_update_ts),
        (LockKind::Pessimistic, 50, 50)
    );
    assert!(
        matches!(
            env.prewrite(vec![Mutation::put(b"a".to_vec(), b"x".to_vec())], 60),
            Err(Error::KeyIsLocked { .. })
        ),
        "a pessimistic lock blocks writers"
    );
    let other = lock_req(&[b"b"], 60, 60, false);
    assert!(matches!(
        env.run(|s, wb| acquire_pessimistic_lock(s, wb, &other)),
        Err(Error::KeyIsLocked { .. })
    ));
    let quiet = lock_req(&[b"a"], 50, 50, false);
    assert_eq!(
        env.run(|s, wb| acquire_pessimistic_lock(s, wb, &quiet))
            .unwrap(),
        vec![None]
    );
}

fn acquire_conflicts_only_with_writes_after_for_update_ts<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"k".to_vec(), b"v".to_vec())], 20, 30);
    let late = lock_req(&[b"k"], 10, 25, false);
    match env.run(|s, wb| acquire_pessimistic_lock(s, wb, &late)) {
        Err(Error::WriteConflict {
            start_ts,
            conflict_start_ts,
            conflict_commit_ts,
            ..
        }) => assert_eq!(
            (start_ts, conflict_start_ts, conflict_commit_ts),
            (10, 20, 30)
        ),
        other => panic!("expected WriteConflict, got {other:?}"),
    }
    assert!(env.lock(b"k").is_none());
    let retried = lock_req(&[b"k"], 10, 30, false);
    env.run(|s, wb| acquire_pessimistic_lock(s, wb, &retried))
        .expect("a newer for_update_ts sees the write");
}

fn re_acquire_raises_for_update_ts<E: Fresh>() {
    let env = Env::<E>::new();
    env.run(|s, wb| acquire_pessimistic_lock(s, wb, &lock_req(&[b"k"], 10, 10, false)))
        .unwrap();
    env.run(|s, wb| acquire_pessimistic_lock(s, wb, &lock_req(&[b"k"], 10, 30, false)))
        .unwrap();
    assert_eq!(env.lock(b"k").unwrap().for_update_ts, 30);
    let (out, writes) =
        env.run_counted(|s, wb| acquire_pessimistic_lock(s, wb, &lock_req(&[b"k"], 10, 20, false)));
    out.unwrap();
    assert_eq!((writes, env.lock(b"k").unwrap().for_update_ts), (0, 30));
}

fn acquire_after_rollback_is_refused<E: Fresh>() {
    let env = Env::<E>::new();
    env.rollback(&[b"k"], 10).unwrap();
    assert!(matches!(
        env.run(|s, wb| acquire_pessimistic_lock(s, wb, &lock_req(&[b"k"], 10, 10, false))),
        Err(Error::AlreadyRolledBack { .. })
    ));
}

fn pessimistic_rollback_removes_only_its_own_older_pessimistic_locks<E: Fresh>() {
    let env = Env::<E>::new();
    env.run(|s, wb| acquire_pessimistic_lock(s, wb, &lock_req(&[b"a", b"b"], 10, 20, false)))
        .unwrap();
    env.prewrite(vec![Mutation::put(b"c".to_vec(), b"v".to_vec())], 10)
        .unwrap();
    env.prewrite(vec![Mutation::put(b"d".to_vec(), b"v".to_vec())], 11)
        .unwrap();
    let all = keys(&[b"a", b"b", b"c", b"d"]);
    assert_eq!(
        env.run(|s, wb| pessimistic_rollback(s, wb, &all, 10, 19))
            .unwrap(),
        0,
        "locks of a newer statement stay"
    );
    assert_eq!(
        env.run(|s, wb| pessimistic_rollback(s, wb, &all, 10, 20))
            .unwrap(),
        2
    );
    assert!(env.lock(b"a").is_none() && env.lock(b"b").is_none());
    assert!(env.lock(b"c").is_some() && env.lock(b"d").is_some());
    assert_eq!(env.count(Cf::Write), 0, "no record is left");
}

fn lock_with_conflict_takes_the_lock_at_the_newest_commit_and_reads_it<E: Fresh>() {
    let env = Env::<E>::new();
    // The waiter (start 10, for_update_ts 15) was handed `a` after the holder (20)
    // committed at 30; `b` was last written at 12, below its for_update_ts.
    env.committed(vec![Mutation::put(b"b".to_vec(), b"old".to_vec())], 11, 12);
    env.committed(vec![Mutation::put(b"a".to_vec(), b"new".to_vec())], 20, 30);
    let req = lock_req(&[b"a", b"b"], 10, 15, true);
    let (values, for_update_ts) = env
        .run(|s, wb| acquire_pessimistic_lock_with_conflict(s, wb, &req))
        .unwrap();
    assert_eq!(values, vec![Some(b"new".to_vec()), Some(b"old".to_vec())]);
    assert_eq!(for_update_ts, 30, "raised to the conflicting commit");
    assert_eq!(env.lock(b"a").unwrap().for_update_ts, 30);
    // No newer write: the request's own for_update_ts.
    let quiet = lock_req(&[b"c"], 40, 45, false);
    let (_, ts) = env
        .run(|s, wb| acquire_pessimistic_lock_with_conflict(s, wb, &quiet))
        .unwrap();
    assert_eq!(ts, 45);
    // Another transaction's lock still fails it.
    let blocked = lock_req(&[b"a"], 50, 50, false);
    assert!(matches!(
        env.run(|s, wb| acquire_pessimistic_lock_with_conflict(s, wb, &blocked)),
        Err(Error::KeyIsLocked { .. })
    ));
}

fn a_handed_over_lock_commits_only_above_its_for_update_ts<E: Fresh>() {
    let env = Env::<E>::new();
    // The holder (20) committed at 30 by 1PC; the waiter (start 10) is handed `k` at 30.
    env.committed(
        vec![Mutation::put(b"k".to_vec(), b"holder".to_vec())],
        20,
        30,
    );
    let req = lock_req(&[b"k"], 10, 25, false);
    let (_, fut) = env
        .run(|s, wb| acquire_pessimistic_lock_with_conflict(s, wb, &req))
        .unwrap();
    assert_eq!(fut, 30);
    // Its answer was lost: a retry at the old for_update_ts reports the lock's.
    let (_, again) = env
        .run(|s, wb| acquire_pessimistic_lock_at(s, wb, &req))
        .unwrap();
    assert_eq!(
        again, 30,
        "a retry that finds its own lock reports its for_update_ts"
    );
    let mut pw = env.request(
        b"k",
        10,
        vec![Mutation::put(b"k".to_vec(), b"waiter".to_vec()).pessimistic()],
    );
    pw.for_update_ts = fut;
    env.run(|s, wb| prewrite(s, wb, &pw)).unwrap();
    assert_eq!(
        env.lock(b"k").unwrap().min_commit_ts,
        31,
        "above for_update_ts"
    );
    // A commit ts at the holder's (or below) would replace its version or hide under it.
    for at in [29, 30] {
        assert!(
            matches!(
                env.commit(&[b"k"], 10, at),
                Err(Error::CommitTsExpired {
                    min_commit_ts: 31,
                    ..
                })
            ),
            "commit at {at}"
        );
    }
    env.commit(&[b"k"], 10, 31).unwrap();
    assert_eq!(env.value(b"k", 30), Some(b"holder".to_vec()));
    assert_eq!(env.value(b"k", 31), Some(b"waiter".to_vec()));
}

/// A client that missed the hand-over's ts (`locked_with_conflict_ts`) prewrites with its
/// older `for_update_ts`: the lock still makes it commit above the version it read — a 1PC
/// at the leader's ts below it is refused (the store prewrites instead), and a plain
/// prewrite's lock and answer carry the floor (found by the simulator's bank).
fn a_stale_for_update_ts_still_commits_above_the_handed_over_lock<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(
        vec![Mutation::put(b"k".to_vec(), b"holder".to_vec())],
        20,
        30,
    );
    let req = lock_req(&[b"k"], 10, 25, false);
    env.run(|s, wb| acquire_pessimistic_lock_with_conflict(s, wb, &req))
        .unwrap();
    let mut pw = env.request(
        b"k",
        10,
        vec![Mutation::put(b"k".to_vec(), b"waiter".to_vec()).pessimistic()],
    );
    pw.for_update_ts = 25; // stale: the lock is at 30
    for at in [26, 30] {
        assert!(
            matches!(
                env.run(|s, wb| one_pc(s, wb, &pw, at)),
                Err(Error::CommitTsExpired {
                    min_commit_ts: 31,
                    ..
                })
            ),
            "a 1PC at {at} would hide under the version read at 30"
        );
    }
    let out = env.run(|s, wb| prewrite(s, wb, &pw)).unwrap();
    assert_eq!(out.min_commit_ts, 31, "the answer names the floor");
    let lock = env.lock(b"k").unwrap();
    assert_eq!((lock.min_commit_ts, lock.for_update_ts), (31, 30));
    assert!(env.commit(&[b"k"], 10, 30).is_err());
    env.commit(&[b"k"], 10, 31).unwrap();
    assert_eq!(env.value(b"k", 31), Some(b"waiter".to_vec()));
}

on_both!(
    a_stale_for_update_ts_still_commits_above_the_handed_over_lock,
    a_handed_over_lock_commits_only_above_its_for_update_ts,
    acquire_conflicts_only_with_writes_after_for_update_ts,
    lock_with_conflict_takes_the_lock_at_the_newest_commit_and_reads_it,
);

on_mem!(
    acquire_locks_and_returns_the_newest_values,
    re_acquire_raises_for_update_ts,
    acquire_after_rollback_is_refused,
    pessimistic_rollback_removes_only_its_own_older_pessimistic_locks,
);
