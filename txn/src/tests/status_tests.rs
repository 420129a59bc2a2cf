//! check_txn_status, txn_heartbeat and check_secondary_locks (TinyKV 4C "check txn
//! status": TTL alive / expired / committed; TiKV's push of min_commit_ts).

use super::*;

fn status<E: Fresh>(
    env: &Env<E>,
    primary: &[u8],
    lock_ts: u64,
    caller_start_ts: u64,
    current_ts: u64,
    rollback_if_not_exist: bool,
) -> Result<TxnStatus> {
    env.run(|s, wb| {
        check_txn_status(
            s,
            wb,
            primary,
            lock_ts,
            caller_start_ts,
            current_ts,
            rollback_if_not_exist,
        )
    })
}

fn a_live_primary_is_alive_and_a_reader_may_push_it<E: Fresh>() {
    let env = Env::<E>::new();
    let start = at_ms(1_000);
    env.prewrite(vec![Mutation::put(b"p".to_vec(), b"v".to_vec())], start)
        .unwrap();
    let now = at_ms(1_000 + TTL_MS - 1);
    match status(&env, b"p", start, 0, now, false).unwrap() {
        TxnStatus::Alive {
            lock,
            min_commit_ts_pushed,
        } => {
            assert_eq!((lock.ttl_ms, min_commit_ts_pushed), (TTL_MS, false));
        }
        other => panic!("expected Alive, got {other:?}"),
    }
    // A reader at `reader_ts` pushes the lock's min_commit_ts past its own ts, and can
    // then read below the lock without waiting.
    let reader_ts = start + 5;
    assert!(env.get(b"p", reader_ts).is_err());
    match status(&env, b"p", start, reader_ts, start + 6, false).unwrap() {
        TxnStatus::Alive {
            lock,
            min_commit_ts_pushed: true,
        } => assert_eq!(lock.min_commit_ts, start + 6),
        other => panic!("expected a pushed Alive, got {other:?}"),
    }
    assert_eq!(env.lock(b"p").unwrap().min_commit_ts, start + 6);
    assert_eq!(
        env.value(b"p", reader_ts),
        None,
        "the push let the reader through"
    );
    assert!(matches!(
        env.commit(&[b"p"], start, start + 5),
        Err(Error::CommitTsExpired { .. })
    ));
}

fn an_expired_primary_is_rolled_back_for_good<E: Fresh>() {
    let env = Env::<E>::new();
    let start = at_ms(1_000);
    env.prewrite(vec![Mutation::put(b"p".to_vec(), b"v".to_vec())], start)
        .unwrap();
    let now = at_ms(1_000 + TTL_MS);
    assert_eq!(
        status(&env, b"p", start, 0, now, false).unwrap(),
        TxnStatus::TtlExpiredRolledBack
    );
    assert!(env.lock(b"p").is_none());
    let w = env.write_at(b"p", start).unwrap();
    assert_eq!((w.kind, w.protected), (WriteKind::Rollback, true));
    assert!(matches!(
        env.commit(&[b"p"], start, now),
        Err(Error::AlreadyRolledBack { .. })
    ));
    assert_eq!(
        status(&env, b"p", start, 0, now, false).unwrap(),
        TxnStatus::RolledBack
    );
}

fn a_committed_primary_reports_its_commit_ts<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"p".to_vec(), b"v".to_vec())], 10, 20);
    assert_eq!(
        status(&env, b"p", 10, 0, at_ms(99_999), true).unwrap(),
        TxnStatus::Committed { commit_ts: 20 }
    );
}

fn a_missing_primary_is_rolled_back_only_when_asked<E: Fresh>() {
    let env = Env::<E>::new();
    match status(&env, b"p", 10, 0, at_ms(5), false) {
        Err(e @ Error::TxnNotFound { .. }) => assert!(!e.is_retryable()),
        other => panic!("expected TxnNotFound, got {other:?}"),
    }
    assert_eq!(env.count(Cf::Write), 0);
    assert_eq!(
        status(&env, b"p", 10, 0, at_ms(5), true).unwrap(),
        TxnStatus::NotFoundRolledBack
    );
    assert!(matches!(
        env.prewrite(vec![Mutation::put(b"p".to_vec(), b"v".to_vec())], 10),
        Err(Error::AlreadyRolledBack { .. })
    ));
}

fn async_commit_locks_are_neither_pushed_nor_rolled_back_on_expiry<E: Fresh>() {
    let env = Env::<E>::new();
    let start = at_ms(1_000);
    let mut req = env.request(
        b"p",
        start,
        vec![Mutation::put(b"p".to_vec(), b"v".to_vec())],
    );
    req.async_commit_secondaries = Some(vec![]);
    env.run(|s, wb| prewrite(s, wb, &req)).unwrap();
    match status(&env, b"p", start, start + 100, start + 101, false).unwrap() {
        TxnStatus::Alive {
            lock,
            min_commit_ts_pushed: false,
        } => assert_eq!(lock.min_commit_ts, start + 1),
        other => panic!("expected an unpushed Alive, got {other:?}"),
    }
    // Expired, it is left for its secondaries to decide: it may already be committed.
    match status(&env, b"p", start, 0, at_ms(1_000 + TTL_MS), true).unwrap() {
        TxnStatus::AsyncCommitUndecided { lock } => assert_eq!(lock.start_ts, start),
        other => panic!("expected AsyncCommitUndecided, got {other:?}"),
    }
    assert!(env.lock(b"p").is_some(), "not rolled back");
}

fn heartbeat_extends_but_never_shortens_the_ttl<E: Fresh>() {
    let env = Env::<E>::new();
    env.prewrite(vec![Mutation::put(b"p".to_vec(), b"v".to_vec())], 10)
        .unwrap();
    assert_eq!(
        env.run(|s, wb| txn_heartbeat(s, wb, b"p", 10, 10_000))
            .unwrap(),
        10_000
    );
    assert_eq!(
        env.run(|s, wb| txn_heartbeat(s, wb, b"p", 10, 5)).unwrap(),
        10_000
    );
    assert_eq!(env.lock(b"p").unwrap().ttl_ms, 10_000);
    assert!(matches!(
        env.run(|s, wb| txn_heartbeat(s, wb, b"p", 11, 10_000)),
        Err(Error::TxnLockNotFound { .. })
    ));
}

fn secondary_locks_report_locked_committed_or_rolled_back<E: Fresh>() {
    let env = Env::<E>::new();
    let mut req = env.request(
        b"p",
        10,
        vec![
            Mutation::put(b"p".to_vec(), b"1".to_vec()),
            Mutation::put(b"s1".to_vec(), b"2".to_vec()),
            Mutation::put(b"s2".to_vec(), b"3".to_vec()),
        ],
    );
    req.async_commit_secondaries = Some(keys(&[b"s1", b"s2", b"s3"]));
    req.min_commit_ts = 15;
    env.run(|s, wb| prewrite(s, wb, &req)).unwrap();
    let two = keys(&[b"s1", b"s2"]);
    match env
        .run(|s, wb| check_secondary_locks(s, wb, &two, 10))
        .unwrap()
    {
        SecondaryLocksStatus::Locked(locks) => {
            assert_eq!(locks.len(), 2);
            assert!(locks.iter().all(|l| l.min_commit_ts == 15));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // s3's prewrite never landed: the check rolls it back, so the txn cannot commit.
    let three = keys(&[b"s1", b"s2", b"s3"]);
    assert_eq!(
        env.run(|s, wb| check_secondary_locks(s, wb, &three, 10))
            .unwrap(),
        SecondaryLocksStatus::RolledBack
    );
    assert_eq!(env.write_at(b"s3", 10).unwrap().kind, WriteKind::Rollback);
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"s1".to_vec(), b"2".to_vec())], 10, 20);
    assert_eq!(
        env.run(|s, wb| check_secondary_locks(s, wb, &keys(&[b"s1"]), 10))
            .unwrap(),
        SecondaryLocksStatus::Committed { commit_ts: 20 }
    );
}

on_both!(
    a_live_primary_is_alive_and_a_reader_may_push_it,
    an_expired_primary_is_rolled_back_for_good,
    a_committed_primary_reports_its_commit_ts,
);

on_mem!(
    a_missing_primary_is_rolled_back_only_when_asked,
    async_commit_locks_are_neither_pushed_nor_rolled_back_on_expiry,
    heartbeat_extends_but_never_shortens_the_ttl,
    secondary_locks_report_locked_committed_or_rolled_back,
);
