//! Optimistic concurrency control with read versions ([`OccTxn`]), over the same MVCC data
//! as Percolator transactions.
//!
//! A read answers the newest committed value of a key and its **version**: the commit ts
//! of the key's newest `Put` or `Delete` (0 if it has none), read on the leader at a fresh
//! TSO timestamp (a lock met is resolved as for any transactional read). Writes are
//! buffered. The commit is a Percolator commit whose prewrites carry the read versions:
//! - keys read and not written are prewritten as `LOCK` mutations;
//! - each region's prewrite checks, in the same raft entry that locks them, that every
//!   read key of that region is still at its version and holds no other transaction's
//!   lock (`occ_version_mismatch` otherwise, nothing written there);
//! - one region: that prewrite is a 1PC, validation and writes in one entry; several
//!   regions: validate-and-lock per region in parallel, then the primary's commit (2PC).
//!
//! A failed validation (or a write conflict on a written key) is an **answer**,
//! [`OccOutcome`] with `committed: false` and the key that changed, after every lock the
//! attempt took is rolled back (synchronously: a writer that comes after the answer meets
//! none of them). Any other error leaves the outcome to the error (see
//! [`OccTxn::commit`]).
//!
//! Serializable: order committed OCC transactions by commit ts. From its validation to its
//! commit a transaction holds a lock on every key it read or wrote, so a writer of one of
//! its read keys either committed before the validation (the version changed: abort) or
//! meets the lock and commits after it, at a larger ts. So every value it read is still
//! the newest at its commit ts: it read what a serial execution at that ts would read.

use super::commit::{self, CommitPlan};
use super::read::get_with_version;
use super::transaction::rollback_keys;
use super::{check_key, Shared, TxnOptions};
use crate::error::{Error, Result};
use regatta_proto::txnpb::{Mutation, MutationOp};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// How an OCC commit ended. An abort is an answer, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OccOutcome {
    /// Whether every read was still at its version and every write applied.
    pub committed: bool,
    /// Not committed: the key whose version changed since it was read (or, for a key only
    /// written, on which another transaction committed a write during the commit).
    pub changed_key: Option<Vec<u8>>,
    /// Committed: the commit ts, the new version of every written key (0 when nothing was
    /// read or written, and when not committed).
    pub commit_ts: u64,
    /// Committed: the raft log index of the commit entry (one region: the entry that
    /// validated and wrote everything; several: the primary's commit entry). 0 when not
    /// committed or nothing was sent.
    pub log_index: u64,
}

impl OccOutcome {
    fn aborted(key: Vec<u8>) -> OccOutcome {
        OccOutcome {
            committed: false,
            changed_key: Some(key),
            commit_ts: 0,
            log_index: 0,
        }
    }
}

/// An OCC transaction: reads with versions, buffered writes, a commit that validates
/// every read version and applies every write, or nothing. Made by
/// [`crate::TxnClient::occ_begin`] or, with a read set known beforehand (a client that
/// read elsewhere), [`crate::TxnClient::occ_from_reads`].
///
/// ```no_run
/// # async fn demo() -> Result<(), regatta_client::Error> {
/// use regatta_client::TxnClient;
/// let txns = TxnClient::connect(&["127.0.0.1:2379"]).await?;
/// loop {
///     let mut t = txns.occ_begin();
///     let (value, _version) = t.read(b"counter").await?;
///     let n: u64 = value.map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap_or(0));
///     t.write(b"counter", (n + 1).to_string().as_bytes());
///     if t.commit().await?.committed {
///         break;
///     }
/// }
/// # Ok(()) }
/// ```
pub struct OccTxn {
    shared: Arc<Shared>,
    opts: TxnOptions,
    /// The read set: key -> the version the commit validates (the first one read or
    /// added).
    reads: BTreeMap<Vec<u8>, u64>,
    /// The values this transaction read from the store (a key read twice answers them).
    values: BTreeMap<Vec<u8>, (Option<Vec<u8>>, u64)>,
    /// Key -> new value (`None`: delete).
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl OccTxn {
    pub(crate) fn new(shared: Arc<Shared>, opts: TxnOptions) -> OccTxn {
        OccTxn {
            shared,
            opts,
            reads: BTreeMap::new(),
            values: BTreeMap::new(),
            writes: BTreeMap::new(),
        }
    }

    /// Adds reads made elsewhere, `(key, version)`, to the read set: the commit validates
    /// them as its own. A key already read keeps its first version.
    pub fn add_reads(&mut self, reads: impl IntoIterator<Item = (Vec<u8>, u64)>) {
        for (k, v) in reads {
            self.reads.entry(k).or_insert(v);
        }
    }

    /// The newest committed value of `key` (`None`: none) and its version: the commit ts
    /// of its newest `Put` or `Delete`, 0 if it has none. A key this transaction wrote
    /// answers its buffered value, with the version of an earlier read of it (0 if none),
    /// and is not read from the store; a key read before answers that first read. The
    /// commit validates the first version known for a key (one given to
    /// [`OccTxn::add_reads`] wins over a later read).
    pub async fn read(&mut self, key: &[u8]) -> Result<(Option<Vec<u8>>, u64)> {
        check_key("occ_read", key)?;
        if let Some(w) = self.writes.get(key) {
            return Ok((w.clone(), self.reads.get(key).copied().unwrap_or(0)));
        }
        if let Some(r) = self.values.get(key) {
            return Ok(r.clone());
        }
        let ts = self.shared.timestamp().await?;
        let read = get_with_version(&self.shared, ts, key).await?;
        self.reads.entry(key.to_vec()).or_insert(read.1);
        self.values.insert(key.to_vec(), read.clone());
        Ok(read)
    }

    /// Buffers a write of `value` at `key`.
    pub fn write(&mut self, key: &[u8], value: &[u8]) {
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
    }

    /// Buffers a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }

    /// The read set, `(key, version)` in key order: what the commit validates.
    pub fn read_versions(&self) -> Vec<(Vec<u8>, u64)> {
        self.reads.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Validates every read version and applies every write, or nothing (see the module
    /// doc). `Ok` with `committed: false` is an abort (read again and retry); its locks are
    /// gone when it returns. `Err`: [`Error::CommitUndetermined`] when the outcome is
    /// unknown; any other error did not commit (its locks are rolled back in the
    /// background), e.g. [`Error::KeyIsLocked`] when another transaction held a key past
    /// the deadline.
    pub async fn commit(self) -> Result<OccOutcome> {
        let keys: Vec<&Vec<u8>> = self.reads.keys().chain(self.writes.keys()).collect();
        if let Some(k) = keys.iter().find(|k| k.is_empty()) {
            return Err(Error::InvalidArgument(format!(
                "occ_commit: an empty key ({k:?})"
            )));
        }
        let mut mutations: BTreeMap<Vec<u8>, Mutation> = BTreeMap::new();
        for (k, w) in &self.writes {
            let mut m = Mutation::new();
            m.set_key(k.clone());
            match w {
                Some(v) => {
                    m.set_op(MutationOp::PUT);
                    m.set_value(v.clone());
                }
                None => m.set_op(MutationOp::DELETE),
            }
            mutations.insert(k.clone(), m);
        }
        for k in self.reads.keys() {
            mutations.entry(k.clone()).or_insert_with(|| {
                let mut m = Mutation::new();
                m.set_key(k.clone());
                m.set_op(MutationOp::LOCK);
                m
            });
        }
        let Some(primary) = mutations.keys().next().cloned() else {
            return Ok(OccOutcome {
                committed: true,
                changed_key: None,
                commit_ts: 0,
                log_index: 0,
            });
        };
        let start_ts = self.shared.timestamp().await?;
        let touched: Vec<Vec<u8>> = mutations.keys().cloned().collect();
        let plan = CommitPlan {
            primary,
            mutations: mutations.into_values().collect(),
            start_ts,
            for_update_ts: 0,
            lock_ttl_ms: self.opts.lock_ttl_ms,
            try_one_pc: self.opts.try_one_pc,
            // OCC validates its reads in the prewrites: 2PC, not async commit.
            async_commit: false,
            read_versions: self.reads.into_iter().collect::<HashMap<_, _>>(),
        };
        let mut prewrote = false;
        match commit::commit(&self.shared, plan, &mut prewrote).await {
            Ok(done) => Ok(OccOutcome {
                committed: true,
                changed_key: None,
                commit_ts: done.commit_ts,
                log_index: done.log_index,
            }),
            Err(Error::OccVersionMismatch { key, .. }) | Err(Error::WriteConflict { key, .. }) => {
                // Other regions may hold this attempt's locks: release them before
                // answering. The primary was never committed, so rolling back is safe. A
                // one-region attempt refused by its only prewrite left nothing (the
                // usual abort under contention: no second raft entry for it).
                if prewrote {
                    rollback_keys(&self.shared, touched, start_ts).await?;
                }
                Ok(OccOutcome::aborted(key))
            }
            Err(e @ Error::CommitUndetermined { .. }) | Err(e @ Error::AlreadyCommitted { .. }) => {
                Err(e)
            }
            Err(e) => {
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    let _ = rollback_keys(&shared, touched, start_ts).await;
                });
                Err(e)
            }
        }
    }
}
