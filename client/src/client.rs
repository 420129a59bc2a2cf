//! [`Client`]: key-value operations with routing, retries and at-most-once writes.

use crate::config::Config;
use crate::error::{Error, PdError, Result};
use crate::pd::PdClient;
use crate::read::{scan_resume, KvPair, ReadConsistency, ReadOutcome, Versioned};
use crate::region_cache::{CachedRegion, RegionCache};
use crate::retry::{self, CacheUpdate, Ending, Plain, RetryHook, Step};
use crate::session::SessionPool;
use crate::txn::{AtomicOp, AtomicOutcome, OccTxn, TsoQueue, TxnClient};
use crate::wire::{TcpWire, Wire, WireError};
use rand::Rng;
use regatta_proto::framepb::Frame_oneof_body;
use regatta_proto::kvrpcpb::{
    self, BatchDeleteRequest, BatchGetRequest, BatchPutRequest, CasRequest, Context, DeleteRequest,
    GetRequest, KvRequest, KvResponse, PutRequest, Request, Response, ScanRequest,
    SplitRegionRequest,
};
use regatta_proto::metapb::{Peer, Region};
use regatta_proto::region::key_in_range;
use regatta_proto::MAX_BATCH_KEYS;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod batch;

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
    /// What carries the requests to stores (and PD).
    wire: Arc<dyn Wire>,
    sessions: SessionPool,
    /// Read-your-writes: the log index of this client's last acknowledged write per region.
    last_write: Mutex<HashMap<u64, u64>>,
    /// The TSO request queue every transaction handle over this client shares (so
    /// `occ_begin` / `atomic` here batch their timestamps with a `TxnClient`'s).
    tso_queue: TsoQueue,
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
    /// Sent, and no answer came: it may have been applied. Retried with backoff.
    Lost {
        error: String,
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
        let wire = Arc::new(TcpWire::new(cfg.connect_timeout));
        Self::connect_over(pd_addrs, cfg, wire).await
    }

    /// As [`Client::connect_with`], with every request to PD and the stores carried by
    /// `wire` instead of TCP (see [`Wire`]). `pd_addrs` and the store addresses PD lists
    /// are whatever `wire` understands.
    pub async fn connect_over<S: AsRef<str>>(
        pd_addrs: &[S],
        cfg: Config,
        wire: Arc<dyn Wire>,
    ) -> Result<Client> {
        let addrs = pd_addrs.iter().map(|a| a.as_ref().to_string()).collect();
        let pd = PdClient::over(addrs, cfg.clone(), wire.clone())?;
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
                wire,
                sessions: SessionPool::default(),
                last_write: Mutex::new(HashMap::new()),
                tso_queue: TsoQueue::default(),
            }),
        })
    }

    /// The TSO queue shared by the transaction handles over this client.
    pub(crate) fn tso_queue(&self) -> TsoQueue {
        self.inner.tso_queue.clone()
    }

    /// Begins an OCC transaction on the **transactional** key space (not this client's
    /// raw keys): as [`TxnClient::occ_begin`] over this client's connections.
    pub fn occ_begin(&self) -> OccTxn {
        TxnClient::from_client(self.clone()).occ_begin()
    }

    /// Applies `ops` all or nothing on the **transactional** key space (not this
    /// client's raw keys): as [`TxnClient::atomic`] over this client's connections.
    pub async fn atomic(&self, ops: &[AtomicOp]) -> Result<AtomicOutcome> {
        TxnClient::from_client(self.clone()).atomic(ops).await
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
        let mut resp = self
            .execute("get", key, req, consistency, false, &Plain)
            .await?;
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
            .execute("put", key, req, ReadConsistency::Linearizable, true, &Plain)
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
            .execute(
                "delete",
                key,
                req,
                ReadConsistency::Linearizable,
                true,
                &Plain,
            )
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
            .execute("cas", key, req, ReadConsistency::Linearizable, true, &Plain)
            .await?;
        let c = resp.mut_response().take_cas();
        Ok(CasOutcome {
            succeeded: c.get_succeeded(),
            previous: c.get_found().then(|| c.previous.clone()),
            index: c.get_index(),
        })
    }

    /// Splits the region holding `key` at `key` (which must not already start a region);
    /// returns the two regions: `[start, key)` and `[key, end)`.
    pub async fn split(&self, key: &[u8]) -> Result<(Region, Region)> {
        let mut sp = SplitRegionRequest::new();
        sp.set_split_key(key.to_vec());
        let mut req = Request::new();
        req.set_split(sp);
        let mut resp = self
            .execute(
                "split",
                key,
                req,
                ReadConsistency::Linearizable,
                false,
                &Plain,
            )
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
                .execute("scan", &cursor, req, consistency, false, &Plain)
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
            match scan_resume(&mut out, limit, end, &cursor, resume, "scan")? {
                Some(next) => cursor = next,
                None => return Ok(out),
            }
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
        cache.get(key).ok_or_else(|| {
            Error::Pd(PdError::Refused(format!(
                "PD answered a region that does not hold {key:?}"
            )))
        })
    }

    /// As [`Client::locate`], retrying PD's errors (PD unreachable, or a region it has not
    /// heard of yet just after a split) with backoff until `deadline`; past it, the last
    /// error.
    pub(crate) async fn locate_until(
        &self,
        key: &[u8],
        deadline: Instant,
    ) -> Result<Arc<CachedRegion>> {
        let mut backoff = self.inner.cfg.backoff_base;
        loop {
            match self.locate(key).await {
                Err(Error::Pd(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.inner.cfg.backoff_max);
                }
                r => return r,
            }
        }
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

    /// Runs one request on the region holding `key`, retrying until the deadline, with
    /// the operation's [`RetryHook`] ([`Plain`] for the raw operations).
    pub(crate) async fn execute(
        &self,
        op: &'static str,
        key: &[u8],
        req: Request,
        consistency: ReadConsistency,
        write: bool,
        hook: &dyn RetryHook,
    ) -> Result<KvResponse> {
        consistency.validate()?;
        let deadline = Instant::now() + self.inner.cfg.op_timeout;
        let session = write.then(|| self.inner.sessions.take());
        let result = self
            .execute_keys(
                op,
                key,
                &[],
                req,
                consistency,
                session.as_ref(),
                deadline,
                hook,
            )
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
    /// [`Error::Timeout`]. `hook` adds what the operation knows about its request (see
    /// [`RetryHook`]): the loop itself knows no kind of request.
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
        hook: &dyn RetryHook,
    ) -> Result<Option<KvResponse>> {
        let started = Instant::now();
        let mut backoff = self.inner.cfg.backoff_base;
        let mut attempt = 0usize;
        let mut sent_any = false;
        // Whether an attempt went unanswered (it may still be applied).
        let mut lost_any = false;
        let result = loop {
            let outcome = self
                .attempt(key, others, &req, consistency, session, attempt, hook)
                .await;
            attempt += 1;
            // After an unanswered attempt the operation may end otherwise (its hook says).
            let settled = |ending| {
                if lost_any {
                    hook.after_lost_attempt(ending)
                } else {
                    None
                }
            };
            let (error, sleep) = match outcome {
                Attempt::Done(resp) => match settled(Ending::Answered(&resp)) {
                    Some(e) => break Err(e),
                    None => break Ok(Some(*resp)),
                },
                Attempt::Regroup => match settled(Ending::Regrouped) {
                    Some(e) => break Err(e),
                    None => break Ok(None),
                },
                Attempt::Fail(e) => break Err(settled(Ending::Failed(&e)).unwrap_or(e)),
                Attempt::Retry {
                    error,
                    backoff,
                    sent,
                } => {
                    sent_any |= sent;
                    (Err(error), backoff)
                }
                Attempt::Lost { error } => {
                    sent_any = true;
                    lost_any = true;
                    (Err(error), true)
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

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        key: &[u8],
        others: &[Vec<u8>],
        req: &Request,
        consistency: ReadConsistency,
        session: Option<&crate::session::Session>,
        attempt: usize,
        hook: &dyn RetryHook,
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
        let timeout = self.inner.cfg.rpc_timeout + hook.store_wait();
        let sent = match self
            .inner
            .wire
            .call(&addr, Frame_oneof_body::kv_request(kv), timeout)
            .await
        {
            Ok(body) => Ok(body),
            Err(WireError::Unreachable(reason)) => Err(Attempt::Unreachable(Error::Connection {
                addr: addr.clone(),
                reason,
            })),
            Err(WireError::NoAnswer(reason)) => Err(Attempt::Lost {
                error: format!("{addr}: {reason}"),
            }),
        };
        let body = match sent {
            Ok(b) => b,
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
        let mut resp = match body {
            Frame_oneof_body::kv_response(r) => r,
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
