//! [`TxnClient`]: begins transactions, hands out timestamps and snapshots, and runs a
//! transaction body with retries ([`TxnClient::run`]).

use super::atomic::{self, AtomicOp, AtomicOutcome};
use super::occ::OccTxn;
use super::read::Snapshot;
use super::transaction::Transaction;
use super::tso::TsoBatcher;
use super::{Shared, TxnOptions};
use crate::client::Client;
use crate::config::Config;
use crate::error::Result;
use rand::Rng;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A handle for transactions on a Regatta cluster. Cheap to clone; clones share
/// connections, the region cache and the timestamp batcher.
///
/// ```no_run
/// # async fn demo() -> Result<(), regatta_client::Error> {
/// use regatta_client::{TxnClient, TxnOptions};
///
/// let txns = TxnClient::connect(&["127.0.0.1:2379"]).await?;
///
/// // Optimistic: conflicts are found at commit.
/// let mut t = txns.begin_optimistic().await?;
/// t.put(b"acct/alice", b"90");
/// t.put(b"acct/bob", b"110");
/// t.commit().await?; // Err(Error::WriteConflict { .. }) is retryable
///
/// // A body run again (new start ts, backoff) on retryable errors until it commits.
/// let moved = txns
///     .run(TxnOptions::pessimistic(), |t| {
///         Box::pin(async move {
///             let n = t.get_for_update(b"counter").await?.map_or(0, |v| v.len());
///             t.put(b"counter", &vec![b'x'; n + 1]);
///             Ok(n + 1)
///         })
///     })
///     .await?;
///
/// // A read-only snapshot at a timestamp.
/// let snap = txns.snapshot(txns.current_timestamp().await?).await?;
/// assert_eq!(snap.get(b"counter").await?.map(|v| v.len()), Some(moved));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TxnClient {
    shared: Arc<Shared>,
}

/// A transaction body for [`TxnClient::run`]: borrows the transaction for the attempt.
pub type TxnBody<'t, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 't>>;

impl TxnClient {
    /// Connects to the cluster whose PD listens at any of `pd_addrs`, with default
    /// settings (see [`Client::connect`]).
    pub async fn connect<S: AsRef<str>>(pd_addrs: &[S]) -> Result<TxnClient> {
        Self::connect_with(pd_addrs, Config::default()).await
    }

    /// Connects with explicit settings; their deadlines and backoffs bound every step of a
    /// transaction (each read, lock, prewrite and commit, each wait for a lock).
    pub async fn connect_with<S: AsRef<str>>(pd_addrs: &[S], cfg: Config) -> Result<TxnClient> {
        let client = Client::connect_with(pd_addrs, cfg).await?;
        Ok(TxnClient::from_client(client))
    }

    /// A transaction handle over a raw client's connections, region cache and settings
    /// (the two clients then share them; the keys stay in separate key spaces).
    pub fn from_client(client: Client) -> TxnClient {
        TxnClient {
            shared: Arc::new(Shared {
                tso: TsoBatcher::new(client.clone()),
                client,
                tso_seen: Default::default(),
            }),
        }
    }

    /// Begins an OCC transaction (default options: 1PC when its keys lie in one region,
    /// `lock_ttl_ms` for the locks of a commit across regions). Nothing is sent until its
    /// first read.
    pub fn occ_begin(&self) -> OccTxn {
        OccTxn::new(self.shared.clone(), TxnOptions::optimistic())
    }

    /// An OCC transaction whose read set is given: `(key, version)` pairs read earlier,
    /// e.g. by another process; its commit validates them as its own reads.
    pub fn occ_from_reads(&self, reads: impl IntoIterator<Item = (Vec<u8>, u64)>) -> OccTxn {
        let mut t = self.occ_begin();
        t.add_reads(reads);
        t
    }

    /// Applies `ops` all or nothing, each get seeing the batch's earlier writes (see
    /// [`AtomicOp`] and the `atomic` module doc); a batch aborted by a concurrent write
    /// runs again until [`TxnOptions::retry_timeout`] (default options).
    pub async fn atomic(&self, ops: &[AtomicOp]) -> Result<AtomicOutcome> {
        atomic::run(&self.shared, &TxnOptions::optimistic(), ops).await
    }

    /// A fresh timestamp from PD's TSO: above every timestamp handed out before the call.
    /// Concurrent requests of this client share one PD call.
    pub async fn current_timestamp(&self) -> Result<u64> {
        self.shared.timestamp().await
    }

    /// A read-only view as of `ts` (e.g. [`TxnClient::current_timestamp`], or the commit
    /// ts of an earlier transaction). A `ts` beyond every timestamp PD's TSO has handed
    /// out is refused with [`crate::Error::TimestampTooFarAhead`] (asking the TSO once
    /// unless this client already saw a timestamp at or above it): later commits could
    /// still land below it, so it would not be a snapshot.
    pub async fn snapshot(&self, ts: u64) -> Result<Snapshot> {
        self.shared.check_issued(ts).await?;
        Ok(Snapshot::new(self.shared.clone(), ts))
    }

    /// GC's resolve-locks phase: resolves every lock of a transaction that started at
    /// or below `max_ts` (a candidate GC safe point) through its primary — committed,
    /// or rolled back once expired — so that a client that died holding locks does not
    /// hold the safe point back; live transactions' locks stay. Walks every region.
    pub async fn resolve_locks_below(&self, max_ts: u64) -> Result<super::LocksResolved> {
        super::gc::resolve_locks_below(&self.shared, max_ts).await
    }

    /// Begins an optimistic transaction (default options).
    pub async fn begin_optimistic(&self) -> Result<Transaction> {
        self.begin_with(TxnOptions::optimistic()).await
    }

    /// Begins a pessimistic transaction (default options).
    pub async fn begin_pessimistic(&self) -> Result<Transaction> {
        self.begin_with(TxnOptions::pessimistic()).await
    }

    /// Begins a transaction with `opts`, at a start ts fresh from the TSO.
    pub async fn begin_with(&self, opts: TxnOptions) -> Result<Transaction> {
        opts.validate()?;
        let start_ts = self.shared.timestamp().await?;
        Ok(Transaction::new(self.shared.clone(), opts, start_ts))
    }

    /// Runs `body` in a new transaction and commits it; on a retryable error (of the body
    /// or the commit: conflicts, locks, deadlocks, a transaction rolled back by another
    /// client, see [`crate::Error::is_retryable`]) rolls back and runs it again in a new
    /// transaction, after an exponential, jittered backoff, as long as
    /// [`TxnOptions::retry_timeout`] has not passed since the first attempt. Returns the
    /// body's value from the attempt that committed, or the first error that is not
    /// retryable, or the last one at the deadline.
    pub async fn run<T, F>(&self, opts: TxnOptions, mut body: F) -> Result<T>
    where
        F: for<'t> FnMut(&'t mut Transaction) -> TxnBody<'t, T>,
    {
        opts.validate()?;
        let cfg = self.shared.client.config();
        let started = Instant::now();
        let mut backoff = cfg.backoff_base;
        loop {
            let attempt = async {
                let mut txn = self.begin_with(opts.clone()).await?;
                match body(&mut txn).await {
                    Ok(value) => txn.commit().await.map(|_| value),
                    Err(e) => {
                        // Best effort: the locks also expire with their TTL.
                        let _ = txn.rollback().await;
                        Err(e)
                    }
                }
            };
            match attempt.await {
                Ok(value) => return Ok(value),
                Err(e) if e.is_retryable() && started.elapsed() < opts.retry_timeout => {
                    let jitter = rand::thread_rng().gen_range(0..=backoff.as_micros() as u64);
                    let left = opts.retry_timeout.saturating_sub(started.elapsed());
                    tokio::time::sleep((backoff + Duration::from_micros(jitter)).min(left)).await;
                    backoff = (backoff * 2).min(cfg.backoff_max);
                }
                Err(e) => return Err(e),
            }
        }
    }
}
