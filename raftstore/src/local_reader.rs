//! Local reads (TiKV's `LocalReader`): lease, bounded-staleness and read-your-writes reads
//! served on the connection's own thread, straight from RocksDB, without a trip through
//! the region's actor.
//!
//! Each replica publishes a [`ReadDelegate`] with what a reader needs to decide alone: the
//! region (epoch, range), whether it leads with a lease that may be used (and until
//! when), its follower safe time and its applied index. The peer updates it at the end
//! of every turn and before it sends any message, so a lease is withdrawn before a leader
//! transfer's `MsgTimeoutNow` can leave. A request the delegate cannot serve goes to the
//! actor as before, which also produces every typed error.
//!
//! Why reading a snapshot of the engine, taken when the read starts, is enough: every answer (write or read) is given only
//! after its effects are applied, so the applied state holds everything acknowledged.
//! While the lease holds no other leader exists, and once a leader has applied an entry
//! of its own term it has applied every entry a previous leader acknowledged: the lease
//! is published only then.

use crate::clock::Clock;
use crate::config::StoreConfig;
use crate::coprocessor::NoCoprocessor;
use crate::metrics::StoreMetrics;
use crate::request::{read_from_engine, validate_request};
use regatta_engine::{Engine, RocksEngine};
use regatta_proto::kvrpcpb::{KvRequest, KvResponse, ReadConsistency, ReadInfo, Request_oneof_cmd};
use regatta_proto::metapb::Region;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What a replica publishes for local reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ReadState {
    /// The region as the replica knows it (shared between publications while its epoch
    /// stays the same: most publications only move the applied index).
    pub region: Arc<Region>,
    /// Leader only: the end of a lease it may serve reads from (it has applied an entry
    /// of its term and transfers no leadership).
    pub lease_until: Option<Instant>,
    /// The commit index when published (reported as the read index of lease reads).
    pub commit_index: u64,
    /// Follower: every write acknowledged before this instant is applied here.
    pub safe_time: Option<Instant>,
    /// The applied index.
    pub applied_index: u64,
    /// Whether this replica leads.
    pub leader: bool,
    /// The replica stopped (it can no longer write): nothing is served locally.
    pub fenced: bool,
}

/// One replica's published read state, shared with the store's connections.
pub struct ReadDelegate<E: Engine = RocksEngine> {
    store_id: u64,
    metrics: Arc<StoreMetrics>,
    engine: E,
    cfg: Arc<StoreConfig>,
    clock: Arc<dyn Clock>,
    /// Swapped whole on publish; a reader takes a reference, never a copy.
    state: RwLock<Arc<ReadState>>,
    /// The applied index, updated right after each apply and before its answers go out,
    /// so a read that starts after an answer sees at least that answer's index.
    applied: AtomicU64,
}

impl<E: Engine> ReadDelegate<E> {
    pub(crate) fn new(
        store_id: u64,
        metrics: Arc<StoreMetrics>,
        engine: E,
        cfg: Arc<StoreConfig>,
        clock: Arc<dyn Clock>,
        region: Region,
    ) -> Self {
        ReadDelegate {
            store_id,
            metrics,
            engine,
            cfg,
            clock,
            state: RwLock::new(Arc::new(ReadState {
                region: Arc::new(region),
                ..ReadState::default()
            })),
            applied: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_applied(&self, index: u64) {
        self.applied.fetch_max(index, Ordering::Release);
    }

    /// Sets the applied index back to `index`: only when the replica's log was rewound
    /// (a seed, `Peer::seed`), whose entries past it no longer exist.
    pub(crate) fn reset_applied(&self, index: u64) {
        self.applied.store(index, Ordering::Release);
    }

    /// Whether the replica led its region when it last published.
    pub fn is_leader(&self) -> bool {
        self.state
            .read()
            .expect("read delegate lock is never poisoned")
            .leader
    }

    /// The region as the replica last published it.
    pub fn region(&self) -> Region {
        self.state
            .read()
            .expect("read delegate lock is never poisoned")
            .region
            .as_ref()
            .clone()
    }

    pub(crate) fn publish(&self, state: Arc<ReadState>) {
        *self
            .state
            .write()
            .expect("read delegate lock is never poisoned") = state;
    }

    /// Serves `req` here if its consistency allows it and the published state proves it
    /// safe; `None` sends it to the actor.
    pub fn try_read(&self, req: &KvRequest) -> Option<KvResponse> {
        let is_read = matches!(
            req.get_request().cmd,
            Some(Request_oneof_cmd::get(_))
                | Some(Request_oneof_cmd::batch_get(_))
                | Some(Request_oneof_cmd::scan(_))
        );
        let ctx = req.get_context();
        let consistency = ctx.get_consistency();
        let local_kind = matches!(
            consistency,
            ReadConsistency::LEASE | ReadConsistency::FOLLOWER | ReadConsistency::READ_YOUR_WRITES
        );
        if !is_read || !local_kind {
            return None;
        }
        let started = self.clock.now();
        let st = self
            .state
            .read()
            .expect("read delegate lock is never poisoned")
            .clone();
        if st.fenced {
            return None; // the actor answers StorePoisoned
        }
        // Only raw reads get here (above), none the layer above claims.
        validate_request(req, &st.region, &self.cfg, &NoCoprocessor).ok()?;
        // Read before the data: the state read below holds at least this much.
        let applied = self.applied.load(Ordering::Acquire).max(st.applied_index);
        let mut info = ReadInfo::new();
        if st.leader {
            // Any of the three is served linearizably by a leader whose lease holds.
            if st.lease_until.is_none_or(|t| started >= t) {
                return None;
            }
            info.set_linearizable(true);
            info.set_lease_used(true);
            info.set_read_index(st.commit_index);
        } else {
            match consistency {
                ReadConsistency::FOLLOWER if ctx.get_max_staleness_ms() > 0 => {
                    let staleness = started.saturating_duration_since(st.safe_time?);
                    if staleness > Duration::from_millis(ctx.get_max_staleness_ms()) {
                        return None;
                    }
                    info.set_staleness_us(staleness.as_micros() as u64);
                }
                ReadConsistency::READ_YOUR_WRITES if applied >= ctx.get_min_applied_index() => {}
                _ => return None,
            }
            info.set_read_index(applied);
        }
        // A `get` reads one key and a `scan`'s iterator pins one state, so the live
        // state serves them. A `batch_get` of several keys reads them one by one, and the
        // region's data may change between two of them: an apply on another raft thread
        // (`raft_threads` > 1), or a snapshot install the LogWriter writes. Its keys come
        // from one RocksDB snapshot.
        let several_keys = matches!(
            &req.get_request().cmd,
            Some(regatta_proto::kvrpcpb::Request_oneof_cmd::batch_get(b)) if b.get_keys().len() > 1
        );
        let mut resp = if several_keys {
            read_from_engine(
                &self.engine.snapshot(),
                &st.region,
                req.get_request(),
                &NoCoprocessor,
            )
        } else {
            read_from_engine(
                &self.engine.live(),
                &st.region,
                req.get_request(),
                &NoCoprocessor,
            )
        };
        if resp.has_error() {
            return None; // let the actor answer with its own error handling
        }
        let counter = if st.leader {
            &self.metrics.local_reads_leader
        } else {
            &self.metrics.local_reads_follower
        };
        counter.fetch_add(1, Ordering::Relaxed);
        info.set_served_by_store(self.store_id);
        info.set_applied_index(applied);
        info.set_waited_us(
            self.clock
                .now()
                .saturating_duration_since(started)
                .as_micros() as u64,
        );
        resp.set_read_info(info);
        Some(resp)
    }
}

/// The read delegates of the regions hosted on a store, by region id: what the store's
/// connections read through, and what a replica checks overlapping ranges against. Apart
/// from the actor router, so reads never depend on the actors.
#[derive(Clone, Default)]
pub struct ReadRegistry {
    delegates: Arc<RwLock<HashMap<u64, Arc<ReadDelegate>>>>,
}

impl ReadRegistry {
    /// Registers the delegate of `region_id` (replacing an older one).
    pub fn insert(&self, region_id: u64, delegate: Arc<ReadDelegate>) {
        self.delegates
            .write()
            .expect("registry lock is never poisoned")
            .insert(region_id, delegate);
    }

    /// Removes `region_id`.
    pub fn remove(&self, region_id: u64) {
        self.delegates
            .write()
            .expect("registry lock is never poisoned")
            .remove(&region_id);
    }

    /// The read delegate of `region_id`.
    pub fn get(&self, region_id: u64) -> Option<Arc<ReadDelegate>> {
        self.delegates
            .read()
            .expect("registry lock is never poisoned")
            .get(&region_id)
            .cloned()
    }

    /// The region hosted here whose range holds `key` (as its replica last published it).
    pub fn locate(&self, key: &[u8]) -> Option<Region> {
        self.find_initialized(|r| regatta_proto::region::key_in_range(r, key))
    }

    /// A hosted, initialized region other than `except` whose range overlaps `region`'s.
    pub fn overlapping(&self, region: &Region, except: u64) -> Option<Region> {
        let (start, end) = (region.get_start_key(), region.get_end_key());
        self.find_initialized(|r| {
            r.get_id() != except
                && (end.is_empty() || r.get_start_key() < end)
                && (r.get_end_key().is_empty() || start < r.get_end_key())
        })
    }

    /// How many hosted replicas lead their region (as last published).
    pub fn leader_count(&self) -> usize {
        self.delegates
            .read()
            .expect("registry lock is never poisoned")
            .values()
            .filter(|d| d.is_leader())
            .count()
    }

    /// A hosted region, as last published, that knows its range and matches `pred`.
    fn find_initialized(&self, pred: impl Fn(&Region) -> bool) -> Option<Region> {
        self.delegates
            .read()
            .expect("registry lock is never poisoned")
            .values()
            .map(|d| d.region())
            .find(|r| !r.get_peers().is_empty() && pred(r))
    }
}
