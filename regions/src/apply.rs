//! Apply: committed log entries -> data writes + one response per command.
//!
//! Deterministic: every replica applies the same entries to the same state and gets the
//! same bytes, including the at-most-once session table (`DedupEntry` per client id, in
//! the raft CF, carried in snapshots), whose expiry uses the leader's clock *as written in
//! the log* (`RaftCmdBatch.propose_time_ms`), never the local clock.
//!
//! The data, the sessions and the apply state of all entries of one call go in one
//! unsynced batch: the entries are already durable in the log, and a crash before the
//! batch lands just re-applies them (Raft thesis 3.8: the log is the source of truth).

use crate::error::Error;
use protobuf::Message;
use raft::eraftpb::{Entry, EntryType};
use regatta_engine::write_initial_state;
use regatta_engine::{keys, Cf, Engine, PeerStorage, RawValue, WriteBatch};
use regatta_proto::kvrpcpb::SplitRegionResponse;
use regatta_proto::kvrpcpb::{
    BatchDeleteResponse, BatchGetResponse, BatchPutResponse, CasResponse, DeleteResponse,
    GetResponse, KvPair, KvResponse, Request, Request_oneof_cmd, Response, ScanResponse,
};
use regatta_proto::metapb::{Peer, Region};
use regatta_proto::raft_serverpb::{AdminCmd, DedupEntry, RaftCmd, RaftCmdBatch, RegionLocalState};
use slog::{error, Logger};
use std::collections::{BTreeMap, HashMap};

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
}

/// Whether a request changes data (and so is deduplicated).
pub fn is_write(req: &Request) -> bool {
    matches!(
        req.cmd,
        Some(Request_oneof_cmd::put(_))
            | Some(Request_oneof_cmd::delete(_))
            | Some(Request_oneof_cmd::cas(_))
            | Some(Request_oneof_cmd::batch_put(_))
            | Some(Request_oneof_cmd::batch_delete(_))
    )
}

/// Whether `key` is inside `region`'s range.
pub fn key_in_region(key: &[u8], region: &Region) -> bool {
    key >= region.get_start_key() && (region.get_end_key().is_empty() || key < region.get_end_key())
}

/// Applies `entries` (contiguous, committed) to `storage`'s region and records the new
/// apply state. Returns the responses per entry.
pub fn apply_entries(
    storage: &mut PeerStorage,
    entries: Vec<Entry>,
    session_ttl_ms: u64,
    logger: &Logger,
) -> Result<Vec<AppliedEntry>, Error> {
    let Some(last) = entries.last() else {
        return Ok(Vec::new());
    };
    let (last_index, last_term) = (last.index, last.term);
    let engine = storage.engine().clone();
    let region = storage.region().clone();
    let voters = storage.voters().to_vec();
    let mut ctx = ApplyContext {
        engine: &engine,
        region,
        wb: engine.batch(),
        data: HashMap::new(),
        sessions: HashMap::new(),
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let mut applied = AppliedEntry {
            index: e.index,
            term: e.term,
            responses: Vec::new(),
            split: None,
        };
        if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
            match RaftCmdBatch::parse_from_bytes(&e.data) {
                Ok(mut batch) if batch.has_admin() => {
                    let admin = batch.take_admin();
                    let (resp, split) = ctx.apply_admin(admin, &voters)?;
                    applied.responses.push(resp);
                    applied.split = split;
                }
                Ok(mut batch) => {
                    let now = batch.get_propose_time_ms();
                    for cmd in batch.take_cmds().into_iter() {
                        applied.responses.push(ctx.apply_cmd(cmd, e.index, now)?);
                    }
                    if e.index.is_multiple_of(SESSION_GC_EVERY) {
                        ctx.gc_sessions(now.saturating_sub(session_ttl_ms))?;
                    }
                }
                Err(err) => {
                    // Every replica sees the same bytes and skips them the same way.
                    error!(logger, "undecodable committed entry skipped";
                        "region_id" => ctx.region.get_id(), "index" => e.index, "error" => %err);
                }
            }
        }
        out.push(applied);
    }
    let mut wb = ctx.wb;
    if ctx.region != *storage.region() {
        storage.set_region(ctx.region);
    }
    storage.write_apply_state(&mut wb, last_index, last_term);
    engine.write(wb, false)?;
    storage.set_applied(last_index, last_term);
    Ok(out)
}

struct ApplyContext<'a> {
    engine: &'a Engine,
    /// The region as of the entry being applied (a split narrows it mid-batch).
    region: Region,
    wb: WriteBatch,
    /// Writes of this batch not yet visible in the engine (None = deleted).
    data: HashMap<Vec<u8>, Option<RawValue>>,
    sessions: HashMap<u64, DedupEntry>,
}

impl ApplyContext<'_> {
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
                current_regions: vec![self.region.clone()],
            };
            return Ok((e.into_response(), None));
        }
        if !admin.has_split() {
            let e = Error::InvalidArgument("admin command without a command".into());
            return Ok((e.into_response(), None));
        }
        let split = admin.take_split();
        let key = split.get_split_key();
        let r = &self.region;
        let inside =
            key > r.get_start_key() && (r.get_end_key().is_empty() || key < r.get_end_key());
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
        let mut left = self.region.clone();
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
        write_initial_state(&mut self.wb, &right);
        let (lo, hi) = keys::dedup_range(left.get_id());
        let mut sessions: BTreeMap<u64, DedupEntry> = BTreeMap::new();
        self.engine.scan(Cf::Raft, &lo, &hi, |_, v| {
            let s: DedupEntry = regatta_engine::decode_msg(v, "dedup session", left.get_id())?;
            sessions.insert(s.get_client_id(), s);
            Ok(true)
        })?;
        for (cid, s) in &self.sessions {
            sessions.insert(*cid, s.clone());
        }
        for (cid, s) in &sessions {
            self.wb
                .put_msg(Cf::Raft, &keys::dedup_key(right.get_id(), *cid), s);
        }
        self.region = left.clone();
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
            None => Ok(self.engine.get_raw(key)?),
        }
    }

    fn session(&self, client_id: u64) -> Result<Option<DedupEntry>, Error> {
        if let Some(s) = self.sessions.get(&client_id) {
            return Ok(Some(s.clone()));
        }
        let rid = self.region.get_id();
        Ok(self.engine.get_msg(
            Cf::Raft,
            &keys::dedup_key(rid, client_id),
            "dedup session",
            rid,
        )?)
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
                current_regions: vec![self.region.clone()],
            }
            .into_response());
        }
        let req = cmd.take_request();
        let (client_id, seq) = (cmd.get_client_id(), cmd.get_seq());
        let dedup = client_id != 0 && is_write(&req);
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
        let resp = match self.execute(req, index) {
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
            self.sessions.insert(client_id, s);
        }
        Ok(resp)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Error> {
        if key_in_region(key, &self.region) {
            Ok(())
        } else {
            Err(Error::KeyNotInRegion {
                key: key.to_vec(),
                region_id: self.region.get_id(),
                start_key: self.region.get_start_key().to_vec(),
                end_key: self.region.get_end_key().to_vec(),
            })
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
                    self.engine,
                    &self.region,
                    s.get_start_key(),
                    s.get_end_key(),
                    s.get_limit() as usize,
                    Some(&self.data),
                )?;
                resp.set_scan(pairs);
            }
            None => return Err(Error::InvalidArgument("empty request".into())),
        }
        Ok(resp)
    }

    fn gc_sessions(&mut self, older_than_ms: u64) -> Result<(), Error> {
        if older_than_ms == 0 {
            return Ok(());
        }
        let rid = self.region.get_id();
        let (lo, hi) = keys::dedup_range(rid);
        let mut stale = Vec::new();
        self.engine.scan(Cf::Raft, &lo, &hi, |k, v| {
            let s: DedupEntry = regatta_engine::decode_msg(v, "dedup session", rid)?;
            if s.get_last_active_ms() < older_than_ms {
                stale.push((k.to_vec(), s.get_client_id()));
            }
            Ok(true)
        })?;
        for (k, cid) in stale {
            // A session touched in this very batch is fresh.
            if self
                .sessions
                .get(&cid)
                .is_some_and(|s| s.get_last_active_ms() >= older_than_ms)
            {
                continue;
            }
            self.wb.delete(Cf::Raft, &k);
            self.sessions.remove(&cid);
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
pub fn scan_region(
    engine: &Engine,
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
    let lo = start.max(region.get_start_key()).to_vec();
    let hi = match (end.is_empty(), region.get_end_key().is_empty()) {
        (true, true) => Vec::new(),
        (true, false) => region.get_end_key().to_vec(),
        (false, true) => end.to_vec(),
        (false, false) => end.min(region.get_end_key()).to_vec(),
    };
    let in_range = |k: &[u8]| k >= lo.as_slice() && (hi.is_empty() || k < hi.as_slice());
    let extra = overlay.map_or(0, |o| o.len());
    let mut merged: BTreeMap<Vec<u8>, RawValue> = engine
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

/// What a split check found: the region's keys and bytes, and where to split it.
#[derive(Debug, Clone, Default)]
pub struct SplitCheck {
    /// Keys in the region.
    pub keys: u64,
    /// Bytes of keys and values in the region.
    pub size: u64,
    /// Where to split (`None`: within both limits).
    pub split_key: Option<Vec<u8>>,
}

/// Scans `region` for [`SplitCheck`]: its keys and bytes, and — if it holds more than
/// `max_keys` keys or `max_size` bytes — the key to split it at, the middle one by count or
/// by size, whichever limit it passed. Two streaming passes, nothing buffered.
pub fn split_check(
    engine: &Engine,
    region: &Region,
    max_size: u64,
    max_keys: u64,
) -> Result<SplitCheck, Error> {
    let (lo, hi) = keys::raw_data_range(region.get_start_key(), region.get_end_key());
    let (mut count, mut size) = (0u64, 0u64);
    engine.scan(Cf::Default, &lo, &hi, |k, v| {
        count += 1;
        size += (k.len() + v.len()) as u64;
        Ok(true)
    })?;
    let mut check = SplitCheck {
        keys: count,
        size,
        split_key: None,
    };
    if count < 2 || (count <= max_keys && size <= max_size) {
        return Ok(check);
    }
    let by_keys = count > max_keys;
    let (mut seen_keys, mut seen_size) = (0u64, 0u64);
    let mut found = None;
    engine.scan(Cf::Default, &lo, &hi, |k, v| {
        seen_keys += 1;
        seen_size += (k.len() + v.len()) as u64;
        let past_middle = if by_keys {
            seen_keys > count / 2
        } else {
            seen_size > size / 2
        };
        let user = keys::raw_user_key(k).unwrap_or_default();
        if past_middle && user > region.get_start_key() {
            found = Some(user.to_vec());
            return Ok(false);
        }
        Ok(true)
    })?;
    check.split_key = found;
    Ok(check)
}
