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
//! Invariants: the graph never holds a cycle; a waiter has at most one out-edge per key
//! (its place in that key's queue; a report for the same key replaces it), and may wait
//! on several keys at once — a transaction locks its keys region by region in parallel,
//! so it can queue in two regions at the same time, and a cycle through both must be
//! found (one edge per waiter would keep only the later wait, and such a cycle would end
//! only by the lock-wait timeouts).

use regatta_proto::pdpb::{DetectRequest, DetectResponse, WaitForOp, WaitRefused};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long PD keeps a wait edge no store removed: above the longest lock wait a store
/// allows (`StoreConfig::max_lock_wait_ms`, 30 s by default), so only an edge whose
/// removal was lost (its store died, PD was unreachable) expires this way.
pub const EDGE_TTL: Duration = Duration::from_secs(60);

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
    /// Per waiter, its waits (one per key hash).
    edges: HashMap<u64, Vec<Edge>>,
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
    /// refused when `holder` already waits (transitively) for `waiter`. An earlier wait
    /// of `waiter` on the same key (it was queued behind another) is replaced; its waits
    /// on other keys stay.
    pub fn wait(
        &mut self,
        waiter: u64,
        holder: u64,
        key_hash: u64,
        now: Instant,
    ) -> Result<(), Deadlock> {
        self.expire(now);
        if let Some(path) = self.path(holder, waiter) {
            // path: holder .. x, where x waits for waiter.
            let last = *path.last().unwrap_or(&holder);
            let key_hash = self
                .edges
                .get(&last)
                .and_then(|es| es.iter().find(|e| e.holder == waiter))
                .map_or(key_hash, |e| e.key_hash);
            let mut cycle = vec![waiter];
            cycle.extend(path);
            return Err(Deadlock { cycle, key_hash });
        }
        let edges = self.edges.entry(waiter).or_default();
        edges.retain(|e| e.key_hash != key_hash);
        edges.push(Edge {
            holder,
            key_hash,
            since: now,
        });
        Ok(())
    }

    /// A path of waits from `from` to `to` (`from` first, then each transaction the one
    /// before waits for, the last waiting for `to`), if `from` waits for `to`
    /// transitively. The graph is acyclic and each node is visited once: this ends.
    fn path(&self, from: u64, to: u64) -> Option<Vec<u64>> {
        let mut seen = HashSet::from([from]);
        let mut stack: Vec<(u64, usize)> = vec![(from, 0)];
        while let Some((at, next)) = stack.last().copied() {
            let out = self.edges.get(&at).map_or(&[][..], Vec::as_slice);
            let Some(e) = out.get(next) else {
                stack.pop();
                continue;
            };
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            if e.holder == to {
                return Some(stack.iter().map(|(n, _)| *n).collect());
            }
            if seen.insert(e.holder) {
                stack.push((e.holder, 0));
            }
        }
        None
    }

    /// The wait of `waiter` for `holder` on the key with hash `key_hash` ended (granted,
    /// timed out, or its transaction finished). Its other waits — for other holders, or
    /// for the same holder on other keys (another region's queue) — stay. A `key_hash`
    /// of 0 (a store that does not say) ends every wait of `waiter` for `holder`.
    pub fn done(&mut self, waiter: u64, holder: u64, key_hash: u64) {
        if let Some(edges) = self.edges.get_mut(&waiter) {
            edges.retain(|e| e.holder != holder || (key_hash != 0 && e.key_hash != key_hash));
            if edges.is_empty() {
                self.edges.remove(&waiter);
            }
        }
    }

    /// Ends every wait of `waiter` on the key with hash `key_hash` (0, a store that does
    /// not say: every wait of `waiter`).
    fn drop_key(&mut self, waiter: u64, key_hash: u64) {
        if let Some(edges) = self.edges.get_mut(&waiter) {
            edges.retain(|e| key_hash != 0 && e.key_hash != key_hash);
            if edges.is_empty() {
                self.edges.remove(&waiter);
            }
        }
    }

    /// Applies a store's batch of wait reports in order; answers the refused waits.
    pub fn detect(&mut self, req: &DetectRequest, now: Instant) -> DetectResponse {
        let mut resp = DetectResponse::new();
        for e in req.get_entries() {
            let (waiter, holder) = (e.get_waiter_ts(), e.get_holder_ts());
            match e.get_op() {
                WaitForOp::WAIT_REMOVE => self.done(waiter, holder, e.get_key_hash()),
                // A transaction never waits for itself; a zero ts is no transaction.
                WaitForOp::WAIT_ADD if waiter == holder || waiter == 0 || holder == 0 => {}
                WaitForOp::WAIT_ADD => {
                    if let Err(d) = self.wait(waiter, holder, e.get_key_hash(), now) {
                        // The waiter is told it deadlocks: its wait on this key is over
                        // (an earlier edge of it on the key, behind another holder, too).
                        // Its waits on other keys stay queued in their regions until
                        // their stores report their end, and a cycle through them must
                        // still be found.
                        self.drop_key(waiter, e.get_key_hash());
                        let mut r = WaitRefused::new();
                        r.set_waiter_ts(waiter);
                        r.set_holder_ts(holder);
                        r.set_key_hash(d.key_hash);
                        r.set_cycle(d.cycle);
                        resp.mut_refused().push(r);
                    }
                }
            }
        }
        resp
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
        self.edges.retain(|_, es| {
            es.retain(|e| now.saturating_duration_since(e.since) < ttl);
            !es.is_empty()
        });
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
        g.done(1, 2, 0xb);
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
        g.wait(1, 3, 1, now).unwrap(); // on the same key, 1 now waits for 3 only
        g.wait(2, 1, 3, now).unwrap(); // 2 -> 1 -> 3: no cycle any more
                                       // An edge left behind by a store that died expires, and no longer blocks.
        let later = now + TTL;
        g.wait(3, 2, 4, later).unwrap();
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn the_end_of_an_old_wait_does_not_remove_the_new_one() {
        let now = Instant::now();
        let mut g = WaitsFor::new(TTL);
        g.wait(1, 2, 1, now).unwrap();
        g.wait(1, 3, 1, now).unwrap(); // 1 was handed on in the key's queue: it waits for 3
        g.done(1, 2, 1); // the report of the old wait's end comes late
        assert!(g.wait(3, 1, 3, now).is_err(), "1 -> 3 is still known");
        g.done(1, 3, 1);
        assert!(g.is_empty());
    }

    /// Issue 20, hole 9: a transaction waiting in two regions at once (its lock requests
    /// go region by region in parallel) keeps both waits, so a cycle through either is
    /// found at once rather than by the lock-wait timeouts.
    #[test]
    fn a_transaction_waiting_on_two_keys_keeps_both_waits() {
        let now = Instant::now();
        let mut g = WaitsFor::new(TTL);
        g.wait(1, 3, 0xb, now).unwrap(); // 1 waits for 3 on b (region 2)
        g.wait(1, 2, 0xa, now).unwrap(); // and for 2 on a (region 1), at the same time
        let d = g.wait(3, 1, 0xc, now).unwrap_err();
        assert_eq!(d.cycle, vec![3, 1]);
        assert_eq!(d.key_hash, 0xb, "the key 1 waits for 3 on");
        let d = g.wait(2, 1, 0xd, now).unwrap_err();
        assert_eq!(d.cycle, vec![2, 1]);
        g.done(1, 2, 0xa); // granted a: the wait on b stays
        assert!(g.wait(3, 1, 0xc, now).is_err());
        g.wait(2, 1, 0xd, now).unwrap();
        assert_eq!(g.len(), 2);
    }

    /// Hole 9 with one holder: a transaction waiting for the same holder on two keys (two
    /// regions) keeps its wait on the second when the first is granted, so a cycle
    /// through the second is still found at once.
    #[test]
    fn the_end_of_a_wait_on_one_key_keeps_the_wait_for_the_same_holder_on_another() {
        let now = Instant::now();
        let mut g = WaitsFor::new(TTL);
        g.wait(1, 2, 0xa, now).unwrap(); // 1 waits for 2 on a (region 1)
        g.wait(1, 2, 0xb, now).unwrap(); // and on b (region 2)
        g.done(1, 2, 0xa); // a granted
        let d = g.wait(2, 1, 0xc, now).unwrap_err();
        assert_eq!((d.cycle, d.key_hash), (vec![2, 1], 0xb));
        g.done(1, 2, 0); // a store that does not name the key ends every wait for 2
        g.wait(2, 1, 0xc, now).unwrap();
    }

    fn entry(op: WaitForOp, waiter: u64, holder: u64) -> regatta_proto::pdpb::WaitForEntry {
        let mut e = regatta_proto::pdpb::WaitForEntry::new();
        e.set_op(op);
        e.set_waiter_ts(waiter);
        e.set_holder_ts(holder);
        e.set_key_hash(waiter * 100 + holder);
        e
    }

    #[test]
    fn a_refused_waiter_keeps_its_waits_on_other_keys_and_a_cycle_through_them_is_found() {
        let now = Instant::now();
        let mut g = WaitsFor::new(TTL);
        let add = |w, h, k| {
            let mut e = entry(WaitForOp::WAIT_ADD, w, h);
            e.set_key_hash(k);
            e
        };
        let mut req = DetectRequest::new();
        req.mut_entries().push(add(1, 3, 30)); // 1 waits for 3 in one region
        req.mut_entries().push(add(2, 1, 10)); // 2 waits for 1
        req.mut_entries().push(add(1, 2, 20)); // closes 1 -> 2 -> 1: refused
        req.mut_entries().push(add(3, 1, 11)); // closes 3 -> 1 -> 3 through the wait kept
        let resp = g.detect(&req, now);
        let refused: Vec<(u64, u64)> = resp
            .get_refused()
            .iter()
            .map(|r| (r.get_waiter_ts(), r.get_holder_ts()))
            .collect();
        assert_eq!(refused, vec![(1, 2), (3, 1)]);
    }

    #[test]
    fn a_batch_of_reports_is_applied_in_order_and_answers_only_the_refused_waits() {
        let now = Instant::now();
        let mut g = WaitsFor::new(TTL);
        let mut req = DetectRequest::new();
        req.mut_entries().push(entry(WaitForOp::WAIT_ADD, 1, 2));
        req.mut_entries().push(entry(WaitForOp::WAIT_ADD, 2, 1)); // closes 2 -> 1 -> 2
        req.mut_entries().push(entry(WaitForOp::WAIT_ADD, 5, 5)); // ignored
        req.mut_entries().push(entry(WaitForOp::WAIT_REMOVE, 1, 2));
        req.mut_entries().push(entry(WaitForOp::WAIT_ADD, 2, 1)); // fine now
        let resp = g.detect(&req, now);
        assert_eq!(resp.get_refused().len(), 1);
        let r = &resp.get_refused()[0];
        assert_eq!((r.get_waiter_ts(), r.get_holder_ts()), (2, 1));
        assert_eq!(r.get_cycle(), &[2, 1]);
        assert_eq!(g.len(), 1);
    }
}
