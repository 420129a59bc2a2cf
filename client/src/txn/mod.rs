//! Transactions: snapshot-isolated, multi-key, multi-region, in the Percolator design as
//! TiKV's client builds it ([`TxnClient`], [`Transaction`], [`Snapshot`]).
//!
//! A transaction reads at its `start_ts` (from PD's TSO) and buffers its writes in the
//! client. At commit it picks a primary key (the first key it locked or wrote, else its
//! smallest key) and:
//! - if every key lies in one region and [`TxnOptions::try_one_pc`] holds, sends one
//!   prewrite with `try_one_pc`: the store prewrites and commits in one step (**1PC**);
//! - otherwise, with [`TxnOptions::async_commit`] and at most 256 keys, runs **async
//!   commit**: prewrites every region's keys in parallel, each leader choosing its locks'
//!   `min_commit_ts`; once all succeeded the transaction is committed at the largest of
//!   them, and the client answers (one round trip) and commits the keys in the background
//!   (a reader that meets a lock of a stalled one decides it from the locks alone);
//! - otherwise runs **2PC**: prewrites every region's keys in parallel (locks naming the
//!   primary), takes a `commit_ts` from the TSO, commits the primary — the commit point —
//!   and answers; the secondaries are committed in the background (a reader that meets
//!   one first resolves it through the primary).
//!
//! Invariants the client keeps:
//! - a transaction commits only by committing its primary, after every prewrite
//!   succeeded, with a `commit_ts` taken from the TSO after them (so above every
//!   `start_ts` that could have read the keys unlocked) — or, by async commit, when the
//!   last of its prewrites lands, at the largest `min_commit_ts` the leaders chose above
//!   every read they served;
//! - an error that leaves the outcome unknown (the primary's commit sent, no answer) is
//!   [`crate::Error::CommitUndetermined`], never a retryable error: `run` must not apply a
//!   transaction twice;
//! - a lock is resolved only from its primary's status (see `resolve.rs`);
//! - every wait (TSO, locks, routing) is bounded by the client's operation deadline, and
//!   [`TxnClient::run`]'s retries by [`TxnOptions::retry_timeout`].
//!
//! Transactional keys live in their own key space on the stores: a key written through
//! [`TxnClient`] is not visible to [`crate::Client`]'s raw reads, and the reverse.

mod atomic;
mod client;
mod commit;
mod gc;
mod occ;
mod read;
mod resolve;
mod rpc;
mod transaction;
mod tso;

pub use atomic::{AtomicOp, AtomicOutcome};
pub use client::{TxnBody, TxnClient};
pub use gc::LocksResolved;
pub use occ::{OccOutcome, OccTxn};
pub use read::Snapshot;
pub use transaction::Transaction;
pub(crate) use tso::TsoQueue;

use crate::error::{Error, Result};
use std::time::Duration;

/// How a transaction detects conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnMode {
    /// Conflicts are found at commit: a write committed by another transaction after this
    /// one's start fails the commit with [`Error::WriteConflict`].
    Optimistic,
    /// Keys are locked as they are read for update ([`Transaction::get_for_update`],
    /// [`Transaction::lock_keys`]) and before commit for every other written key, each at
    /// a fresh `for_update_ts`: the commit does not fail on write conflicts. Except on a
    /// key the transaction read at its start ts ([`Transaction::get`], `batch_get`, inside
    /// a `scan`'s range) before locking it: that lock is checked from the start ts, and a
    /// write committed since fails with [`Error::WriteConflict`] (retryable), so a `get`
    /// then `put` never loses another transaction's update (snapshot isolation).
    Pessimistic,
}

/// The settings of one transaction.
#[derive(Debug, Clone)]
pub struct TxnOptions {
    /// Optimistic (default) or pessimistic.
    pub mode: TxnMode,
    /// Commit by 1PC when every key lies in one region (default true).
    pub try_one_pc: bool,
    /// Commit by async commit when the keys span several regions and are at most 256
    /// (default true): the commit answers after the prewrites, one round trip instead of
    /// two; the keys are committed in the background.
    pub async_commit: bool,
    /// Time to live of the transaction's locks, from its start, in ms (default 3,000). A
    /// lock older than this whose transaction stopped heartbeating may be rolled back by
    /// any client that meets it.
    pub lock_ttl_ms: u64,
    /// How often a transaction holding locks extends its primary's TTL (default 1 s;
    /// below `lock_ttl_ms`).
    pub heartbeat_interval: Duration,
    /// Pessimistic: how long the store may queue a lock request behind another
    /// transaction's lock, in ms (default 3,000; 0: never wait, resolve and retry
    /// instead). When it passes the client resolves the lock it waited for: a dead
    /// holder's lock (TTL run out) is rolled back and the request sent again; a live
    /// holder's ends the request with [`Error::LockWaitTimeout`]. A request's RPC
    /// deadline is `Config::rpc_timeout` plus this.
    pub lock_wait_timeout_ms: u64,
    /// [`TxnClient::run`]: no new attempt starts after this long (default 20 s).
    pub retry_timeout: Duration,
}

impl Default for TxnOptions {
    fn default() -> Self {
        TxnOptions {
            mode: TxnMode::Optimistic,
            try_one_pc: true,
            async_commit: true,
            lock_ttl_ms: 3_000,
            heartbeat_interval: Duration::from_secs(1),
            lock_wait_timeout_ms: 3_000,
            retry_timeout: Duration::from_secs(20),
        }
    }
}

impl TxnOptions {
    /// Optimistic, with the defaults.
    pub fn optimistic() -> TxnOptions {
        TxnOptions::default()
    }

    /// Pessimistic, with the defaults.
    pub fn pessimistic() -> TxnOptions {
        TxnOptions {
            mode: TxnMode::Pessimistic,
            ..TxnOptions::default()
        }
    }

    /// Rejects settings that cannot work: a zero TTL, or a heartbeat that does not come
    /// before the TTL runs out.
    pub fn validate(&self) -> Result<()> {
        if self.lock_ttl_ms == 0 {
            return Err(Error::InvalidArgument(
                "lock_ttl_ms must be positive".into(),
            ));
        }
        if self.heartbeat_interval.is_zero()
            || self.heartbeat_interval.as_millis() >= u128::from(self.lock_ttl_ms)
        {
            return Err(Error::InvalidArgument(
                "heartbeat_interval must be positive and below lock_ttl_ms".into(),
            ));
        }
        Ok(())
    }
}

/// What a [`TxnClient`] and its transactions share: the raw client (routing, retries,
/// connections) and the TSO batcher.
pub(crate) struct Shared {
    client: crate::Client,
    tso: tso::TsoBatcher,
    /// The newest timestamp this client got from the TSO.
    tso_seen: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// A fresh timestamp from the TSO (batched with concurrent requests), retrying PD
    /// failures with backoff until the operation deadline.
    pub(crate) async fn timestamp(&self) -> Result<u64> {
        let cfg = self.client.config();
        let started = std::time::Instant::now();
        let mut backoff = cfg.backoff_base;
        loop {
            match self.tso.get().await {
                Ok(ts) => {
                    self.tso_seen
                        .fetch_max(ts, std::sync::atomic::Ordering::AcqRel);
                    return Ok(ts);
                }
                Err(Error::Pd(_)) if started.elapsed() < cfg.op_timeout => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(cfg.backoff_max);
                }
                Err(e @ Error::Pd(_)) => {
                    return Err(Error::Timeout {
                        operation: "get_ts",
                        elapsed_ms: started.elapsed().as_millis() as u64,
                        last_error: e.to_string(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Shared {
    /// `Ok` when PD's TSO has handed out `ts` or a later timestamp (asking it for a fresh
    /// one unless this client already got one at or above `ts`); else
    /// [`Error::TimestampTooFarAhead`]. A read at a later ts would not be a snapshot:
    /// transactions committing after the read could still land at or below it.
    pub(crate) async fn check_issued(&self, ts: u64) -> Result<()> {
        if ts <= self.tso_seen.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let now = self.timestamp().await?;
        if ts <= now {
            Ok(())
        } else {
            Err(Error::TimestampTooFarAhead { ts, limit: now })
        }
    }
}

/// Refuses an empty key (it cannot be stored).
fn check_key(op: &str, key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(format!("{op}: an empty key")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_refuse_a_heartbeat_slower_than_the_ttl() {
        assert!(TxnOptions::default().validate().is_ok());
        assert!(TxnOptions::pessimistic().validate().is_ok());
        let slow = TxnOptions {
            heartbeat_interval: Duration::from_secs(3),
            ..TxnOptions::default()
        };
        assert!(matches!(slow.validate(), Err(Error::InvalidArgument(_))));
        let no_ttl = TxnOptions {
            lock_ttl_ms: 0,
            ..TxnOptions::default()
        };
        assert!(matches!(no_ttl.validate(), Err(Error::InvalidArgument(_))));
    }
}
