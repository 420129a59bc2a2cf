//! Reads at a timestamp ([`Snapshot`], and a transaction's reads at its `start_ts`): a
//! point get, a batch get cut by region (parts in parallel) and a scan region by region.
//! A read that meets a lock which may commit below its timestamp resolves it through the
//! lock's primary (`resolve.rs`) and reads again; it waits with backoff while the lock's
//! owner is alive, up to the client's operation deadline ([`Error::KeyIsLocked`]).

use super::resolve::{resolve_locks, run_resolving, wait};
use super::rpc::{call, failure, key_error};
use super::{check_key, Shared};
use crate::error::Result;
use regatta_proto::txnpb::{TxnBatchGetRequest, TxnGetRequest, TxnRequest, TxnScanRequest};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// A read-only view of the transactional data as of one timestamp: sees exactly the
/// transactions committed at or below it. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), regatta_client::Error> {
/// use regatta_client::TxnClient;
/// let txns = TxnClient::connect(&["127.0.0.1:2379"]).await?;
/// let snap = txns.snapshot(txns.current_timestamp().await?).await?;
/// let accounts = snap.scan(b"acct/", b"acct0", 0).await?;
/// println!("{} accounts as of ts {}", accounts.len(), snap.ts());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Snapshot {
    shared: Arc<Shared>,
    ts: u64,
}

impl Snapshot {
    pub(crate) fn new(shared: Arc<Shared>, ts: u64) -> Snapshot {
        Snapshot { shared, ts }
    }

    /// The timestamp this snapshot reads at.
    pub fn ts(&self) -> u64 {
        self.ts
    }

    /// The value of `key` as of the snapshot (`None`: no value).
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        get(&self.shared, self.ts, key).await
    }

    /// The values of `keys` as of the snapshot, in the order of `keys`: one request per
    /// region, the regions in parallel.
    pub async fn batch_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        batch_get(&self.shared, self.ts, keys).await
    }

    /// The pairs with `start <= key < end` (empty `end`: no upper bound) as of the
    /// snapshot, in key order, at most `limit` (0: no limit).
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        scan(&self.shared, self.ts, start, end, limit).await
    }
}

/// The value of `key` at `ts`.
pub(crate) async fn get(shared: &Shared, ts: u64, key: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(get_with_version(shared, ts, key).await?.0)
}

/// The value of `key` at `ts` and its version there: the commit ts of its newest `Put`
/// or `Delete` at or below `ts` (0: none), OCC's version.
pub(crate) async fn get_with_version(
    shared: &Shared,
    ts: u64,
    key: &[u8],
) -> Result<(Option<Vec<u8>>, u64)> {
    check_key("get", key)?;
    let mut value = None;
    let mut version = 0;
    let build = Arc::new(move |keys: &[Vec<u8>]| {
        let mut g = TxnGetRequest::new();
        g.set_key(keys[0].clone());
        g.set_start_ts(ts);
        let mut cmd = TxnRequest::new();
        cmd.set_get(g);
        cmd
    });
    run_resolving(
        shared,
        "txn_get",
        vec![key.to_vec()],
        ts,
        key,
        build,
        |_, mut resp| {
            let mut g = resp.take_get();
            version = g.get_commit_ts();
            if g.get_found() {
                value = Some(g.take_value());
            }
        },
    )
    .await?;
    Ok((value, version))
}

/// The values of `keys` at `ts`, in order.
pub(crate) async fn batch_get(
    shared: &Shared,
    ts: u64,
    keys: &[Vec<u8>],
) -> Result<Vec<Option<Vec<u8>>>> {
    for k in keys {
        check_key("batch_get", k)?;
    }
    let mut unique: Vec<Vec<u8>> = keys.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if unique.is_empty() {
        return Ok(Vec::new());
    }
    let primary = unique[0].clone();
    let build = Arc::new(move |keys: &[Vec<u8>]| {
        let mut b = TxnBatchGetRequest::new();
        b.set_keys(keys.to_vec().into());
        b.set_start_ts(ts);
        let mut cmd = TxnRequest::new();
        cmd.set_batch_get(b);
        cmd
    });
    let mut found: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    run_resolving(
        shared,
        "txn_batch_get",
        unique,
        ts,
        &primary,
        build,
        |_, mut resp| {
            for mut p in resp.mut_batch_get().take_pairs().into_iter() {
                found.insert(p.take_key(), p.take_value());
            }
        },
    )
    .await?;
    Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
}

/// The pairs of `[start, end)` at `ts`, at most `limit` (0: all), region by region, each
/// resuming where the store's answer says (`scanned_end`), so a split during the scan
/// never makes it skip keys.
pub(crate) async fn scan(
    shared: &Shared,
    ts: u64,
    start: &[u8],
    end: &[u8],
    limit: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if !end.is_empty() && end <= start {
        return Ok(Vec::new());
    }
    let cfg = shared.client.config();
    let deadline = Instant::now() + cfg.op_timeout;
    let mut backoff = cfg.backoff_base;
    let mut out = Vec::new();
    let mut cursor = start.to_vec();
    loop {
        if !end.is_empty() && cursor.as_slice() >= end {
            return Ok(out);
        }
        let mut s = TxnScanRequest::new();
        s.set_start_key(cursor.clone());
        s.set_end_key(end.to_vec());
        let want = if limit == 0 { 0 } else { limit - out.len() };
        s.set_limit(u32::try_from(want).unwrap_or(u32::MAX));
        s.set_start_ts(ts);
        let mut cmd = TxnRequest::new();
        cmd.set_scan(s);
        let mut resp = call(&shared.client, "txn_scan", &cursor, cmd).await?;
        if let Some(e) = failure(&resp) {
            if !e.has_locked() {
                return Err(key_error(e, ts, &cursor));
            }
            let lock = e.get_locked().clone();
            if let Some(alive) = resolve_locks(shared, &[lock]).await? {
                backoff = wait(shared, &alive, deadline, backoff).await?;
            }
            continue;
        }
        let scan = resp.mut_scan();
        let resume = scan.take_scanned_end();
        for mut p in scan.take_pairs().into_iter() {
            out.push((p.take_key(), p.take_value()));
        }
        match crate::read::scan_resume(&mut out, limit, end, &cursor, resume, "txn_scan")? {
            Some(next) => cursor = next,
            None => return Ok(out),
        }
    }
}
