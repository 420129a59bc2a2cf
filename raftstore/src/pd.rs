//! [`PdClient`]: what a store needs from the placement driver, as a small seam, and
//! [`MemPd`], its in-memory twin for tests.
//!
//! Contract: every method may fail with a [`PdError`] whose kind says what to do: PD
//! unreachable or the cluster not bootstrapped yet, retry with backoff; a refusal, do not
//! repeat the same request (registering a store gives up at once). `store_heartbeat`
//! answers the regions PD bootstrapped with a peer on this store; creating them is
//! idempotent on the store side.

use regatta_proto::metapb::{Region, Store};
use regatta_proto::pdpb::{
    DetectRequest, DetectResponse, RegionHeartbeatRequest, RegionHeartbeatResponse,
    StoreHeartbeatRequest, StoreHeartbeatResponse,
};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

/// A boxed, sendable future (keeps [`PdClient`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a call to PD failed: the kinds a store acts on differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PdError {
    /// No answer: PD is down, not listening at its address, or answered too late. Retry
    /// with backoff.
    #[error("PD unreachable: {0}")]
    Unreachable(String),
    /// PD answered that the cluster is not bootstrapped yet; it bootstraps once its initial
    /// stores have registered. Retry: nothing is wrong with this store.
    #[error("cluster not bootstrapped yet: {0}")]
    NotBootstrapped(String),
    /// PD answered and refused the request (a store id or address it will not take, an
    /// unknown store): the same request will be refused again.
    #[error("PD refused: {0}")]
    Refused(String),
}

impl PdError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, PdError::Refused(_))
    }
}

/// The placement driver as a store sees it.
pub trait PdClient: Send + Sync + 'static {
    /// Registers (or updates the address of) a store.
    fn put_store(&self, store: Store) -> BoxFuture<'_, Result<(), PdError>>;
    /// Looks up a store (for its address).
    fn get_store(&self, store_id: u64) -> BoxFuture<'_, Result<Store, PdError>>;
    /// Reports the store; the answer lists the bootstrap regions with a peer on it.
    fn store_heartbeat(
        &self,
        req: StoreHeartbeatRequest,
    ) -> BoxFuture<'_, Result<StoreHeartbeatResponse, PdError>>;
    /// Reports a region led by this store; the answer may order a leader transfer.
    fn region_heartbeat(
        &self,
        req: RegionHeartbeatRequest,
    ) -> BoxFuture<'_, Result<RegionHeartbeatResponse, PdError>>;
    /// `count` fresh, consecutive ids (for split regions and their peers); the first.
    fn alloc_id(&self, count: u32) -> BoxFuture<'_, Result<u64, PdError>>;
    /// One timestamp from PD's oracle (`physical_ms << 18 | logical`), greater than every
    /// timestamp it handed out before the call (for the layer above the raftstore: a new
    /// leader's transactional layer syncs with it before it chooses commit timestamps).
    fn get_ts(&self) -> BoxFuture<'_, Result<u64, PdError>>;
    /// For the layer above the raftstore: reports pessimistic lock waits that start
    /// (`WAIT_ADD`) and end (`WAIT_REMOVE`),
    /// applied in order; answers the added waits refused because they would close a
    /// cycle in the waits-for graph (the waiter must then give up: a deadlock).
    fn detect(&self, req: DetectRequest) -> BoxFuture<'_, Result<DetectResponse, PdError>>;
}

/// In-memory PD for tests: stores register, and `bootstrap_regions` are handed to the
/// stores that host a peer of them. It detects no deadlocks unless given a detector
/// ([`MemPd::with_detect`]): every wait is accepted and deadlocked waits end at their
/// lock-wait timeout (the waits-for graph is PD's, `regatta_pd::deadlock`, which this
/// crate does not depend on).
#[derive(Default)]
pub struct MemPd {
    stores: Mutex<HashMap<u64, Store>>,
    bootstrap: Mutex<Vec<Region>>,
    leaders: Mutex<HashMap<u64, RegionHeartbeatRequest>>,
    next_id: std::sync::atomic::AtomicU64,
    id_base: u64,
    /// The last timestamp handed out.
    last_ts: std::sync::atomic::AtomicU64,
    /// Where timestamps come from instead of this PD's clock (see [`MemPd::with_tso`]).
    tso: Option<TsoSource>,
    /// What answers deadlock reports (see [`MemPd::with_detect`]).
    detect: Option<DetectSource>,
}

/// A deadlock detector for a [`MemPd`]: applies a store's batch of wait reports, answers
/// the refused waits.
pub type DetectSource = Box<dyn Fn(&DetectRequest) -> DetectResponse + Send + Sync>;

/// A timestamp oracle other than a [`MemPd`]'s own clock.
pub type TsoSource = Box<dyn Fn() -> BoxFuture<'static, Result<u64, PdError>> + Send + Sync>;

impl MemPd {
    /// A PD that bootstraps `regions`.
    pub fn with_regions(regions: Vec<Region>) -> Self {
        MemPd {
            bootstrap: Mutex::new(regions),
            ..MemPd::default()
        }
    }

    /// Ids this PD hands out start at `base` (several in-memory PDs of one cluster, as in
    /// the JSON-lines node, each need their own id space).
    pub fn with_id_base(mut self, base: u64) -> Self {
        self.id_base = base;
        self
    }

    /// Timestamps come from `tso` instead of this PD's clock: several in-memory PDs of one
    /// cluster (the JSON-lines node's) must share one oracle, or a region leader would
    /// sync its transactional layer with a clock the transactions' timestamps do not
    /// follow.
    pub fn with_tso(mut self, tso: TsoSource) -> Self {
        self.tso = Some(tso);
        self
    }

    /// Deadlock reports go to `detect` (a waits-for graph, such as PD's) instead of
    /// being accepted: a wait that would close a cycle is refused, as in a cluster.
    pub fn with_detect(mut self, detect: DetectSource) -> Self {
        self.detect = Some(detect);
        self
    }

    /// Adds `region` to the regions this PD hands the stores hosting a peer of it to
    /// bootstrap (at their next store heartbeat).
    pub fn add_bootstrap_region(&self, region: Region) {
        self.bootstrap.lock().expect("lock").push(region);
    }

    /// The last heartbeat of each region.
    pub fn region_reports(&self) -> HashMap<u64, RegionHeartbeatRequest> {
        self.leaders.lock().expect("lock").clone()
    }
}

impl PdClient for MemPd {
    fn put_store(&self, store: Store) -> BoxFuture<'_, Result<(), PdError>> {
        // As PD does: a store needs an id and an address.
        if store.get_id() == 0 || store.get_address().is_empty() {
            let refused = PdError::Refused(format!("store {store:?} needs an id and an address"));
            return Box::pin(async move { Err(refused) });
        }
        self.stores
            .lock()
            .expect("lock")
            .insert(store.get_id(), store);
        Box::pin(async { Ok(()) })
    }

    fn get_store(&self, store_id: u64) -> BoxFuture<'_, Result<Store, PdError>> {
        let s = self.stores.lock().expect("lock").get(&store_id).cloned();
        Box::pin(
            async move { s.ok_or_else(|| PdError::Refused(format!("store {store_id} unknown"))) },
        )
    }

    fn store_heartbeat(
        &self,
        req: StoreHeartbeatRequest,
    ) -> BoxFuture<'_, Result<StoreHeartbeatResponse, PdError>> {
        let mut resp = StoreHeartbeatResponse::new();
        resp.set_bootstrapped(true);
        for r in self.bootstrap.lock().expect("lock").iter() {
            if r.get_peers()
                .iter()
                .any(|p| p.get_store_id() == req.get_store_id())
            {
                resp.mut_bootstrap_regions().push(r.clone());
            }
        }
        Box::pin(async move { Ok(resp) })
    }

    fn region_heartbeat(
        &self,
        req: RegionHeartbeatRequest,
    ) -> BoxFuture<'_, Result<RegionHeartbeatResponse, PdError>> {
        self.leaders
            .lock()
            .expect("lock")
            .insert(req.get_region().get_id(), req);
        Box::pin(async { Ok(RegionHeartbeatResponse::new()) })
    }

    fn alloc_id(&self, count: u32) -> BoxFuture<'_, Result<u64, PdError>> {
        // Ids from 1,000,000 up never meet the ids of bootstrap regions and peers.
        let first = self.id_base.max(1_000_000)
            + self
                .next_id
                .fetch_add(u64::from(count), std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move { Ok(first) })
    }

    fn get_ts(&self) -> BoxFuture<'_, Result<u64, PdError>> {
        if let Some(tso) = &self.tso {
            return tso();
        }
        // Wall-clock milliseconds in the TSO layout, strictly increasing within this PD
        // (one in-memory PD per process: enough for tests).
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // The load's ordering must not be AcqRel: `fetch_update` panics on one.
        let (set, fetch) = (
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        );
        let prev = self
            .last_ts
            .fetch_update(set, fetch, |last| {
                Some((last + 1).max(regatta_proto::ts::compose(now_ms, 0)))
            })
            .unwrap_or_else(|last| last);
        let ts = (prev + 1).max(regatta_proto::ts::compose(now_ms, 0));
        Box::pin(async move { Ok(ts) })
    }

    fn detect(&self, req: DetectRequest) -> BoxFuture<'_, Result<DetectResponse, PdError>> {
        let resp = self
            .detect
            .as_ref()
            .map_or_else(DetectResponse::new, |d| d(&req));
        Box::pin(async move { Ok(resp) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_not_retried_and_the_other_kinds_are() {
        let pd = MemPd::default();
        let mut nameless = Store::new();
        nameless.set_id(3);
        let refused = block_on(pd.put_store(nameless)).expect_err("no address");
        assert!(matches!(refused, PdError::Refused(_)), "{refused}");
        assert!(!refused.is_retryable());
        let unknown = block_on(pd.get_store(3)).expect_err("never registered");
        assert!(matches!(unknown, PdError::Refused(_)), "{unknown}");
        assert!(PdError::Unreachable("down".into()).is_retryable());
        assert!(PdError::NotBootstrapped("1 of 3 stores".into()).is_retryable());
    }

    #[test]
    fn timestamps_grow_strictly_and_carry_the_clock() {
        let pd = MemPd::default();
        let mut last = 0;
        for _ in 0..1_000 {
            let ts = block_on(pd.get_ts()).expect("a timestamp");
            assert!(ts > last, "{ts} after {last}");
            last = ts;
        }
        assert!(
            regatta_proto::ts::physical_ms(last) > 1_577_836_800_000,
            "milliseconds since 2020 and more"
        );
    }

    /// Polls a future that is ready at once (MemPd answers without waiting).
    fn block_on<T>(f: BoxFuture<'_, T>) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(f)
    }
}
