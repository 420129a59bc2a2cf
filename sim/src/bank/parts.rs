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
/// in `keys`' order), the highest commit and `min_commit_ts` floors, and a secondaries'
/// check that saw any of them committed or rolled back. An async-commit prewrite whose
/// part answered `min_commit_ts` 0 (its keys committed already) answers 0.
pub(super) fn merge(parts: &mut [Part], keys: &[Vec<u8>]) -> TxnResponse {
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
        return answers.remove(0).1;
    }
    if let Some(i) = answers.iter().position(|(_, a)| a.has_key_error()) {
        return answers.swap_remove(i).1;
    }
    let mut out = answers[0].1.clone();
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
        let at = answers
            .iter()
            .map(|(_, a)| a.get_commit().get_commit_ts())
            .max()
            .unwrap_or(0);
        out.mut_commit().set_commit_ts(at);
    } else if out.has_check_secondary_locks() {
        let mut locks = Vec::new();
        let (mut commit_ts, mut rolled_back) = (0, false);
        for (_, a) in &mut answers {
            let mut r = a.take_check_secondary_locks();
            locks.extend(r.take_locks());
            commit_ts = commit_ts.max(r.get_commit_ts());
            rolled_back |= r.get_rolled_back();
        }
        let r = out.mut_check_secondary_locks();
        r.set_locks(locks.into());
        r.set_commit_ts(commit_ts);
        r.set_rolled_back(rolled_back);
    }
    out
}
