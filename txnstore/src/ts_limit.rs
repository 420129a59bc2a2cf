//! `TsLimit`: the newest timestamp a store accepts in a transactional command (TiKV's
//! max-ts limit and `max-ts-drift-allowance`).
//!
//! Why: a leader raises its region's `max_ts` to every read ts it serves, and picks each
//! 1PC commit ts above `max_ts` (`peer/max_ts.rs`). One read at a timestamp far beyond
//! what PD's TSO has handed out (`u64::MAX`, a typo, a skewed clock) would lift `max_ts`
//! there for good: every later 1PC in the region would commit at a ts no reader reaches,
//! and every later writer of those keys would conflict with it forever. So a command's
//! timestamps (read ts, start ts, `for_update_ts`, `min_commit_ts`, commit ts) must not
//! exceed
//!
//! ```text
//! limit = max(newest TSO ts the store fetched, wall clock as a ts) + allowance
//! ```
//!
//! and a command that carries one beyond it is refused before anything reads it
//! (`KeyError.ts_too_far_ahead`, not retryable); a 1PC commit ts that would exceed it
//! falls back to 2PC. The store fetches a TSO ts every store-heartbeat interval and at
//! every leader's `max_ts` sync; the wall clock covers a store that has not reached PD yet.
//!
//! Assumption: the stores' wall clocks are within the allowance (60 s by default) of
//! PD's, and PD's TSO does not run ahead of PD's clock by more (it runs ahead by at most
//! its persisted window, 3 s). A store whose clock is far ahead accepts timestamps up to
//! its clock plus the allowance.

use regatta_proto::ts::LOGICAL_BITS;
use regatta_proto::txnpb::{TxnRequest, TxnRequest_oneof_cmd as Cmd};
use std::sync::atomic::{AtomicU64, Ordering};

/// The store's timestamp limit (one per store, shared by its replicas).
#[derive(Debug)]
pub struct TsLimit {
    /// The newest timestamp this store fetched from PD's TSO (0: none yet).
    tso_seen: AtomicU64,
    /// The allowance, in timestamp units.
    allowance: u64,
}

impl TsLimit {
    /// A limit `allowance_ms` above the newest TSO ts or wall clock.
    pub fn new(allowance_ms: u64) -> TsLimit {
        TsLimit {
            tso_seen: AtomicU64::new(0),
            allowance: allowance_ms.saturating_mul(1 << LOGICAL_BITS),
        }
    }

    /// A timestamp PD's TSO handed out (to this store). Never goes backwards.
    pub fn observe_tso(&self, ts: u64) {
        self.tso_seen.fetch_max(ts, Ordering::AcqRel);
    }

    /// The largest timestamp accepted now, given the wall clock `wall_ms`.
    pub fn limit(&self, wall_ms: u64) -> u64 {
        let clock = wall_ms.saturating_mul(1 << LOGICAL_BITS);
        self.tso_seen
            .load(Ordering::Acquire)
            .max(clock)
            .saturating_add(self.allowance)
    }
}

/// The first timestamp of `req` above `limit`, if any: every timestamp the command
/// would let into the region's state or its `max_ts`, or judge locks by (a far-future
/// `current_ts` would make every live lock look expired, and roll it back).
pub(crate) fn beyond(req: &TxnRequest, limit: u64) -> Option<u64> {
    let ts: &[u64] = match &req.cmd {
        Some(Cmd::get(g)) => &[g.get_start_ts()],
        Some(Cmd::batch_get(b)) => &[b.get_start_ts()],
        Some(Cmd::scan(s)) => &[s.get_start_ts()],
        Some(Cmd::prewrite(p)) => &[
            p.get_start_ts(),
            p.get_for_update_ts(),
            p.get_min_commit_ts(),
        ],
        Some(Cmd::commit(c)) => &[c.get_start_ts(), c.get_commit_ts()],
        Some(Cmd::check_txn_status(c)) => &[c.get_caller_start_ts(), c.get_current_ts()],
        Some(Cmd::cleanup(c)) => &[c.get_start_ts(), c.get_current_ts()],
        Some(Cmd::resolve_lock(r)) => &[r.get_commit_ts()],
        Some(Cmd::pessimistic_lock(l)) => &[l.get_start_ts(), l.get_for_update_ts()],
        _ => &[],
    };
    ts.iter().copied().find(|ts| *ts > limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regatta_proto::txnpb::TxnGetRequest;

    #[test]
    fn the_limit_is_the_newer_of_the_tso_and_the_clock_plus_the_allowance() {
        let l = TsLimit::new(60_000);
        let ms = |m: u64| m << LOGICAL_BITS;
        assert_eq!(l.limit(1_000), ms(61_000), "no TSO yet: the clock");
        l.observe_tso(ms(5_000));
        assert_eq!(l.limit(1_000), ms(65_000), "a TSO ahead of the clock");
        l.observe_tso(ms(2_000));
        assert_eq!(l.limit(1_000), ms(65_000), "never backwards");
        assert_eq!(l.limit(10_000), ms(70_000), "the clock moved on");
        assert_eq!(l.limit(u64::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn a_far_future_read_is_beyond_and_a_current_one_is_not() {
        let mut g = TxnGetRequest::new();
        g.set_key(b"k".to_vec());
        g.set_start_ts(u64::MAX);
        let mut req = TxnRequest::new();
        req.set_get(g.clone());
        assert_eq!(beyond(&req, 1 << 40), Some(u64::MAX));
        g.set_start_ts(1 << 40);
        req.set_get(g);
        assert_eq!(beyond(&req, 1 << 40), None);
    }

    #[test]
    fn a_far_future_current_ts_is_beyond_it_would_expire_every_lock() {
        let mut c = regatta_proto::txnpb::CheckTxnStatusRequest::new();
        c.set_primary(b"k".to_vec());
        c.set_lock_ts(10);
        c.set_caller_start_ts(20);
        c.set_current_ts(u64::MAX);
        let mut req = TxnRequest::new();
        req.set_check_txn_status(c);
        assert_eq!(beyond(&req, 1 << 40), Some(u64::MAX));
        let mut cl = regatta_proto::txnpb::CleanupRequest::new();
        cl.set_key(b"k".to_vec());
        cl.set_start_ts(10);
        cl.set_current_ts(u64::MAX);
        req.set_cleanup(cl);
        assert_eq!(beyond(&req, 1 << 40), Some(u64::MAX));
    }
}
