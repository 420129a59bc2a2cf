//! `MaxTs`: the leader's largest timestamp it served a transactional read at (TiKV's
//! concurrency manager `max_ts`), and whether it may choose 1PC and async-commit
//! timestamps yet.
//!
//! Why: a 1PC prewrite commits in the same entry, at a commit ts the leader chooses at
//! propose time: `max(max_ts + 1, start_ts + 1, for_update_ts + 1, min_commit_ts)`. A
//! reader at `r` that this leader served before that has `r <= max_ts < commit_ts`, so
//! it was right not to see the commit; a reader that arrives after it waits until the
//! entry is applied (`Peer::txn_read_floor`) and then sees it. So no reader at `r` misses
//! a commit below `r` (snapshot isolation; TiKV's 1PC/async-commit argument).
//!
//! Across leader changes: a new leader does not know the reads an earlier leader served,
//! so it chooses no 1PC commit ts (nor async-commit `min_commit_ts`) until it has raised
//! `max_ts` to a fresh timestamp from PD's TSO fetched *after* it became leader (TiKV
//! does the same on becoming leader). Every read an earlier leader served ran at a ts
//! handed out by the TSO before that read was served, which was before this leader was
//! elected (an old lease expires before an election can succeed; an old ReadIndex round
//! needed a quorum that the new term took away) — so below the fetched ts. Until the
//! fetch returns, a 1PC prewrite is proposed as a plain prewrite (answered with
//! `one_pc_commit_ts = 0`) and an async-commit prewrite is answered `ServerIsBusy`.
//!
//! Read timestamps come from the TSO: a command carrying a timestamp beyond the TSO plus
//! the drift allowance is refused before it reaches `max_ts` (`ts_limit.rs`), and a
//! pessimistic lock's conflict ts (a holder's commit ts, maybe chosen above the TSO by a
//! 1PC) never goes in: `max_ts` takes read timestamps and TSO syncs only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The leader's `max_ts` and the term in which it was last synced with the TSO. Shared
/// with the task that fetches the timestamp (hence atomics); cloning shares it.
#[derive(Clone, Debug, Default)]
pub(crate) struct MaxTs {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    max_ts: AtomicU64,
    /// The newest term in which `max_ts` was raised to a TSO timestamp fetched after the
    /// replica became leader in that term.
    synced_term: AtomicU64,
    /// The term this replica leads in (0: it does not lead); the TSO fetch stops retrying
    /// once it changes.
    leader_term: AtomicU64,
}

impl MaxTs {
    /// A read (or a lock check for a reader) at `ts` is served: later 1PC commits must be
    /// above it. Never goes backwards.
    pub(crate) fn observe(&self, ts: u64) {
        self.inner.max_ts.fetch_max(ts, Ordering::AcqRel);
    }

    /// The current value.
    pub(crate) fn get(&self) -> u64 {
        self.inner.max_ts.load(Ordering::Acquire)
    }

    /// The replica became leader of `term` (0: stepped down).
    pub(crate) fn set_leader_term(&self, term: u64) {
        self.inner.leader_term.store(term, Ordering::Release);
    }

    /// The term the replica leads in, 0 if none.
    pub(crate) fn leader_term(&self) -> u64 {
        self.inner.leader_term.load(Ordering::Acquire)
    }

    /// A TSO timestamp fetched after becoming leader in `term` arrived.
    pub(crate) fn synced(&self, term: u64, tso: u64) {
        self.observe(tso);
        self.inner.synced_term.fetch_max(term, Ordering::AcqRel);
    }

    /// Whether `max_ts` covers every read of earlier leaders, for a leader of `term`.
    pub(crate) fn ready(&self, term: u64) -> bool {
        self.inner.synced_term.load(Ordering::Acquire) == term
    }

    /// The 1PC commit ts for a prewrite, chosen by a leader of `term`; `None` until
    /// [`MaxTs::ready`], and when it would exceed `limit`, the store's timestamp limit
    /// (`ts_limit.rs`): then the prewrite stays a plain one and the client commits by 2PC
    /// at a TSO timestamp.
    pub(crate) fn one_pc_commit_ts(
        &self,
        term: u64,
        start_ts: u64,
        for_update_ts: u64,
        min_commit_ts: u64,
        limit: u64,
    ) -> Option<u64> {
        if !self.ready(term) {
            return None;
        }
        let floor = self
            .get()
            .max(start_ts)
            .max(for_update_ts)
            .saturating_add(1);
        Some(floor.max(min_commit_ts)).filter(|ts| *ts <= limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pc_waits_for_the_terms_tso_sync_and_commits_above_every_read() {
        let m = MaxTs::default();
        m.observe(100);
        assert_eq!(
            m.one_pc_commit_ts(2, 50, 0, 0, u64::MAX),
            None,
            "not synced in term 2"
        );
        m.synced(2, 80);
        assert_eq!(m.get(), 100, "a sync never lowers max_ts");
        assert_eq!(m.one_pc_commit_ts(2, 50, 0, 0, u64::MAX), Some(101));
        assert_eq!(m.one_pc_commit_ts(2, 200, 0, 0, u64::MAX), Some(201));
        assert_eq!(m.one_pc_commit_ts(2, 200, 250, 0, u64::MAX), Some(251));
        assert_eq!(m.one_pc_commit_ts(2, 50, 0, 500, u64::MAX), Some(500));
        m.observe(90);
        assert_eq!(m.get(), 100, "max_ts never goes backwards");
        assert_eq!(
            m.one_pc_commit_ts(3, 50, 0, 0, u64::MAX),
            None,
            "a new term syncs again"
        );
        m.synced(2, 1); // a late fetch of an older term does not count for term 3
        assert!(!m.ready(3));
        m.synced(3, 300);
        assert_eq!(m.one_pc_commit_ts(3, 50, 0, 0, u64::MAX), Some(301));
    }

    #[test]
    fn a_one_pc_commit_ts_over_the_timestamp_limit_is_not_chosen() {
        // Issue 20, hole 0: a 1PC commit ts beyond what the TSO handed out plus the drift
        // allowance falls back to 2PC (the client commits at a TSO timestamp).
        let m = MaxTs::default();
        m.synced(1, 1_000);
        assert_eq!(m.one_pc_commit_ts(1, 500, 0, 0, 1_001), Some(1_001));
        assert_eq!(
            m.one_pc_commit_ts(1, 500, 0, 0, 1_000),
            None,
            "over the limit"
        );
        assert_eq!(
            m.one_pc_commit_ts(1, 500, 2_000, 0, 1_500),
            None,
            "for_update_ts"
        );
        assert_eq!(
            m.one_pc_commit_ts(1, 500, 0, 1_600, 1_500),
            None,
            "min_commit_ts"
        );
    }
}
