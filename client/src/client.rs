//! [`Client`]: key-value operations with routing, retries and at-most-once writes.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pd::PdClient;
use crate::read::{KvPair, ReadConsistency, ReadOutcome, Versioned};
use crate::region_cache::{CachedRegion, RegionCache};
use crate::retry::{self, CacheUpdate, Step};
use crate::session::SessionPool;
use rand::Rng;
use regatta_proto::framepb::Frame_oneof_body;
use regatta_proto::kvrpcpb::{
    self, BatchDeleteRequest, BatchGetRequest, BatchPutRequest, CasRequest, Context, DeleteRequest,
    GetRequest, KvRequest, KvResponse, PutRequest, Request, Response, ScanRequest,
    SplitRegionRequest,
};
use regatta_proto::metapb::{Peer, Region};
use regatta_proto::region::key_in_range;
use regatta_proto::rpc::Connection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most keys the client puts in one request (the store refuses bigger batches).
const MAX_BATCH_KEYS: usize = 10_000;
/// Most key and value bytes the client puts in one request (well under a frame's limit).
const MAX_BATCH_BYTES: usize = 8 << 20;

/// What a compare-and-swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the new value was written.
    pub succeeded: bool,
    /// The value before the operation (`None`: the key was absent).
    pub previous: Option<Vec<u8>>,
    /// Log index the operation committed at.
    pub index: u64,
}

/// A handle on a Regatta cluster. Cheap to clone; clones share connections, the region
/// cache and the session pool, and may be used from many tasks at once.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    pd: PdClient,
    cfg: Config,
    cache: Mutex<RegionCache>,
    store_addrs: Mutex<HashMap<u64, String>>,
    /// Open connections by address (a plain lock: it is never held across an await).
    conns: Mutex<HashMap<String, Connection>>,
    /// Held while connecting, so that concurrent callers make one connection, not many.
    connecting: tokio::sync::Mutex<()>,
    sessions: SessionPool,
    /// Read-your-writes: the log index of this client's last acknowledged write per region.
    last_write: Mutex<HashMap<u64, u64>>,
}

/// What one attempt's outcome means for the retry loop.
enum Attempt {
    Done(Box<KvResponse>),
    /// Retry; `backoff` false when the error told us exactly where to go next; `sent`
    /// when the request reached the wire (it may have been applied).
    Retry {
        error: String,
        backoff: bool,
        sent: bool,
    },
    /// The store could not be connected to (an [`Error::Connection`]): nothing was sent.
    /// Retried with backoff, on another replica where the request allows.
    Unreachable(Error),
    Fail(Error),
    /// The keys of a batch no longer lie in one region (it split): cut the batch again.
    Regroup,
}

impl Client {
    /// Connects to the cluster whose PD listens at any of `pd_addrs`, with default settings.
    pub async fn connect<S: AsRef<str>>(pd_addrs: &[S]) -> Result<Client> {
        Self::connect_with(pd_addrs, Config::default()).await
    }

    /// Connects with explicit settings. Waits for PD to answer, retrying with backoff
    /// (PD may still be starting), for at most `cfg.op_timeout`; then fails with
    /// [`Error::Timeout`] (operation `connect`) carrying PD's last error. Bad addresses or
    /// settings fail at once with [`Error::InvalidArgument`].
    pub async fn connect_with<S: AsRef<str>>(pd_addrs: &[S], cfg: Config) -> Result<Client> {
        let addrs = pd_addrs.iter().map(|a| a.as_ref().to_string()).collect();
        let pd = PdClient::new(addrs, cfg.clone())?;
        let started = Instant::now();
        let deadline = started + cfg.op_timeout;
        let mut backoff = cfg.backoff_base;
        loop {
            let error = match pd.get_all_stores().await {
                Ok(_) => break,
                Err(e @ Error::Pd(_)) => e,
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    operation: "connect",
                    elapsed_ms: elapsed_ms(started),
                    last_error: error.to_string(),
                });
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(cfg.backoff_max);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                pd,
                cfg,
                cache: Mutex::new(RegionCache::default()),
                store_addrs: Mutex::new(HashMap::new()),
                conns: Mutex::new(HashMap::new()),
                connecting: tokio::sync::Mutex::new(()),
                sessions: SessionPool::default(),
                last_write: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The PD client this client routes with.
    pub fn pd(&self) -> &PdClient {
        &self.inner.pd
    }

    /// The settings this client runs with.
    pub(crate) fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// Reads `key` linearizably: its value and version, `None` if it has no value.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Versioned>> {
        self.get_with(key, ReadConsistency::Linearizable).await
    }

    /// Reads `key` with the given consistency: its value and version, `None` if it has no
    /// value.
    pub async fn get_with(
        &self,
        key: &[u8],
        consistency: ReadConsistency,
    ) -> Result<Option<Versioned>> {
        Ok(self.get_detailed(key, consistency).await?.value)
    }

    /// Reads `key` with the given consistency and says how the read was served.
    pub async fn get_detailed(
        &self,
        key: &[u8],
        consistency: ReadConsistency,
    ) -> Result<ReadOutcome> {
        let mut g = GetRequest::new();
        g.set_key(key.to_vec());
        let mut req = Request::new();
        req.set_get(g);
        let mut resp = self.execute("get", key, req, consistency, false).await?;
        let info = resp.take_read_info();
        let g = resp.mut_response().take_get();
        Ok(ReadOutcome {
            value: g.get_found().then(|| Versioned {
                version: g.get_version(),
                value: g.value,
            }),
            served_by_store: info.get_served_by_store(),
            linearizable: info.get_linearizable(),
            lease_used: info.get_lease_used(),
            network_round_trips: info.get_network_round_trips(),
            read_index: info.get_read_index(),
            applied_index: info.get_applied_index(),
            staleness: Duration::from_micros(info.get_staleness_us()),
            waited: Duration::from_micros(info.get_waited_us()),
        })
    }

    /// Writes `value` under `key`; returns the log index the write committed at.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<u64> {
        let mut p = PutRequest::new();
        p.set_key(key.to_vec());
        p.set_value(value.to_vec());
        let mut req = Request::new();
        req.set_put(p);
        let resp = self
            .execute("put", key, req, ReadConsistency::Linearizable, true)
            .await?;
        Ok(resp.get_response().get_put().get_index())
    }

    /// Deletes `key`; returns whether it had a value.
    pub async fn delete(&self, key: &[u8]) -> Result<bool> {
        let mut d = DeleteRequest::new();
        d.set_key(key.to_vec());
        let mut req = Request::new();
        req.set_delete(d);
        let resp = self
            .execute("delete", key, req, ReadConsistency::Linearizable, true)
            .await?;
        Ok(resp.get_response().get_delete().get_existed())
    }

    /// Compare-and-swap: sets `key` to `new` if its value equals `expected`
    /// (`None`: if `key` has no value). A mismatch is `Ok` with `succeeded: false`.
    pub async fn cas(&self, key: &[u8], expected: Option<&[u8]>, new: &[u8]) -> Result<CasOutcome> {
        let mut c = CasRequest::new();
        c.set_key(key.to_vec());
        match expected {
            Some(e) => c.set_expected(e.to_vec()),
            None => c.set_expect_absent(true),
        }
        c.set_new_value(new.to_vec());
        let mut req = Request::new();
        req.set_cas(c);
        let mut resp = self
            .execute("cas", key, req, ReadConsistency::Linearizable, true)
            .await?;
        let c = resp.mut_response().take_cas();
        Ok(CasOutcome {
            succeeded: c.get_succeeded(),
            previous: c.get_found().then(|| c.previous.clone()),
            index: c.get_index(),
        })
    }

    /// Reads `keys` linearizably, across as many regions as they span: one request per
    /// region, the regions in parallel. The values (with their versions; `None`: no value)
    /// come back in the order of `keys`. Each region's part is linearizable; the batch as
    /// a whole is not a snapshot.
    pub async fn batch_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Versioned>>> {
        self.batch_get_with(keys, ReadConsistency::Linearizable)
            .await
    }

    /// [`Client::batch_get`] with the given consistency for each region's part.
    pub async fn batch_get_with(
        &self,
        keys: &[Vec<u8>],
        consistency: ReadConsistency,
    ) -> Result<Vec<Option<Versioned>>> {
        let parts = self
            .run_batch(
                "batch_get",
                keys,
                |i| keys[i].len(),
                consistency,
                false,
                |idx| {
                    let mut b = BatchGetRequest::new();
                    b.set_keys(idx.iter().map(|&i| keys[i].clone()).collect());
                    let mut req = Request::new();
                    req.set_batch_get(b);
                    req
                },
            )
            .await?;
        let mut found: HashMap<Vec<u8>, Versioned> = HashMap::new();
        for mut resp in parts {
            for mut p in resp
                .mut_response()
                .take_batch_get()
                .take_pairs()
                .into_iter()
            {
                let v = Versioned {
                    value: p.take_value(),
                    version: p.get_version(),
                };
                found.insert(p.take_key(), v);
            }
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    /// Writes every pair: one command per region (atomic within that region), the
    /// regions in parallel. A batch spanning regions is not atomic as a whole: if this
    /// fails, some regions' parts may have been applied. A key given twice gets its last
    /// value.
    pub async fn batch_put(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        // One pair per key (the last), so no two parts ever write the same key.
        let mut last: HashMap<&[u8], usize> = HashMap::new();
        for (i, (k, _)) in pairs.iter().enumerate() {
            last.insert(k.as_slice(), i);
        }
        let mut chosen: Vec<usize> = last.into_values().collect();
        chosen.sort_unstable();
        let keys: Vec<Vec<u8>> = chosen.iter().map(|&i| pairs[i].0.clone()).collect();
        let pair = |i: usize| &pairs[chosen[i]];
        self.run_batch(
            "batch_put",
            &keys,
            |i| pair(i).0.len() + pair(i).1.len(),
            ReadConsistency::Linearizable,
            true,
            |idx| {
                let mut b = BatchPutRequest::new();
                for &i in idx {
                    let mut p = kvrpcpb::KvPair::new();
                    p.set_key(pair(i).0.clone());
                    p.set_value(pair(i).1.clone());
                    b.mut_pairs().push(p);
                }
                let mut req = Request::new();
                req.set_batch_put(b);
                req
            },
        )
        .await?;
        Ok(())
    }

    /// Deletes every key of `keys`: one command per region (atomic within that region),
    /// the regions in parallel. Not atomic across regions.
    pub async fn batch_delete(&self, keys: &[Vec<u8>]) -> Result<()> {
        let mut unique: Vec<Vec<u8>> = keys.to_vec();
        unique.sort_unstable();
        unique.dedup();
        self.run_batch(
            "batch_delete",
            &unique,
            |i| unique[i].len(),
            ReadConsistency::Linearizable,
            true,
            |idx| {
                let mut b = BatchDeleteRequest::new();
                b.set_keys(idx.iter().map(|&i| unique[i].clone()).collect());
                let mut req = Request::new();
                req.set_batch_delete(b);
                req
            },
        )
        .await?;
        Ok(())
    }

    /// Runs a batch over `keys` (`weight(i)`: the bytes key `i` adds to a request): cuts
    /// it by region as the cache knows them (at most [`MAX_BATCH_KEYS`] keys and
    /// [`MAX_BATCH_BYTES`] per part), runs the parts in parallel, and cuts again whatever a
    /// split made span two regions, until every part is answered or the deadline passes.
    /// `build` makes the request for the keys at the given indices.
    ///
    /// A write part keeps its session when it is cut again: the part may have been applied
    /// before the split (its answer lost), and the regions a split makes both keep the
    /// parent's sessions, so each piece is then recognised as applied instead of applied
    /// twice. New parts get sessions of their own; all go back to the pool at the end.
    async fn run_batch(
        &self,
        op: &'static str,
        keys: &[Vec<u8>],
        weight: impl Fn(usize) -> usize,
        consistency: ReadConsistency,
        write: bool,
        build: impl Fn(&[usize]) -> Request,
    ) -> Result<Vec<KvResponse>> {
        consistency.validate()?;
        if let Some(k) = keys.iter().find(|k| k.is_empty()) {
            return Err(Error::InvalidArgument(format!(
                "{op}: an empty key ({k:?}) cannot be stored"
            )));
        }
        if let Some(i) = (0..keys.len()).find(|&i| weight(i) > MAX_BATCH_BYTES) {
            return Err(Error::InvalidArgument(format!(
                "{op}: key {:?} with its value takes {} bytes, over a batch's {MAX_BATCH_BYTES}",
                keys[i],
                weight(i)
            )));
        }
        let started = Instant::now();
        let deadline = started + self.inner.cfg.op_timeout;
        let mut sessions: Vec<Arc<crate::session::Session>> = Vec::new();
        // Per key: the session of the write part it was last sent in.
        let mut origin: Vec<Option<usize>> = vec![None; keys.len()];
        let mut remaining: Vec<usize> = (0..keys.len()).collect();
        let mut done = Vec::new();
        let mut round = 0usize;
        let result = 'batch: loop {
            if remaining.is_empty() {
                break Ok(done);
            }
            // (region, session the keys already carry, bytes, key indices)
            let mut groups: Vec<(Region, Option<usize>, usize, Vec<usize>)> = Vec::new();
            for &i in &remaining {
                let w = weight(i);
                let fits = |(r, o, bytes, g): &&mut (Region, Option<usize>, usize, Vec<usize>)| {
                    *o == origin[i]
                        && g.len() < MAX_BATCH_KEYS
                        && *bytes + w <= MAX_BATCH_BYTES
                        && key_in_range(r, &keys[i])
                };
                if let Some((_, _, bytes, g)) = groups.iter_mut().find(fits) {
                    *bytes += w;
                    g.push(i);
                    continue;
                }
                let region = loop {
                    match self.locate(&keys[i]).await {
                        Ok(c) => break c.region.clone(),
                        // PD unreachable for now: the deadline bounds the wait.
                        Err(Error::Pd(_)) if Instant::now() < deadline => {
                            tokio::time::sleep(self.inner.cfg.backoff_base).await
                        }
                        // Past the deadline: an earlier round may have sent these keys.
                        Err(e @ Error::Pd(_)) => {
                            break 'batch Err(Error::Timeout {
                                operation: op,
                                elapsed_ms: elapsed_ms(started),
                                last_error: e.to_string(),
                            })
                        }
                        Err(e) => break 'batch Err(e),
                    }
                };
                groups.push((region, origin[i], w, vec![i]));
            }
            let mut tasks = Vec::with_capacity(groups.len());
            for (_, o, _, idx) in &mut groups {
                if write && o.is_none() {
                    sessions.push(Arc::new(self.inner.sessions.take()));
                    *o = Some(sessions.len() - 1);
                }
                for &i in idx.iter() {
                    origin[i] = *o;
                }
                let session = o.map(|s| sessions[s].clone());
                let c = self.clone();
                let first = keys[idx[0]].clone();
                let others: Vec<Vec<u8>> = idx[1..].iter().map(|&i| keys[i].clone()).collect();
                let req = build(idx);
                tasks.push(tokio::spawn(async move {
                    let session = session.as_deref();
                    c.execute_keys(op, &first, &others, req, consistency, session, deadline)
                        .await
                }));
            }
            let mut again = Vec::new();
            let mut failed = None;
            for ((_, _, _, idx), t) in groups.into_iter().zip(tasks) {
                match t.await {
                    Ok(Ok(Some(resp))) => done.push(resp),
                    Ok(Ok(None)) => again.extend(idx),
                    // "Nothing was sent" holds for this round only: an earlier round may
                    // have sent these keys before a split cut them again.
                    Ok(Err(Error::Connection { addr, reason })) if round > 0 => {
                        failed = failed.or(Some(Error::Timeout {
                            operation: op,
                            elapsed_ms: elapsed_ms(started),
                            last_error: Error::Connection { addr, reason }.to_string(),
                        }))
                    }
                    Ok(Err(e)) => failed = failed.or(Some(e)),
                    Err(e) => {
                        failed = failed.or(Some(Error::Server(format!("{op} task failed: {e}"))))
                    }
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
            if !again.is_empty() && Instant::now() >= deadline {
                break Err(Error::Timeout {
                    operation: op,
                    elapsed_ms: elapsed_ms(started),
                    last_error: "the keys kept moving between regions".into(),
                });
            }
            remaining = again;
            round += 1;
        };
        for s in sessions {
            if let Ok(s) = Arc::try_unwrap(s) {
                self.inner.sessions.put_back(s);
            }
        }
        result
    }

    /// Splits the region holding `key` at `key` (which must not already start a region);
    /// returns the two regions: `[start, key)` and `[key, end)`.
    pub async fn split(&self, key: &[u8]) -> Result<(Region, Region)> {
        let mut sp = SplitRegionRequest::new();
        sp.set_split_key(key.to_vec());
        let mut req = Request::new();
        req.set_split(sp);
        let mut resp = self
            .execute("split", key, req, ReadConsistency::Linearizable, false)
            .await?;
        let mut s = resp.mut_response().take_split();
        let (left, right) = (s.take_left(), s.take_right());
        let mut cache = self.inner.cache.lock().expect("cache lock");
        cache.insert(left.clone(), None);
        cache.insert(right.clone(), None);
        Ok((left, right))
    }

    /// Reads the pairs with `start <= key < end` (empty `end`: no upper bound) in key
    /// order, at most `limit` (0: no limit), across as many regions as the range spans.
    /// Each region's part is linearizable; the scan as a whole is not a snapshot. A
    /// reversed range (`end` non-empty and below `start`) is refused with
    /// [`Error::InvalidArgument`]; `start == end` is an empty range.
    pub async fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KvPair>> {
        self.scan_with(start, end, limit, ReadConsistency::Linearizable)
            .await
    }

    /// [`Client::scan`] with the given consistency for each region's part. Without a
    /// limit, the regions the range spans (as PD knows them) are scanned in parallel.
    pub async fn scan_with(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        consistency: ReadConsistency,
    ) -> Result<Vec<KvPair>> {
        if !end.is_empty() && end < start {
            return Err(Error::InvalidArgument(format!(
                "reversed scan range: end {end:?} is below start {start:?}"
            )));
        }
        let regions = match limit {
            0 => self
                .inner
                .pd
                .scan_regions(start, end, 0)
                .await
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if regions.len() < 2 {
            return self.scan_part(start, end, limit, consistency).await;
        }
        // Cut the range at the region boundaries inside it; each part resumes across any
        // split that happens meanwhile, so the parts still cover the whole range.
        let mut cuts: Vec<Vec<u8>> = vec![start.to_vec()];
        for (r, _) in &regions {
            let k = r.get_start_key();
            if k > start && (end.is_empty() || k < end) {
                cuts.push(k.to_vec());
            }
        }
        cuts.push(end.to_vec());
        let mut tasks = Vec::with_capacity(cuts.len() - 1);
        for w in cuts.windows(2) {
            let (c, lo, hi) = (self.clone(), w[0].clone(), w[1].clone());
            tasks.push(tokio::spawn(async move {
                c.scan_part(&lo, &hi, 0, consistency).await
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            let part = t
                .await
                .map_err(|e| Error::Server(format!("scan task failed: {e}")))??;
            out.extend(part);
        }
        Ok(out)
    }

    /// Scans `[start, end)` region by region, in order, resuming where each answer says.
    async fn scan_part(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        consistency: ReadConsistency,
    ) -> Result<Vec<KvPair>> {
        let mut out = Vec::new();
        let mut cursor = start.to_vec();
        loop {
            if !end.is_empty() && cursor.as_slice() >= end {
                return Ok(out);
            }
            let mut s = ScanRequest::new();
            s.set_start_key(cursor.clone());
            s.set_end_key(end.to_vec());
            let want = if limit == 0 { 0 } else { limit - out.len() };
            s.set_limit(want.min(u32::MAX as usize) as u32);
            let mut req = Request::new();
            req.set_scan(s);
            let mut resp = self
                .execute("scan", &cursor, req, consistency, false)
                .await?;
            let scan = resp.mut_response().mut_scan();
            let resume = scan.take_scanned_end();
            for mut p in scan.take_pairs().into_iter() {
                out.push(KvPair {
                    key: p.take_key(),
                    value: p.take_value(),
                    version: p.get_version(),
                });
            }
            let finished = resume.is_empty() || (!end.is_empty() && resume.as_slice() >= end);
            if (limit > 0 && out.len() >= limit) || finished {
                out.truncate(if limit > 0 { limit } else { out.len() });
                return Ok(out);
            }
            if resume <= cursor {
                return Err(Error::Server(format!(
                    "scan made no progress at {cursor:?} (the store answered resume point {resume:?})"
                )));
            }
            cursor = resume;
        }
    }

    /// The cached region holding `key`, asking PD on a miss.
    pub(crate) async fn locate(&self, key: &[u8]) -> Result<Arc<CachedRegion>> {
        if let Some(c) = self.inner.cache.lock().expect("cache lock").get(key) {
            return Ok(c);
        }
        let (region, leader) = self.inner.pd.get_region(key).await?;
        let mut cache = self.inner.cache.lock().expect("cache lock");
        cache.insert(region, leader);
        cache
            .get(key)
            .ok_or_else(|| Error::Pd(format!("PD answered a region that does not hold {key:?}")))
    }

    async fn store_addr(&self, store_id: u64) -> Result<String> {
        if let Some(a) = self
            .inner
            .store_addrs
            .lock()
            .expect("addr lock")
            .get(&store_id)
        {
            return Ok(a.clone());
        }
        let store = self.inner.pd.get_store(store_id).await?;
        let addr = store.get_address().to_string();
        self.inner
            .store_addrs
            .lock()
            .expect("addr lock")
            .insert(store_id, addr.clone());
        Ok(addr)
    }

    fn open_connection(&self, addr: &str) -> Option<Connection> {
        self.inner
            .conns
            .lock()
            .expect("connection map lock")
            .get(addr)
            .filter(|c| !c.is_broken())
            .cloned()
    }

    async fn connection(&self, addr: &str) -> Result<Connection> {
        if let Some(c) = self.open_connection(addr) {
            return Ok(c);
        }
        let _connecting = self.inner.connecting.lock().await;
        // Another caller may have connected while this one waited.
        if let Some(c) = self.open_connection(addr) {
            return Ok(c);
        }
        let c = Connection::connect(addr, self.inner.cfg.connect_timeout)
            .await
            .map_err(|e| Error::Connection {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        self.inner
            .conns
            .lock()
            .expect("connection map lock")
            .insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Runs one request on the region holding `key`, retrying until the deadline.
    pub(crate) async fn execute(
        &self,
        op: &'static str,
        key: &[u8],
        req: Request,
        consistency: ReadConsistency,
        write: bool,
    ) -> Result<KvResponse> {
        consistency.validate()?;
        let deadline = Instant::now() + self.inner.cfg.op_timeout;
        let session = write.then(|| self.inner.sessions.take());
        let result = self
            .execute_keys(op, key, &[], req, consistency, session.as_ref(), deadline)
            .await;
        if let Some(s) = session {
            self.inner.sessions.put_back(s);
        }
        result?.ok_or_else(|| Error::Server("a one-key request cannot span regions".into()))
    }

    /// Runs one request on the region holding `key` and every key of `others`, retrying
    /// until `deadline`, with `session` for a write (kept across all retries); `None`
    /// when the keys are no longer in one region. At the deadline: [`Error::Connection`]
    /// if no attempt got as far as sending (the last failed to connect), else
    /// [`Error::Timeout`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn execute_keys(
        &self,
        op: &'static str,
        key: &[u8],
        others: &[Vec<u8>],
        req: Request,
        consistency: ReadConsistency,
        session: Option<&crate::session::Session>,
        deadline: Instant,
    ) -> Result<Option<KvResponse>> {
        let started = Instant::now();
        let mut backoff = self.inner.cfg.backoff_base;
        let mut attempt = 0usize;
        let mut sent_any = false;
        let result = loop {
            let outcome = self
                .attempt(key, others, &req, consistency, session, attempt)
                .await;
            attempt += 1;
            let (error, sleep) = match outcome {
                Attempt::Done(resp) => break Ok(Some(*resp)),
                Attempt::Regroup => break Ok(None),
                Attempt::Fail(e) => break Err(e),
                Attempt::Retry {
                    error,
                    backoff,
                    sent,
                } => {
                    sent_any |= sent;
                    (Err(error), backoff)
                }
                Attempt::Unreachable(e) => (Ok(e), true),
            };
            let now = Instant::now();
            if now >= deadline {
                break Err(match error {
                    Ok(unreachable) if !sent_any => unreachable,
                    last => Error::Timeout {
                        operation: op,
                        elapsed_ms: elapsed_ms(started),
                        last_error: last.map_or_else(|s| s, |e| e.to_string()),
                    },
                });
            }
            if sleep {
                let jitter = rand::thread_rng().gen_range(0..=backoff.as_micros() as u64 / 2);
                let wait = (backoff + Duration::from_micros(jitter)).min(deadline - now);
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(self.inner.cfg.backoff_max);
            }
        };
        result
    }

    async fn attempt(
        &self,
        key: &[u8],
        others: &[Vec<u8>],
        req: &Request,
        consistency: ReadConsistency,
        session: Option<&crate::session::Session>,
        attempt: usize,
    ) -> Attempt {
        let region = match self.locate(key).await {
            Ok(r) => r,
            Err(e @ Error::Pd(_)) => {
                return Attempt::Retry {
                    error: e.to_string(),
                    backoff: true,
                    sent: false,
                }
            }
            Err(e) => return Attempt::Fail(e),
        };
        if others.iter().any(|k| !key_in_range(&region.region, k)) {
            return Attempt::Regroup;
        }
        let rid = region.region.get_id();
        let peers = region.region.get_peers();
        if peers.is_empty() {
            self.inner.cache.lock().expect("cache lock").evict(rid);
            return Attempt::Retry {
                error: format!("region {rid} has no peers"),
                backoff: true,
                sent: false,
            };
        }
        // Reads any replica may serve go to a random one at first (spreading load across
        // stores), then to the leader; the rest go to the believed leader, or else to the
        // peers in turn.
        let target: Peer = if consistency.any_replica() && attempt == 0 {
            peers[rand::thread_rng().gen_range(0..peers.len())].clone()
        } else {
            region
                .leader
                .clone()
                .unwrap_or_else(|| peers[attempt % peers.len()].clone())
        };
        let addr = match self.store_addr(target.get_store_id()).await {
            Ok(a) => a,
            Err(e) => {
                return Attempt::Retry {
                    error: e.to_string(),
                    backoff: true,
                    sent: false,
                }
            }
        };
        let mut ctx = Context::new();
        ctx.set_region_id(rid);
        ctx.set_region_epoch(region.region.get_region_epoch().clone());
        if let Some(s) = session {
            ctx.set_client_id(s.client_id);
            ctx.set_seq(s.seq);
        }
        let wire = match consistency {
            ReadConsistency::Linearizable => kvrpcpb::ReadConsistency::LINEARIZABLE,
            ReadConsistency::Lease => kvrpcpb::ReadConsistency::LEASE,
            ReadConsistency::LogRead => kvrpcpb::ReadConsistency::LOG_READ,
            ReadConsistency::Follower { max_staleness } => {
                ctx.set_max_staleness_ms(ReadConsistency::max_staleness_ms(max_staleness));
                kvrpcpb::ReadConsistency::FOLLOWER
            }
            ReadConsistency::ReadYourWrites => {
                let last = self.inner.last_write.lock().expect("last-write lock");
                ctx.set_min_applied_index(last.get(&rid).copied().unwrap_or(0));
                kvrpcpb::ReadConsistency::READ_YOUR_WRITES
            }
        };
        ctx.set_consistency(wire);
        let mut kv = KvRequest::new();
        kv.set_context(ctx);
        kv.set_request(req.clone());
        let sent = match self.connection(&addr).await {
            Ok(conn) => conn
                .call(Frame_oneof_body::kv_request(kv), self.inner.cfg.rpc_timeout)
                .await
                .map_err(|e| Attempt::Retry {
                    error: format!("{addr}: {e}"),
                    backoff: true,
                    sent: true,
                }),
            Err(e) => Err(Attempt::Unreachable(e)),
        };
        let frame = match sent {
            Ok(f) => f,
            Err(retry) => {
                // The store may be down or moved: try another peer, re-resolve its address.
                self.inner
                    .cache
                    .lock()
                    .expect("cache lock")
                    .set_leader(rid, None);
                self.inner
                    .store_addrs
                    .lock()
                    .expect("addr lock")
                    .remove(&target.get_store_id());
                return retry;
            }
        };
        let mut resp = match frame.body {
            Some(Frame_oneof_body::kv_response(r)) => r,
            _ => return Attempt::Fail(Error::Server(format!("{addr} sent a non-KV answer"))),
        };
        if !resp.has_error() {
            if session.is_some() {
                let index = write_index(resp.get_response());
                let mut last = self.inner.last_write.lock().expect("last-write lock");
                let e = last.entry(rid).or_insert(0);
                *e = (*e).max(index);
            }
            return Attempt::Done(Box::new(resp));
        }
        let error = resp.take_error();
        let text = retry::describe(&error);
        match retry::classify(error, &target, consistency.any_replica()) {
            Step::Fail(e) => Attempt::Fail(e),
            Step::Retry { backoff, update } => {
                let mut cache = self.inner.cache.lock().expect("cache lock");
                match update {
                    CacheUpdate::Keep => {}
                    CacheUpdate::SetLeader(leader) => cache.set_leader(rid, leader),
                    CacheUpdate::Evict => cache.evict(rid),
                    CacheUpdate::Replace(current) => {
                        cache.evict(rid);
                        for r in current {
                            cache.insert(r, None);
                        }
                    }
                }
                Attempt::Retry {
                    error: text,
                    backoff,
                    sent: true,
                }
            }
        }
    }

    /// The log index of this client's last acknowledged write in `region_id` (0: none).
    pub fn last_write_index(&self, region_id: u64) -> u64 {
        self.inner
            .last_write
            .lock()
            .expect("last-write lock")
            .get(&region_id)
            .copied()
            .unwrap_or(0)
    }
}

/// Milliseconds since `started`, for an error.
fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The log index a write committed at, from its response.
fn write_index(resp: &Response) -> u64 {
    if resp.has_batch_put() {
        resp.get_batch_put().get_index()
    } else if resp.has_batch_delete() {
        resp.get_batch_delete().get_index()
    } else if resp.has_put() {
        resp.get_put().get_index()
    } else if resp.has_delete() {
        resp.get_delete().get_index()
    } else if resp.has_cas() {
        resp.get_cas().get_index()
    } else {
        0
    }
}
