//! Apply as data: committed entries in, responses and engine contents out, on the in-memory
//! engine (no RocksDB, no actors). Each test builds entries the way a leader proposes them
//! and checks what every replica must agree on.

use super::*;
use regatta_engine::{MemEngine, RAFT_INIT_LOG_INDEX, RAFT_INIT_LOG_TERM};
use regatta_proto::kvrpcpb::{
    BatchDeleteRequest, BatchGetRequest, BatchPutRequest, CasRequest, DeleteRequest, GetRequest,
    PutRequest, ScanRequest,
};
use regatta_proto::metapb::RegionEpoch;
use regatta_proto::raft_serverpb::{RaftApplyState, SplitCmd};

const TTL_MS: u64 = 60_000;
const TERM: u64 = 6;

fn epoch(version: u64) -> RegionEpoch {
    let mut e = RegionEpoch::new();
    e.set_conf_ver(1);
    e.set_version(version);
    e
}

/// Region 1, `[a, m)`, epoch (1, 1), peers 11/12/13 on stores 1/2/3.
fn region() -> Region {
    let mut r = Region::new();
    r.set_id(1);
    r.set_start_key(b"a".to_vec());
    r.set_end_key(b"m".to_vec());
    r.set_region_epoch(epoch(1));
    for (pid, sid) in [(11, 1), (12, 2), (13, 3)] {
        let mut p = Peer::new();
        p.set_id(pid);
        p.set_store_id(sid);
        r.mut_peers().push(p);
    }
    r
}

/// One replica's state machine on memory: what `apply_committed` does on RocksDB.
struct Replica {
    engine: MemEngine,
    region: Region,
    voters: Vec<u64>,
    logger: Logger,
    /// The sessions kept between calls, as a replica's `SessionCache` keeps them (None:
    /// every call reads them from the engine).
    cache: Option<std::collections::HashMap<u64, Option<DedupEntry>>>,
}

impl Replica {
    fn new() -> Replica {
        let engine = MemEngine::new();
        let mut wb = engine.write_batch();
        write_initial_state(&mut wb, &region());
        engine.write(wb, false).unwrap();
        Replica {
            engine,
            region: region(),
            voters: vec![11, 12, 13],
            logger: Logger::root(slog::Discard, slog::o!()),
            cache: None,
        }
    }

    /// A replica that keeps its sessions between apply calls.
    fn caching() -> Replica {
        Replica {
            cache: Some(Default::default()),
            ..Replica::new()
        }
    }

    /// Applies `entries` in one call and writes its batch.
    fn apply(&mut self, entries: Vec<Entry>) -> Vec<AppliedEntry> {
        let mut wb = self.engine.write_batch();
        let env = crate::apply::ApplyEnv {
            session_ttl_ms: TTL_MS,
            cop: &crate::coprocessor::NoCoprocessor,
            logger: &self.logger,
        };
        let snap = self.engine.snapshot();
        let out = match &mut self.cache {
            None => apply_entries(&snap, &mut wb, &self.region, &self.voters, entries, env),
            Some(cache) => crate::apply::apply_entries_with(
                &snap,
                &mut wb,
                &self.region,
                &self.voters,
                entries,
                env,
                cache,
            ),
        }
        .unwrap();
        self.engine.write(wb, false).unwrap();
        if let Some((left, _)) = out.iter().rev().find_map(|a| a.split.as_ref()) {
            self.region = left.clone();
        }
        out
    }

    /// The responses of one entry applied alone.
    fn apply_one(&mut self, e: Entry) -> Vec<KvResponse> {
        self.apply(vec![e]).remove(0).responses
    }

    fn get(&self, key: &[u8]) -> Option<RawValue> {
        self.engine.snapshot().get_raw(key).unwrap()
    }

    fn region_state(&self, id: u64) -> Option<RegionLocalState> {
        let key = keys::region_state_key(id);
        self.engine
            .snapshot()
            .get_msg(Cf::Raft, &key, "region state", id)
            .unwrap()
    }

    fn applied(&self, id: u64) -> (u64, u64) {
        let st: RaftApplyState = self
            .engine
            .snapshot()
            .get_msg(Cf::Raft, &keys::apply_state_key(id), "apply state", id)
            .unwrap()
            .unwrap();
        (st.get_applied_index(), st.get_applied_term())
    }

    /// Every key of every column family.
    fn dump(&self) -> Vec<(Cf, Vec<u8>, Vec<u8>)> {
        let snap = self.engine.snapshot();
        let mut out = Vec::new();
        for cf in Cf::ALL {
            snap.scan(cf, b"", &[0xff; 16], |k, v| {
                out.push((cf, k.to_vec(), v.to_vec()));
                Ok(true)
            })
            .unwrap();
        }
        out
    }
}

fn put(key: &[u8], value: &[u8]) -> Request {
    let mut p = PutRequest::new();
    p.set_key(key.to_vec());
    p.set_value(value.to_vec());
    let mut r = Request::new();
    r.set_put(p);
    r
}

fn get(key: &[u8]) -> Request {
    let mut g = GetRequest::new();
    g.set_key(key.to_vec());
    let mut r = Request::new();
    r.set_get(g);
    r
}

fn delete(key: &[u8]) -> Request {
    let mut d = DeleteRequest::new();
    d.set_key(key.to_vec());
    let mut r = Request::new();
    r.set_delete(d);
    r
}

fn cas(key: &[u8], expected: Option<&[u8]>, new_value: &[u8]) -> Request {
    let mut c = CasRequest::new();
    c.set_key(key.to_vec());
    match expected {
        Some(v) => c.set_expected(v.to_vec()),
        None => c.set_expect_absent(true),
    }
    c.set_new_value(new_value.to_vec());
    let mut r = Request::new();
    r.set_cas(c);
    r
}

fn batch_put(pairs: &[(&[u8], &[u8])]) -> Request {
    let mut b = BatchPutRequest::new();
    for (k, v) in pairs {
        let mut p = KvPair::new();
        p.set_key(k.to_vec());
        p.set_value(v.to_vec());
        b.mut_pairs().push(p);
    }
    let mut r = Request::new();
    r.set_batch_put(b);
    r
}

fn batch_delete(keys: &[&[u8]]) -> Request {
    let mut b = BatchDeleteRequest::new();
    b.set_keys(keys.iter().map(|k| k.to_vec()).collect());
    let mut r = Request::new();
    r.set_batch_delete(b);
    r
}

fn batch_get(keys: &[&[u8]]) -> Request {
    let mut b = BatchGetRequest::new();
    b.set_keys(keys.iter().map(|k| k.to_vec()).collect());
    let mut r = Request::new();
    r.set_batch_get(b);
    r
}

fn scan(start: &[u8], end: &[u8]) -> Request {
    let mut s = ScanRequest::new();
    s.set_start_key(start.to_vec());
    s.set_end_key(end.to_vec());
    let mut r = Request::new();
    r.set_scan(s);
    r
}

/// A command of client `client_id` (0: no session) at `seq`, proposed at region epoch
/// version `version`.
fn cmd(client_id: u64, seq: u64, version: u64, req: Request) -> RaftCmd {
    let mut c = RaftCmd::new();
    c.set_client_id(client_id);
    c.set_seq(seq);
    c.set_region_epoch(epoch(version));
    c.set_request(req);
    c
}

fn entry_of(index: u64, batch: &RaftCmdBatch) -> Entry {
    Entry {
        index,
        term: TERM,
        data: batch.write_to_bytes().unwrap().into(),
        ..Default::default()
    }
}

/// A normal entry carrying `cmds`, proposed at `time_ms` by the leader's clock.
fn entry(index: u64, time_ms: u64, cmds: Vec<RaftCmd>) -> Entry {
    let mut b = RaftCmdBatch::new();
    b.set_propose_time_ms(time_ms);
    b.set_cmds(cmds.into());
    entry_of(index, &b)
}

/// An entry with nothing to apply (a new leader's no-op).
fn noop(index: u64) -> Entry {
    Entry {
        index,
        term: TERM,
        ..Default::default()
    }
}

/// A split of region 1 at `key` into region 2 with peers 21/22/23, proposed at epoch
/// version `version`.
fn split(index: u64, version: u64, key: &[u8], new_peers: &[u64]) -> Entry {
    let mut s = SplitCmd::new();
    s.set_split_key(key.to_vec());
    s.set_new_region_id(2);
    s.set_new_peer_ids(new_peers.to_vec());
    let mut admin = AdminCmd::new();
    admin.set_region_epoch(epoch(version));
    admin.set_split(s);
    let mut b = RaftCmdBatch::new();
    b.set_admin(admin);
    entry_of(index, &b)
}

fn one(index: u64, req: Request) -> Entry {
    entry(index, 1_000, vec![cmd(0, 0, 1, req)])
}

fn raw(version: u64, value: &[u8]) -> Option<RawValue> {
    Some(RawValue {
        version,
        value: value.to_vec(),
    })
}

#[test]
fn reads_see_the_writes_of_earlier_entries_in_the_same_call() {
    let mut r = Replica::new();
    let out = r.apply(vec![
        one(6, put(b"a", b"1")),
        one(7, get(b"a")),
        one(8, delete(b"a")),
        one(9, get(b"a")),
        entry(
            10,
            1_000,
            vec![cmd(0, 0, 1, put(b"b", b"2")), cmd(0, 0, 1, put(b"c", b"3"))],
        ),
        one(11, delete(b"c")),
        one(12, scan(b"", b"")),
        noop(13),
    ]);
    let resp = |i: usize| out[i].responses[0].get_response();
    assert_eq!(resp(0).get_put().get_index(), 6);
    let g = resp(1).get_get();
    assert!(g.get_found());
    assert_eq!((g.get_value(), g.get_version()), (&b"1"[..], 6));
    assert!(resp(2).get_delete().get_existed());
    assert!(!resp(3).get_get().get_found());
    assert_eq!(out[4].responses.len(), 2, "one response per command");
    let scanned: Vec<(&[u8], u64)> = resp(6)
        .get_scan()
        .get_pairs()
        .iter()
        .map(|p| (p.get_key(), p.get_version()))
        .collect();
    assert_eq!(scanned, vec![(&b"b"[..], 10)]);
    assert!(out[7].responses.is_empty());
    assert_eq!(r.get(b"a"), None);
    assert_eq!(r.get(b"b"), raw(10, b"2"));
    assert_eq!(r.get(b"c"), None);
    assert_eq!(
        r.applied(1),
        (13, TERM),
        "apply state written with the data"
    );
}

#[test]
fn cas_swaps_only_when_the_current_value_is_the_expected_one() {
    let mut r = Replica::new();
    r.apply_one(one(6, put(b"k", b"v1")));
    let c = r.apply_one(one(7, cas(b"k", Some(b"v1"), b"v2")));
    let c = c[0].get_response().get_cas();
    assert!(c.get_succeeded() && c.get_found());
    assert_eq!((c.get_previous(), c.get_index()), (&b"v1"[..], 7));
    let c = r.apply_one(one(8, cas(b"k", Some(b"v1"), b"v3")));
    let c = c[0].get_response().get_cas();
    assert!(!c.get_succeeded() && c.get_found());
    assert_eq!(c.get_previous(), b"v2");
    let c = r.apply_one(one(9, cas(b"k", None, b"v4")));
    assert!(!c[0].get_response().get_cas().get_succeeded(), "not absent");
    assert_eq!(r.get(b"k"), raw(7, b"v2"));
    let c = r.apply_one(one(10, cas(b"e", None, b"new")));
    let c = c[0].get_response().get_cas();
    assert!(c.get_succeeded() && !c.get_found());
    assert_eq!(r.get(b"e"), raw(10, b"new"));
    let c = r.apply_one(one(11, cas(b"f", Some(b""), b"v")));
    assert!(
        !c[0].get_response().get_cas().get_succeeded(),
        "absent is not empty"
    );
    assert_eq!(r.get(b"f"), None);
}

#[test]
fn a_batch_checks_every_key_before_it_writes_any() {
    let mut r = Replica::new();
    let resp = r.apply_one(one(6, batch_put(&[(b"b", b"1"), (b"z", b"2")])));
    assert!(resp[0].get_error().has_key_not_in_region());
    assert_eq!(r.get(b"b"), None, "nothing of a refused batch is written");
    let resp = r.apply_one(one(7, batch_put(&[(b"b", b"1"), (b"c", b"2")])));
    assert_eq!(resp[0].get_response().get_batch_put().get_index(), 7);
    let resp = r.apply_one(one(8, batch_delete(&[b"b", b"zz"])));
    assert!(resp[0].get_error().has_key_not_in_region());
    assert_eq!(r.get(b"b"), raw(7, b"1"));
    let resp = r.apply_one(one(9, batch_delete(&[b"b", b"f", b"c"])));
    assert_eq!(resp[0].get_response().get_batch_delete().get_deleted(), 2);
    let resp = r.apply_one(one(10, batch_get(&[b"b", b"c"])));
    assert!(resp[0]
        .get_response()
        .get_batch_get()
        .get_pairs()
        .is_empty());
}

#[test]
fn keys_outside_the_region_and_stale_epochs_are_refused_and_change_nothing() {
    let mut r = Replica::new();
    let before = r.dump();
    let out = r.apply(vec![
        one(6, put(b"m", b"end is exclusive")),
        one(7, put(b"", b"before the start")),
        entry(8, 1_000, vec![cmd(0, 0, 0, put(b"b", b"old epoch"))]),
    ]);
    let err = out[0].responses[0].get_error();
    assert!(err.has_key_not_in_region());
    assert_eq!(err.get_key_not_in_region().get_region_id(), 1);
    assert!(out[1].responses[0].get_error().has_key_not_in_region());
    let err = out[2].responses[0].get_error();
    assert!(err.has_epoch_not_match());
    assert_eq!(err.get_epoch_not_match().get_current_regions(), &[region()]);
    let mut after = r.dump();
    after.retain(|(cf, k, _)| !(*cf == Cf::Raft && *k == keys::apply_state_key(1)));
    let mut before = before;
    before.retain(|(cf, k, _)| !(*cf == Cf::Raft && *k == keys::apply_state_key(1)));
    assert_eq!(after, before, "only the apply state moved");
    assert_eq!(r.applied(1), (8, TERM));
}

#[test]
fn a_retried_write_is_answered_from_its_session_and_not_applied_again() {
    let mut r = Replica::new();
    let first = r.apply(vec![
        entry(6, 1_000, vec![cmd(9, 1, 1, put(b"a", b"mine"))]),
        entry(7, 1_000, vec![cmd(8, 1, 1, put(b"a", b"theirs"))]),
    ]);
    let original = first[0].responses[0].clone();
    assert_eq!(original.get_response().get_put().get_index(), 6);
    // The retry in a later call (session read from the engine) ...
    let retry = r.apply_one(entry(8, 1_001, vec![cmd(9, 1, 1, put(b"a", b"mine"))]));
    assert_eq!(retry[0], original);
    // ... and in the same call as the write it retries (session read from the batch).
    let out = r.apply(vec![
        entry(9, 1_002, vec![cmd(7, 4, 1, delete(b"a"))]),
        entry(10, 1_002, vec![cmd(7, 4, 1, delete(b"a"))]),
    ]);
    assert_eq!(out[1].responses[0], out[0].responses[0]);
    assert!(out[0].responses[0]
        .get_response()
        .get_delete()
        .get_existed());
    assert_eq!(r.get(b"a"), None);
    let stale = r.apply_one(entry(11, 1_003, vec![cmd(9, 0, 1, put(b"a", b"old"))]));
    let err = stale[0].get_error().get_stale_sequence();
    assert_eq!(
        (err.get_client_id(), err.get_seq(), err.get_latest_seq()),
        (9, 0, 1)
    );
    assert_eq!(r.get(b"a"), None, "a stale sequence writes nothing");
    let next = r.apply_one(entry(12, 1_004, vec![cmd(9, 2, 1, put(b"a", b"again"))]));
    assert_eq!(next[0].get_response().get_put().get_index(), 12);
    assert_eq!(r.get(b"a"), raw(12, b"again"));
}

#[test]
fn a_split_narrows_the_region_and_hands_the_new_one_its_state_and_sessions() {
    let mut r = Replica::new();
    let out = r.apply(vec![
        entry(6, 1_000, vec![cmd(9, 1, 1, put(b"h", b"right side"))]),
        split(7, 1, b"g", &[21, 22, 23]),
        entry(8, 1_000, vec![cmd(0, 0, 1, put(b"b", b"old epoch"))]),
        entry(9, 1_000, vec![cmd(0, 0, 2, put(b"b", b"new epoch"))]),
        entry(10, 1_000, vec![cmd(0, 0, 2, put(b"h", b"now outside"))]),
    ]);
    let (left, right) = out[1].split.clone().expect("the split applied");
    assert_eq!(
        (left.get_start_key(), left.get_end_key()),
        (&b"a"[..], &b"g"[..])
    );
    assert_eq!(
        (right.get_start_key(), right.get_end_key()),
        (&b"g"[..], &b"m"[..])
    );
    assert_eq!(left.get_region_epoch(), &epoch(2));
    assert_eq!(right.get_region_epoch(), &epoch(2));
    let peers: Vec<(u64, u64)> = right
        .get_peers()
        .iter()
        .map(|p| (p.get_id(), p.get_store_id()))
        .collect();
    assert_eq!(
        peers,
        vec![(21, 1), (22, 2), (23, 3)],
        "same stores, in order"
    );
    assert_eq!(
        out[1].responses[0].get_response().get_split().get_right(),
        &right
    );
    assert!(out[2].responses[0].get_error().has_epoch_not_match());
    assert_eq!(out[3].responses[0].get_response().get_put().get_index(), 9);
    assert!(out[4].responses[0].get_error().has_key_not_in_region());
    assert_eq!(r.region, left);
    assert_eq!(r.region_state(1).unwrap().get_region(), &left);
    let st = r.region_state(2).unwrap();
    assert_eq!(st.get_region(), &right);
    assert_eq!(st.get_voters(), &[21, 22, 23]);
    assert_eq!(r.applied(2), (RAFT_INIT_LOG_INDEX, RAFT_INIT_LOG_TERM));
    assert_eq!(r.applied(1), (10, TERM));
    // The new region knows client 9's session: a retry there is not applied again.
    let session: Option<DedupEntry> = r
        .engine
        .snapshot()
        .get_msg(Cf::Raft, &keys::dedup_key(2, 9), "session", 2)
        .unwrap();
    assert_eq!(session.unwrap().get_seq(), 1);
    assert_eq!(r.get(b"h"), raw(6, b"right side"), "data stays where it is");
}

#[test]
fn invalid_or_stale_splits_answer_an_error_and_change_nothing() {
    let mut r = Replica::new();
    let out = r.apply(vec![
        split(6, 1, b"a", &[21, 22, 23]),
        split(7, 1, b"z", &[21, 22, 23]),
        split(8, 1, b"g", &[21, 22]),
        split(9, 0, b"g", &[21, 22, 23]),
    ]);
    for (i, a) in out.iter().enumerate() {
        assert!(a.split.is_none(), "split {i} refused");
    }
    for a in &out[..3] {
        assert!(a.responses[0].get_error().has_invalid_argument());
    }
    assert!(out[3].responses[0].get_error().has_epoch_not_match());
    assert_eq!(r.region, region());
    assert_eq!(r.region_state(1).unwrap().get_region(), &region());
    assert!(r.region_state(2).is_none());
}

/// The entries of `grouping_...`: writes, retries, a session expiry at index 256 and a split
/// right after it, around no-ops.
fn history() -> Vec<Entry> {
    let late = 1_000 + TTL_MS + 500; // sessions last active before 1_500 expire at 256
    let mut out = Vec::new();
    for i in 6..=262 {
        out.push(match i {
            // A compare-and-swap answered with a value too large for the kept sessions,
            // then retried: answered from the engine's record when not kept in memory.
            240 => entry(i, 1_000, vec![cmd(5, 1, 1, put(b"e", &[7; 2048]))]),
            241 => entry(i, 1_000, vec![cmd(6, 1, 1, cas(b"e", Some(b"x"), b"y"))]),
            243 => entry(i, 1_000, vec![cmd(6, 1, 1, cas(b"e", Some(b"x"), b"y"))]),
            250 => entry(i, 1_000, vec![cmd(1, 1, 1, put(b"a", b"1"))]),
            251 => entry(i, late - 100, vec![cmd(2, 1, 1, put(b"b", b"1"))]),
            252 => entry(i, late, vec![cmd(1, 1, 1, put(b"a", b"1"))]), // retry: cached
            // A leader whose clock is behind (after a leader change): a session written in
            // the same call as the expiry that removes it.
            253 => entry(i, 1_200, vec![cmd(4, 1, 1, cas(b"d", None, b"1"))]),
            256 => entry(i, late, vec![cmd(3, 1, 1, put(b"c", b"1"))]),
            257 => split(i, 1, b"c", &[21, 22, 23]),
            // Client 1's session expired at 256: its retry is a new write now.
            258 => entry(i, late, vec![cmd(1, 1, 2, put(b"a", b"1"))]),
            259 => entry(i, late, vec![cmd(2, 1, 2, put(b"b", b"1"))]), // still cached
            260 => entry(i, late, vec![cmd(4, 1, 2, delete(b"a"))]),
            261 => entry(i, late, vec![cmd(0, 0, 2, scan(b"", b""))]),
            _ => noop(i),
        });
    }
    out
}

#[test]
fn grouping_entries_into_apply_calls_does_not_change_the_outcome() {
    let run = |chunk: usize| {
        let mut r = Replica::new();
        let mut responses = Vec::new();
        let entries = history();
        for group in entries.chunks(chunk) {
            for a in r.apply(group.to_vec()) {
                responses.push((a.index, a.responses));
            }
        }
        (responses, r.dump(), r.region.clone())
    };
    let one_by_one = run(1);
    let (responses, _, region) = &one_by_one;
    let at = |i: u64| &responses.iter().find(|(idx, _)| *idx == i).unwrap().1[0];
    assert_eq!(at(252).get_response().get_put().get_index(), 250, "cached");
    assert_eq!(
        at(258).get_response().get_put().get_index(),
        258,
        "expired: applied"
    );
    assert_eq!(
        at(259).get_response().get_put().get_index(),
        251,
        "fresh: cached"
    );
    assert_eq!(region.get_end_key(), b"c");
    for chunk in [2, 3, 7, 64, 300] {
        assert!(
            run(chunk) == one_by_one,
            "apply in calls of {chunk} entries diverges"
        );
    }
}

#[test]
fn sessions_kept_between_apply_calls_change_nothing() {
    // Goal: a replica that keeps its sessions in memory between calls (the peer's
    // `SessionCache`) answers and writes exactly what one reading them from the engine
    // each call does — through retries, an expiry and a split. Method: the grouping test's
    // history, in calls of several sizes, with and without the kept sessions.
    let run = |mut r: Replica, chunk: usize| {
        let mut responses = Vec::new();
        for group in history().chunks(chunk) {
            for a in r.apply(group.to_vec()) {
                responses.push((a.index, a.responses));
            }
        }
        (responses, r.dump(), r.region.clone())
    };
    for chunk in [1, 3, 64] {
        assert!(
            run(Replica::caching(), chunk) == run(Replica::new(), chunk),
            "kept sessions change the outcome in calls of {chunk} entries"
        );
    }
}

#[test]
fn a_session_with_a_large_answer_is_not_kept_in_memory_and_still_answers_its_retry() {
    // Goal: the kept sessions stay small (a compare-and-swap answers with the value it
    // found, of any size), and a retry of such a write is still answered, not applied
    // again. Method: a CAS that swaps a 64 KiB value for a small one, on a replica keeping
    // its sessions: its session is not kept; its retry answers the same bytes (applied
    // again it would fail: the value is no longer the expected one) and writes nothing; a
    // small write's session is kept.
    let mut r = Replica::caching();
    let big = vec![7; 64 << 10];
    r.apply_one(entry(6, 1_000, vec![cmd(5, 1, 1, put(b"e", &big))]));
    let swap = || cmd(6, 1, 1, cas(b"e", Some(&big), b"y"));
    let first = r.apply_one(entry(7, 1_000, vec![swap()]));
    assert!(first[0].get_response().get_cas().get_succeeded());
    assert_eq!(first[0].get_response().get_cas().get_previous(), &big[..]);
    let cache = r.cache.as_ref().unwrap();
    assert!(!cache.contains_key(&6), "the large answer is not kept");
    assert!(cache.contains_key(&5), "a small one is");
    let retry = r.apply_one(entry(8, 1_001, vec![swap()]));
    assert_eq!(retry, first);
    assert_eq!(r.get(b"e"), raw(7, b"y"), "the retry wrote nothing");
}
