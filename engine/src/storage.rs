//! [`PeerStorage`]: the raft log and raft states of one region replica, implementing
//! `raft::Storage` on any [`Engine`] (the store's [`RocksEngine`] by default; the
//! in-memory twin in tests and simulations). One suite (`storage_tests.rs`) runs on both.
//!
//! Writes are *staged*: [`PeerStorage::append`] and [`PeerStorage::set_hard_state`] update the
//! in-memory view at once (raft-rs's async-ready contract requires appended entries to be
//! readable through `Storage` before `advance_append_async`) and describe the durable write
//! in a [`LogWrite`], which the store's LogWriter later puts into one synced batch.
//!
//! Invariants:
//! - the entry cache holds a contiguous suffix `[cache_first, last_index]` of the log;
//!   entries below it are durable in RocksDB, because only entries at or below
//!   `persisted_index` are evicted;
//! - `truncated.index <= applied_index <= commit <= last_index` (a snapshot sets all four);
//! - `term(truncated.index)` is always answerable (raft's matching needs it).

use crate::error::{Error, Result};
use crate::keys;
use crate::rocks::{RocksEngine, RocksWriteBatch};
use crate::snapshot;
use crate::traits::{decode_msg, Cf, Engine, Snapshot as _, WriteBatch};
use protobuf::Message;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use regatta_proto::metapb::Region;
use regatta_proto::raft_serverpb::{
    PeerState, RaftApplyState, RaftLocalState, RaftTruncatedState, RegionGcState, RegionLocalState,
};
use std::collections::VecDeque;

/// Index and term at which a freshly bootstrapped region's log starts (as TiKV does), so
/// that all initial replicas agree on a non-empty, identical prefix without a snapshot.
pub const RAFT_INIT_LOG_INDEX: u64 = 5;
/// Term of [`RAFT_INIT_LOG_INDEX`].
pub const RAFT_INIT_LOG_TERM: u64 = 5;

/// The durable part of a Ready for one region, built by the peer, written by the LogWriter.
/// `W` is the engine's write batch (of the `extra` part).
pub struct LogWrite<W = RocksWriteBatch> {
    /// Region the write belongs to.
    pub region_id: u64,
    /// Entries to put (already in the cache).
    pub entries: Vec<Entry>,
    /// Log entries `[from, to)` to delete (overwritten suffix after a conflict).
    pub delete_entries: Option<(u64, u64)>,
    /// The raft local state to put, when it changed.
    pub raft_state: Option<RaftLocalState>,
    /// A self-contained batch written (unsynced) before the group's synced batch:
    /// snapshot installs and log compaction.
    pub extra: Option<W>,
    /// Whether `raft_state` changed in term or vote (which must be durable before any
    /// message that depends on them is sent). A change of the commit index alone is not
    /// staged at all (see [`PeerStorage::set_hard_state`]): on restart the commit index is
    /// raised to the applied index, and raft only needs it to be no more than what a
    /// quorum has.
    pub state_must_sync: bool,
}

impl<W> Default for LogWrite<W> {
    fn default() -> Self {
        LogWrite {
            region_id: 0,
            entries: Vec::new(),
            delete_entries: None,
            raft_state: None,
            extra: None,
            state_must_sync: false,
        }
    }
}

impl<W> LogWrite<W> {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.delete_entries.is_none()
            && self.raft_state.is_none()
            && self.extra.is_none()
    }

    /// Whether this write must be synced before its Ready counts as persisted: it carries
    /// entries, a log truncation, a snapshot or compaction batch, or a term/vote change.
    pub fn needs_sync(&self) -> bool {
        !self.entries.is_empty()
            || self.delete_entries.is_some()
            || self.extra.is_some()
            || self.state_must_sync
    }

    /// Adds the entry/state part of this write to `wb` (the LogWriter's group batch).
    pub fn write_into<B: WriteBatch>(&self, wb: &mut B) {
        if let Some((from, to)) = self.delete_entries {
            let (lo, hi) = keys::entry_range(self.region_id, from, to);
            wb.delete_range(Cf::Raft, &lo, &hi);
        }
        for e in &self.entries {
            wb.put_msg(Cf::Raft, &keys::entry_key(self.region_id, e.index), e);
        }
        if let Some(state) = &self.raft_state {
            wb.put_msg(Cf::Raft, &keys::raft_state_key(self.region_id), state);
        }
    }
}

/// Raft log storage of one region replica, on engine `E`.
pub struct PeerStorage<E: Engine = RocksEngine> {
    engine: E,
    region: Region,
    voters: Vec<u64>,
    raft_state: RaftLocalState,
    apply_state: RaftApplyState,
    truncated: RaftTruncatedState,
    last_term: u64,
    cache: VecDeque<Entry>,
    persisted_index: u64,
    cache_limit: usize,
}

impl<E: Engine> std::fmt::Debug for PeerStorage<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerStorage")
            .field("region_id", &self.region.get_id())
            .field("last_index", &self.raft_state.get_last_index())
            .field("applied", &self.apply_state.get_applied_index())
            .field("truncated", &self.truncated.get_index())
            .finish()
    }
}

/// A region at its first epoch (conf version 1, version 1) over the whole key space, with
/// a voter `(peer id, store id)` for each of `peers`: what a cluster bootstraps from.
pub fn initial_region(region_id: u64, peers: impl IntoIterator<Item = (u64, u64)>) -> Region {
    let mut region = Region::new();
    region.set_id(region_id);
    let epoch = region.mut_region_epoch();
    epoch.set_conf_ver(1);
    epoch.set_version(1);
    for (peer_id, store_id) in peers {
        let mut p = regatta_proto::metapb::Peer::new();
        p.set_id(peer_id);
        p.set_store_id(store_id);
        region.mut_peers().push(p);
    }
    region
}

/// Writes the initial states of `region` with voters = its peers, unless the region already
/// has a state on this store. Returns whether it wrote. The write is synced.
pub fn bootstrap_region<E: Engine>(engine: &E, region: &Region) -> Result<bool> {
    let rid = region.get_id();
    if engine
        .snapshot()
        .get(Cf::Raft, &keys::region_state_key(rid))?
        .is_some()
    {
        return Ok(false);
    }
    let mut wb = engine.write_batch();
    write_initial_state(&mut wb, region);
    engine.write(wb, true)?;
    Ok(true)
}

/// Adds the initial raft states of `region` (voters = its peers, log at
/// [`RAFT_INIT_LOG_INDEX`]) to `wb`: what bootstrap writes, and what a split writes for the
/// new region in the same batch as the split itself.
pub fn write_initial_state<W: WriteBatch>(wb: &mut W, region: &Region) {
    let rid = region.get_id();
    let mut state = RegionLocalState::new();
    state.set_region(region.clone());
    state.set_voters(region.get_peers().iter().map(|p| p.get_id()).collect());
    wb.put_msg(Cf::Raft, &keys::region_state_key(rid), &state);
    let mut rs = RaftLocalState::new();
    rs.set_term(RAFT_INIT_LOG_TERM);
    rs.set_commit(RAFT_INIT_LOG_INDEX);
    rs.set_last_index(RAFT_INIT_LOG_INDEX);
    wb.put_msg(Cf::Raft, &keys::raft_state_key(rid), &rs);
    let mut apply = RaftApplyState::new();
    apply.set_applied_index(RAFT_INIT_LOG_INDEX);
    apply.set_applied_term(RAFT_INIT_LOG_TERM);
    wb.put_msg(Cf::Raft, &keys::apply_state_key(rid), &apply);
    let mut tr = RaftTruncatedState::new();
    tr.set_index(RAFT_INIT_LOG_INDEX);
    tr.set_term(RAFT_INIT_LOG_TERM);
    wb.put_msg(Cf::Raft, &keys::truncated_state_key(rid), &tr);
}

/// Adds the apply state `(index, term)` of `region_id` to `wb`: the batch that carries the
/// data of the entries through `index`.
pub fn write_apply_state<W: WriteBatch>(wb: &mut W, region_id: u64, index: u64, term: u64) {
    let mut st = RaftApplyState::new();
    st.set_applied_index(index);
    st.set_applied_term(term);
    wb.put_msg(Cf::Raft, &keys::apply_state_key(region_id), &st);
}

/// Adds the GC safe point `safe_point` of `region_id` to `wb` (an apply batch: the admin
/// entry that raised it, or the split that copies it to the new region).
pub fn write_gc_safe_point<W: WriteBatch + ?Sized>(wb: &mut W, region_id: u64, safe_point: u64) {
    let mut st = RegionGcState::new();
    st.set_safe_point(safe_point);
    wb.put_msg(Cf::Raft, &keys::gc_state_key(region_id), &st);
}

/// The GC safe point of `region_id` as `snap` sees it (0: none recorded).
pub fn read_gc_safe_point<S: crate::traits::Snapshot>(snap: &S, region_id: u64) -> Result<u64> {
    let st: Option<RegionGcState> = snap.get_msg(
        Cf::Raft,
        &keys::gc_state_key(region_id),
        "gc state",
        region_id,
    )?;
    Ok(st.map_or(0, |s| s.get_safe_point()))
}

impl<E: Engine> PeerStorage<E> {
    /// Loads the storage of `region_id`; `None` if the region has no state here or is a
    /// tombstone.
    pub fn open(engine: E, region_id: u64, cache_limit: usize) -> Result<Option<Self>> {
        let snap = engine.snapshot();
        let Some(state): Option<RegionLocalState> = snap.get_msg(
            Cf::Raft,
            &keys::region_state_key(region_id),
            "region state",
            region_id,
        )?
        else {
            return Ok(None);
        };
        if state.get_state() == PeerState::TOMBSTONE {
            return Ok(None);
        }
        let missing = |what: &'static str| Error::Corrupt {
            what,
            region_id,
            detail: "missing".into(),
        };
        let raft_state: RaftLocalState = snap
            .get_msg(
                Cf::Raft,
                &keys::raft_state_key(region_id),
                "raft state",
                region_id,
            )?
            .ok_or_else(|| missing("raft state"))?;
        let apply_state: RaftApplyState = snap
            .get_msg(
                Cf::Raft,
                &keys::apply_state_key(region_id),
                "apply state",
                region_id,
            )?
            .ok_or_else(|| missing("apply state"))?;
        let truncated: RaftTruncatedState = snap
            .get_msg(
                Cf::Raft,
                &keys::truncated_state_key(region_id),
                "truncated state",
                region_id,
            )?
            .ok_or_else(|| missing("truncated state"))?;
        drop(snap);
        let mut s = PeerStorage {
            engine,
            voters: state.get_voters().to_vec(),
            region: state.get_region().clone(),
            raft_state,
            apply_state,
            truncated,
            last_term: 0,
            cache: VecDeque::new(),
            persisted_index: 0,
            cache_limit,
        };
        // A commit-index change alone is not synced, so the stored commit may lag what was
        // applied; applied entries were committed, so raise it (TiKV does the same).
        let applied = s.apply_state.get_applied_index();
        if s.raft_state.get_commit() < applied {
            s.raft_state.set_commit(applied);
        }
        s.persisted_index = s.raft_state.get_last_index();
        s.last_term = s.stored_term(s.raft_state.get_last_index())?;
        s.check_invariants()?;
        Ok(Some(s))
    }

    /// The storage of a replica that knows nothing of its region yet but its id: no range,
    /// no peers, no log, no state on disk (TiKV's uninitialized peer). A store makes one
    /// when another store's leader of a region it does not host reaches it (it missed the
    /// split that created the region); a snapshot from that leader initializes it. Until
    /// then no region state is written (raft-rs's term changes are, as its raft state), so
    /// a restart forgets it and the leader's next message makes it again. The store makes
    /// one only when no state of the region is on disk (a split applied here wrote one).
    pub fn uninitialized(engine: E, region_id: u64, cache_limit: usize) -> Self {
        let mut region = Region::new();
        region.set_id(region_id);
        PeerStorage {
            engine,
            region,
            voters: Vec::new(),
            raft_state: RaftLocalState::new(),
            apply_state: RaftApplyState::new(),
            truncated: RaftTruncatedState::new(),
            last_term: 0,
            cache: VecDeque::new(),
            persisted_index: 0,
            cache_limit,
        }
    }

    /// This replica with its log and state machine forgotten, for a seed snapshot to
    /// replace them (see `Peer::seed` in `regatta-raftstore`): the same region, voters, term
    /// and vote, but no entries and nothing committed or applied. Nothing is written here:
    /// the snapshot's install write replaces the log, the states and the data in one go,
    /// so a crash before it lands restarts the replica exactly as it was.
    ///
    /// Raft never rewinds committed entries; this is only sound for a replica whose log no
    /// other replica holds (a region's only voter) and whose entries no client has seen
    /// (a fresh node's start-up entries), which the caller checks.
    pub fn rewound(self) -> Self {
        let mut raft_state = RaftLocalState::new();
        raft_state.set_term(self.raft_state.get_term());
        raft_state.set_vote(self.raft_state.get_vote());
        PeerStorage {
            raft_state,
            apply_state: RaftApplyState::new(),
            truncated: RaftTruncatedState::new(),
            last_term: 0,
            cache: VecDeque::new(),
            persisted_index: 0,
            ..self
        }
    }

    /// Whether the replica knows its region (its range and peers): false only for an
    /// [`uninitialized`](Self::uninitialized) replica still waiting for its first snapshot.
    pub fn is_initialized(&self) -> bool {
        !self.region.get_peers().is_empty()
    }

    fn check_invariants(&self) -> Result<()> {
        let (tr, ap) = (
            self.truncated.get_index(),
            self.apply_state.get_applied_index(),
        );
        let (commit, last) = (
            self.raft_state.get_commit(),
            self.raft_state.get_last_index(),
        );
        // `open` has raised a lagging commit to the applied index, so what can fail here is
        // a log that lacks committed or applied entries (`commit > last`) or a compaction
        // past what was applied.
        if !(tr <= ap && ap <= commit && commit <= last) {
            return Err(Error::Corrupt {
                what: "raft states",
                region_id: self.region.get_id(),
                detail: format!(
                    "truncated {tr}, applied {ap}, commit {commit}, last {last} out of order"
                ),
            });
        }
        Ok(())
    }

    /// The region as this replica knows it.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The region's voters (raft peer ids).
    pub fn voters(&self) -> &[u64] {
        &self.voters
    }

    /// The engine.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// Applied index and term.
    pub fn applied(&self) -> (u64, u64) {
        (
            self.apply_state.get_applied_index(),
            self.apply_state.get_applied_term(),
        )
    }

    /// Records that the entries through `index` (of `term`) are applied. The caller wrote
    /// the apply state in the same batch as the data.
    pub fn set_applied(&mut self, index: u64, term: u64) {
        assert!(
            index >= self.apply_state.get_applied_index(),
            "region {} applied index going backwards: {} -> {}",
            self.region.get_id(),
            self.apply_state.get_applied_index(),
            index
        );
        self.apply_state.set_applied_index(index);
        self.apply_state.set_applied_term(term);
        self.evict_cache();
    }

    /// Adds the apply state `(index, term)` to an apply batch.
    pub fn write_apply_state<W: WriteBatch>(&self, wb: &mut W, index: u64, term: u64) {
        write_apply_state(wb, self.region.get_id(), index, term);
    }

    /// The region's applied GC safe point as written in the engine (0: none yet). Apply
    /// (the transactional layer's admin command) and snapshots write it; it is read here,
    /// not cached, so it is never stale.
    pub fn gc_safe_point(&self) -> Result<u64> {
        read_gc_safe_point(&self.engine.snapshot(), self.region.get_id())
    }

    /// Adopts `region` (a split narrowed it; the caller wrote its state in the apply batch).
    pub fn set_region(&mut self, region: Region) {
        self.region = region;
    }

    /// The index through which the log is compacted.
    pub fn truncated_index(&self) -> u64 {
        self.truncated.get_index()
    }

    /// The last log index (durable or staged).
    pub fn last_index_now(&self) -> u64 {
        self.raft_state.get_last_index()
    }

    /// The commit index as last staged.
    pub fn commit_index(&self) -> u64 {
        self.raft_state.get_commit()
    }

    /// Stages `entries` (contiguous, from raft's Ready) into `w`, overwriting any conflicting
    /// suffix. The cache is updated now, so raft can read them before they are durable.
    pub fn append(&mut self, entries: Vec<Entry>, w: &mut LogWrite<E::WriteBatch>) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let (first_idx, last_idx, last_term) = (first.index, last.index, last.term);
        assert!(
            first_idx > self.truncated.get_index(),
            "region {} appending entry {} at or below truncated index {}",
            self.region.get_id(),
            first_idx,
            self.truncated.get_index()
        );
        let old_last = self.raft_state.get_last_index();
        assert!(
            first_idx <= old_last + 1,
            "region {} appending entry {} leaves a gap after last index {}",
            self.region.get_id(),
            first_idx,
            old_last
        );
        // Drop the overwritten suffix from the cache.
        match self.cache.front().map(|e| e.index) {
            Some(front) if first_idx <= front => self.cache.clear(),
            Some(front) => self.cache.truncate((first_idx - front) as usize),
            None => {}
        }
        if old_last > last_idx {
            w.delete_entries = Some((last_idx + 1, old_last + 1));
        }
        if first_idx <= self.persisted_index {
            self.persisted_index = first_idx - 1;
        }
        self.cache.extend(entries.iter().cloned());
        w.entries.extend(entries);
        self.raft_state.set_last_index(last_idx);
        self.last_term = last_term;
        w.raft_state = Some(self.raft_state.clone());
    }

    /// Takes a new HardState: readable at once, and staged into `w` when its term or vote
    /// changed (which must be synced before any message that depends on them is sent).
    ///
    /// A change of the commit index alone is not staged: it rides along with the
    /// replica's next log write (every staged raft state is the whole current one). The
    /// commit index on disk may lag, which is safe: raft only needs it to be no more than
    /// what a quorum holds, and recovery raises it to the applied index. Staging it would
    /// cost a LogWriter round trip per commit on every replica, for nothing.
    pub fn set_hard_state(&mut self, hs: &HardState, w: &mut LogWrite<E::WriteBatch>) {
        let st = &self.raft_state;
        let must_sync = st.get_term() != hs.term || st.get_vote() != hs.vote;
        self.raft_state.set_term(hs.term);
        self.raft_state.set_vote(hs.vote);
        self.raft_state.set_commit(hs.commit);
        if must_sync {
            w.state_must_sync = true;
            w.raft_state = Some(self.raft_state.clone());
        } else if w.raft_state.is_some() {
            // Already staged by this Ready (its entries): keep the staged copy current.
            w.raft_state = Some(self.raft_state.clone());
        }
    }

    /// Records that the log through `index` is durable (the LogWriter synced it).
    pub fn on_persisted(&mut self, index: u64) {
        self.persisted_index = self
            .persisted_index
            .max(index.min(self.raft_state.get_last_index()));
        self.evict_cache();
    }

    fn evict_cache(&mut self) {
        let keep_from = self
            .persisted_index
            .min(self.apply_state.get_applied_index());
        while self.cache.len() > self.cache_limit {
            match self.cache.front() {
                Some(e) if e.index <= keep_from => {
                    self.cache.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Stages a snapshot received from the leader: the returned write replaces the region's
    /// data, sessions, apply/truncated states and log. The in-memory view switches now.
    pub fn apply_snapshot(
        &mut self,
        snap: &Snapshot,
        w: &mut LogWrite<E::WriteBatch>,
    ) -> Result<()> {
        let rid = self.region.get_id();
        let decoded = snapshot::decode(rid, snap)?;
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        let mut wb = self.engine.write_batch();
        // Only the new range is cleared. Where the old range was wider, the rest belongs to
        // regions split off meanwhile, whose replicas on this store may already hold newer
        // data (installed from their own snapshots). Leftovers there are never read: every
        // range a replica comes to own is either handed over by a split (then the data is
        // current) or cleared by its own snapshot first.
        for cf in Cf::DATA {
            for (lo, hi) in snapshot::region_data_ranges(&decoded.region) {
                wb.delete_range(cf, &lo, &hi);
            }
        }
        for (cf, kvs) in &decoded.cfs {
            for kv in kvs {
                wb.put(*cf, kv.get_key(), kv.get_value());
            }
        }
        let (lo, hi) = keys::dedup_range(rid);
        wb.delete_range(Cf::Raft, &lo, &hi);
        for s in &decoded.sessions {
            wb.put_msg(Cf::Raft, &keys::dedup_key(rid, s.get_client_id()), s);
        }
        // The snapshot's safe point is at least this replica's: it was taken at a later
        // index, and the safe point only rises along the log.
        let gc_safe_point = decoded.gc_safe_point.max(self.gc_safe_point()?);
        write_gc_safe_point(&mut wb, rid, gc_safe_point);
        let (lo, hi) = keys::entry_range(rid, 0, u64::MAX);
        wb.delete_range(Cf::Raft, &lo, &hi);
        self.write_apply_state(&mut wb, index, term);
        let mut tr = RaftTruncatedState::new();
        tr.set_index(index);
        tr.set_term(term);
        wb.put_msg(Cf::Raft, &keys::truncated_state_key(rid), &tr);
        let mut state = RegionLocalState::new();
        state.set_region(decoded.region.clone());
        state.set_voters(meta.get_conf_state().voters.clone());
        wb.put_msg(Cf::Raft, &keys::region_state_key(rid), &state);
        self.raft_state.set_last_index(index);
        self.raft_state
            .set_commit(self.raft_state.get_commit().max(index));
        wb.put_msg(Cf::Raft, &keys::raft_state_key(rid), &self.raft_state);

        self.region = decoded.region;
        self.voters = meta.get_conf_state().voters.clone();
        self.apply_state = decoded.apply_state;
        self.truncated = tr;
        self.last_term = term;
        self.cache.clear();
        self.persisted_index = index;
        w.raft_state = Some(self.raft_state.clone());
        w.extra = Some(wb);
        Ok(())
    }

    /// Compacts the log through `index` (at most the applied index). Returns the write to
    /// hand to the LogWriter, or `None` when there is nothing to compact.
    pub fn compact_to(&mut self, index: u64) -> Result<Option<E::WriteBatch>> {
        let index = index.min(self.apply_state.get_applied_index());
        if index <= self.truncated.get_index() {
            return Ok(None);
        }
        let term = self.stored_term(index)?;
        let rid = self.region.get_id();
        let mut wb = self.engine.write_batch();
        let (lo, hi) = keys::entry_range(rid, self.truncated.get_index() + 1, index + 1);
        wb.delete_range(Cf::Raft, &lo, &hi);
        let mut tr = RaftTruncatedState::new();
        tr.set_index(index);
        tr.set_term(term);
        wb.put_msg(Cf::Raft, &keys::truncated_state_key(rid), &tr);
        self.truncated = tr;
        while self.cache.front().is_some_and(|e| e.index <= index) {
            self.cache.pop_front();
        }
        Ok(Some(wb))
    }

    /// Term of entry `idx`, for indices in `[truncated, last]`.
    fn stored_term(&self, idx: u64) -> Result<u64> {
        if idx == self.truncated.get_index() {
            return Ok(self.truncated.get_term());
        }
        if let Some(front) = self.cache.front() {
            if idx >= front.index {
                if let Some(e) = self.cache.get((idx - front.index) as usize) {
                    return Ok(e.term);
                }
            }
        }
        let rid = self.region.get_id();
        let e: Entry = self
            .engine
            .snapshot()
            .get_msg(Cf::Raft, &keys::entry_key(rid, idx), "log entry", rid)?
            .ok_or_else(|| Error::Corrupt {
                what: "log entry",
                region_id: rid,
                detail: format!("entry {idx} missing"),
            })?;
        Ok(e.term)
    }

    fn read_entries(
        &self,
        low: u64,
        high: u64,
        max_size: u64,
        out: &mut Vec<Entry>,
    ) -> Result<bool> {
        // Returns false when the size limit stopped the read.
        let rid = self.region.get_id();
        let (lo, hi) = keys::entry_range(rid, low, high);
        let mut size = out.iter().map(|e| e.compute_size() as u64).sum::<u64>();
        let mut next = low;
        let mut complete = true;
        self.engine.snapshot().scan(Cf::Raft, &lo, &hi, |_, v| {
            let e: Entry = decode_msg(v, "log entry", rid)?;
            if e.index != next {
                return Err(Error::Corrupt {
                    what: "log entry",
                    region_id: rid,
                    detail: format!("expected entry {next}, found {}", e.index),
                });
            }
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max_size {
                complete = false;
                return Ok(false);
            }
            out.push(e);
            next += 1;
            Ok(true)
        })?;
        if complete && next != high {
            return Err(Error::Corrupt {
                what: "log",
                region_id: rid,
                detail: format!("entries [{next}, {high}) missing"),
            });
        }
        Ok(complete)
    }
}

fn to_raft_err(e: Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl<E: Engine> raft::Storage for PeerStorage<E> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let hs = HardState {
            term: self.raft_state.get_term(),
            vote: self.raft_state.get_vote(),
            commit: self.raft_state.get_commit(),
            ..Default::default()
        };
        let cs = ConfState {
            voters: self.voters.clone(),
            ..Default::default()
        };
        Ok(RaftState::new(hs, cs))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        if low <= self.truncated.get_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.raft_state.get_last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let cache_front = self.cache.front().map_or(high, |e| e.index).max(low);
        if low < cache_front {
            let complete = self
                .read_entries(low, cache_front.min(high), max_size, &mut out)
                .map_err(to_raft_err)?;
            if !complete {
                return Ok(out);
            }
        }
        if cache_front < high {
            let front = self.cache.front().map_or(0, |e| e.index);
            let mut size = out.iter().map(|e| e.compute_size() as u64).sum::<u64>();
            for i in cache_front..high {
                let e = &self.cache[(i - front) as usize];
                size += u64::from(e.compute_size());
                if !out.is_empty() && size > max_size {
                    break;
                }
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.truncated.get_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.raft_state.get_last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx == self.raft_state.get_last_index() {
            return Ok(self.last_term);
        }
        self.stored_term(idx).map_err(to_raft_err)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.get_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.raft_state.get_last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let snap = snapshot::generate(&self.engine, self.region.get_id()).map_err(to_raft_err)?;
        if snap.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(snap)
    }
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
