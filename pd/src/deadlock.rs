//! Deadlock detection for pessimistic lock waits: one waits-for graph for the whole
//! cluster, kept by PD (TiKV keeps it on one store's leader; PD is already the one place
//! every store talks to).
//!
//! A store leader about to queue transaction `w` behind the holder `h` of a key asks PD
//! first: PD adds the edge `w -> h` unless `h` already (transitively) waits for `w`, in
//! which case the wait would close a cycle and is refused (`Deadlock`: the waiter aborts
//! at once instead of both waiting out their lock-wait timeouts). Edges leave when the
//! wait ends (granted, timed out, transaction over) and, as a safety net, after a TTL (a
//! store that died mid-wait cannot leave an edge behind for ever).
//!
//! Invariants: the graph never holds a cycle; each waiter has at most one out-edge (a
//! transaction waits for one key at a time).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A wait refused because it would close a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadlock {
    /// The cycle, starting at the refused waiter: each waits for the next, and the last
    /// for the first.
    pub cycle: Vec<u64>,
    /// The key hash of the wait that closes the cycle on the holder's side.
    pub key_hash: u64,
}

#[derive(Debug, Clone, Copy)]
struct Edge {
    holder: u64,
    key_hash: u64,
    since: Instant,
}

/// The waits-for graph of pessimistic lock waits (transactions by start_ts).
#[derive(Debug)]
pub struct WaitsFor {
    edges: HashMap<u64, Edge>,
    ttl: Duration,
}

impl WaitsFor {
    /// An empty graph whose edges expire after `ttl` (longer than any lock-wait timeout).
    pub fn new(ttl: Duration) -> WaitsFor {
        WaitsFor {
            edges: HashMap::new(),
            ttl,
        }
    }

    /// Records that `waiter` waits for `holder` on the key with hash `key_hash`, at `now`;
    /// refused when `holder` already waits (transitively) for `waiter`. A waiter that
    /// waited elsewhere now waits here only.
    pub fn wait(
        &mut self,
        waiter: u64,
        holder: u64,
        key_hash: u64,
        now: Instant,
    ) -> Result<(), Deadlock> {
        self.expire(now);
        let mut cycle = vec![waiter];
        let mut at = holder;
        // Each node has at most one out-edge and the graph is acyclic: this walk ends.
        while at != waiter {
            cycle.push(at);
            match self.edges.get(&at) {
                Some(e) => at = e.holder,
                None => {
                    self.edges.insert(
                        waiter,
                        Edge {
                            holder,
                            key_hash,
                            since: now,
                        },
                    );
                    return Ok(());
                }
            }
        }
        let key_hash = self
            .edges
            .get(cycle.last().unwrap_or(&waiter))
            .map_or(key_hash, |e| e.key_hash);
        Err(Deadlock { cycle, key_hash })
    }

    /// The wait of `waiter` ended (granted, timed out, or its transaction finished).
    pub fn done(&mut self, waiter: u64) {
        self.edges.remove(&waiter);
    }

    /// How many transactions wait.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    /// Whether no transaction waits.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.edges
            .retain(|_, e| now.saturating_duration_since(e.since) < ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn two_transactions_locking_in_opposite_orders_are_told_at_the_second_wait() {
        // A (ts 1) holds a and waits for b; B (ts 2) holds b and now wants a.
        let now = Instant::now();
        let mut g = WaitsFor::new(TTL);
        g.wait(1, 2, 0xb, now).unwrap();
        let d = g.wait(2, 1, 0xa, now).unwrap_err();
        assert_eq!(d.cycle, vec![2, 1]);
        assert_eq!(g.len(), 1, "the refused wait is not recorded");
        // B aborts; A's wait is granted and ends.
        g.done(1);
        assert!(g.is_empty());
    }

    #[test]
    fn longer_cycles_are_found_and_chains_are_not_cycles() {
        let now = Instant::now();
        let mut g = WaitsFor::new(TTL);
        g.wait(1, 2, 1, now).unwrap();
        g.wait(2, 3, 2, now).unwrap();
        g.wait(4, 3, 3, now).unwrap(); // 4 also waits for 3: a tree, no cycle
        let d = g.wait(3, 1, 4, now).unwrap_err();
        assert_eq!(d.cycle, vec![3, 1, 2]);
        g.wait(3, 5, 5, now).unwrap(); // waiting for someone else is fine
        assert_eq!(g.len(), 4);
    }

    #[test]
    fn a_new_wait_replaces_the_old_one_and_stale_edges_expire() {
        let now = Instant::now();
        let mut g = WaitsFor::new(TTL);
        g.wait(1, 2, 1, now).unwrap();
        g.wait(1, 3, 2, now).unwrap(); // 1 now waits for 3 only
        g.wait(2, 1, 3, now).unwrap(); // 2 -> 1 -> 3: no cycle any more
                                       // An edge left behind by a store that died expires, and no longer blocks.
        let later = now + TTL;
        g.wait(3, 2, 4, later).unwrap();
        assert_eq!(g.len(), 1);
    }
}
