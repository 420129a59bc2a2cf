//! A snapshot-isolation checker for read-modify-write histories (the bank test's).
//!
//! Every value a transaction writes names its writer (`"<payload>|<txn id>"`), so each read
//! says which version it saw. The workload's rule: a transaction that writes a key read it
//! first. Then, under snapshot isolation with first-committer-wins, the committed writers of
//! a key form one chain, each reading its predecessor's version; what the checker asserts:
//!
//! 1. no read sees a version of a transaction known to have aborted (no dirty read);
//! 2. per key, no two committed writers read the same version (no lost update), and the
//!    chain from the initial version through every committed writer ends at the final
//!    value (nothing acknowledged lost, nothing unacknowledged invented);
//! 3. commit timestamps grow along each chain;
//! 4. a read at a known timestamp `r` (a snapshot, or an optimistic transaction's read at
//!    its start ts) sees the version committed last at or before `r`: its writer committed
//!    at or before `r` and the next version on the chain after `r` (no stale read, no read
//!    from the future). "At": a 1PC commit ts is chosen by the store above every ts it has
//!    read at, so it can equal a ts the TSO hands out later; a version committed at `r`
//!    is visible at `r`, as in the MVCC reader;
//! 5. a snapshot taken at a TSO timestamp fetched after a transaction's commit returned
//!    (`SnapshotRead::after_commit_of`) sees it: its commit ts is at or below the
//!    snapshot's ts (a commit ts above what the TSO handed out breaks this).
//!
//! Transactions whose commit answer was lost (`Unknown`) count as committed exactly when
//! some read or the final state saw one of their versions: a committed version is always
//! seen, by its successor on the chain (which read it) or by the final read.

use std::collections::{HashMap, HashSet};

/// The id of the transaction that wrote the initial versions.
pub const SETUP_TXN: u64 = 0;

/// Encodes a value written by transaction `id`.
pub fn tag(payload: &str, id: u64) -> Vec<u8> {
    format!("{payload}|{id}").into_bytes()
}

/// Splits a tagged value into its payload and writer id.
pub fn untag(value: &[u8]) -> (String, u64) {
    let s = String::from_utf8_lossy(value);
    let (payload, id) = s
        .rsplit_once('|')
        .unwrap_or_else(|| panic!("value {s:?} is not tagged with its writer"));
    (
        payload.to_string(),
        id.parse()
            .unwrap_or_else(|_| panic!("value {s:?} has a bad writer id")),
    )
}

/// How a transaction ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Commit answered with this commit ts.
    Committed(u64),
    /// Failed before or at commit with an error saying it did not commit.
    Aborted,
    /// The commit's answer was lost: it may or may not have committed.
    Unknown,
}

/// One transaction of the history.
#[derive(Debug, Clone)]
pub struct Txn {
    /// Unique, > [`SETUP_TXN`].
    pub id: u64,
    /// Its start ts.
    pub start_ts: u64,
    /// Whether its reads are at `start_ts` (optimistic) rather than at a later
    /// `for_update_ts` (pessimistic `get_for_update`).
    pub reads_at_start: bool,
    /// Each key read and the writer of the version seen.
    pub reads: Vec<(Vec<u8>, u64)>,
    /// Keys written (each was read first).
    pub writes: Vec<Vec<u8>>,
    /// How it ended.
    pub outcome: Outcome,
}

/// A read-only snapshot of some keys at `ts`.
#[derive(Debug, Clone)]
pub struct SnapshotRead {
    /// The read ts.
    pub ts: u64,
    /// Each key read and the writer of the version seen.
    pub reads: Vec<(Vec<u8>, u64)>,
    /// The transaction whose commit returned before `ts` was fetched from the TSO (a
    /// read of its own writes, rule 5), if any.
    pub after_commit_of: Option<u64>,
}

/// Checks a history; `setup_commit_ts` is when the initial versions (writer
/// [`SETUP_TXN`]) committed, `final_state` the writer of each key's last version (read
/// after every client stopped). Returns every violation found (empty: the history is
/// snapshot-isolated).
pub fn check(
    txns: &[Txn],
    snapshots: &[SnapshotRead],
    setup_commit_ts: u64,
    final_state: &[(Vec<u8>, u64)],
) -> Vec<String> {
    let mut errors = Vec::new();
    let by_id: HashMap<u64, &Txn> = txns.iter().map(|t| (t.id, t)).collect();
    // Every version anybody saw.
    let mut seen: HashSet<u64> = HashSet::new();
    let all_reads = txns
        .iter()
        .flat_map(|t| t.reads.iter())
        .chain(snapshots.iter().flat_map(|s| s.reads.iter()))
        .chain(final_state.iter());
    for (key, writer) in all_reads {
        seen.insert(*writer);
        if *writer == SETUP_TXN {
            continue;
        }
        match by_id.get(writer) {
            None => errors.push(format!(
                "a read of {} saw a version of txn {writer}, which never ran",
                show(key)
            )),
            Some(w) if w.outcome == Outcome::Aborted => errors.push(format!(
                "dirty read: a read of {} saw txn {writer}, which aborted",
                show(key)
            )),
            Some(w) if !w.writes.contains(key) => errors.push(format!(
                "a read of {} saw txn {writer}, which did not write it",
                show(key)
            )),
            _ => {}
        }
    }
    let committed = |t: &Txn| match t.outcome {
        Outcome::Committed(_) => true,
        Outcome::Unknown => seen.contains(&t.id),
        Outcome::Aborted => false,
    };
    let commit_ts = |id: u64| -> Option<u64> {
        if id == SETUP_TXN {
            return Some(setup_commit_ts);
        }
        match by_id.get(&id)?.outcome {
            Outcome::Committed(ts) => Some(ts),
            _ => None,
        }
    };

    // Per key: successor of each version among committed writers.
    let mut next: HashMap<(Vec<u8>, u64), u64> = HashMap::new();
    let mut writers_of: HashMap<Vec<u8>, usize> = HashMap::new();
    for t in txns.iter().filter(|t| committed(t)) {
        for key in &t.writes {
            *writers_of.entry(key.clone()).or_default() += 1;
            let Some((_, pred)) = t.reads.iter().find(|(k, _)| k == key) else {
                errors.push(format!(
                    "txn {} wrote {} without reading it (workload bug)",
                    t.id,
                    show(key)
                ));
                continue;
            };
            if let Some(other) = next.insert((key.clone(), *pred), t.id) {
                errors.push(format!(
                    "lost update on {}: txns {other} and {} both committed over txn {pred}'s version",
                    show(key),
                    t.id
                ));
            }
        }
    }
    // Walk each chain from the initial version; it must reach every committed writer and
    // end at the final state, with commit timestamps growing.
    for (key, final_writer) in final_state {
        let mut at = SETUP_TXN;
        let mut steps = 0;
        let mut last_ts = commit_ts(SETUP_TXN);
        while let Some(&n) = next.get(&(key.clone(), at)) {
            if let (Some(prev), Some(ts)) = (last_ts, commit_ts(n)) {
                if ts <= prev {
                    errors.push(format!(
                        "on {}: txn {n} committed at {ts}, not after its predecessor {at} ({prev})",
                        show(key)
                    ));
                }
            }
            last_ts = commit_ts(n).or(last_ts);
            at = n;
            steps += 1;
            if steps > txns.len() {
                errors.push(format!("the chain of {} loops", show(key)));
                break;
            }
        }
        if at != *final_writer {
            errors.push(format!(
                "on {}: the chain of committed writers ends at txn {at}, the final state is txn {final_writer}'s",
                show(key)
            ));
        }
        let n_writers = writers_of.get(key).copied().unwrap_or(0);
        if steps != n_writers {
            errors.push(format!(
                "on {}: {n_writers} committed writers but the chain from the initial version holds {steps}",
                show(key)
            ));
        }
    }

    // A snapshot begun after a commit returned sees it.
    for snap in snapshots {
        if let Some(id) = snap.after_commit_of {
            if let Some(c) = commit_ts(id).filter(|c| *c > snap.ts) {
                errors.push(format!(
                    "txn {id} committed at {c}, above the ts {} of a snapshot begun after \
                     its commit returned: the snapshot misses it",
                    snap.ts
                ));
            }
        }
    }

    // Reads at a known timestamp see the version committed last before it.
    let positioned = txns
        .iter()
        .filter(|t| t.reads_at_start)
        .map(|t| (t.start_ts, &t.reads))
        .chain(snapshots.iter().map(|s| (s.ts, &s.reads)));
    for (ts, reads) in positioned {
        for (key, writer) in reads {
            if let Some(wts) = commit_ts(*writer) {
                if wts > ts {
                    errors.push(format!(
                        "a read of {} at {ts} saw txn {writer} committed later, at {wts}",
                        show(key)
                    ));
                }
            }
            if let Some(n) = next.get(&(key.clone(), *writer)) {
                if let Some(nts) = commit_ts(*n) {
                    if nts <= ts {
                        errors.push(format!(
                            "stale read of {} at {ts}: saw txn {writer}, missed txn {n} committed at {nts}",
                            show(key)
                        ));
                    }
                }
            }
        }
    }
    errors
}

fn show(key: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn txn(id: u64, start: u64, reads: &[(&str, u64)], outcome: Outcome) -> Txn {
        Txn {
            id,
            start_ts: start,
            reads_at_start: true,
            reads: reads.iter().map(|(key, w)| (k(key), *w)).collect(),
            writes: reads.iter().map(|(key, _)| k(key)).collect(),
            outcome,
        }
    }

    #[test]
    fn a_serial_history_passes() {
        let h = [
            txn(1, 10, &[("a", 0), ("b", 0)], Outcome::Committed(11)),
            txn(2, 12, &[("a", 1)], Outcome::Committed(13)),
            txn(3, 12, &[("b", 1)], Outcome::Unknown),
            txn(4, 12, &[("b", 1)], Outcome::Aborted),
        ];
        let snaps = [SnapshotRead {
            ts: 12,
            reads: vec![(k("a"), 1), (k("b"), 1)],
            after_commit_of: Some(1),
        }];
        let errors = check(&h, &snaps, 5, &[(k("a"), 2), (k("b"), 3)]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn a_lost_update_is_found() {
        let h = [
            txn(1, 10, &[("a", 0)], Outcome::Committed(12)),
            txn(2, 11, &[("a", 0)], Outcome::Committed(13)),
        ];
        let errors = check(&h, &[], 5, &[(k("a"), 2)]);
        assert!(
            errors.iter().any(|e| e.contains("lost update")),
            "{errors:?}"
        );
    }

    #[test]
    fn a_stale_read_and_a_dirty_read_are_found() {
        let h = [
            txn(1, 10, &[("a", 0)], Outcome::Committed(11)),
            txn(2, 20, &[("a", 1)], Outcome::Aborted),
        ];
        let snaps = [
            SnapshotRead {
                ts: 15,
                reads: vec![(k("a"), 0)],
                after_commit_of: None,
            },
            SnapshotRead {
                ts: 25,
                reads: vec![(k("a"), 2)],
                after_commit_of: None,
            },
        ];
        let errors = check(&h, &snaps, 5, &[(k("a"), 1)]);
        assert!(
            errors.iter().any(|e| e.contains("stale read")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("dirty read")),
            "{errors:?}"
        );
    }

    #[test]
    fn a_snapshot_begun_after_a_commit_that_misses_it_is_found() {
        // Txn 1's commit ts (16) is above the ts (15) of a snapshot begun after it
        // returned: a 1PC commit ts above what the TSO had handed out.
        let h = [txn(1, 10, &[("a", 0)], Outcome::Committed(16))];
        let snaps = [SnapshotRead {
            ts: 15,
            reads: vec![(k("a"), 0)],
            after_commit_of: Some(1),
        }];
        let errors = check(&h, &snaps, 5, &[(k("a"), 1)]);
        assert!(
            errors.iter().any(|e| e.contains("begun after")),
            "{errors:?}"
        );
    }

    #[test]
    fn an_acknowledged_commit_missing_from_the_final_state_is_found() {
        let h = [txn(1, 10, &[("a", 0)], Outcome::Committed(11))];
        let errors = check(&h, &[], 5, &[(k("a"), 0)]);
        assert!(!errors.is_empty());
    }
}
