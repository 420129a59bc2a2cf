//! The transactional layer of a store: Percolator commands (`txnpb`) on the raftstore,
//! plugged in through its seam ([`regatta_raftstore::coprocessor`]); the raftstore knows none of this.
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | [`TxnCoprocessor`]: claims, validates, reads and applies transactional commands |
//! | `observer.rs` | [`TxnObserver`]: a replica's `max_ts`, read floor, lock waits and GC |
//! | `cmd/` | the commands: validation, reads, writes at apply, the wire mapping |
//! | `max_ts.rs` | the leader's `max_ts` for 1PC, as data |
//! | `waits.rs`, `lock_wait.rs` | the leader's pessimistic lock waits |
//! | `leader_locks.rs`, `mem_locks.rs` | the leader's in-memory pessimistic locks |
//! | `detector.rs` | lock waits reported to PD's deadlock detector |
//! | `ts_limit.rs` | the newest timestamp a command may carry |
//! | `gc.rs`, `gc_worker.rs` | MVCC GC: PD's safe point into the log, passes on a worker |
//! | `config.rs` | [`TxnConfig`]: the layer's bounds and intervals |
//! | `direct.rs` | [`direct::execute`]: a command straight on an engine, without Raft (fakes, tools) |

#![deny(missing_docs)]

mod cmd;
mod config;
mod detector;
pub mod direct;
mod gc;
mod gc_worker;
mod leader_locks;
mod lock_wait;
mod max_ts;
mod mem_locks;
mod observer;
mod ts_limit;
mod waits;

pub use config::TxnConfig;
pub use detector::Detector;
pub(crate) use gc_worker::oldest_lock;
pub use gc_worker::GcWorker;
pub use observer::{
    TxnObserver, GC_COLLECTED_SAFE_POINT, GC_SAFE_POINT, IN_MEMORY_LOCKS, LOCK_WAITERS,
    PD_GC_SAFE_POINT,
};
pub use ts_limit::TsLimit;

use regatta_engine::{keys, Cf, DynSnapshot, DynWriteBatch, Overlay};
use regatta_engine::{read_gc_safe_point, write_gc_safe_point};
use regatta_proto::kvrpcpb::{KvResponse, Request, Request_oneof_cmd, Response};
use regatta_proto::metapb::Region;
use regatta_proto::raft_serverpb::{AdminCmd, RaftCmd};
use regatta_proto::txnpb::TxnRequest;
use regatta_raftstore::coprocessor::{
    Applier, Checks, Coprocessor, KeySpace, Kind, Note, RegionObserver,
};
use regatta_raftstore::pd::PdClient;
use regatta_raftstore::Error;
use slog::Logger;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Locks an applied entry removed, with their transaction's start ts: the leader hands the
/// keys to their waiters (an [`Applier`] note).
pub(crate) struct Released(pub(crate) Vec<(Vec<u8>, u64)>);

/// An applied entry raised the region's GC safe point (an [`Applier`] note).
pub(crate) struct SafePointRaised;

/// What every replica's observer shares on a store.
pub(crate) struct Shared {
    pub(crate) cfg: TxnConfig,
    pub(crate) pd: Arc<dyn PdClient>,
    pub(crate) detector: Detector,
    pub(crate) gc_worker: GcWorker,
    pub(crate) ts_limit: Arc<TsLimit>,
    /// PD's GC safe point as the store last heard it (0: none yet).
    pub(crate) pd_gc_safe_point: AtomicU64,
}

/// The transactional layer of one store (see the module doc).
#[derive(Clone)]
pub struct TxnCoprocessor {
    shared: Arc<Shared>,
}

impl TxnCoprocessor {
    /// The layer of a store with config `cfg`, reaching PD through `pd` (TSO syncs) and
    /// its deadlock detector through `detector`, running GC passes on `gc_worker`.
    pub fn new(
        cfg: TxnConfig,
        pd: Arc<dyn PdClient>,
        detector: Detector,
        gc_worker: GcWorker,
    ) -> TxnCoprocessor {
        let ts_limit = Arc::new(TsLimit::new(cfg.max_ts_drift_allowance_ms));
        TxnCoprocessor {
            shared: Arc::new(Shared {
                cfg,
                pd,
                detector,
                gc_worker,
                ts_limit,
                pd_gc_safe_point: AtomicU64::new(0),
            }),
        }
    }

    /// A layer for unit tests of apply and reads: PD in memory, no deadlock reports sent,
    /// an idle GC worker. Shared by every test of the binary.
    #[cfg(test)]
    pub(crate) fn for_tests() -> &'static TxnCoprocessor {
        static COP: std::sync::OnceLock<TxnCoprocessor> = std::sync::OnceLock::new();
        COP.get_or_init(|| {
            let logger = Logger::root(slog::Discard, slog::o!());
            let pd: Arc<dyn PdClient> = Arc::new(regatta_raftstore::pd::MemPd::default());
            let (detector, _unsent) = Detector::new(pd.clone(), 16, logger);
            let cfg = TxnConfig::default();
            let (gc_worker, _thread) = GcWorker::start(cfg.gc_batch_keys, cfg.gc_queue);
            TxnCoprocessor::new(cfg, pd, detector, gc_worker)
        })
    }

    /// The store's timestamp limit (kept near PD's TSO by the store).
    pub fn ts_limit(&self) -> &Arc<TsLimit> {
        &self.shared.ts_limit
    }

    /// PD's GC safe point reached the store (never lowers it): leaders bring it into
    /// their regions' logs.
    pub fn observe_pd_safe_point(&self, safe_point: u64) {
        self.shared
            .pd_gc_safe_point
            .fetch_max(safe_point, Ordering::AcqRel);
    }
}

fn txn_of(req: &Request) -> Option<&TxnRequest> {
    match &req.cmd {
        Some(Request_oneof_cmd::txn(t)) => Some(t),
        _ => None,
    }
}

impl Coprocessor for TxnCoprocessor {
    fn kind(&self, req: &Request) -> Option<Kind> {
        let t = txn_of(req)?;
        Some(if cmd::is_txn_read(t) {
            Kind::Read
        } else {
            Kind::Write
        })
    }

    fn validate(&self, req: &Request, region: &Region, checks: &Checks) -> Result<(), Error> {
        let Some(t) = txn_of(req) else {
            return Ok(());
        };
        let _ = region;
        cmd::validate_txn(t, checks)
    }

    fn read(
        &self,
        snap: &dyn DynSnapshot,
        region: &Region,
        req: &Request,
    ) -> Result<Response, Error> {
        let t = txn_of(req).ok_or_else(|| Error::InvalidArgument("not a read".into()))?;
        let sp = read_gc_safe_point(&snap, region.get_id())?;
        let mut resp = Response::new();
        resp.set_txn(cmd::read_txn(&snap, region, t, sp)?);
        Ok(resp)
    }

    fn begin_apply<'a>(
        &'a self,
        snap: &'a dyn DynSnapshot,
        region_id: u64,
    ) -> Box<dyn Applier + 'a> {
        Box::new(TxnApplier {
            snap,
            overlay: Overlay::new(snap),
            region_id,
            gc_safe_point: None,
        })
    }

    fn key_spaces(&self, region: &Region) -> Vec<KeySpace> {
        key_spaces(region)
    }

    fn new_observer(&self, region_id: u64, logger: &Logger) -> Box<dyn RegionObserver> {
        Box::new(TxnObserver::new(
            region_id,
            self.shared.clone(),
            logger.clone(),
        ))
    }
}

/// MVCC data (`x` in `lock`, `write`, `default`: a key's lock, its commit records and its
/// large values), for split checks. The `x` space is `x` + memcomparable(user key) + `!ts`
/// (order-preserving and prefix-free: all versions and the lock of one user key sort
/// between `enc(k)` and the next user key's), so a split at a user key never separates a
/// key's lock from its versions.
fn key_spaces(region: &Region) -> Vec<KeySpace> {
    let (lo, hi) = keys::txn_data_range(region.get_start_key(), region.get_end_key());
    [Cf::Lock, Cf::Write, Cf::Default]
        .into_iter()
        .map(|cf| KeySpace {
            cf,
            lo: lo.clone(),
            hi: hi.clone(),
            user_key: |k| regatta_txn::key::user_key(k).ok(),
        })
        .collect()
}

/// One apply batch's transactional commands: they see each other's writes through the
/// overlay (see `cmd/write.rs`).
struct TxnApplier<'a> {
    snap: &'a dyn DynSnapshot,
    overlay: Overlay<'a, dyn DynSnapshot + 'a>,
    region_id: u64,
    /// The region's GC safe point as of the entry being applied (read when first needed;
    /// raised by an admin entry of this batch).
    gc_safe_point: Option<u64>,
}

impl TxnApplier<'_> {
    fn gc_safe_point(&mut self) -> Result<u64, Error> {
        match self.gc_safe_point {
            Some(sp) => Ok(sp),
            None => {
                let sp = read_gc_safe_point(&self.snap, self.region_id)?;
                self.gc_safe_point = Some(sp);
                Ok(sp)
            }
        }
    }
}

impl Applier for TxnApplier<'_> {
    fn apply(
        &mut self,
        wb: &mut dyn DynWriteBatch,
        region: &Region,
        raft_cmd: &RaftCmd,
        index: u64,
        notes: &mut Vec<Note>,
    ) -> Result<Result<Response, Error>, Error> {
        let Some(t) = txn_of(raft_cmd.get_request()) else {
            return Ok(Err(Error::InvalidArgument(
                "not a transactional command".into(),
            )));
        };
        cmd::install_leader_locks(&mut self.overlay, wb, region, raft_cmd.get_leader_locks())?;
        let gc_safe_point = self.gc_safe_point()?;
        let mut resp = Response::new();
        if cmd::is_txn_read(t) {
            // A transactional read that reached the log (the leader serves them by
            // ReadIndex or lease and does not propose them): answered from this point of
            // the log, the same on every replica.
            return Ok(cmd::check_read_keys(t, region)
                .and_then(|()| cmd::read_txn(&self.overlay, region, t, gc_safe_point))
                .map(|r| {
                    resp.set_txn(r);
                    resp
                }));
        }
        let at = cmd::TxnWrite {
            region,
            one_pc_commit_ts: raft_cmd.get_one_pc_commit_ts(),
            async_commit_ts: raft_cmd.get_async_commit_ts(),
            index,
            gc_safe_point,
        };
        let mut released = Vec::new();
        let answer = cmd::apply_txn(&mut self.overlay, wb, &at, t, &mut released)?;
        if !released.is_empty() {
            notes.push(Box::new(Released(released)));
        }
        Ok(answer.map(|r| {
            resp.set_txn(r);
            resp
        }))
    }

    fn apply_admin(
        &mut self,
        wb: &mut dyn DynWriteBatch,
        region: &Region,
        admin: &AdminCmd,
        notes: &mut Vec<Note>,
    ) -> Result<Option<KvResponse>, Error> {
        if !admin.get_leader_locks().is_empty() {
            cmd::install_leader_locks(&mut self.overlay, wb, region, admin.get_leader_locks())?;
            return Ok(Some(KvResponse::new()));
        }
        let safe_point = admin.get_gc_safe_point();
        if safe_point == 0 {
            return Ok(None);
        }
        // Never lowered: the same on every replica, since it reads only the applied state.
        if safe_point > self.gc_safe_point()? {
            write_gc_safe_point(wb, region.get_id(), safe_point);
            self.gc_safe_point = Some(safe_point);
            notes.push(Box::new(SafePointRaised));
        }
        Ok(Some(KvResponse::new()))
    }

    fn on_split(
        &mut self,
        wb: &mut dyn DynWriteBatch,
        _left: &Region,
        right: &Region,
    ) -> Result<(), Error> {
        // Both halves keep the safe point: reads below it stay refused on either side.
        let sp = self.gc_safe_point()?;
        if sp != 0 {
            write_gc_safe_point(wb, right.get_id(), sp);
        }
        Ok(())
    }
}

#[cfg(test)]
mod split_tests {
    use regatta_engine::{keys, Cf, Engine, MemEngine, WriteBatch};
    use regatta_proto::metapb::Region;
    use regatta_raftstore::apply::split_check;

    #[test]
    fn transactional_versions_are_counted_and_the_split_key_is_a_user_key() {
        // Goal: a region holding only MVCC data still splits, at a user key, so that
        // every version and the lock of a key stay on one side. Method: 10 user keys with
        // 3 versions each and a lock on one, no raw data; check with a low key limit.
        let e = MemEngine::new();
        let mut wb = e.write_batch();
        for i in 0..10u8 {
            let key = [b'k', i];
            for ts in 1..=3u64 {
                wb.put(
                    Cf::Write,
                    &regatta_txn::key::version_key(&key, ts * 10),
                    b"w",
                );
            }
        }
        wb.put(Cf::Lock, &regatta_txn::key::lock_key(&[b'k', 4]), b"l");
        e.write(wb, false).expect("write");
        let region = Region::new(); // the whole key space
        let check =
            split_check(&e, &region, u64::MAX, 10, &super::key_spaces(&region)).expect("check");
        assert_eq!(check.keys, 31);
        let key = check.split_key.expect("over the key limit");
        assert!(
            key.starts_with(b"k") && key.len() == 2,
            "a user key: {key:?}"
        );
        // Every record of a user key is on one side of the cut.
        let (lo, _) = keys::txn_data_range(&key, b"");
        for i in 0..10u8 {
            let k = [b'k', i];
            let sides: Vec<bool> = (1..=3u64)
                .map(|ts| regatta_txn::key::version_key(&k, ts * 10) >= lo)
                .chain([regatta_txn::key::lock_key(&k) >= lo])
                .collect();
            assert!(sides.iter().all(|s| *s == sides[0]), "key {k:?} cut apart");
        }
    }
}
