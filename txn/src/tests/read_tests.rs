//! Reads at a timestamp (TinyKV 4A/4B "get" and "scan"): which version a reader sees,
//! which locks stop it, and that bad bytes are reported as corruption.

use super::*;

fn get_sees_the_newest_version_committed_at_or_below_its_ts<E: Fresh>() {
    // Goal: simple, too early, overwritten. Method: two committed versions, read around.
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"k".to_vec(), b"v1".to_vec())], 10, 20);
    env.committed(vec![Mutation::put(b"k".to_vec(), b"v2".to_vec())], 30, 40);
    assert_eq!(env.value(b"k", 19), None, "too early");
    assert_eq!(
        env.value(b"k", 20),
        Some(b"v1".to_vec()),
        "at the commit ts"
    );
    assert_eq!(env.value(b"k", 39), Some(b"v1".to_vec()));
    assert_eq!(env.value(b"k", 40), Some(b"v2".to_vec()), "overwritten");
    assert_eq!(env.value(b"k", u64::MAX), Some(b"v2".to_vec()));
    assert_eq!(env.value(b"missing", u64::MAX), None, "missing");
    assert_eq!(
        env.value(b"k\x00", u64::MAX),
        None,
        "a longer key is another key"
    );
}

fn get_of_a_deleted_key_is_none_and_older_reads_still_see_it<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"k".to_vec(), b"v".to_vec())], 10, 20);
    env.committed(vec![Mutation::delete(b"k".to_vec())], 30, 40);
    assert_eq!(env.value(b"k", 45), None);
    assert_eq!(env.value(b"k", 35), Some(b"v".to_vec()));
}

fn get_skips_rollback_and_lock_records<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"k".to_vec(), b"v".to_vec())], 10, 20);
    env.committed(vec![Mutation::lock(b"k".to_vec())], 30, 40);
    env.prewrite(vec![Mutation::put(b"k".to_vec(), b"gone".to_vec())], 50)
        .unwrap();
    env.rollback(&[b"k"], 50).unwrap();
    assert_eq!(env.writes(b"k").len(), 3, "put, lock, rollback records");
    assert_eq!(env.value(b"k", 100), Some(b"v".to_vec()));
}

fn large_values_live_in_default_and_read_back<E: Fresh>() {
    let env = Env::<E>::new();
    let big = vec![7u8; SHORT_VALUE_MAX_LEN + 1];
    let edge = vec![8u8; SHORT_VALUE_MAX_LEN];
    env.committed(
        vec![
            Mutation::put(b"big".to_vec(), big.clone()),
            Mutation::put(b"edge".to_vec(), edge.clone()),
            Mutation::put(b"empty".to_vec(), Vec::new()),
        ],
        10,
        20,
    );
    assert_eq!(env.count(Cf::Default), 1, "only the value over 255 bytes");
    assert_eq!(env.value(b"big", 20), Some(big));
    assert_eq!(env.value(b"edge", 20), Some(edge));
    assert_eq!(
        env.value(b"empty", 20),
        Some(Vec::new()),
        "empty is not absent"
    );
}

fn a_lock_blocks_readers_at_or_after_its_start_ts_only<E: Fresh>() {
    // Goal: Percolator's read rule. A data lock started at or below the read ts may
    // commit below it: the reader must not guess.
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"k".to_vec(), b"old".to_vec())], 10, 20);
    env.prewrite(vec![Mutation::put(b"k".to_vec(), b"new".to_vec())], 30)
        .unwrap();
    match env.get(b"k", 30) {
        Err(e @ Error::KeyIsLocked { .. }) => {
            assert!(e.is_retryable());
            let Error::KeyIsLocked { key, lock } = e else {
                unreachable!()
            };
            assert_eq!((key.as_slice(), lock.start_ts), (&b"k"[..], 30));
            assert_eq!(lock.primary, b"k");
        }
        other => panic!("expected KeyIsLocked, got {other:?}"),
    }
    assert_eq!(env.value(b"k", 29), Some(b"old".to_vec()), "lock is newer");
}

fn pessimistic_and_read_locks_do_not_block_readers<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"k".to_vec(), b"v".to_vec())], 10, 20);
    env.committed(vec![Mutation::put(b"r".to_vec(), b"w".to_vec())], 10, 20);
    let req = PessimisticLockRequest {
        primary: b"k".to_vec(),
        start_ts: 30,
        for_update_ts: 30,
        lock_ttl_ms: TTL_MS,
        need_value: false,
        keys: keys(&[b"k"]),
    };
    env.run(|s, wb| acquire_pessimistic_lock(s, wb, &req))
        .unwrap();
    env.prewrite(vec![Mutation::lock(b"r".to_vec())], 30)
        .unwrap();
    assert_eq!(env.value(b"k", 40), Some(b"v".to_vec()));
    assert_eq!(env.value(b"r", 40), Some(b"w".to_vec()));
}

fn scan_returns_the_visible_values_in_key_order_skipping_deletes_and_rollbacks<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(
        vec![
            Mutation::put(b"a".to_vec(), b"a1".to_vec()),
            Mutation::put(b"b".to_vec(), vec![b'b'; 300]),
            Mutation::put(b"c".to_vec(), b"c1".to_vec()),
            Mutation::put(b"d".to_vec(), b"d1".to_vec()),
        ],
        10,
        20,
    );
    env.committed(vec![Mutation::delete(b"c".to_vec())], 30, 40);
    env.committed(vec![Mutation::put(b"a".to_vec(), b"a2".to_vec())], 50, 60);
    env.prewrite(vec![Mutation::put(b"d".to_vec(), b"no".to_vec())], 70)
        .unwrap();
    env.rollback(&[b"d"], 70).unwrap();
    let snap = env.engine.snapshot();
    let r = MvccReader::new(&snap);
    let pairs = |v: &[(&[u8], &[u8])]| -> Vec<(Vec<u8>, Vec<u8>)> {
        v.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    };
    let b300 = vec![b'b'; 300];
    assert_eq!(
        r.scan(b"", b"", 100, 10).unwrap(),
        pairs(&[(b"a", b"a2"), (b"b", &b300), (b"d", b"d1")])
    );
    assert_eq!(
        r.scan(b"", b"", 35, 10).unwrap(),
        pairs(&[(b"a", b"a1"), (b"b", &b300), (b"c", b"c1"), (b"d", b"d1")])
    );
    assert_eq!(
        r.scan(b"b", b"d", 100, 10).unwrap(),
        pairs(&[(b"b", &b300)])
    );
    assert_eq!(
        r.scan(b"", b"", 100, 2).unwrap(),
        pairs(&[(b"a", b"a2"), (b"b", &b300)])
    );
    assert!(
        r.scan(b"", b"", 15, 10).unwrap().is_empty(),
        "before any commit"
    );
    assert!(r.scan(b"", b"", 100, 0).unwrap().is_empty());
}

fn scan_fails_on_a_blocking_lock_only_in_the_part_it_covers<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(
        vec![
            Mutation::put(b"a".to_vec(), b"1".to_vec()),
            Mutation::put(b"b".to_vec(), b"2".to_vec()),
            Mutation::put(b"d".to_vec(), b"4".to_vec()),
        ],
        10,
        20,
    );
    env.prewrite(vec![Mutation::put(b"c".to_vec(), b"3".to_vec())], 30)
        .unwrap();
    let snap = env.engine.snapshot();
    let r = MvccReader::new(&snap);
    assert_eq!(r.scan(b"", b"", 40, 2).unwrap().len(), 2, "stops before c");
    assert_eq!(r.scan(b"", b"", 25, 10).unwrap().len(), 3, "lock is newer");
    for limit in [3, 10] {
        match r.scan(b"", b"", 40, limit) {
            Err(Error::KeyIsLocked { key, .. }) => assert_eq!(key, b"c"),
            other => panic!("limit {limit}: expected KeyIsLocked, got {other:?}"),
        }
    }
    let locks = r.scan_locks(b"", b"", 30, 10).unwrap();
    assert_eq!(locks.len(), 1);
    assert_eq!(
        (locks[0].0.as_slice(), locks[0].1.start_ts),
        (&b"c"[..], 30)
    );
    assert!(r.scan_locks(b"", b"", 29, 10).unwrap().is_empty());
}

fn corrupt_records_are_reported_not_misread<E: Fresh>() {
    let env = Env::<E>::new();
    env.put_raw(Cf::Lock, &key::lock_key(b"l"), b"L?garbage");
    env.put_raw(Cf::Write, &key::version_key(b"w", 10), b"W");
    assert!(matches!(env.get(b"l", 20), Err(Error::Corrupt { .. })));
    match env.get(b"w", 20) {
        Err(e @ Error::Corrupt { .. }) => {
            assert!(!e.is_retryable());
            let Error::Corrupt { key, .. } = e else {
                unreachable!()
            };
            assert_eq!(key, key::version_key(b"w", 10), "names the stored key");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let snap = env.engine.snapshot();
    assert!(MvccReader::new(&snap).scan(b"", b"", 20, 10).is_err());
    // A Put record whose large value is missing is corrupt too.
    env.put_raw(
        Cf::Write,
        &key::version_key(b"v", 10),
        &Write::new(WriteKind::Put, 5, None).encode(),
    );
    assert!(matches!(env.get(b"v", 20), Err(Error::Corrupt { .. })));
}

on_both!(
    get_sees_the_newest_version_committed_at_or_below_its_ts,
    get_of_a_deleted_key_is_none_and_older_reads_still_see_it,
    a_lock_blocks_readers_at_or_after_its_start_ts_only,
    scan_returns_the_visible_values_in_key_order_skipping_deletes_and_rollbacks,
);

on_mem!(
    get_skips_rollback_and_lock_records,
    large_values_live_in_default_and_read_back,
    pessimistic_and_read_locks_do_not_block_readers,
    scan_fails_on_a_blocking_lock_only_in_the_part_it_covers,
    corrupt_records_are_reported_not_misread,
);
