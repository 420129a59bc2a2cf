//! A bank command over several regions: split into one part per region, as a client
//! library groups a command's keys by region, and the parts' answers merged back into
//! one answer for the job.

use super::*;
use std::collections::BTreeMap;

impl World {
    /// `cmd` split by region: (region index, the part's keys, the part's command), in
    /// region order. A prewrite's secondaries stay with the part holding its primary
    /// (only the primary's lock lists them); a status check goes to the primary's region.
    pub(super) fn split(&self, cmd: TxnRequest) -> Vec<(usize, Vec<Vec<u8>>, TxnRequest)> {
        // Commands whose keys are one repeated field: a part per region of them.
        macro_rules! by_keys {
            ($has:ident, $get:ident, $set:ident) => {
                if cmd.$has() {
                    let keys = cmd.$get().get_keys().to_vec();
                    return self.by_region(&cmd, &keys, |c, k| c.$set().set_keys(k.into()));
                }
            };
        }
        by_keys!(has_batch_get, get_batch_get, mut_batch_get);
        by_keys!(
            has_pessimistic_lock,
            get_pessimistic_lock,
            mut_pessimistic_lock
        );
        by_keys!(
            has_pessimistic_rollback,
            get_pessimistic_rollback,
            mut_pessimistic_rollback
        );
        by_keys!(has_commit, get_commit, mut_commit);
        by_keys!(has_rollback, get_rollback, mut_rollback);
        by_keys!(
            has_check_secondary_locks,
            get_check_secondary_locks,
            mut_check_secondary_locks
        );
        by_keys!(has_resolve_lock, get_resolve_lock, mut_resolve_lock);
        if cmd.has_check_txn_status() {
            let primary = cmd.get_check_txn_status().get_primary().to_vec();
            return vec![(self.region_of(&primary), vec![primary], cmd)];
        }
        if cmd.has_prewrite() {
            let p = cmd.get_prewrite();
            let keys: Vec<Vec<u8>> = p
                .get_mutations()
                .iter()
                .map(|m| m.get_key().to_vec())
                .collect();
            let primary = p.get_primary().to_vec();
            return self.by_region(&cmd, &keys, |c, k| {
                let p = c.mut_prewrite();
                let mutations: Vec<Mutation> = p
                    .get_mutations()
                    .iter()
                    .filter(|m| k.iter().any(|key| key.as_slice() == m.get_key()))
                    .cloned()
                    .collect();
                p.set_mutations(mutations.into());
                if !k.contains(&primary) {
                    p.clear_secondaries();
                }
            });
        }
        unreachable!("the bank sends no other command")
    }

    fn by_region(
        &self,
        cmd: &TxnRequest,
        keys: &[Vec<u8>],
        set: impl Fn(&mut TxnRequest, Vec<Vec<u8>>),
    ) -> Vec<(usize, Vec<Vec<u8>>, TxnRequest)> {
        let mut groups: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
        for k in keys {
            groups.entry(self.region_of(k)).or_default().push(k.clone());
        }
        groups
            .into_iter()
            .map(|(r, ks)| {
                let mut part = cmd.clone();
                set(&mut part, ks.clone());
                (r, ks, part)
            })
            .collect()
    }
}

/// The parts' answers (every part answered) as one answer for a job over `keys`: the
/// first key error if any part met one; else reads and locks' values together (values
/// in `keys`' order), the highest `min_commit_ts` floor and conflict ts. An async-commit
/// prewrite whose part answered `min_commit_ts` 0 (resolvers committed its keys while an
/// answer was lost) answers 0, and the client goes on by 2PC with no floor: unlike the
/// real client, which keeps the highest floor, but the primary's commit then answers the
/// ts the resolvers committed at. `Err` is a finding: parts that disagree on a
/// transaction's fate (a secondaries' check that found one committed and another rolled
/// back, or two commit ts).
pub(super) fn merge(parts: &mut [Part], keys: &[Vec<u8>]) -> Result<TxnResponse, String> {
    let async_commit = parts
        .iter()
        .any(|p| p.cmd.has_prewrite() && p.cmd.get_prewrite().get_use_async_commit());
    let mut answers: Vec<(Vec<Vec<u8>>, TxnResponse)> = parts
        .iter_mut()
        .map(|p| {
            let answer = p.answer.take().expect("every part answered");
            (p.keys.clone(), answer)
        })
        .collect();
    if answers.len() == 1 {
        return Ok(answers.remove(0).1);
    }
    if let Some(i) = answers.iter().position(|(_, a)| a.has_key_error()) {
        return Ok(answers.swap_remove(i).1);
    }
    let Some(first) = answers.first() else {
        return Err("a command with no keys".into());
    };
    let mut out = first.1.clone();
    if out.has_batch_get() {
        let pairs: Vec<_> = answers
            .iter_mut()
            .flat_map(|(_, a)| a.take_batch_get().take_pairs().into_iter())
            .collect();
        out.mut_batch_get().set_pairs(pairs.into());
    } else if out.has_pessimistic_lock() {
        let mut values = Vec::new();
        for k in keys {
            let found = answers.iter().find_map(|(ks, a)| {
                let j = ks.iter().position(|x| x == k)?;
                a.get_pessimistic_lock().get_values().get(j).cloned()
            });
            values.extend(found);
        }
        let conflict = answers
            .iter()
            .map(|(_, a)| a.get_pessimistic_lock().get_locked_with_conflict_ts())
            .max()
            .unwrap_or(0);
        let l = out.mut_pessimistic_lock();
        l.set_values(values.into());
        l.set_locked_with_conflict_ts(conflict);
    } else if out.has_prewrite() {
        let floors: Vec<u64> = answers
            .iter()
            .map(|(_, a)| a.get_prewrite().get_min_commit_ts())
            .collect();
        let floor = match async_commit && floors.contains(&0) {
            true => 0,
            false => floors.into_iter().max().unwrap_or(0),
        };
        out.mut_prewrite().set_min_commit_ts(floor);
    } else if out.has_commit() {
        let at = one_ts(answers.iter().map(|(_, a)| a.get_commit().get_commit_ts()))?;
        out.mut_commit().set_commit_ts(at);
    } else if out.has_check_secondary_locks() {
        let mut locks = Vec::new();
        let mut rolled_back = false;
        let mut committed = Vec::new();
        for (_, a) in &mut answers {
            let mut r = a.take_check_secondary_locks();
            locks.extend(r.take_locks());
            committed.push(r.get_commit_ts());
            rolled_back |= r.get_rolled_back();
        }
        let commit_ts = one_ts(committed.into_iter())?;
        if rolled_back && commit_ts != 0 {
            return Err(format!(
                "check_secondary_locks found a secondary committed at {commit_ts} and another \
                 rolled back"
            ));
        }
        let r = out.mut_check_secondary_locks();
        r.set_locks(locks.into());
        r.set_commit_ts(commit_ts);
        r.set_rolled_back(rolled_back);
    }
    Ok(out)
}

/// The one commit ts among the parts' answers (0: none said), or `Err` if two differ.
fn one_ts(ts: impl Iterator<Item = u64>) -> Result<u64, String> {
    let mut seen = 0;
    for t in ts.filter(|t| *t != 0) {
        if seen != 0 && seen != t {
            return Err(format!(
                "one transaction's keys committed at {seen} and at {t}"
            ));
        }
        seen = t;
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regatta_proto::txnpb::{CheckSecondaryLocksResponse, PessimisticLockResponse, TxnValue};

    fn part(region: usize, keys: &[&str], answer: TxnResponse) -> Part {
        Part {
            region,
            keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            cmd: TxnRequest::new(),
            rx: None,
            target: 0,
            answer: Some(answer),
        }
    }

    fn locked(values: &[&str], conflict_ts: u64) -> TxnResponse {
        let mut l = PessimisticLockResponse::new();
        for v in values {
            let mut tv = TxnValue::new();
            tv.set_found(true);
            tv.set_value(v.as_bytes().to_vec());
            l.mut_values().push(tv);
        }
        l.set_locked_with_conflict_ts(conflict_ts);
        let mut r = TxnResponse::new();
        r.set_pessimistic_lock(l);
        r
    }

    #[test]
    fn lock_values_come_back_in_the_jobs_key_order() {
        // The job's first key (its primary) is in the second region.
        let keys = vec![b"acct2".to_vec(), b"acct0".to_vec()];
        let mut parts = vec![
            part(0, &["acct0"], locked(&["zero"], 7)),
            part(1, &["acct2"], locked(&["two"], 9)),
        ];
        let merged = merge(&mut parts, &keys).expect("no finding");
        let l = merged.get_pessimistic_lock();
        let values: Vec<&[u8]> = l.get_values().iter().map(|v| v.get_value()).collect();
        assert_eq!(values, vec![&b"two"[..], &b"zero"[..]]);
        assert_eq!(l.get_locked_with_conflict_ts(), 9);
    }

    fn checked(commit_ts: u64, rolled_back: bool) -> TxnResponse {
        let mut c = CheckSecondaryLocksResponse::new();
        c.set_commit_ts(commit_ts);
        c.set_rolled_back(rolled_back);
        let mut r = TxnResponse::new();
        r.set_check_secondary_locks(c);
        r
    }

    #[test]
    fn secondaries_that_disagree_on_the_fate_are_a_finding() {
        let keys = vec![b"acct0".to_vec(), b"acct2".to_vec()];
        let mut parts = vec![
            part(0, &["acct0"], checked(5, false)),
            part(1, &["acct2"], checked(0, true)),
        ];
        assert!(merge(&mut parts, &keys).is_err());
        let mut parts = vec![
            part(0, &["acct0"], checked(5, false)),
            part(1, &["acct2"], checked(6, false)),
        ];
        assert!(merge(&mut parts, &keys).is_err());
        let mut parts = vec![
            part(0, &["acct0"], checked(5, false)),
            part(1, &["acct2"], checked(0, false)),
        ];
        let merged = merge(&mut parts, &keys).expect("one commit ts");
        assert_eq!(merged.get_check_secondary_locks().get_commit_ts(), 5);
    }
}
