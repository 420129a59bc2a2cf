//! Atomic batches ([`crate::TxnClient::atomic`]): a list of get / put / delete applied
//! all or nothing, each get seeing the batch's own earlier writes.
//!
//! A batch runs as an OCC transaction ([`super::occ`]): its gets read with versions (a get
//! of a key the batch wrote earlier answers that write), its puts and deletes are
//! buffered, and the commit validates every get's version and applies every write. So
//! every get's answer is the key's value at the commit entry, as if the whole batch ran
//! at that point of the log. In one region the commit is **one raft entry** (a 1PC
//! prewrite that validates and writes; its log index is answered); across regions it is
//! validate-and-lock per region, then the primary's commit (2PC; the answer carries the
//! primary's commit entry). A batch whose validation fails (a key changed between its
//! read and the commit) runs again from its first op, with jittered backoff, until
//! [`TxnOptions::retry_timeout`]; it never applies twice.

use super::occ::OccTxn;
use super::{Shared, TxnOptions};
use crate::error::{Error, Result};
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One operation of an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtomicOp {
    /// Read the key (its value after the batch's earlier writes).
    Get(Vec<u8>),
    /// Write a value.
    Put(Vec<u8>, Vec<u8>),
    /// Delete the key.
    Delete(Vec<u8>),
}

/// What an atomic batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomicOutcome {
    /// One entry per [`AtomicOp::Get`], in order: the value (`None`: no value).
    pub results: Vec<Option<Vec<u8>>>,
    /// The commit ts (0 for a batch with no op at all).
    pub commit_ts: u64,
    /// The raft log index the batch applied at: in one region the entry that validated
    /// and wrote it; across regions the primary's commit entry (in the primary's region).
    /// 0 when nothing was sent or the store did not say.
    pub log_index: u64,
    /// How many times the batch ran (1: no validation failed).
    pub attempts: u32,
}

/// Runs `ops` atomically (see the module doc).
pub(crate) async fn run(
    shared: &Arc<Shared>,
    opts: &TxnOptions,
    ops: &[AtomicOp],
) -> Result<AtomicOutcome> {
    if ops.iter().any(|op| key_of(op).is_empty()) {
        return Err(Error::InvalidArgument("atomic: an empty key".into()));
    }
    let started = Instant::now();
    let cfg = shared.client.config();
    let mut backoff = cfg.backoff_base;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let mut t = OccTxn::new(shared.clone(), opts.clone());
        let mut results = Vec::new();
        for op in ops {
            match op {
                AtomicOp::Get(k) => results.push(t.read(k).await?.0),
                AtomicOp::Put(k, v) => t.write(k, v),
                AtomicOp::Delete(k) => t.delete(k),
            }
        }
        let outcome = t.commit().await?;
        if outcome.committed {
            return Ok(AtomicOutcome {
                results,
                commit_ts: outcome.commit_ts,
                log_index: outcome.log_index,
                attempts,
            });
        }
        if started.elapsed() >= opts.retry_timeout {
            return Err(Error::Timeout {
                operation: "atomic",
                elapsed_ms: started.elapsed().as_millis() as u64,
                last_error: format!(
                    "{attempts} attempts, each aborted by a concurrent write of {:?}",
                    outcome.changed_key.unwrap_or_default()
                ),
            });
        }
        let jitter = rand::thread_rng().gen_range(0..=backoff.as_micros() as u64);
        tokio::time::sleep(Duration::from_micros(jitter)).await;
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

fn key_of(op: &AtomicOp) -> &[u8] {
    match op {
        AtomicOp::Get(k) | AtomicOp::Put(k, _) | AtomicOp::Delete(k) => k,
    }
}
