//! A linearizability checker for a key-value register, per key (P-compositionality: a
//! history is linearizable iff each key's sub-history is). The search is Wing & Gong's,
//! with Lowe's memoization of (linearized set, state) as in Porcupine: repeatedly pick an
//! operation that could take effect first — one invoked before every pending operation's
//! return — apply it to the model, and backtrack when its observed result disagrees.
//!
//! Operations whose outcome is unknown (timeouts) may take effect at any time after their
//! invocation, or never: they have no return time and need not be linearized.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// What a client did to one key, with what it observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A read that returned this value (`None`: absent).
    Get(Option<Vec<u8>>),
    /// A write of this value.
    Put(Vec<u8>),
    /// A delete.
    Delete,
    /// A compare-and-swap from `expected` (`None`: absent) to `new`; `succeeded` as observed.
    Cas {
        /// Expected value.
        expected: Option<Vec<u8>>,
        /// New value.
        new: Vec<u8>,
        /// Observed outcome.
        succeeded: bool,
    },
}

/// One operation of a history.
#[derive(Debug, Clone)]
pub struct Event {
    /// The key.
    pub key: Vec<u8>,
    /// The operation and its observed result.
    pub op: Op,
    /// When it was invoked.
    pub invoked: Instant,
    /// When its answer came; `None` when the outcome is unknown.
    pub returned: Option<Instant>,
}

/// Applies `op` to `state`; `None` if the observed result contradicts the model.
fn step(state: &Option<Vec<u8>>, op: &Op, known: bool) -> Option<Option<Vec<u8>>> {
    match op {
        Op::Get(v) => (!known || v == state).then(|| state.clone()),
        Op::Put(v) => Some(Some(v.clone())),
        Op::Delete => Some(None),
        Op::Cas {
            expected,
            new,
            succeeded,
        } => {
            let matches = expected == state;
            if !known {
                // Unknown outcome: it took effect exactly as the model says it would.
                return Some(if matches {
                    Some(new.clone())
                } else {
                    state.clone()
                });
            }
            match (matches, succeeded) {
                (true, true) => Some(Some(new.clone())),
                (false, false) => Some(state.clone()),
                _ => None,
            }
        }
    }
}

/// Checks one key's events, starting from an absent value. `Err` explains a violation.
fn check_key(key: &[u8], events: &[&Event]) -> Result<(), String> {
    // Unknown-outcome reads constrain nothing.
    let ops: Vec<&Event> = events
        .iter()
        .copied()
        .filter(|e| e.returned.is_some() || !matches!(e.op, Op::Get(_)))
        .collect();
    let n = ops.len();
    let must = ops.iter().filter(|e| e.returned.is_some()).count();
    let words = n.div_ceil(64).max(1);
    // Depth-first search with an explicit stack: (linearized set, state, linearized count of known ops).
    let mut seen: HashSet<(Vec<u64>, Option<Vec<u8>>)> = HashSet::new();
    let mut stack = vec![(vec![0u64; words], None::<Vec<u8>>, 0usize)];
    let mut explored = 0u64;
    while let Some((done, state, known_done)) = stack.pop() {
        if known_done == must {
            return Ok(());
        }
        if !seen.insert((done.clone(), state.clone())) {
            continue;
        }
        explored += 1;
        if explored > 5_000_000 {
            return Err(format!(
                "key {:?}: search gave up after {explored} states (history too concurrent)",
                String::from_utf8_lossy(key)
            ));
        }
        let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        // The earliest return among pending known operations bounds what can go first.
        let horizon = (0..n)
            .filter(|&i| !is_done(i))
            .filter_map(|i| ops[i].returned)
            .min();
        for i in 0..n {
            if is_done(i) || horizon.is_some_and(|h| ops[i].invoked > h) {
                continue;
            }
            let known = ops[i].returned.is_some();
            if let Some(next) = step(&state, &ops[i].op, known) {
                let mut d = done.clone();
                d[i / 64] |= 1 << (i % 64);
                stack.push((d, next, known_done + usize::from(known)));
            }
        }
    }
    Err(format!(
        "key {:?}: no linearization of its {n} operations exists:\n{}",
        String::from_utf8_lossy(key),
        describe(&ops)
    ))
}

/// One line per operation, by invocation time, in ms since the first.
fn describe(ops: &[&Event]) -> String {
    let mut sorted: Vec<&&Event> = ops.iter().collect();
    sorted.sort_by_key(|e| e.invoked);
    let Some(t0) = sorted.first().map(|e| e.invoked) else {
        return String::new();
    };
    let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1000.0;
    let show = |v: &Option<Vec<u8>>| match v {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => "<absent>".into(),
    };
    sorted
        .iter()
        .map(|e| {
            let op = match &e.op {
                Op::Get(v) => format!("get -> {}", show(v)),
                Op::Put(v) => format!("put {}", String::from_utf8_lossy(v)),
                Op::Delete => "delete".to_string(),
                Op::Cas {
                    expected,
                    new,
                    succeeded,
                } => format!(
                    "cas {} -> {}: {}",
                    show(expected),
                    String::from_utf8_lossy(new),
                    if *succeeded { "ok" } else { "mismatch" }
                ),
            };
            let end = e
                .returned
                .map_or("   unknown".to_string(), |r| format!("{:10.1}", ms(r)));
            format!("  [{:10.1} .. {end}] {op}", ms(e.invoked))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks a whole history, key by key.
pub fn check(history: &[Event]) -> Result<(), String> {
    let mut by_key: BTreeMap<&[u8], Vec<&Event>> = BTreeMap::new();
    for e in history {
        by_key.entry(&e.key).or_default().push(e);
    }
    for (key, events) in by_key {
        check_key(key, &events)?;
    }
    Ok(())
}
