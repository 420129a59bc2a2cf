//! OCC validation as data: a prewrite (or 1PC) carrying read versions commits only when
//! every read key is still at the version read and holds no other transaction's lock;
//! otherwise it writes nothing.

use super::*;

/// A request of transaction `start_ts` with primary `primary`, these mutations and these
/// read versions.
fn occ<E: Fresh>(
    env: &Env<E>,
    start_ts: u64,
    ms: Vec<Mutation>,
    reads: &[(&[u8], u64)],
) -> PrewriteRequest {
    let primary = ms[0].key.clone();
    let mut req = env.request(&primary, start_ts, ms);
    req.read_versions = reads.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
    req
}

/// Transaction 30 writes `w = x` and read `r` at `version` (a `Lock` mutation).
fn write_w_reading_r<E: Fresh>(env: &Env<E>, version: u64) -> PrewriteRequest {
    occ(
        env,
        30,
        vec![
            Mutation::put(b"w".to_vec(), b"x".to_vec()),
            Mutation::lock(b"r".to_vec()),
        ],
        &[(b"r", version)],
    )
}

fn a_version_is_the_commit_ts_of_the_newest_put_or_delete<E: Fresh>() {
    let env = Env::<E>::new();
    let snap = env.engine.snapshot();
    assert_eq!(MvccReader::new(&snap).newest_version(b"k").unwrap(), 0);
    drop(snap);
    env.committed(vec![Mutation::put(b"k".to_vec(), b"a".to_vec())], 10, 20);
    env.committed(vec![Mutation::lock(b"k".to_vec())], 30, 40);
    let snap = env.engine.snapshot();
    let r = MvccReader::new(&snap);
    assert_eq!(
        r.newest_version(b"k").unwrap(),
        20,
        "a Lock record is no version"
    );
    assert_eq!(
        r.get_with_version(b"k", 50).unwrap(),
        (Some(b"a".to_vec()), 20)
    );
    assert_eq!(r.get_with_version(b"k", 19).unwrap(), (None, 0));
    drop(snap);
    env.committed(vec![Mutation::delete(b"k".to_vec())], 50, 60);
    let snap = env.engine.snapshot();
    let r = MvccReader::new(&snap);
    assert_eq!(r.newest_version(b"k").unwrap(), 60, "a Delete is a version");
    assert_eq!(r.get_with_version(b"k", 70).unwrap(), (None, 60));
}

fn matching_versions_commit_by_one_pc_and_lock_the_reads_only<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"r".to_vec(), b"1".to_vec())], 10, 20);
    let mut req = write_w_reading_r(&env, 20);
    req.read_versions.push((b"w".to_vec(), 0));
    assert_eq!(
        env.run(|s, wb| one_pc(s, wb, &req, 40)).unwrap(),
        OnePcOutcome::Committed(40)
    );
    assert_eq!(env.value(b"w", 40), Some(b"x".to_vec()));
    assert_eq!(
        env.value(b"r", 40),
        Some(b"1".to_vec()),
        "a read key keeps its value"
    );
    let snap = env.engine.snapshot();
    assert_eq!(MvccReader::new(&snap).newest_version(b"w").unwrap(), 40);
    assert_eq!(MvccReader::new(&snap).newest_version(b"r").unwrap(), 20);
}

fn a_stale_version_aborts_and_writes_nothing<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"r".to_vec(), b"1".to_vec())], 10, 20);
    env.committed(vec![Mutation::put(b"r".to_vec(), b"2".to_vec())], 21, 25);
    let req = write_w_reading_r(&env, 20);
    for run in [0, 1] {
        let (out, _) = env.run_counted(|s, wb| {
            if run == 0 {
                prewrite(s, wb, &req).map(|_| ())
            } else {
                one_pc(s, wb, &req, 40).map(|_| ())
            }
        });
        match out {
            Err(
                e @ Error::VersionMismatch {
                    expected: 20,
                    actual: 25,
                    ..
                },
            ) => assert!(e.is_retryable()),
            other => panic!("expected VersionMismatch, got {other:?}"),
        }
    }
    assert_eq!((env.count(Cf::Lock), env.lock(b"w")), (0, None));
    assert_eq!(env.value(b"w", 50), None);
    // A key read as never written that has since been written mismatches too.
    let req = occ(
        &env,
        30,
        vec![Mutation::put(b"r".to_vec(), b"y".to_vec())],
        &[(b"r", 0)],
    );
    assert!(matches!(
        env.run(|s, wb| prewrite(s, wb, &req)),
        Err(Error::VersionMismatch {
            expected: 0,
            actual: 25,
            ..
        })
    ));
}

fn a_read_key_locked_by_another_txn_is_key_is_locked<E: Fresh>() {
    let env = Env::<E>::new();
    env.prewrite(vec![Mutation::put(b"r".to_vec(), b"1".to_vec())], 10)
        .unwrap();
    let req = occ(&env, 30, vec![Mutation::lock(b"r".to_vec())], &[(b"r", 0)]);
    assert!(matches!(
        env.run(|s, wb| prewrite(s, wb, &req)),
        Err(Error::KeyIsLocked { .. })
    ));
    assert_eq!(env.lock(b"r").unwrap().start_ts, 10);
}

fn two_phase_validation_holds_the_read_key_until_commit<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"r".to_vec(), b"1".to_vec())], 10, 20);
    let t1 = write_w_reading_r(&env, 20);
    env.run(|s, wb| prewrite(s, wb, &t1)).unwrap();
    // A re-sent prewrite of the same transaction finds its own locks: no re-validation.
    env.run(|s, wb| prewrite(s, wb, &t1)).unwrap();
    // A concurrent writer of the read key meets the lock instead of slipping in.
    assert!(matches!(
        env.prewrite(vec![Mutation::put(b"r".to_vec(), b"9".to_vec())], 31),
        Err(Error::KeyIsLocked { .. })
    ));
    env.commit(&[b"w", b"r"], 30, 40).unwrap();
    assert_eq!(env.value(b"w", 40), Some(b"x".to_vec()));
    let snap = env.engine.snapshot();
    assert_eq!(MvccReader::new(&snap).newest_version(b"r").unwrap(), 20);
}

fn read_versions_must_name_mutations_once<E: Fresh>() {
    let env = Env::<E>::new();
    let stray = occ(
        &env,
        30,
        vec![Mutation::put(b"w".to_vec(), b"x".to_vec())],
        &[(b"r", 0)],
    );
    let twice = occ(
        &env,
        30,
        vec![Mutation::lock(b"r".to_vec())],
        &[(b"r", 0), (b"r", 0)],
    );
    for req in [stray, twice] {
        let (out, writes) = env.run_counted(|s, wb| prewrite(s, wb, &req));
        assert!(matches!(out, Err(Error::InvalidRequest(_))), "{out:?}");
        assert_eq!(writes, 0);
    }
}

on_both!(
    a_version_is_the_commit_ts_of_the_newest_put_or_delete,
    a_stale_version_aborts_and_writes_nothing,
);

on_mem!(
    matching_versions_commit_by_one_pc_and_lock_the_reads_only,
    a_read_key_locked_by_another_txn_is_key_is_locked,
    two_phase_validation_holds_the_read_key_until_commit,
    read_versions_must_name_mutations_once,
);
