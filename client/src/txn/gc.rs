//! The resolve-locks phase of MVCC GC (TiKV's GC worker, as TiDB runs it before it moves
//! the safe point): every lock of a transaction that started at or below a candidate safe
//! point is resolved through its primary, so that a client that died holding locks does
//! not hold the safe point back for ever (PD's safe point never passes a lock a region
//! reports).
//!
//! The walk goes region by region over the whole key space (`scan_lock` from a cursor,
//! resumed at each answer's `scanned_end`; empty: the end of the key space), and resolves
//! each batch as a reader would (`resolve::resolve_locks`): a committed transaction's
//! lock is committed, a rolled-back or expired one rolled back, a live one (its TTL still
//! running: a transaction older than the GC life time that still heartbeats) left alone.

use super::resolve::resolve_locks;
use super::rpc::{call, failure, key_error};
use super::Shared;
use crate::error::Result;
use regatta_proto::txnpb::{TxnRequest, TxnScanLockRequest};

/// Locks one `scan_lock` asks for at most.
const SCAN_LOCK_BATCH: u32 = 1_024;

/// What one resolve-locks pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocksResolved {
    /// Locks at or below the ts that were found.
    pub found: usize,
    /// Of them, the ones whose transaction was still alive (left in place).
    pub alive: usize,
}

/// Resolves every lock whose transaction started at or below `max_ts` (see the module
/// doc).
pub(crate) async fn resolve_locks_below(shared: &Shared, max_ts: u64) -> Result<LocksResolved> {
    let mut done = LocksResolved::default();
    let mut cursor: Vec<u8> = Vec::new();
    loop {
        let mut s = TxnScanLockRequest::new();
        s.set_start_key(cursor.clone());
        s.set_max_ts(max_ts);
        s.set_limit(SCAN_LOCK_BATCH);
        let mut cmd = TxnRequest::new();
        cmd.set_scan_lock(s);
        let mut resp = call(&shared.client, "scan_lock", &cursor, cmd).await?;
        if let Some(e) = failure(&resp) {
            return Err(key_error(e, max_ts, &cursor));
        }
        let mut answer = resp.take_scan_lock();
        let locks = answer.take_locks().into_vec();
        done.found += locks.len();
        // Each lock is checked on its own primary; a live one is reported, not waited for.
        for lock in &locks {
            if resolve_locks(shared, std::slice::from_ref(lock))
                .await?
                .is_some()
            {
                done.alive += 1;
            }
        }
        let next = answer.take_scanned_end();
        if next.is_empty() {
            return Ok(done);
        }
        cursor = next;
    }
}
