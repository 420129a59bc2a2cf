//! The leader's in-memory pessimistic locks, as data (TiKV's "in-memory pessimistic
//! locks"): which keys hold one, and which keys entries proposed but not yet applied
//! touch.
//!
//! A lock is granted in memory only on a key no unapplied entry touches (`busy`), so the
//! grant's check, run on the applied state, saw everything the log holds before the
//! entry that will later carry the lock. From then on, every command proposed on the key
//! takes the lock with it (`take`) into its entry, and apply writes the lock before the
//! command runs: the log reads as if the lock had been replicated at the grant.
//!
//! Invariants: a key has at most one lock here; `busy` is conservative (unapplied
//! entries' keys are kept as 64-bit hashes, so a collision makes a key look busy; a key
//! noted for an entry that raft then refused stays busy until a later entry applies);
//! the locks are dropped when the replica's role changes (`drop_locks`), the entries'
//! keys only once those entries are applied.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

/// One lock held in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemLock {
    /// The lock record, as the lock CF would store it.
    pub(crate) record: Vec<u8>,
    /// Its transaction's start ts.
    pub(crate) start_ts: u64,
    /// When (wall ms) its TTL runs out: then it is written to the log, where resolvers
    /// find it.
    pub(crate) expires_ms: u64,
}

/// The locks and the unapplied entries' keys (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct MemLocks {
    locks: HashMap<Vec<u8>, MemLock>,
    /// The term the locks were granted in (none outlives it).
    term: u64,
    /// Per key hash, the index of the last proposed entry touching it.
    in_flight: HashMap<u64, u64>,
    /// The proposed entries' key hashes, in index order, until applied.
    proposed: VecDeque<(u64, Vec<u64>)>,
    /// Key hashes of the entry being built, until it has an index.
    unindexed: Vec<u64>,
    /// Key hashes of commands queued for the turn's entry and not yet built into one
    /// (with how many such commands touch each): a lock request arriving after them
    /// takes its turn behind them (fairness only: an entry built later carries the lock
    /// anyway).
    queued: HashMap<u64, u32>,
}

/// The hash unapplied entries' keys are kept by (the same in every process).
fn key_hash(key: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl MemLocks {
    /// Locks held.
    pub(crate) fn len(&self) -> usize {
        self.locks.len()
    }

    /// Whether no lock is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Whether `key` holds a lock here.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.locks.contains_key(key)
    }

    /// Whether an entry proposed and not yet applied (or being built) touches `key`, as
    /// of [`Self::applied`].
    pub(crate) fn busy(&self, key: &[u8]) -> bool {
        let h = key_hash(key);
        self.in_flight.contains_key(&h)
            || self.unindexed.contains(&h)
            || self.queued.contains_key(&h)
    }

    /// A command on `key` was queued for the turn's entry.
    pub(crate) fn queueing(&mut self, key: &[u8]) {
        *self.queued.entry(key_hash(key)).or_default() += 1;
    }

    /// Keeps `lock` on `key`, granted in `term` (replacing none: the caller checked
    /// [`Self::contains`]). Locks of an earlier term are dropped first.
    pub(crate) fn insert(&mut self, key: Vec<u8>, lock: MemLock, term: u64) {
        debug_assert!(!self.locks.contains_key(&key));
        self.check_term(term);
        self.term = term;
        self.locks.insert(key, lock);
    }

    /// Drops the locks if they were granted in another term than `term` (a step-down and
    /// re-election the observer did not see as two role changes).
    pub(crate) fn check_term(&mut self, term: u64) {
        if self.term != term {
            self.locks.clear();
        }
    }

    /// The entry being built touches `key` (a command queued for it is built).
    pub(crate) fn proposing(&mut self, key: &[u8]) {
        let h = key_hash(key);
        if let Some(n) = self.queued.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                self.queued.remove(&h);
            }
        }
        self.unindexed.push(h);
    }

    /// An admin entry touching `keys` was proposed at `index`.
    pub(crate) fn proposed_admin<'a>(&mut self, index: u64, keys: impl Iterator<Item = &'a [u8]>) {
        let hashes: Vec<u64> = keys.map(key_hash).collect();
        if hashes.is_empty() {
            return;
        }
        for h in &hashes {
            self.in_flight.insert(*h, index);
        }
        self.proposed.push_back((index, hashes));
    }

    /// `key`'s lock, if held.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&MemLock> {
        self.locks.get(key)
    }

    /// Replaces `key`'s lock record (a heartbeat raised its TTL), expiring no earlier than
    /// before.
    pub(crate) fn raise(&mut self, key: &[u8], record: Vec<u8>, expires_ms: u64) {
        if let Some(l) = self.locks.get_mut(key) {
            l.record = record;
            l.expires_ms = l.expires_ms.max(expires_ms);
        }
    }

    /// Removes and returns `key`'s lock (a command on the key carries it).
    pub(crate) fn take(&mut self, key: &[u8]) -> Option<MemLock> {
        if self.locks.is_empty() {
            return None;
        }
        self.locks.remove(key)
    }

    /// The entry being built was proposed at `index`.
    pub(crate) fn proposed(&mut self, index: u64) {
        if self.unindexed.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.unindexed);
        for k in &keys {
            self.in_flight.insert(*k, index);
        }
        self.proposed.push_back((index, keys));
    }

    /// Entries through `index` are applied.
    pub(crate) fn applied(&mut self, index: u64) {
        while self.proposed.front().is_some_and(|(i, _)| *i <= index) {
            let (i, keys) = self.proposed.pop_front().expect("checked");
            for k in keys {
                if self.in_flight.get(&k) == Some(&i) {
                    self.in_flight.remove(&k);
                }
            }
        }
    }

    /// Removes and returns every lock, in key order.
    pub(crate) fn take_all(&mut self) -> Vec<(Vec<u8>, MemLock)> {
        let mut all: Vec<_> = self.locks.drain().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Removes and returns the locks whose TTL ran out by `now_ms`, in key order.
    pub(crate) fn take_expired(&mut self, now_ms: u64) -> Vec<(Vec<u8>, MemLock)> {
        let keys: Vec<Vec<u8>> = self
            .locks
            .iter()
            .filter(|(_, l)| l.expires_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<_> = keys
            .into_iter()
            .filter_map(|k| self.locks.remove_entry(&k))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The oldest start ts among the locks.
    pub(crate) fn oldest_start_ts(&self) -> Option<u64> {
        self.locks.values().map(|l| l.start_ts).min()
    }

    /// Drops every lock (the replica stepped down, became leader, split or was fenced),
    /// and the keys of commands queued or being built but never proposed (every batch was
    /// answered). The proposed entries' keys stay until those entries apply: a new
    /// leader may have proposed some before it learnt of its new role.
    pub(crate) fn drop_locks(&mut self) {
        self.locks.clear();
        self.queued.clear();
        self.unindexed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(start_ts: u64, expires_ms: u64) -> MemLock {
        MemLock {
            record: vec![start_ts as u8],
            start_ts,
            expires_ms,
        }
    }

    #[test]
    fn a_key_is_busy_from_its_entry_being_built_until_that_entry_applies() {
        let mut m = MemLocks::default();
        assert!(!m.busy(b"a"));
        m.proposing(b"a");
        assert!(m.busy(b"a"), "in the entry being built");
        m.proposed(7);
        m.proposing(b"b");
        m.proposing(b"a");
        m.proposed(9);
        m.applied(7);
        assert!(m.busy(b"a"), "the entry at 9 touches it too");
        assert!(m.busy(b"b"));
        m.applied(8);
        assert!(m.busy(b"a"));
        m.applied(9);
        assert!(!m.busy(b"a") && !m.busy(b"b"));
        m.proposed(10);
        assert!(m.proposed.is_empty(), "an entry with no keys is not kept");
    }

    #[test]
    fn an_entry_raft_refused_keeps_its_keys_busy_until_a_later_entry_applies() {
        let mut m = MemLocks::default();
        m.proposing(b"a");
        // Refused: no `proposed` call; the next entry takes the key along.
        assert!(m.busy(b"a"));
        m.proposing(b"c");
        m.proposed(12);
        assert!(m.busy(b"a"));
        m.applied(12);
        assert!(!m.busy(b"a"));
    }

    #[test]
    fn locks_are_taken_one_by_one_all_at_once_or_when_they_expire() {
        let mut m = MemLocks::default();
        m.insert(b"b".to_vec(), lock(20, 500), 1);
        m.insert(b"a".to_vec(), lock(10, 100), 1);
        m.insert(b"c".to_vec(), lock(30, 100), 1);
        assert_eq!(m.len(), 3);
        assert_eq!(m.oldest_start_ts(), Some(10));
        let expired = m.take_expired(100);
        assert_eq!(
            expired.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"c".to_vec()]
        );
        assert!(m.take_expired(499).is_empty());
        assert_eq!(m.take(b"b"), Some(lock(20, 500)));
        assert_eq!(m.take(b"b"), None, "taken once");
        assert!(m.is_empty());
        assert_eq!(m.oldest_start_ts(), None);
        m.insert(b"z".to_vec(), lock(5, 1), 1);
        m.insert(b"y".to_vec(), lock(6, 1), 1);
        assert_eq!(m.take_all()[0].0, b"y".to_vec(), "in key order");
        assert!(m.is_empty());
    }

    #[test]
    fn dropping_the_locks_keeps_the_proposed_entries_keys_only() {
        let mut m = MemLocks::default();
        m.insert(b"a".to_vec(), lock(1, 1), 1);
        m.proposing(b"b");
        m.proposed(3);
        m.proposing(b"c");
        m.queueing(b"d");
        m.drop_locks();
        assert!(m.is_empty() && !m.contains(b"a"));
        assert!(m.busy(b"b"), "its entry is still unapplied");
        assert!(!m.busy(b"c") && !m.busy(b"d"), "never proposed");
        m.applied(3);
        assert!(!m.busy(b"b"));
    }

    #[test]
    fn a_queued_command_keeps_its_keys_busy_until_its_entry_applies() {
        let mut m = MemLocks::default();
        m.queueing(b"q");
        m.queueing(b"q");
        assert!(m.busy(b"q"));
        m.proposing(b"q");
        m.proposed(5);
        m.applied(5);
        assert!(m.busy(b"q"), "a second command on q is still queued");
        m.proposed_admin(6, [b"z".as_slice()].into_iter());
        assert!(m.busy(b"q"), "an admin entry builds no queued command");
        m.proposing(b"q");
        m.proposed(7);
        m.applied(6);
        assert!(m.busy(b"q") && !m.busy(b"z"));
        m.applied(7);
        assert!(!m.busy(b"q"));
    }

    #[test]
    fn a_raised_lock_keeps_the_later_expiry() {
        let mut m = MemLocks::default();
        m.insert(b"p".to_vec(), lock(1, 500), 1);
        m.raise(b"p", vec![9], 300);
        assert_eq!(
            m.get(b"p").map(|l| (l.record.clone(), l.expires_ms)),
            Some((vec![9], 500))
        );
        m.raise(b"p", vec![8], 900);
        assert_eq!(m.get(b"p").map(|l| l.expires_ms), Some(900));
        m.raise(b"q", vec![1], 1);
        assert!(m.get(b"q").is_none(), "nothing to raise");
    }

    #[test]
    fn locks_of_another_term_are_dropped() {
        let mut m = MemLocks::default();
        m.insert(b"a".to_vec(), lock(1, 1), 4);
        m.check_term(4);
        assert!(m.contains(b"a"));
        m.insert(b"b".to_vec(), lock(2, 1), 6);
        assert!(
            !m.contains(b"a") && m.contains(b"b"),
            "a was granted in term 4"
        );
        m.check_term(7);
        assert!(m.is_empty());
    }
}
