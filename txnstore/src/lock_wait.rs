//! The pessimistic lock-wait queue of a region's leader, as data (issue: pessimistic locking
//! that beats TiKV on a hot key).
//!
//! TiKV wakes the waiters of a released lock in no particular order and makes each retry
//! its request, so on a hot row most wake-ups meet the lock again (`WriteConflict` on
//! wake-up, useless retries: tikv#13298, tikv#13330). Here the waiters of a key queue in
//! arrival order, and when the holder releases the key the head waiter is *handed* the
//! lock in the same step: the caller proposes the head's lock at once, so no retry round
//! trip, and no waiter can overtake another.
//!
//! Invariants kept here:
//! - per key, waiters leave in FIFO order, except those whose wait timed out or that were
//!   cancelled (their transaction ended);
//! - a transaction waits for at most one key at a time on this queue (a pessimistic lock
//!   request waits for its first conflicting key);
//! - every waiter leaves exactly once: granted, timed out, or cancelled.
//!
//! Deadlocks are not this queue's business: a wait that would close a cycle is refused
//! before it is queued (by the waits-for detector), and every wait has a deadline, so no
//! waiter can wait for ever.

//!
//! The leader's use of it (queue on `locked`, hand over on release, deadlines, PD's
//! deadlock answers) is in `waits.rs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

/// One transaction waiting for a key; `T` is what the caller needs to answer or resume it.
#[derive(Debug)]
pub(crate) struct Waiter<T> {
    /// The waiting transaction.
    pub(crate) start_ts: u64,
    /// When it gives up (answered `LockWaitTimeout`).
    pub(crate) deadline: Instant,
    /// The caller's request (the lock request to propose when granted, and its answer).
    pub(crate) request: T,
}

/// The waiters of one key and the transaction holding it.
#[derive(Debug)]
struct KeyQueue<T> {
    holder_ts: u64,
    waiters: VecDeque<Waiter<T>>,
}

impl<T> KeyQueue<T> {
    /// Who waiter `i` waits for directly.
    fn ahead(&self, i: usize) -> u64 {
        match i {
            0 => self.holder_ts,
            i => self.waiters[i - 1].start_ts,
        }
    }

    /// Takes waiter `i` out of the queue.
    fn remove(&mut self, i: usize) -> Option<Left<T>> {
        let ahead = self.ahead(i);
        let waiter = self.waiters.remove(i)?;
        let behind = self.waiters.get(i).map(|w| w.start_ts);
        Some(Left {
            ahead,
            waiter,
            behind,
        })
    }
}

/// A waiter that left its queue without the key (timed out, cancelled, drained).
#[derive(Debug)]
pub(crate) struct Left<T> {
    /// The transaction it waited for directly (its waits-for edge).
    pub(crate) ahead: u64,
    /// The waiter.
    pub(crate) waiter: Waiter<T>,
    /// The waiter that was behind it, if any: it now waits for `ahead`.
    pub(crate) behind: Option<u64>,
}

/// The leader's lock waits, by key (ordered: expiry and a step-down answer the waiters in
/// key order, the same in every run of a seed in the simulator).
#[derive(Debug)]
pub(crate) struct LockWaitQueue<T> {
    keys: BTreeMap<Vec<u8>, KeyQueue<T>>,
    /// The key each waiting transaction waits for.
    waiting: HashMap<u64, Vec<u8>>,
    /// Most waiters per key; beyond it a request is refused (the caller answers busy).
    max_per_key: usize,
}

/// Why a wait was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The transaction already waits for another key.
    AlreadyWaiting,
    /// The key's queue is full.
    QueueFull,
}

impl<T> LockWaitQueue<T> {
    /// An empty queue holding at most `max_per_key` waiters per key.
    pub(crate) fn new(max_per_key: usize) -> LockWaitQueue<T> {
        LockWaitQueue {
            keys: BTreeMap::new(),
            waiting: HashMap::new(),
            max_per_key,
        }
    }

    /// Queues `waiter` behind the transaction `holder_ts` that holds `key`; gives the
    /// waiter back when it cannot wait.
    pub(crate) fn wait(
        &mut self,
        key: &[u8],
        holder_ts: u64,
        waiter: Waiter<T>,
    ) -> Result<(), (Refused, Waiter<T>)> {
        if self.waiting.contains_key(&waiter.start_ts) {
            return Err((Refused::AlreadyWaiting, waiter));
        }
        let q = self.keys.entry(key.to_vec()).or_insert_with(|| KeyQueue {
            holder_ts,
            waiters: VecDeque::new(),
        });
        if q.waiters.len() >= self.max_per_key {
            return Err((Refused::QueueFull, waiter));
        }
        q.holder_ts = holder_ts;
        self.waiting.insert(waiter.start_ts, key.to_vec());
        q.waiters.push_back(waiter);
        Ok(())
    }

    /// The transaction `holder_ts` released `key` (committed, rolled back, or its lock was
    /// resolved): the head waiter, if any, is handed the key and becomes its holder (the
    /// caller proposes its lock now). A release by another transaction than the holder the
    /// queue knows changes nothing.
    pub(crate) fn release(&mut self, key: &[u8], holder_ts: u64) -> Option<Waiter<T>> {
        let q = self.keys.get_mut(key)?;
        if q.holder_ts != holder_ts {
            return None;
        }
        let head = q.waiters.pop_front();
        match &head {
            Some(w) => {
                q.holder_ts = w.start_ts;
                self.waiting.remove(&w.start_ts);
            }
            None => {
                self.keys.remove(key);
            }
        }
        head
    }

    /// The granted waiter `holder_ts` could not take the key after all (its lock request
    /// failed): the key goes to the next waiter, as on a release.
    pub(crate) fn pass_on(&mut self, key: &[u8], holder_ts: u64) -> Option<Waiter<T>> {
        self.release(key, holder_ts)
    }

    /// The granted waiter found `key` taken after all, by `holder_ts` (a request that did
    /// not wait got there first): it goes back to the head of the queue, which now waits
    /// for `holder_ts`, so it keeps its turn. Gives the waiter back when the queue does not
    /// have it as the key's holder any more (the caller passes the key on and queues it
    /// anew).
    pub(crate) fn wait_first(
        &mut self,
        key: &[u8],
        holder_ts: u64,
        waiter: Waiter<T>,
    ) -> Result<(), Waiter<T>> {
        let q = match self.keys.get_mut(key) {
            Some(q) if q.holder_ts == waiter.start_ts => q,
            _ => return Err(waiter),
        };
        if self.waiting.contains_key(&waiter.start_ts) {
            return Err(waiter);
        }
        q.holder_ts = holder_ts;
        self.waiting.insert(waiter.start_ts, key.to_vec());
        q.waiters.push_front(waiter);
        Ok(())
    }

    /// Removes the waiters whose deadline passed at `now` (answer them `LockWaitTimeout`).
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Left<T>> {
        let mut out = Vec::new();
        for q in self.keys.values_mut() {
            let mut i = 0;
            while i < q.waiters.len() {
                if q.waiters[i].deadline <= now {
                    out.extend(q.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        for l in &out {
            self.waiting.remove(&l.waiter.start_ts);
        }
        out
    }

    /// Removes the waiter of transaction `start_ts` (it ended or was told it deadlocks).
    pub(crate) fn cancel(&mut self, start_ts: u64) -> Option<Left<T>> {
        let key = self.waiting.remove(&start_ts)?;
        let q = self.keys.get_mut(&key)?;
        let i = q.waiters.iter().position(|w| w.start_ts == start_ts)?;
        q.remove(i)
    }

    /// Removes every waiter (the replica stepped down or stopped): answer them so their
    /// clients retry on the new leader.
    pub(crate) fn drain(&mut self) -> Vec<Left<T>> {
        self.waiting.clear();
        let mut out = Vec::new();
        for (_, mut q) in std::mem::take(&mut self.keys) {
            while let Some(l) = q.remove(0) {
                out.push(l);
            }
        }
        out
    }

    /// The transaction that `start_ts` waits for directly: the one ahead of it in its
    /// key's queue, or the key's holder for the head. Waits-for edges go there, so a
    /// hand-over changes one edge, not one per waiter.
    pub(crate) fn ahead_of(&self, start_ts: u64) -> Option<u64> {
        let q = self.keys.get(self.waiting.get(&start_ts)?)?;
        let i = q.waiters.iter().position(|w| w.start_ts == start_ts)?;
        Some(q.ahead(i))
    }

    /// The transaction holding `key` as the queue knows it (the holder a waiter was
    /// queued behind, or the waiter last handed the key), while the key has a queue.
    pub(crate) fn holder_of(&self, key: &[u8]) -> Option<u64> {
        self.keys.get(key).map(|q| q.holder_ts)
    }

    /// The transactions waiting for `key`, in queue order.
    pub(crate) fn waiters_of(&self, key: &[u8]) -> Vec<u64> {
        self.keys
            .get(key)
            .map(|q| q.waiters.iter().map(|w| w.start_ts).collect())
            .unwrap_or_default()
    }

    /// The key transaction `start_ts` waits for, if it waits.
    pub(crate) fn key_of(&self, start_ts: u64) -> Option<&[u8]> {
        self.waiting.get(&start_ts).map(Vec::as_slice)
    }

    /// How many transactions wait.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no transaction waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regatta_raftstore::{Clock, ManualClock};
    use std::time::Duration;

    fn waiter(clock: &ManualClock, start_ts: u64, wait_ms: u64) -> Waiter<u64> {
        Waiter {
            start_ts,
            deadline: clock.now() + Duration::from_millis(wait_ms),
            request: start_ts,
        }
    }

    #[test]
    fn a_released_key_is_handed_to_the_waiters_in_arrival_order() {
        let clock = ManualClock::new();
        let mut q = LockWaitQueue::new(16);
        // Transaction 10 holds the hot key; 30, 20 and 40 queue in that order.
        for ts in [30, 20, 40] {
            q.wait(b"hot", 10, waiter(&clock, ts, 1000)).unwrap();
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.holder_of(b"hot"), Some(10));
        assert_eq!(q.waiters_of(b"hot"), vec![30, 20, 40]);
        let mut order = Vec::new();
        let mut holder = 10;
        while let Some(w) = q.release(b"hot", holder) {
            order.push(w.request); // the request to resume, given back whole
            holder = w.start_ts;
            assert_eq!(
                q.holder_of(b"hot"),
                Some(holder),
                "the granted waiter holds it"
            );
        }
        assert_eq!(
            order,
            vec![30, 20, 40],
            "FIFO, not by timestamp, not random"
        );
        assert!(q.is_empty());
        assert!(q.release(b"hot", holder).is_none());
    }

    #[test]
    fn a_release_by_a_transaction_that_does_not_hold_the_key_grants_nothing() {
        let clock = ManualClock::new();
        let mut q = LockWaitQueue::new(16);
        q.wait(b"k", 10, waiter(&clock, 20, 1000)).unwrap();
        assert!(q.release(b"k", 99).is_none());
        assert_eq!(q.release(b"k", 10).map(|w| w.start_ts), Some(20));
    }

    #[test]
    fn waits_past_their_deadline_leave_and_the_order_of_the_rest_holds() {
        let clock = ManualClock::new();
        let mut q = LockWaitQueue::new(16);
        q.wait(b"k", 1, waiter(&clock, 2, 100)).unwrap();
        q.wait(b"k", 1, waiter(&clock, 3, 50)).unwrap();
        q.wait(b"k", 1, waiter(&clock, 4, 100)).unwrap();
        clock.advance_ms(49);
        assert!(q.expire(clock.now()).is_empty());
        clock.advance_ms(1);
        let gone: Vec<(u64, u64, Option<u64>)> = q
            .expire(clock.now())
            .iter()
            .map(|l| (l.ahead, l.waiter.start_ts, l.behind))
            .collect();
        assert_eq!(
            gone,
            vec![(2, 3, Some(4))],
            "with the waiter it waited behind, and the one behind it"
        );
        assert_eq!(q.release(b"k", 1).map(|w| w.start_ts), Some(2));
        assert_eq!(q.release(b"k", 2).map(|w| w.start_ts), Some(4));
        clock.advance_ms(1000);
        assert!(q.expire(clock.now()).is_empty(), "granted waiters are gone");
    }

    #[test]
    fn a_transaction_waits_for_one_key_at_a_time_and_queues_are_bounded() {
        let clock = ManualClock::new();
        let mut q = LockWaitQueue::new(2);
        q.wait(b"a", 1, waiter(&clock, 5, 100)).unwrap();
        let (why, _) = q.wait(b"b", 2, waiter(&clock, 5, 100)).unwrap_err();
        assert_eq!(why, Refused::AlreadyWaiting);
        q.wait(b"a", 1, waiter(&clock, 6, 100)).unwrap();
        let (why, _) = q.wait(b"a", 1, waiter(&clock, 7, 100)).unwrap_err();
        assert_eq!(why, Refused::QueueFull);
        q.wait(b"b", 2, waiter(&clock, 7, 100)).unwrap();
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn a_cancelled_waiter_leaves_and_a_failed_grant_passes_the_key_on() {
        let clock = ManualClock::new();
        let mut q = LockWaitQueue::new(16);
        for ts in [2, 3, 4] {
            q.wait(b"k", 1, waiter(&clock, ts, 100)).unwrap();
        }
        assert_eq!(q.key_of(3), Some(&b"k"[..]));
        let left = q.cancel(3).unwrap();
        assert_eq!(
            (left.ahead, left.waiter.start_ts, left.behind),
            (2, 3, Some(4)),
            "3 waited behind 2; 4 now waits for 2"
        );
        assert_eq!(q.ahead_of(4), Some(2));
        assert_eq!(q.ahead_of(2), Some(1), "the head waits for the holder");
        assert_eq!(q.key_of(3), None);
        assert!(q.cancel(3).is_none(), "once");
        let granted = q.release(b"k", 1).unwrap();
        assert_eq!(granted.start_ts, 2);
        // Transaction 2's lock request failed (say it was rolled back meanwhile).
        assert_eq!(q.pass_on(b"k", 2).map(|w| w.start_ts), Some(4));
        assert!(q.is_empty());
    }

    #[test]
    fn a_grant_beaten_to_the_key_keeps_its_turn() {
        let clock = ManualClock::new();
        let mut q = LockWaitQueue::new(2);
        for ts in [2, 3, 4] {
            let _ = q.wait(b"k", 1, waiter(&clock, ts, 100));
        }
        assert_eq!(q.waiters_of(b"k"), vec![2, 3], "the queue holds two");
        let granted = q.release(b"k", 1).unwrap();
        assert_eq!(q.holder_of(b"k"), Some(2));
        // Transaction 9 locked the key first, without waiting: 2 waits for it, first.
        q.wait_first(b"k", 9, granted).unwrap();
        assert_eq!(q.holder_of(b"k"), Some(9));
        assert_eq!(q.waiters_of(b"k"), vec![2, 3]);
        assert_eq!(q.key_of(2), Some(&b"k"[..]));
        assert_eq!(q.release(b"k", 9).map(|w| w.start_ts), Some(2));
        // Only the key's holder as the queue knows it can be put back first.
        let stranger = waiter(&clock, 5, 100);
        assert_eq!(
            q.wait_first(b"k", 9, stranger).map_err(|w| w.start_ts),
            Err(5)
        );
        assert_eq!(q.waiters_of(b"k"), vec![3]);
    }

    #[test]
    fn stepping_down_answers_every_waiter() {
        let clock = ManualClock::new();
        let mut q = LockWaitQueue::new(16);
        q.wait(b"a", 1, waiter(&clock, 2, 100)).unwrap();
        q.wait(b"b", 1, waiter(&clock, 3, 100)).unwrap();
        let mut all: Vec<u64> = q.drain().iter().map(|l| l.waiter.start_ts).collect();
        all.sort_unstable();
        assert_eq!(all, vec![2, 3]);
        assert_eq!(q.holder_of(b"a"), None);
        assert!(q.is_empty());
        q.wait(b"a", 1, waiter(&clock, 2, 100)).unwrap();
    }
}
