//! Apply: committed log entries -> data writes + one response per command.
//!
//! Deterministic: every replica applies the same entries to the same state and gets the
//! same bytes, including the at-most-once session table (`DedupEntry` per client id, in
//! the raft CF, carried in snapshots), whose expiry uses the leader's clock *as written in
//! the log* (`RaftCmdBatch.propose_time_ms`), never the local clock.
//!
//! Pure over the engine seam: [`apply_entries`] reads through a [`Snapshot`] and writes into
//! a [`WriteBatch`], so the same code runs on RocksDB in a store and on the in-memory engine
//! in its unit tests (`apply_tests.rs`). Within one call, reads see the snapshot overlaid
//! with the writes of the entries before (data and sessions alike, deletions included), so
//! applying entries in one call or one by one gives the same bytes and the same answers.
//!
//! The data, the sessions and the apply state of all entries of one call go in one
//! unsynced batch ([`apply_committed`]): the entries are already durable in the log, and a
//! crash before the batch lands just re-applies them (Raft thesis 3.8: the log is the
//! source of truth).

use crate::coprocessor::{Applier, Coprocessor, Note};
use crate::error::Error;
use protobuf::Message;
use raft::eraftpb::{Entry, EntryType};
use regatta_engine::{keys, Cf, Engine, PeerStorage, RawValue, Snapshot, WriteBatch};
use regatta_engine::{write_apply_state, write_initial_state};
use regatta_proto::kvrpcpb::SplitRegionResponse;
use regatta_proto::kvrpcpb::{
    BatchDeleteResponse, BatchGetResponse, BatchPutResponse, CasResponse, DeleteResponse,
    GetResponse, KvPair, KvResponse, Request, Request_oneof_cmd, Response, ScanResponse,
};
use regatta_proto::metapb::{Peer, Region};
use regatta_proto::raft_serverpb::{AdminCmd, DedupEntry, RaftCmd, RaftCmdBatch, RegionLocalState};
use regatta_proto::region::key_in_range;
use slog::{error, Logger};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

pub use crate::split_check::{split_check, SplitCheck};

/// Sessions are swept when the applied index is a multiple of this.
const SESSION_GC_EVERY: u64 = 256;
/// Most pairs one scan returns.
pub const MAX_SCAN_LIMIT: usize = 10_000;

/// The responses of one applied entry, in command order.
#[derive(Debug)]
pub struct AppliedEntry {
    /// Entry index.
    pub index: u64,
    /// Entry term.
    pub term: u64,
    /// One response per command of the entry (empty for no-op entries; one for an admin
    /// command).
    pub responses: Vec<KvResponse>,
    /// A split this entry applied: the narrowed region and the new one.
    pub split: Option<(Region, Region)>,
    /// What the layer above noted while applying it (see [`crate::coprocessor::Applier`]).
    pub notes: Vec<Note>,
}

/// Whether a request changes data (and so is deduplicated); `cop` judges the commands it
/// claims.
pub fn is_write(req: &Request, cop: &dyn Coprocessor) -> bool {
    if let Some(kind) = cop.kind(req) {
        return kind == crate::coprocessor::Kind::Write;
    }
    matches!(
        &req.cmd,
        Some(Request_oneof_cmd::put(_))
            | Some(Request_oneof_cmd::delete(_))
            | Some(Request_oneof_cmd::cas(_))
            | Some(Request_oneof_cmd::batch_put(_))
            | Some(Request_oneof_cmd::batch_delete(_))
    )
}

/// A replica's at-most-once sessions as its engine holds them (`Some`: the record; `None`:
/// known absent), kept between apply calls so that a write under a session does not read
/// its record back from the engine each time. It must only ever hold what the engine
/// holds: [`apply_committed`] fills and keeps it, and drops it when its write fails; the
/// replica clears it when its data is replaced (a snapshot installed, a seed).
#[derive(Default)]
pub struct SessionCache {
    sessions: HashMap<u64, Option<DedupEntry>>,
}

impl SessionCache {
    /// Sessions held at most; past it the cache starts again empty (it is only a cache).
    const MAX: usize = 4096;
    /// A session whose cached answer is larger (a compare-and-swap answers with the value
    /// it found) is not kept: it is read back from the engine when its client writes
    /// again. Bounds the cache at about `MAX` times this per replica.
    pub const MAX_ANSWER_BYTES: usize = 512;

    /// Forgets everything (the replica's data was replaced).
    pub fn clear(&mut self) {
        self.sessions.clear();
    }
}

/// What apply runs with besides the entries and the state: the same on every replica.
#[derive(Clone, Copy)]
pub struct ApplyEnv<'a> {
    /// Sessions idle longer than this (by the leader's clock as written in the log) expire.
    pub session_ttl_ms: u64,
    /// The layer above, which applies the commands it claims (see [`crate::coprocessor`]).
    pub cop: &'a dyn Coprocessor,
    /// Where corruption is reported.
    pub logger: &'a Logger,
}

/// Applies `entries` (contiguous, committed) to the replica `storage`: runs
/// [`apply_entries`] on a snapshot of its engine, writes the batch (unsynced), then adopts
/// the region a split narrowed and records the applied index. Returns the responses per
/// entry.
pub fn apply_committed<E: Engine>(
    storage: &mut PeerStorage<E>,
    entries: Vec<Entry>,
    env: ApplyEnv,
    cache: &mut SessionCache,
) -> Result<Vec<AppliedEntry>, Error> {
    let Some(last) = entries.last() else {
        return Ok(Vec::new());
    };
    let (last_index, last_term) = (last.index, last.term);
    let engine = storage.engine();
    let (applied_index, _) = storage.applied();
    if entries[0].index != applied_index + 1 {
        // Applying over a hole would diverge from the other replicas.
        return Err(Error::from(regatta_engine::Error::Corrupt {
            what: "committed entries to apply",
            region_id: storage.region().get_id(),
            detail: format!(
                "entries start at index {} but the applied index is {applied_index}",
                entries[0].index
            ),
        }));
    }
    let mut wb = engine.write_batch();
    // Only this region's actor writes its data (but for the GC thread's deletes below
    // the applied GC safe point, which no command at or above it reads: see
    // `gc_worker.rs`), so the live database is as good as a snapshot here, without the
    // DB mutex a snapshot takes.
    // The cache moves into the apply (its overlay of sessions) and back once the batch is
    // written; on any failure it is left empty.
    let mut sessions = std::mem::take(&mut cache.sessions);
    let applied = apply_entries_with(
        &engine.live(),
        &mut wb,
        storage.region(),
        storage.voters(),
        entries,
        env,
        &mut sessions,
    )?;
    engine.write(wb, false)?;
    if sessions.len() <= SessionCache::MAX {
        cache.sessions = sessions;
    }
    if let Some((left, _)) = applied.iter().rev().find_map(|a| a.split.as_ref()) {
        storage.set_region(left.clone());
    }
    storage.set_applied(last_index, last_term);
    Ok(applied)
}

/// Applies `entries` (contiguous, committed) of `region` (with raft voters `voters`): reads
/// through `snap`, which must see everything applied before `entries`, and adds every
/// write — data, sessions, a split's new region, and the apply state of the last entry — to
/// `wb`, which the caller writes in one piece. Returns one [`AppliedEntry`] per entry; the
/// region afterwards is the left side of the last split among them, if any.
///
/// Invalid commands (stale epoch, key outside the region, bad split) answer an error and
/// change nothing, identically on every replica. `Err` is only an engine failure: the
/// batch must then be dropped unwritten.
pub fn apply_entries<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    region: &Region,
    voters: &[u64],
    entries: Vec<Entry>,
    env: ApplyEnv,
) -> Result<Vec<AppliedEntry>, Error> {
    apply_entries_with(snap, wb, region, voters, entries, env, &mut HashMap::new())
}

/// [`apply_entries`] with `sessions`, an overlay of the session records over `snap` (what
/// the engine holds, or this batch wrote); it holds this batch's sessions too afterwards,
/// but for those whose answer is over [`SessionCache::MAX_ANSWER_BYTES`] (read back from
/// the engine when needed: the caller writes the batch before the next call).
pub(crate) fn apply_entries_with<S: Snapshot, W: WriteBatch>(
    snap: &S,
    wb: &mut W,
    region: &Region,
    voters: &[u64],
    entries: Vec<Entry>,
    env: ApplyEnv,
    sessions: &mut HashMap<u64, Option<DedupEntry>>,
) -> Result<Vec<AppliedEntry>, Error> {
    let ApplyEnv {
        session_ttl_ms,
        cop,
        logger,
    } = env;
    let Some(last) = entries.last() else {
        return Ok(Vec::new());
    };
    let (last_index, last_term) = (last.index, last.term);
    let mut ctx = ApplyContext {
        cop,
        snap,
        wb,
        region: Cow::Borrowed(region),
        data: HashMap::new(),
        sessions: std::mem::take(sessions),
        large_sessions: Vec::new(),
        ext: cop.begin_apply(snap, region.get_id()),
        notes: Vec::new(),
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let mut applied = AppliedEntry {
            index: e.index,
            term: e.term,
            responses: Vec::new(),
            split: None,
            notes: Vec::new(),
        };
        if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
            match RaftCmdBatch::parse_from_bytes(&e.data) {
                Ok(mut batch) if batch.has_admin() => {
                    let admin = batch.take_admin();
                    let (resp, split) = ctx.apply_admin(admin, voters)?;
                    applied.responses.push(resp);
                    applied.split = split;
                    applied.notes = std::mem::take(&mut ctx.notes);
                }
                Ok(mut batch) => {
                    let now = batch.get_propose_time_ms();
                    for cmd in batch.take_cmds().into_iter() {
                        applied.responses.push(ctx.apply_cmd(cmd, e.index, now)?);
                    }
                    if e.index.is_multiple_of(SESSION_GC_EVERY) {
                        ctx.gc_sessions(now.saturating_sub(session_ttl_ms))?;
                    }
                    applied.notes = std::mem::take(&mut ctx.notes);
                }
                Err(err) => {
                    // A committed entry that does not decode is corruption (or a bug):
                    // skipping it could diverge from a replica that decodes it, so apply
                    // stops here and the replica stops (see `peer/fence.rs`).
                    error!(logger, "committed entry does not decode";
                        "region_id" => ctx.region.get_id(), "index" => e.index, "term" => e.term,
                        "error" => %err);
                    return Err(Error::from(regatta_engine::Error::Corrupt {
                        what: "committed raft entry",
                        region_id: ctx.region.get_id(),
                        detail: format!("index {} term {}: {err}", e.index, e.term),
                    }));
                }
            }
        }
        out.push(applied);
    }
    write_apply_state(ctx.wb, ctx.region.get_id(), last_index, last_term);
    for client_id in ctx.large_sessions.drain(..) {
        ctx.sessions.remove(&client_id);
    }
    *sessions = std::mem::take(&mut ctx.sessions);
    Ok(out)
}

struct ApplyContext<'a, S: Snapshot, W> {
    /// The layer above, which judges the commands it claims.
    cop: &'a dyn Coprocessor,
    snap: &'a S,
    wb: &'a mut W,
    /// The region as of the entry being applied (a split narrows it mid-batch).
    region: Cow<'a, Region>,
    /// Writes of this batch not yet visible in the snapshot (None = deleted).
    data: HashMap<Vec<u8>, Option<RawValue>>,
    /// Sessions as the engine holds them or this batch wrote (Some) or expired (None):
    /// an overlay over `snap`.
    sessions: HashMap<u64, Option<DedupEntry>>,
    /// Clients whose session in `sessions` has an answer over
    /// [`SessionCache::MAX_ANSWER_BYTES`]: left out of the overlay handed back.
    large_sessions: Vec<u64>,
    /// The layer above's share of this batch: it applies the commands it claims, each
    /// seeing the ones before it.
    ext: Box<dyn Applier + 'a>,
    /// What the layer noted for the entry being applied.
    notes: Vec<Note>,
}

impl<S: Snapshot, W: WriteBatch> ApplyContext<'_, S, W> {
    /// Applies an admin command. A split narrows this region and creates the new one's
    /// initial state and a copy of the at-most-once sessions (a write retried on the new
    /// region after `EpochNotMatch` must still be recognised), all in this batch. Invalid
    /// or stale commands change nothing and answer an error, identically on every replica.
    fn apply_admin(
        &mut self,
        mut admin: AdminCmd,
        voters: &[u64],
    ) -> Result<(KvResponse, Option<(Region, Region)>), Error> {
        let epoch = self.region.get_region_epoch().clone();
        if admin.get_region_epoch() != &epoch {
            let e = Error::EpochNotMatch {
                current_regions: vec![self.region.as_ref().clone()],
            };
            return Ok((e.into_response(), None));
        }
        if !admin.has_split() {
            let region = self.region.as_ref().clone();
            if let Some(resp) =
                self.ext
                    .apply_admin(&mut *self.wb, &region, &admin, &mut self.notes)?
            {
                return Ok((resp, None));
            }
            let e = Error::InvalidArgument("admin command without a command".into());
            return Ok((e.into_response(), None));
        }
        let split = admin.take_split();
        let key = split.get_split_key();
        let r = &self.region;
        let inside = key_in_range(r, key) && key != r.get_start_key();
        if !inside
            || split.get_new_region_id() == 0
            || split.get_new_peer_ids().len() != r.get_peers().len()
        {
            let e = Error::InvalidArgument(format!(
                "bad split of region {} at {key:?}: the key must be inside it (not its start), \
                 with one new peer id per peer",
                r.get_id()
            ));
            return Ok((e.into_response(), None));
        }
        let mut left = self.region.as_ref().clone();
        let mut new_epoch = epoch;
        new_epoch.set_version(new_epoch.get_version() + 1);
        left.set_end_key(key.to_vec());
        left.set_region_epoch(new_epoch.clone());
        let mut right = Region::new();
        right.set_id(split.get_new_region_id());
        right.set_start_key(key.to_vec());
        right.set_end_key(self.region.get_end_key().to_vec());
        right.set_region_epoch(new_epoch);
        for (p, id) in self.region.get_peers().iter().zip(split.get_new_peer_ids()) {
            let mut np = Peer::new();
            np.set_id(*id);
            np.set_store_id(p.get_store_id());
            right.mut_peers().push(np);
        }
        let mut state = RegionLocalState::new();
        state.set_region(left.clone());
        state.set_voters(voters.to_vec());
        self.wb
            .put_msg(Cf::Raft, &keys::region_state_key(left.get_id()), &state);
        write_initial_state(self.wb, &right);
        // What the layer above keeps per region, the new one starts with too.
        self.ext.on_split(&mut *self.wb, &left, &right)?;
        // The sessions as of this entry: the snapshot's, overlaid with this batch's.
        let (lo, hi) = keys::dedup_range(left.get_id());
        let mut sessions: BTreeMap<u64, DedupEntry> = BTreeMap::new();
        self.snap.scan(Cf::Raft, &lo, &hi, |_, v| {
            let s: DedupEntry = regatta_engine::decode_msg(v, "dedup session", left.get_id())?;
            sessions.insert(s.get_client_id(), s);
            Ok(true)
        })?;
        for (cid, s) in &self.sessions {
            match s {
                Some(s) => sessions.insert(*cid, s.clone()),
                None => sessions.remove(cid),
            };
        }
        for (cid, s) in &sessions {
            self.wb
                .put_msg(Cf::Raft, &keys::dedup_key(right.get_id(), *cid), s);
        }
        self.region = Cow::Owned(left.clone());
        let mut resp = SplitRegionResponse::new();
        resp.set_left(left.clone());
        resp.set_right(right.clone());
        let mut response = Response::new();
        response.set_split(resp);
        let mut out = KvResponse::new();
        out.set_response(response);
        Ok((out, Some((left, right))))
    }

    fn read(&self, key: &[u8]) -> Result<Option<RawValue>, Error> {
        match self.data.get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.snap.get_raw(key)?),
        }
    }

    /// The session of `client_id`: from the overlay, else read once from the engine and
    /// kept in the overlay (present or absent).
    fn session(&mut self, client_id: u64) -> Result<Option<DedupEntry>, Error> {
        if let Some(s) = self.sessions.get(&client_id) {
            return Ok(s.clone());
        }
        let rid = self.region.get_id();
        let s: Option<DedupEntry> = self.snap.get_msg(
            Cf::Raft,
            &keys::dedup_key(rid, client_id),
            "dedup session",
            rid,
        )?;
        self.keep_session(client_id, s.clone());
        Ok(s)
    }

    /// Puts `s` in the overlay, noting it if its answer is too large to keep afterwards.
    fn keep_session(&mut self, client_id: u64, s: Option<DedupEntry>) {
        if s.as_ref()
            .is_some_and(|s| s.get_response().len() > SessionCache::MAX_ANSWER_BYTES)
        {
            self.large_sessions.push(client_id);
        }
        self.sessions.insert(client_id, s);
    }

    fn apply_cmd(
        &mut self,
        mut cmd: RaftCmd,
        index: u64,
        now_ms: u64,
    ) -> Result<KvResponse, Error> {
        let epoch = self.region.get_region_epoch();
        if cmd.get_region_epoch().get_version() != epoch.get_version()
            || cmd.get_region_epoch().get_conf_ver() != epoch.get_conf_ver()
        {
            return Ok(Error::EpochNotMatch {
                current_regions: vec![self.region.as_ref().clone()],
            }
            .into_response());
        }
        let (client_id, seq) = (cmd.get_client_id(), cmd.get_seq());
        let claimed = self.cop.kind(cmd.get_request()).is_some();
        let dedup = client_id != 0 && is_write(cmd.get_request(), self.cop);
        if dedup {
            if let Some(s) = self.session(client_id)? {
                if seq == s.get_seq() {
                    return Ok(
                        KvResponse::parse_from_bytes(s.get_response()).unwrap_or_else(|e| {
                            Error::from(regatta_engine::Error::Corrupt {
                                what: "cached session response",
                                region_id: self.region.get_id(),
                                detail: e.to_string(),
                            })
                            .into_response()
                        }),
                    );
                }
                if seq < s.get_seq() {
                    return Ok(Error::StaleSequence {
                        client_id,
                        seq,
                        latest_seq: s.get_seq(),
                    }
                    .into_response());
                }
            }
        }
        let result = if claimed {
            // The layer above applies what it claims (see `coprocessor`).
            self.ext
                .apply(&mut *self.wb, &self.region, &cmd, index, &mut self.notes)?
        } else {
            self.execute(cmd.take_request(), index)
        };
        let resp = match result {
            Ok(r) => {
                let mut resp = KvResponse::new();
                resp.set_response(r);
                resp
            }
            Err(e) => return Ok(e.into_response()),
        };
        if dedup {
            let mut s = DedupEntry::new();
            s.set_client_id(client_id);
            s.set_seq(seq);
            s.set_response(
                resp.write_to_bytes()
                    .expect("encoding an in-memory response cannot fail"),
            );
            s.set_last_active_ms(now_ms);
            self.wb.put_msg(
                Cf::Raft,
                &keys::dedup_key(self.region.get_id(), client_id),
                &s,
            );
            self.keep_session(client_id, Some(s));
        }
        Ok(resp)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Error> {
        if key_in_range(&self.region, key) {
            Ok(())
        } else {
            Err(Error::key_not_in_region(&self.region, key))
        }
    }

    fn put(&mut self, key: &[u8], value: Vec<u8>, index: u64) {
        self.wb.put(
            Cf::Default,
            &keys::raw_data_key(key),
            &regatta_engine::encode_raw_value(index, &value),
        );
        self.data.insert(
            key.to_vec(),
            Some(RawValue {
                version: index,
                value,
            }),
        );
    }

    /// Deletes `key`; whether it had a value.
    fn delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        let existed = self.read(key)?.is_some();
        self.wb.delete(Cf::Default, &keys::raw_data_key(key));
        self.data.insert(key.to_vec(), None);
        Ok(existed)
    }

    fn execute(&mut self, req: Request, index: u64) -> Result<Response, Error> {
        let mut resp = Response::new();
        match req.cmd {
            Some(Request_oneof_cmd::split(_)) => {
                return Err(Error::InvalidArgument(
                    "a split is an admin command, not a data command".into(),
                ));
            }
            Some(Request_oneof_cmd::get(g)) => {
                self.check_key(g.get_key())?;
                resp.set_get(get_response(self.read(g.get_key())?));
            }
            Some(Request_oneof_cmd::put(mut p)) => {
                self.check_key(p.get_key())?;
                let value = p.take_value();
                self.put(p.get_key(), value, index);
                let mut r = regatta_proto::kvrpcpb::PutResponse::new();
                r.set_index(index);
                resp.set_put(r);
            }
            Some(Request_oneof_cmd::delete(d)) => {
                self.check_key(d.get_key())?;
                let existed = self.delete(d.get_key())?;
                let mut r = DeleteResponse::new();
                r.set_existed(existed);
                r.set_index(index);
                resp.set_delete(r);
            }
            Some(Request_oneof_cmd::cas(mut c)) => {
                self.check_key(c.get_key())?;
                let current = self.read(c.get_key())?;
                let ok = match &current {
                    None => c.get_expect_absent(),
                    Some(v) => !c.get_expect_absent() && v.value == c.get_expected(),
                };
                let mut r = CasResponse::new();
                r.set_succeeded(ok);
                r.set_index(index);
                if let Some(v) = current {
                    r.set_found(true);
                    r.set_previous(v.value);
                }
                if ok {
                    let value = c.take_new_value();
                    self.put(c.get_key(), value, index);
                }
                resp.set_cas(r);
            }
            Some(Request_oneof_cmd::batch_get(b)) => {
                let mut pairs = Vec::with_capacity(b.get_keys().len());
                for k in b.get_keys() {
                    self.check_key(k)?;
                    pairs.push((k.clone(), self.read(k)?));
                }
                resp.set_batch_get(batch_get_response(pairs));
            }
            Some(Request_oneof_cmd::batch_put(mut b)) => {
                for p in b.get_pairs() {
                    self.check_key(p.get_key())?;
                }
                for mut p in b.take_pairs().into_iter() {
                    let value = p.take_value();
                    self.put(p.get_key(), value, index);
                }
                let mut r = BatchPutResponse::new();
                r.set_index(index);
                resp.set_batch_put(r);
            }
            Some(Request_oneof_cmd::batch_delete(b)) => {
                for k in b.get_keys() {
                    self.check_key(k)?;
                }
                let mut deleted = 0u32;
                for k in b.get_keys() {
                    deleted += u32::from(self.delete(k)?);
                }
                let mut r = BatchDeleteResponse::new();
                r.set_index(index);
                r.set_deleted(deleted);
                resp.set_batch_delete(r);
            }
            Some(Request_oneof_cmd::scan(s)) => {
                let pairs = scan_region(
                    self.snap,
                    &self.region,
                    s.get_start_key(),
                    s.get_end_key(),
                    s.get_limit() as usize,
                    Some(&self.data),
                )?;
                resp.set_scan(pairs);
            }
            None => return Err(Error::InvalidArgument("empty request".into())),
            // A command of the layer above when there is none (see `coprocessor`).
            Some(_) => {
                return Err(Error::InvalidArgument(
                    "no layer above the raftstore serves this command".into(),
                ))
            }
        }
        Ok(resp)
    }

    /// Expires the sessions last active before `older_than_ms`, judged on the sessions as
    /// of this entry (the snapshot's overlaid with this batch's), so the outcome does not
    /// depend on how entries were grouped into apply calls.
    fn gc_sessions(&mut self, older_than_ms: u64) -> Result<(), Error> {
        if older_than_ms == 0 {
            return Ok(());
        }
        let rid = self.region.get_id();
        let (lo, hi) = keys::dedup_range(rid);
        let mut stale = Vec::new();
        let overlay = &self.sessions;
        self.snap.scan(Cf::Raft, &lo, &hi, |_, v| {
            let s: DedupEntry = regatta_engine::decode_msg(v, "dedup session", rid)?;
            let cid = s.get_client_id();
            if !overlay.contains_key(&cid) && s.get_last_active_ms() < older_than_ms {
                stale.push(cid);
            }
            Ok(true)
        })?;
        for (cid, s) in overlay {
            if s.as_ref()
                .is_some_and(|s| s.get_last_active_ms() < older_than_ms)
            {
                stale.push(*cid);
            }
        }
        for cid in stale {
            self.wb.delete(Cf::Raft, &keys::dedup_key(rid, cid));
            self.sessions.insert(cid, None);
        }
        Ok(())
    }
}

/// The response of a point read.
pub fn get_response(v: Option<RawValue>) -> GetResponse {
    let mut r = GetResponse::new();
    if let Some(v) = v {
        r.set_found(true);
        r.set_value(v.value);
        r.set_version(v.version);
    }
    r
}

/// The answer to a batch get: the pairs of the keys that have a value, in `reads` order.
pub fn batch_get_response(reads: Vec<(Vec<u8>, Option<RawValue>)>) -> BatchGetResponse {
    let mut r = BatchGetResponse::new();
    for (key, v) in reads {
        if let Some(v) = v {
            let mut p = KvPair::new();
            p.set_key(key);
            p.set_value(v.value);
            p.set_version(v.version);
            r.mut_pairs().push(p);
        }
    }
    r
}

/// Scans `[start, end)` clipped to `region`, at most `limit` (0 = [`MAX_SCAN_LIMIT`]) pairs,
/// seeing `overlay` (unwritten writes of the current apply batch) over the engine.
pub fn scan_region<S: Snapshot>(
    snap: &S,
    region: &Region,
    start: &[u8],
    end: &[u8],
    limit: usize,
    overlay: Option<&HashMap<Vec<u8>, Option<RawValue>>>,
) -> Result<ScanResponse, Error> {
    let limit = if limit == 0 {
        MAX_SCAN_LIMIT
    } else {
        limit.min(MAX_SCAN_LIMIT)
    };
    let (lo, hi) = regatta_proto::region::clip_to_region(region, start, end);
    let in_range = |k: &[u8]| regatta_proto::region::key_in_bounds(&lo, &hi, k);
    let extra = overlay.map_or(0, |o| o.len());
    let mut merged: BTreeMap<Vec<u8>, RawValue> = snap
        .scan_raw(&lo, &hi, limit + extra)?
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect();
    if let Some(o) = overlay {
        for (k, v) in o.iter().filter(|(k, _)| in_range(k)) {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
    }
    let mut resp = ScanResponse::new();
    let full = merged.len() >= limit;
    for (k, v) in merged.into_iter().take(limit) {
        let mut p = KvPair::new();
        p.set_key(k);
        p.set_value(v.value);
        p.set_version(v.version);
        resp.mut_pairs().push(p);
    }
    // Where the next scan must resume: after the last pair when the limit cut it short,
    // else the end of what this region covers of the request (empty: unbounded).
    let resume = match resp.get_pairs().last() {
        Some(last) if full => {
            let mut k = last.get_key().to_vec();
            k.push(0);
            k
        }
        _ => hi,
    };
    resp.set_scanned_end(resume);
    Ok(resp)
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
