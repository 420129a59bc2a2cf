//! [`PdState`]: PD's pure state machine — requests in, responses out, with its durable part
//! written to `<data_dir>/pd.state` (write a temporary file, fsync, rename, fsync the
//! directory) before any answer that depends on it leaves.

use crate::data_dir::{lock_data_dir, write_atomically};
use crate::deadlock::{WaitsFor, EDGE_TTL};
use crate::error::Error;
use crate::gc::{GcSafePoint, DEFAULT_GC_LIFE_TIME, MIN_GC_LIFE_TIME};
use crate::tso::Tso;
use protobuf::Message;
use regatta_proto::metapb::{Peer, Region, RegionEpoch, Store};
use regatta_proto::pdpb::{
    AllocIdResponse, GetAllStoresResponse, GetGcSafePointResponse, GetRegionResponse,
    GetStoreResponse, PdError, PdPersistedState, PdRequest, PdRequest_oneof_req as Req, PdResponse,
    PutStoreResponse, RegionHeartbeatRequest, RegionHeartbeatResponse, RegionWithLeader,
    ScanRegionsResponse, StoreHeartbeatRequest, StoreHeartbeatResponse, TsoResponse,
};
use regatta_proto::region::key_in_range;
use regatta_proto::rpc::InboundLimits;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Ids reserved per persisted raise of the allocator's high-water mark.
const ID_BATCH: u64 = 1000;
/// Most ids one `AllocId` call may ask for.
const MAX_ALLOC: u32 = 10_000;
/// Most regions the key space may start cut into (split points are 2-byte prefixes).
pub const MAX_INITIAL_REGIONS: usize = 65_536;

/// How PD starts.
#[derive(Debug, Clone)]
pub struct PdConfig {
    /// Stores that must register before PD bootstraps the cluster; each initial region gets
    /// a replica on each of them.
    pub initial_stores: usize,
    /// Regions the key space starts cut into (see [`static_split_keys`]).
    pub initial_regions: usize,
    /// PD's own data directory (holds `pd.state`).
    pub data_dir: PathBuf,
    /// What PD's server reads from a connection, and how long it waits (default:
    /// [`InboundLimits::new`] of [`PD_MAX_FRAME`]).
    pub inbound: InboundLimits,
    /// How far the GC safe point trails PD's clock (default 10 min, at least 1 s): MVCC
    /// versions a read at or above it does not need may be dropped (see [`crate::gc`]).
    pub gc_life_time: Duration,
    /// The TSO reads PD's clock in steps of this many ms (default 1, the clock as it
    /// is). Above 1, every timestamp of a step shares one physical millisecond — as in a
    /// burst, or under an oracle stepped by hand — so that tests find commit timestamps
    /// meeting TSO timestamps (a store's 1PC commit ts is `max_ts + 1`). At most 1,000.
    pub tso_clock_step_ms: u64,
}

/// PD's frames are small (a region map of thousands of regions fits in a few MiB); anything
/// near this is garbage.
pub const PD_MAX_FRAME: usize = 64 << 20;

impl PdConfig {
    /// A PD that bootstraps `initial_regions` regions on the first `initial_stores` stores,
    /// keeping its state in `data_dir`, with the default network bounds.
    pub fn new(initial_stores: usize, initial_regions: usize, data_dir: PathBuf) -> PdConfig {
        PdConfig {
            initial_stores,
            initial_regions,
            data_dir,
            inbound: InboundLimits::new(PD_MAX_FRAME),
            gc_life_time: DEFAULT_GC_LIFE_TIME,
            tso_clock_step_ms: 1,
        }
    }

    /// Rejects unusable settings.
    pub fn validate(&self) -> Result<(), Error> {
        if self.initial_stores == 0 {
            return Err(Error::InvalidConfig(
                "initial_stores must be at least 1".into(),
            ));
        }
        if self.initial_regions == 0 || self.initial_regions > MAX_INITIAL_REGIONS {
            return Err(Error::InvalidConfig(format!(
                "initial_regions must be in 1..={MAX_INITIAL_REGIONS}, got {}",
                self.initial_regions
            )));
        }
        self.inbound.validate().map_err(Error::InvalidConfig)?;
        if !(1..=1_000).contains(&self.tso_clock_step_ms) {
            return Err(Error::InvalidConfig(format!(
                "tso_clock_step_ms must be in 1..=1000, got {}",
                self.tso_clock_step_ms
            )));
        }
        if self.gc_life_time < MIN_GC_LIFE_TIME {
            return Err(Error::InvalidConfig(format!(
                "gc_life_time must be at least {MIN_GC_LIFE_TIME:?}, got {:?}",
                self.gc_life_time
            )));
        }
        Ok(())
    }
}

/// The `n - 1` split keys that cut the key space into `n` regions of equal share of the
/// 2-byte prefix space: region `i` starts at the big-endian `u16` `i * 65536 / n`.
pub fn static_split_keys(n: usize) -> Vec<Vec<u8>> {
    let n = n.clamp(1, MAX_INITIAL_REGIONS);
    (1..n)
        .map(|i| ((i * 65_536 / n) as u16).to_be_bytes().to_vec())
        .collect()
}

/// Leader transfers PD orders per second at most, cluster-wide (PD's leader-schedule
/// limit): each wakes a region's replicas, and thousands at once after a start could
/// swamp the stores that carry them.
pub const MAX_TRANSFERS_PER_SEC: usize = 64;

/// PD's state: stores, the region map, the id allocator, the bootstrap record.
pub struct PdState {
    cfg: PdConfig,
    path: PathBuf,
    /// `<data_dir>/LOCK`, locked for as long as this state lives (see [`PdState::open`]).
    _dir_lock: std::fs::File,
    /// Next id to hand out; always `<= id_high_water`.
    next_id: u64,
    /// Persisted: ids at or above this were never handed out.
    id_high_water: u64,
    stores: BTreeMap<u64, Store>,
    /// start key -> region with its last known leader.
    regions: BTreeMap<Vec<u8>, RegionWithLeader>,
    /// region id -> start key in `regions`.
    region_starts: HashMap<u64, Vec<u8>>,
    /// region id -> highest term a leader reported (soft state).
    region_terms: HashMap<u64, u64>,
    /// store id -> its last heartbeat (soft state).
    store_heartbeats: HashMap<u64, StoreHeartbeatRequest>,
    bootstrap_regions: Vec<Region>,
    bootstrapped: bool,
    tso: Tso,
    /// The GC safe point (persisted before it is handed out).
    gc: GcSafePoint,
    /// region id -> (oldest lock start ts or 0, scanned at ms) from its leader's last
    /// report (soft state: after a restart PD holds the safe point until every region
    /// reported again).
    lock_reports: HashMap<u64, (u64, u64)>,
    /// store id -> when it last sent a heartbeat (soft state).
    store_seen: HashMap<u64, Instant>,
    /// region id -> when PD last ordered a leader transfer for it (soft state).
    transfers: HashMap<u64, Instant>,
    /// When the transfer orders of the last second were given (soft state).
    recent_transfers: std::collections::VecDeque<Instant>,
    /// region id -> (approximate size, keys) from its leader's last heartbeat (soft state).
    region_stats: HashMap<u64, (u64, u64)>,
    /// The region map changed since it was last written.
    map_dirty: bool,
    /// Leaders per store, recounted at most once a second (soft state).
    leader_counts: Option<(Instant, HashMap<u64, usize>)>,
    /// Pessimistic lock waits, for deadlock detection (soft state: a restarted PD starts
    /// empty, and waits then end by their timeout at worst).
    waits: WaitsFor,
}

fn pd_error(message: String) -> PdError {
    let mut e = PdError::new();
    e.set_message(message);
    e
}

fn epoch_older(a: &RegionEpoch, b: &RegionEpoch) -> bool {
    a.get_version() < b.get_version() || a.get_conf_ver() < b.get_conf_ver()
}

impl PdState {
    /// Opens PD's state in `cfg.data_dir`, creating it on first start.
    pub fn open(cfg: PdConfig) -> Result<PdState, Error> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| Error::Persist {
            path: cfg.data_dir.display().to_string(),
            source,
        })?;
        let dir_lock = lock_data_dir(&cfg.data_dir)?;
        let path = cfg.data_dir.join("pd.state");
        let persisted = match std::fs::read(&path) {
            Ok(bytes) => {
                PdPersistedState::parse_from_bytes(&bytes).map_err(|e| Error::Corrupt {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PdPersistedState::new(),
            Err(source) => {
                return Err(Error::Persist {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let id_high_water = persisted.get_id_high_water().max(1);
        let gc = GcSafePoint::resume(persisted.get_gc_safe_point(), cfg.gc_life_time);
        let mut state = PdState {
            cfg,
            path,
            _dir_lock: dir_lock,
            next_id: id_high_water,
            id_high_water,
            stores: BTreeMap::new(),
            regions: BTreeMap::new(),
            region_starts: HashMap::new(),
            region_terms: HashMap::new(),
            store_heartbeats: HashMap::new(),
            bootstrap_regions: persisted.get_bootstrap_regions().to_vec(),
            bootstrapped: persisted.get_bootstrapped(),
            tso: Tso::resume(persisted.get_tso_high_water_ms()),
            gc,
            lock_reports: HashMap::new(),
            store_seen: HashMap::new(),
            transfers: HashMap::new(),
            recent_transfers: std::collections::VecDeque::new(),
            region_stats: HashMap::new(),
            map_dirty: false,
            leader_counts: None,
            waits: WaitsFor::new(EDGE_TTL),
        };
        for s in persisted.get_stores() {
            state.stores.insert(s.get_id(), s.clone());
        }
        for r in persisted.get_regions() {
            state.insert_region(r.clone());
        }
        Ok(state)
    }

    /// Whether the first regions exist.
    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    /// Every region PD knows, in key order, with its last known leader.
    pub fn regions(&self) -> Vec<RegionWithLeader> {
        self.regions.values().cloned().collect()
    }

    /// Answers one request. Never panics on its content.
    pub fn handle(&mut self, req: PdRequest) -> PdResponse {
        let mut resp = PdResponse::new();
        let result = match req.req {
            Some(Req::put_store(mut r)) => self.put_store(r.take_store()).map(|_| {
                resp.set_put_store(PutStoreResponse::new());
            }),
            Some(Req::get_store(r)) => match self.stores.get(&r.get_store_id()) {
                Some(s) => {
                    let mut g = GetStoreResponse::new();
                    g.set_store(s.clone());
                    resp.set_get_store(g);
                    Ok(())
                }
                None => Err(pd_error(format!("store {} is unknown", r.get_store_id()))),
            },
            Some(Req::get_all_stores(_)) => {
                let mut g = GetAllStoresResponse::new();
                g.set_stores(self.stores.values().cloned().collect());
                resp.set_get_all_stores(g);
                Ok(())
            }
            Some(Req::get_region(r)) => self.region_by_key(r.get_key()).map(|rl| {
                resp.set_get_region(rl);
            }),
            Some(Req::get_region_by_id(r)) => self.region_by_id(r.get_region_id()).map(|rl| {
                resp.set_get_region(rl);
            }),
            Some(Req::scan_regions(r)) => self
                .scan_regions(r.get_start_key(), r.get_end_key(), r.get_limit())
                .map(|s| {
                    resp.set_scan_regions(s);
                }),
            Some(Req::alloc_id(r)) => self.alloc_ids(r.get_count()).map(|first| {
                let mut a = AllocIdResponse::new();
                a.set_first_id(first);
                a.set_count(r.get_count());
                resp.set_alloc_id(a);
            }),
            Some(Req::region_heartbeat(r)) => self.region_heartbeat(r).map(|order| {
                let mut hb = RegionHeartbeatResponse::new();
                if let Some(peer) = order {
                    hb.set_transfer_leader(peer);
                }
                resp.set_region_heartbeat(hb);
            }),
            Some(Req::store_heartbeat(r)) => {
                resp.set_store_heartbeat(self.store_heartbeat(r));
                Ok(())
            }
            Some(Req::tso(r)) => self.timestamps(r.get_count()).map(|first| {
                let mut t = TsoResponse::new();
                t.set_first(first);
                t.set_count(r.get_count());
                resp.set_tso(t);
            }),
            Some(Req::detect(r)) => {
                resp.set_detect(self.waits.detect(&r, Instant::now()));
                Ok(())
            }
            Some(Req::get_gc_safe_point(_)) => {
                let mut g = GetGcSafePointResponse::new();
                g.set_safe_point(self.gc_safe_point());
                resp.set_get_gc_safe_point(g);
                Ok(())
            }
            None => Err(pd_error("empty PD request".into())),
        };
        if let Err(e) = result {
            resp.set_error(e);
        }
        resp
    }

    fn not_bootstrapped(&self) -> Result<(), PdError> {
        if self.bootstrapped {
            return Ok(());
        }
        let mut e = pd_error(format!(
            "cluster not bootstrapped yet: {} of {} initial stores registered",
            self.stores.len(),
            self.cfg.initial_stores
        ));
        e.set_not_bootstrapped(true);
        Err(e)
    }

    fn put_store(&mut self, store: Store) -> Result<(), PdError> {
        if store.get_id() == 0 || store.get_address().is_empty() {
            return Err(pd_error("a store needs a nonzero id and an address".into()));
        }
        if let Some(other) = self
            .stores
            .values()
            .find(|s| s.get_address() == store.get_address() && s.get_id() != store.get_id())
        {
            return Err(pd_error(format!(
                "address {} already belongs to store {}",
                store.get_address(),
                other.get_id()
            )));
        }
        if self.stores.get(&store.get_id()) == Some(&store) {
            return Ok(());
        }
        let before = self.stores.insert(store.get_id(), store.clone());
        if !self.bootstrapped && self.stores.len() >= self.cfg.initial_stores {
            self.bootstrap();
        }
        if let Err(e) = self.persist() {
            // Roll back what was not made durable.
            match before {
                Some(b) => self.stores.insert(b.get_id(), b),
                None => self.stores.remove(&store.get_id()),
            };
            return Err(pd_error(e.to_string()));
        }
        Ok(())
    }

    /// Creates the initial regions with a replica on each of the first `initial_stores`
    /// stores (by id). Made durable by the caller's `persist`.
    fn bootstrap(&mut self) {
        let stores: Vec<u64> = self
            .stores
            .keys()
            .copied()
            .take(self.cfg.initial_stores)
            .collect();
        let splits = static_split_keys(self.cfg.initial_regions);
        let mut regions = Vec::new();
        for i in 0..self.cfg.initial_regions {
            let mut region = Region::new();
            region.set_id(self.take_id());
            if i > 0 {
                region.set_start_key(splits[i - 1].clone());
            }
            if i < splits.len() {
                region.set_end_key(splits[i].clone());
            }
            let mut epoch = RegionEpoch::new();
            epoch.set_conf_ver(1);
            epoch.set_version(1);
            region.set_region_epoch(epoch);
            for &store_id in &stores {
                let mut peer = Peer::new();
                peer.set_id(self.take_id());
                peer.set_store_id(store_id);
                region.mut_peers().push(peer);
            }
            regions.push(region);
        }
        for r in &regions {
            let mut rl = RegionWithLeader::new();
            rl.set_region(r.clone());
            self.insert_region(rl);
        }
        self.bootstrap_regions = regions;
        self.bootstrapped = true;
    }

    /// Takes one id in memory, raising the high-water mark (persisted by the caller).
    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if self.next_id > self.id_high_water {
            self.id_high_water = self.next_id + ID_BATCH;
        }
        id
    }

    fn alloc_ids(&mut self, count: u32) -> Result<u64, PdError> {
        if count == 0 || count > MAX_ALLOC {
            return Err(pd_error(format!("alloc count must be in 1..={MAX_ALLOC}")));
        }
        let first = self.next_id;
        let end = first + u64::from(count);
        if end > self.id_high_water {
            let old = self.id_high_water;
            self.id_high_water = end + ID_BATCH;
            if let Err(e) = self.persist() {
                self.id_high_water = old;
                return Err(pd_error(e.to_string()));
            }
        }
        self.next_id = end;
        Ok(first)
    }

    fn region_by_key(&self, key: &[u8]) -> Result<GetRegionResponse, PdError> {
        self.not_bootstrapped()?;
        let found = self
            .regions
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| key_in_range(r.get_region(), key));
        match found {
            Some(rl) => Ok(Self::to_get_region(rl)),
            None => Err(pd_error(format!("no region holds key {key:?} yet"))),
        }
    }

    fn region_by_id(&self, id: u64) -> Result<GetRegionResponse, PdError> {
        self.not_bootstrapped()?;
        self.region_starts
            .get(&id)
            .and_then(|start| self.regions.get(start))
            .map(Self::to_get_region)
            .ok_or_else(|| pd_error(format!("region {id} is unknown")))
    }

    fn to_get_region(rl: &RegionWithLeader) -> GetRegionResponse {
        let mut g = GetRegionResponse::new();
        g.set_region(rl.get_region().clone());
        if rl.has_leader() {
            g.set_leader(rl.get_leader().clone());
        }
        g
    }

    fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<ScanRegionsResponse, PdError> {
        self.not_bootstrapped()?;
        let first = self
            .regions
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back()
            .map(|(k, _)| k.clone())
            .unwrap_or_default();
        let mut out = ScanRegionsResponse::new();
        for (_, rl) in self.regions.range(first..) {
            let r = rl.get_region();
            if !end.is_empty() && r.get_start_key() >= end {
                break;
            }
            if !r.get_end_key().is_empty() && r.get_end_key() <= start {
                continue;
            }
            let mut rl = rl.clone();
            if let Some((size, keys)) = self.region_stats.get(&r.get_id()) {
                rl.set_approximate_size(*size);
                rl.set_approximate_keys(*keys);
            }
            out.mut_regions().push(rl);
            if limit > 0 && out.get_regions().len() >= limit as usize {
                break;
            }
        }
        Ok(out)
    }

    /// Regions (other than `id`) whose range overlaps `[start, end)`.
    fn overlapping(&self, id: u64, start: &[u8], end: &[u8]) -> Vec<RegionWithLeader> {
        let mut out = Vec::new();
        let before = self
            .regions
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back()
            .map(|(k, _)| k.clone())
            .unwrap_or_default();
        for (_, rl) in self.regions.range(before..) {
            let r = rl.get_region();
            if !end.is_empty() && r.get_start_key() >= end {
                break;
            }
            let ends_before = !r.get_end_key().is_empty() && r.get_end_key() <= start;
            if !ends_before && r.get_id() != id {
                out.push(rl.clone());
            }
        }
        out
    }

    fn insert_region(&mut self, rl: RegionWithLeader) {
        let r = rl.get_region();
        if let Some(old_start) = self.region_starts.remove(&r.get_id()) {
            self.regions.remove(&old_start);
        }
        self.region_starts
            .insert(r.get_id(), r.get_start_key().to_vec());
        self.regions.insert(r.get_start_key().to_vec(), rl);
    }

    /// Balance-leader: when the reporting leader's store leads more than one region more
    /// than the live store that leads the fewest, and that store holds a peer of this
    /// region, ask for a transfer there (at most one order per region every 5 s, and at
    /// most [`MAX_TRANSFERS_PER_SEC`] in the whole cluster).
    fn balance_leader(&mut self, region: &Region, leader: &Peer) -> Option<Peer> {
        let now = Instant::now();
        if self
            .transfers
            .get(&region.get_id())
            .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(5))
        {
            return None;
        }
        while self
            .recent_transfers
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.recent_transfers.pop_front();
        }
        if self.recent_transfers.len() >= MAX_TRANSFERS_PER_SEC {
            return None;
        }
        let fresh = self
            .leader_counts
            .as_ref()
            .is_some_and(|(t, _)| now.duration_since(*t) < Duration::from_secs(1));
        if !fresh {
            let mut counts: HashMap<u64, usize> = HashMap::new();
            for rl in self.regions.values() {
                if rl.has_leader() && rl.get_leader().get_store_id() != 0 {
                    *counts.entry(rl.get_leader().get_store_id()).or_default() += 1;
                }
            }
            self.leader_counts = Some((now, counts));
        }
        let counts = &self.leader_counts.as_ref()?.1;
        // Live, and able to write: a poisoned store must never be given leaders.
        let live = |s: &u64| {
            self.store_seen
                .get(s)
                .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(5))
                && self
                    .store_heartbeats
                    .get(s)
                    .is_none_or(|hb| hb.get_poisoned_reason().is_empty())
        };
        let mine = counts.get(&leader.get_store_id()).copied().unwrap_or(0);
        let target = region
            .get_peers()
            .iter()
            .filter(|p| p.get_store_id() != leader.get_store_id() && live(&p.get_store_id()))
            .min_by_key(|p| counts.get(&p.get_store_id()).copied().unwrap_or(0))?;
        let theirs = counts.get(&target.get_store_id()).copied().unwrap_or(0);
        // Tolerance: one region, or 5% of an even share, whichever is more, so thousands
        // of regions with leader counts PD learns late do not keep moving.
        let even = counts.values().sum::<usize>() / counts.len().max(1);
        if mine <= theirs + (even / 20).max(1) {
            return None;
        }
        self.transfers.insert(region.get_id(), now);
        self.recent_transfers.push_back(now);
        // Count the move now, so one round of heartbeats does not over-correct.
        if let Some((_, c)) = self.leader_counts.as_mut() {
            *c.entry(leader.get_store_id()).or_default() -= 1;
            *c.entry(target.get_store_id()).or_default() += 1;
        }
        Some(target.clone())
    }

    fn region_heartbeat(&mut self, req: RegionHeartbeatRequest) -> Result<Option<Peer>, PdError> {
        let leader = req.get_leader().clone();
        let region = req.get_region().clone();
        if req.get_approximate_keys() > 0 || req.get_approximate_size() > 0 {
            self.region_stats.insert(
                region.get_id(),
                (req.get_approximate_size(), req.get_approximate_keys()),
            );
        }
        let known_term = self.region_terms.get(&region.get_id()).copied();
        if req.has_locks() && known_term.is_none_or(|t| req.get_term() >= t) {
            let l = req.get_locks();
            // The scan happened before PD got it: never trust a later time than now.
            let scanned_at_ms = l.get_scanned_at_ms().min(wall_ms());
            self.lock_reports
                .insert(region.get_id(), (l.get_oldest_start_ts(), scanned_at_ms));
        }
        self.record_region(req)?;
        if leader.get_id() == 0 {
            return Ok(None);
        }
        Ok(self.balance_leader(&region, &leader))
    }

    fn record_region(&mut self, mut req: RegionHeartbeatRequest) -> Result<(), PdError> {
        let region = req.take_region();
        if region.get_id() == 0 || !region.has_region_epoch() {
            return Err(pd_error(
                "region heartbeat without region id or epoch".into(),
            ));
        }
        let id = region.get_id();
        let known = self
            .region_starts
            .get(&id)
            .and_then(|s| self.regions.get(s))
            .cloned();
        if let Some(k) = &known {
            if epoch_older(region.get_region_epoch(), k.get_region().get_region_epoch()) {
                return Ok(()); // stale report: a newer epoch is already known
            }
            let same_epoch = k.get_region().get_region_epoch() == region.get_region_epoch();
            let known_term = self.region_terms.get(&id).copied().unwrap_or(0);
            if same_epoch && req.get_term() < known_term {
                return Ok(()); // an older leader's late report
            }
        }
        let overlaps = self.overlapping(id, region.get_start_key(), region.get_end_key());
        if overlaps.iter().any(|o| {
            o.get_region().get_region_epoch().get_version()
                > region.get_region_epoch().get_version()
        }) {
            return Ok(()); // a newer split already covers part of this range
        }
        let mut rl = RegionWithLeader::new();
        rl.set_region(region);
        if req.has_leader() && req.get_leader().get_id() != 0 {
            rl.set_leader(req.take_leader());
        }
        if known.as_ref() == Some(&rl) && overlaps.is_empty() {
            self.region_terms.insert(id, req.get_term());
            return Ok(());
        }
        for o in &overlaps {
            let oid = o.get_region().get_id();
            if let Some(s) = self.region_starts.remove(&oid) {
                self.regions.remove(&s);
            }
        }
        self.insert_region(rl);
        self.region_terms.insert(id, req.get_term());
        // The region map is a cache of what stores report: it is written lazily (at most
        // once a second), and one lost on a crash is rebuilt by the next heartbeats.
        self.map_dirty = true;
        Ok(())
    }

    /// Writes the region map if it changed since the last write (PD's actor calls this
    /// every second). Ids, timestamps and bootstrap are written before they are answered.
    pub fn flush_region_map(&mut self) {
        if self.map_dirty && self.persist().is_ok() {
            self.map_dirty = false;
        }
    }

    fn store_heartbeat(&mut self, req: StoreHeartbeatRequest) -> StoreHeartbeatResponse {
        let store_id = req.get_store_id();
        self.store_seen.insert(store_id, Instant::now());
        self.store_heartbeats.insert(store_id, req);
        let mut resp = StoreHeartbeatResponse::new();
        resp.set_bootstrapped(self.bootstrapped);
        resp.set_gc_safe_point(self.gc_safe_point());
        for r in &self.bootstrap_regions {
            if r.get_peers().iter().any(|p| p.get_store_id() == store_id) {
                resp.mut_bootstrap_regions().push(r.clone());
            }
        }
        resp
    }

    /// `count` timestamps from the oracle; the first is returned. A new high water is
    /// persisted before any timestamp under it leaves.
    fn timestamps(&mut self, count: u32) -> Result<u64, PdError> {
        let step = self.cfg.tso_clock_step_ms.max(1);
        let now_ms = wall_ms() / step * step;
        let (first, new_high_water) = self.tso.next(count, now_ms).map_err(pd_error)?;
        if let Some(hw) = new_high_water {
            let old = self.tso.high_water();
            self.tso.commit_high_water(hw);
            if let Err(e) = self.persist() {
                self.tso.restore_high_water(old);
                return Err(pd_error(format!("persisting the TSO high water: {e}")));
            }
        }
        Ok(first)
    }

    /// The GC safe point, moved forward first when it is due (see [`crate::gc`]); a new
    /// one is persisted before it leaves, so it never goes back across restarts. If that
    /// write fails, the old one is answered.
    fn gc_safe_point(&mut self) -> u64 {
        if let Some(due) = self.gc.due(wall_ms()) {
            let reports = self
                .regions
                .values()
                .map(|rl| self.lock_reports.get(&rl.get_region().get_id()).copied());
            let new = due.min(self.gc.lock_bound(reports));
            if new <= self.gc.current() {
                return self.gc.current();
            }
            let old = self.gc.clone();
            self.gc.commit(new);
            if self.persist().is_err() {
                self.gc = old;
            }
        }
        self.gc.current()
    }

    fn persist(&self) -> Result<(), Error> {
        let mut st = PdPersistedState::new();
        st.set_gc_safe_point(self.gc.current());
        st.set_tso_high_water_ms(self.tso.high_water());
        st.set_id_high_water(self.id_high_water);
        st.set_stores(self.stores.values().cloned().collect());
        st.set_regions(self.regions.values().cloned().collect());
        st.set_bootstrap_regions(self.bootstrap_regions.clone().into());
        st.set_bootstrapped(self.bootstrapped);
        let bytes = st
            .write_to_bytes()
            .expect("encoding an in-memory message cannot fail");
        write_atomically(&self.path, &bytes)
    }
}

impl Drop for PdState {
    /// A clean stop writes the region map's last changes (a crash loses at most a second
    /// of them, which the next heartbeats bring back).
    fn drop(&mut self) {
        self.flush_region_map();
    }
}

/// PD's wall clock, ms since the Unix epoch.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
