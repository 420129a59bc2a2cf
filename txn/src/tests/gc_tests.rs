//! GC below a safe point: what it drops, and that every read at or after the safe point
//! answers the same before and after (checked on fixed and on generated histories).

use super::*;

fn gc_keeps_what_a_reader_at_the_safe_point_needs<E: Fresh>() {
    let env = Env::<E>::new();
    env.committed(vec![Mutation::put(b"k".to_vec(), vec![1; 300])], 10, 11);
    env.committed(vec![Mutation::put(b"k".to_vec(), b"v2".to_vec())], 20, 21);
    env.committed(vec![Mutation::lock(b"k".to_vec())], 30, 31);
    env.rollback(&[b"k"], 35).unwrap();
    env.committed(vec![Mutation::put(b"k".to_vec(), b"v4".to_vec())], 50, 51);
    env.committed(vec![Mutation::put(b"d".to_vec(), b"x".to_vec())], 10, 11);
    env.committed(vec![Mutation::delete(b"d".to_vec())], 20, 21);
    let deleted = env.run(|s, wb| gc(s, wb, b"", b"", 40)).unwrap();
    assert_eq!(
        deleted, 5,
        "k: put@11, lock@31, rollback@35; d: put@11, delete@21"
    );
    let commit_tss: Vec<u64> = env.writes(b"k").iter().map(|(ts, _)| *ts).collect();
    assert_eq!(
        commit_tss,
        vec![51, 21],
        "above the safe point, and the newest at it"
    );
    assert!(env.writes(b"d").is_empty());
    assert_eq!(env.count(Cf::Default), 0, "the dropped large value is gone");
    assert_eq!(env.value(b"k", 40), Some(b"v2".to_vec()));
    assert_eq!(env.value(b"k", 51), Some(b"v4".to_vec()));
    assert_eq!(env.value(b"d", 40), None);
    let again = env.run(|s, wb| gc(s, wb, b"", b"", 40)).unwrap();
    assert_eq!(again, 0, "GC is idempotent");
}

fn gc_touches_only_its_key_range<E: Fresh>() {
    let env = Env::<E>::new();
    for k in [&b"a"[..], b"b", b"c"] {
        env.committed(vec![Mutation::put(k.to_vec(), b"1".to_vec())], 10, 11);
        env.committed(vec![Mutation::put(k.to_vec(), b"2".to_vec())], 20, 21);
    }
    assert_eq!(env.run(|s, wb| gc(s, wb, b"b", b"c", 30)).unwrap(), 1);
    assert_eq!(env.writes(b"a").len(), 2);
    assert_eq!(env.writes(b"b").len(), 1);
    assert_eq!(env.writes(b"c").len(), 2);
}

fn gc_never_changes_a_read_at_or_after_the_safe_point_on_generated_histories<E: Fresh>() {
    // Goal: the GC invariant on many shapes of history. Method: random committed puts
    // (short and large), deletes, lock records and rollbacks on three keys, then GC at a
    // random safe point and compare every read from the safe point to past the end.
    for seed in 1..=60u64 {
        let env = Env::<E>::new();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let key_names: [&[u8]; 3] = [b"a", b"b", b"a\x00"];
        let mut ts = 1;
        for _ in 0..12 {
            let k = key_names[rng.below(3) as usize].to_vec();
            let start = ts;
            ts += 1 + rng.below(3);
            let m = match rng.below(5) {
                0 => Mutation::put(k.clone(), vec![b'x'; 256 + start as usize]),
                1 => Mutation::delete(k.clone()),
                2 => Mutation::lock(k.clone()),
                _ => Mutation::put(k.clone(), start.to_be_bytes().to_vec()),
            };
            if rng.below(4) == 0 {
                env.rollback(&[&k], start).unwrap();
            } else {
                env.committed(vec![m], start, ts);
            }
            ts += 1;
        }
        let safe_point = rng.below(ts + 2);
        let reads = |env: &Env<E>| -> Vec<Option<Vec<u8>>> {
            (safe_point..ts + 2)
                .flat_map(|t| key_names.iter().map(move |k| (t, *k)))
                .map(|(t, k)| env.value(k, t))
                .collect()
        };
        let before = reads(&env);
        env.run(|s, wb| gc(s, wb, b"", b"", safe_point)).unwrap();
        assert_eq!(reads(&env), before, "seed {seed}, safe point {safe_point}");
        for k in key_names {
            let at_or_below = env
                .writes(k)
                .iter()
                .filter(|(t, _)| *t <= safe_point)
                .count();
            assert!(
                at_or_below <= 1,
                "seed {seed}: at most one version kept at or below"
            );
        }
    }
}

on_both!(gc_keeps_what_a_reader_at_the_safe_point_needs);

on_mem!(
    gc_touches_only_its_key_range,
    gc_never_changes_a_read_at_or_after_the_safe_point_on_generated_histories,
);
