//! Transactional reads (get, batch get, scan at `start_ts`) from a replica's applied
//! state through `regatta_txn::MvccReader`. They never go through the log: the leader
//! serves them like linearizable raw reads (ReadIndex or its lease), after raising its
//! `max_ts` to the read's ts (see `peer/max_ts.rs`).

use super::wire::{failure, lock_info, Failure};
use regatta_engine::Snapshot;
use regatta_proto::metapb::Region;
use regatta_proto::txnpb::{
    TxnBatchGetResponse, TxnGetResponse, TxnKvPair, TxnRequest, TxnRequest_oneof_cmd as Cmd,
    TxnResponse, TxnScanLockResponse, TxnScanResponse,
};
use regatta_raftstore::apply::MAX_SCAN_LIMIT;
use regatta_raftstore::Error;
use regatta_txn::MvccReader;

/// Whether `req` is a transactional read (served without the log).
pub(crate) fn is_txn_read(req: &TxnRequest) -> bool {
    matches!(
        req.cmd,
        Some(Cmd::get(_)) | Some(Cmd::batch_get(_)) | Some(Cmd::scan(_)) | Some(Cmd::scan_lock(_))
    )
}

/// The timestamp a command reads at, which the leader's `max_ts` must cover: a read's
/// `start_ts`, and `check_txn_status`'s `caller_start_ts` (a reader that pushes a lock's
/// `min_commit_ts` reads at it next), as TiKV's concurrency manager does.
pub(crate) fn read_ts(req: &TxnRequest) -> Option<u64> {
    match &req.cmd {
        Some(Cmd::get(g)) => Some(g.get_start_ts()),
        Some(Cmd::batch_get(b)) => Some(b.get_start_ts()),
        Some(Cmd::scan(s)) => Some(s.get_start_ts()),
        Some(Cmd::check_txn_status(c)) if c.get_caller_start_ts() != 0 => {
            Some(c.get_caller_start_ts())
        }
        _ => None,
    }
}

/// Serves a transactional read from `snap`, the applied state of `region`, whose GC safe
/// point is `gc_safe_point`. A read below the safe point is the answer
/// `key_error.below_gc_safe_point` (the versions it needs may be gone); a lock met is the
/// answer `key_error.locked`; corruption or an engine failure is `Err`.
pub(crate) fn read_txn<S: Snapshot>(
    snap: &S,
    region: &Region,
    req: &TxnRequest,
    gc_safe_point: u64,
) -> Result<TxnResponse, Error> {
    if let Some(ts) = read_ts(req).filter(|ts| *ts < gc_safe_point) {
        return Ok(below_gc_safe_point(ts, gc_safe_point));
    }
    let reader = MvccReader::new(snap);
    let mut resp = TxnResponse::new();
    let result = match &req.cmd {
        // The version answered for a deleted key too: OCC reads it (`read_versions`).
        Some(Cmd::get(g)) => {
            reader
                .get_with_version(g.get_key(), g.get_start_ts())
                .map(|(v, commit_ts)| {
                    let mut r = TxnGetResponse::new();
                    if let Some(v) = v {
                        r.set_found(true);
                        r.set_value(v);
                    }
                    r.set_commit_ts(commit_ts);
                    resp.set_get(r);
                })
        }
        Some(Cmd::batch_get(b)) => b
            .get_keys()
            .iter()
            .map(|k| Ok((k, reader.get_versioned(k, b.get_start_ts())?)))
            .collect::<regatta_txn::Result<Vec<_>>>()
            .map(|reads| {
                let mut r = TxnBatchGetResponse::new();
                for (k, v) in reads {
                    if let Some((commit_ts, v)) = v {
                        let mut p = pair(k.clone(), v);
                        p.set_commit_ts(commit_ts);
                        r.mut_pairs().push(p);
                    }
                }
                resp.set_batch_get(r);
            }),
        Some(Cmd::scan(s)) => {
            let limit = scan_limit(s.get_limit());
            let (lo, hi) = clip(region, s.get_start_key(), s.get_end_key());
            reader
                .scan_versioned(&lo, &hi, s.get_start_ts(), limit)
                .map(|pairs| {
                    let mut r = TxnScanResponse::new();
                    let resume = resume_point(&pairs, limit, &hi, |(k, _, _)| k);
                    for (k, commit_ts, v) in pairs {
                        let mut p = pair(k, v);
                        p.set_commit_ts(commit_ts);
                        r.mut_pairs().push(p);
                    }
                    r.set_scanned_end(resume);
                    resp.set_scan(r);
                })
        }
        Some(Cmd::scan_lock(s)) => {
            let limit = scan_limit(s.get_limit());
            let (lo, hi) = clip(region, s.get_start_key(), s.get_end_key());
            reader
                .scan_locks(&lo, &hi, s.get_max_ts(), limit)
                .map(|locks| {
                    let mut r = TxnScanLockResponse::new();
                    r.set_scanned_end(resume_point(&locks, limit, &hi, |(k, _)| k));
                    for (k, l) in locks {
                        r.mut_locks().push(lock_info(&k, &l));
                    }
                    resp.set_scan_lock(r);
                })
        }
        _ => return Err(Error::InvalidArgument("not a transactional read".into())),
    };
    match result {
        Ok(()) => Ok(resp),
        Err(e) => match failure(e, region.get_id(), &[]) {
            Failure::Key(ke) => {
                let mut r = TxnResponse::new();
                r.set_key_error(ke);
                Ok(r)
            }
            Failure::Store(e) => Err(e),
        },
    }
}

/// A scan's bound on what it returns: the request's, at most [`MAX_SCAN_LIMIT`] (0: that).
fn scan_limit(asked: u32) -> usize {
    match asked as usize {
        0 => MAX_SCAN_LIMIT,
        n => n.min(MAX_SCAN_LIMIT),
    }
}

/// Where a scan that found `found` (at most `limit`) in a region covering up to `hi`
/// resumes: after the last item when the limit cut it short, else at `hi` (as raw scans
/// answer).
fn resume_point<T>(found: &[T], limit: usize, hi: &[u8], key: impl Fn(&T) -> &Vec<u8>) -> Vec<u8> {
    match found.last() {
        Some(last) if found.len() >= limit => {
            let mut k = key(last).clone();
            k.push(0);
            k
        }
        _ => hi.to_vec(),
    }
}

/// A read's keys must be inside `region` (a read that reached the log is checked again at
/// apply: a split may have moved them out).
pub(crate) fn check_read_keys(req: &TxnRequest, region: &Region) -> Result<(), Error> {
    let keys: Vec<&[u8]> = match &req.cmd {
        Some(Cmd::get(g)) => vec![g.get_key()],
        Some(Cmd::batch_get(b)) => b.get_keys().iter().map(Vec::as_slice).collect(),
        _ => Vec::new(),
    };
    match keys
        .into_iter()
        .find(|k| !regatta_proto::region::key_in_range(region, k))
    {
        Some(k) => Err(Error::key_not_in_region(region, k)),
        None => Ok(()),
    }
}

/// The answer to a command at `ts` below the region's GC safe point.
pub(crate) fn below_gc_safe_point(ts: u64, gc_safe_point: u64) -> TxnResponse {
    debug_assert!(ts <= gc_safe_point);
    let mut ke = regatta_proto::txnpb::KeyError::new();
    ke.set_below_gc_safe_point(gc_safe_point);
    let mut r = TxnResponse::new();
    r.set_key_error(ke);
    r
}

fn pair(key: Vec<u8>, value: Vec<u8>) -> TxnKvPair {
    let mut p = TxnKvPair::new();
    p.set_key(key);
    p.set_value(value);
    p
}

/// `[start, end)` clipped to the region (an empty end: unbounded).
fn clip(region: &Region, start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    regatta_proto::region::clip_to_region(region, start, end)
}
