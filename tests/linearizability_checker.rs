//! The linearizability checker, tested as data: histories that are and are not
//! linearizable, including operations whose outcome is unknown.

use crate::common::linearizability::{check, Event, Op};
use std::time::{Duration, Instant};

fn ev(t0: Instant, key: &str, op: Op, from_ms: u64, to_ms: Option<u64>) -> Event {
    Event {
        key: key.as_bytes().to_vec(),
        op,
        invoked: t0 + Duration::from_millis(from_ms),
        returned: to_ms.map(|t| t0 + Duration::from_millis(t)),
    }
}

fn v(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

#[test]
fn sequential_history_is_linearizable() {
    let t = Instant::now();
    let h = vec![
        ev(t, "k", Op::Get(None), 0, Some(1)),
        ev(t, "k", Op::Put(b"a".to_vec()), 2, Some(3)),
        ev(t, "k", Op::Get(v("a")), 4, Some(5)),
        ev(
            t,
            "k",
            Op::Cas {
                expected: v("a"),
                new: b"b".to_vec(),
                succeeded: true,
            },
            6,
            Some(7),
        ),
        ev(
            t,
            "k",
            Op::Cas {
                expected: v("a"),
                new: b"c".to_vec(),
                succeeded: false,
            },
            8,
            Some(9),
        ),
        ev(t, "k", Op::Delete, 10, Some(11)),
        ev(t, "k", Op::Get(None), 12, Some(13)),
    ];
    check(&h).unwrap();
}

#[test]
fn stale_read_after_a_completed_write_is_caught() {
    let t = Instant::now();
    let h = vec![
        ev(t, "k", Op::Put(b"a".to_vec()), 0, Some(1)),
        ev(t, "k", Op::Put(b"b".to_vec()), 2, Some(3)),
        ev(t, "k", Op::Get(v("a")), 4, Some(5)),
    ];
    assert!(check(&h).is_err());
}

#[test]
fn concurrent_operations_may_take_effect_in_either_order() {
    let t = Instant::now();
    // The write of b overlaps both reads: a read of a then b is fine ...
    let h = vec![
        ev(t, "k", Op::Put(b"a".to_vec()), 0, Some(1)),
        ev(t, "k", Op::Put(b"b".to_vec()), 2, Some(10)),
        ev(t, "k", Op::Get(v("a")), 3, Some(4)),
        ev(t, "k", Op::Get(v("b")), 5, Some(6)),
    ];
    check(&h).unwrap();
    // ... but b then a is not (no write of a after b).
    let h = vec![
        ev(t, "k", Op::Put(b"a".to_vec()), 0, Some(1)),
        ev(t, "k", Op::Put(b"b".to_vec()), 2, Some(10)),
        ev(t, "k", Op::Get(v("b")), 3, Some(4)),
        ev(t, "k", Op::Get(v("a")), 5, Some(6)),
    ];
    assert!(check(&h).is_err());
}

#[test]
fn unknown_writes_may_or_may_not_take_effect() {
    let t = Instant::now();
    let seen = vec![
        ev(t, "k", Op::Put(b"a".to_vec()), 0, None),
        ev(t, "k", Op::Get(v("a")), 5, Some(6)),
    ];
    check(&seen).unwrap();
    let never = vec![
        ev(t, "k", Op::Put(b"a".to_vec()), 0, None),
        ev(t, "k", Op::Get(None), 5, Some(6)),
    ];
    check(&never).unwrap();
    // But a value nobody wrote can never be read.
    let bogus = vec![
        ev(t, "k", Op::Put(b"a".to_vec()), 0, None),
        ev(t, "k", Op::Get(v("z")), 5, Some(6)),
    ];
    assert!(check(&bogus).is_err());
    // And it cannot take effect before it was invoked.
    let early = vec![
        ev(t, "k", Op::Get(v("a")), 0, Some(1)),
        ev(t, "k", Op::Put(b"a".to_vec()), 5, None),
    ];
    assert!(check(&early).is_err());
}

#[test]
fn a_lost_acknowledged_write_is_caught_and_keys_are_independent() {
    let t = Instant::now();
    let h = vec![
        ev(t, "x", Op::Put(b"1".to_vec()), 0, Some(1)),
        ev(t, "y", Op::Put(b"2".to_vec()), 0, Some(1)),
        ev(t, "y", Op::Get(v("2")), 2, Some(3)),
        ev(t, "x", Op::Get(None), 2, Some(3)),
    ];
    let err = check(&h).unwrap_err();
    assert!(err.contains("\"x\""), "names the key: {err}");
}

#[test]
fn cas_outcomes_must_match_the_state() {
    let t = Instant::now();
    let wrong = vec![
        ev(t, "k", Op::Put(b"a".to_vec()), 0, Some(1)),
        ev(
            t,
            "k",
            Op::Cas {
                expected: v("a"),
                new: b"b".to_vec(),
                succeeded: false,
            },
            2,
            Some(3),
        ),
    ];
    assert!(check(&wrong).is_err());
    let absent = vec![ev(
        t,
        "k",
        Op::Cas {
            expected: None,
            new: b"b".to_vec(),
            succeeded: true,
        },
        0,
        Some(1),
    )];
    check(&absent).unwrap();
}

#[test]
fn many_concurrent_operations_check_quickly() {
    // 8 overlapping writers and readers per round, 40 rounds: the memoized search copes.
    let t = Instant::now();
    let mut h = Vec::new();
    for round in 0..40u64 {
        let base = round * 10;
        for w in 0..4u64 {
            h.push(ev(
                t,
                "k",
                Op::Put(format!("{round}-{w}").into_bytes()),
                base,
                Some(base + 8),
            ));
        }
        for _ in 0..4 {
            h.push(ev(
                t,
                "k",
                Op::Get(v(&format!("{round}-3"))),
                base + 9,
                Some(base + 9),
            ));
        }
    }
    check(&h).unwrap();
}
