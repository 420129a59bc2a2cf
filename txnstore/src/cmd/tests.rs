//! Transactional commands at apply, as data on the in-memory engine: several commands of
//! one entry (and entries of one call) see each other's writes through the overlay; a
//! failed command writes nothing; 1PC commits at the ts the command carries; grouping
//! entries into apply calls does not change the outcome.

use protobuf::Message;
use raft::eraftpb::Entry;
use regatta_engine::{write_initial_state, Cf, Engine, MemEngine, Snapshot};
use regatta_proto::kvrpcpb::{KvResponse, Request};
use regatta_proto::metapb::{Region, RegionEpoch};
use regatta_proto::raft_serverpb::{RaftCmd, RaftCmdBatch};
use regatta_proto::txnpb::*;
use regatta_raftstore::apply::apply_entries;
use regatta_txn::MvccReader;
use slog::Logger;

fn region() -> Region {
    let mut r = Region::new();
    r.set_id(1);
    r.set_start_key(b"a".to_vec());
    r.set_end_key(b"m".to_vec());
    let mut e = RegionEpoch::new();
    e.set_conf_ver(1);
    e.set_version(1);
    r.set_region_epoch(e);
    let mut p = regatta_proto::metapb::Peer::new();
    p.set_id(11);
    p.set_store_id(1);
    r.mut_peers().push(p);
    r
}

fn engine() -> MemEngine {
    let e = MemEngine::new();
    let mut wb = e.write_batch();
    write_initial_state(&mut wb, &region());
    e.write(wb, false).expect("write");
    e
}

fn cmd(t: TxnRequest, one_pc_ts: u64) -> RaftCmd {
    let mut r = Request::new();
    r.set_txn(t);
    let mut c = RaftCmd::new();
    c.set_region_epoch(region().get_region_epoch().clone());
    c.set_request(r);
    c.set_one_pc_commit_ts(one_pc_ts);
    c
}

fn entry(index: u64, cmds: Vec<RaftCmd>) -> Entry {
    let mut b = RaftCmdBatch::new();
    b.set_cmds(cmds.into());
    let mut e = Entry::new();
    e.index = index;
    e.term = 6;
    e.data = b.write_to_bytes().expect("encode").into();
    e
}

/// Applies `entries` in one call; the responses of each.
fn apply(e: &MemEngine, entries: Vec<Entry>) -> Vec<Vec<KvResponse>> {
    apply_full(e, entries)
        .into_iter()
        .map(|a| a.responses)
        .collect()
}

fn prewrite(key: &[u8], value: &[u8], start_ts: u64, one_pc: bool) -> TxnRequest {
    let mut m = Mutation::new();
    m.set_key(key.to_vec());
    m.set_value(value.to_vec());
    let mut p = PrewriteRequest::new();
    p.set_primary(key.to_vec());
    p.set_start_ts(start_ts);
    p.set_lock_ttl_ms(3000);
    p.set_try_one_pc(one_pc);
    p.mut_mutations().push(m);
    let mut t = TxnRequest::new();
    t.set_prewrite(p);
    t
}

fn commit(key: &[u8], start_ts: u64, commit_ts: u64) -> TxnRequest {
    let mut c = CommitRequest::new();
    c.mut_keys().push(key.to_vec());
    c.set_start_ts(start_ts);
    c.set_commit_ts(commit_ts);
    let mut t = TxnRequest::new();
    t.set_commit(c);
    t
}

fn txn(r: &KvResponse) -> &TxnResponse {
    assert!(!r.has_error(), "store error: {:?}", r.get_error());
    r.get_response().get_txn()
}

fn dump(e: &MemEngine) -> Vec<(Cf, Vec<u8>, Vec<u8>)> {
    let snap = e.snapshot();
    let mut out = Vec::new();
    for cf in [Cf::Default, Cf::Write, Cf::Lock] {
        snap.scan(cf, b"", &[0xff; 8], |k, v| {
            out.push((cf, k.to_vec(), v.to_vec()));
            Ok(true)
        })
        .expect("scan");
    }
    out
}

fn history() -> Vec<Entry> {
    vec![
        // One entry: prewrite, a conflicting prewrite (sees the first one's lock), commit.
        entry(
            6,
            vec![
                cmd(prewrite(b"b", b"1", 10, false), 0),
                cmd(prewrite(b"b", b"x", 11, false), 0),
                cmd(commit(b"b", 10, 12), 0),
            ],
        ),
        // The next entry: a write conflict with that commit; a 1PC at the carried ts.
        entry(
            7,
            vec![
                cmd(prewrite(b"b", b"2", 11, false), 0),
                cmd(prewrite(b"c", b"3", 20, true), 25),
            ],
        ),
    ]
}

#[test]
fn commands_of_one_apply_call_see_each_others_writes() {
    let e = engine();
    let out = apply(&e, history());
    assert!(!txn(&out[0][0]).has_key_error());
    let locked = txn(&out[0][1]).get_key_error().get_locked();
    assert_eq!(
        locked.get_start_ts(),
        10,
        "the second prewrite met the first's lock"
    );
    assert!(
        !txn(&out[0][2]).has_key_error(),
        "the commit found the lock of its entry"
    );
    let conflict = txn(&out[1][0]).get_key_error().get_conflict();
    assert_eq!(conflict.get_conflict_commit_ts(), 12);
    assert_eq!(txn(&out[1][1]).get_prewrite().get_one_pc_commit_ts(), 25);
    let snap = e.snapshot();
    let reader = MvccReader::new(&snap);
    assert_eq!(reader.get(b"b", 12).expect("read"), Some(b"1".to_vec()));
    assert_eq!(reader.get(b"b", 11).expect("read"), None);
    assert_eq!(reader.get(b"c", 25).expect("read"), Some(b"3".to_vec()));
    assert_eq!(
        reader.get(b"c", 24).expect("read"),
        None,
        "1PC at the carried ts"
    );
    assert!(reader.load_lock(b"b").expect("lock").is_none());
    assert!(
        reader.load_lock(b"c").expect("lock").is_none(),
        "1PC leaves no lock"
    );
}

#[test]
fn grouping_entries_into_apply_calls_does_not_change_the_outcome() {
    let (together, apart) = (engine(), engine());
    let a = apply(&together, history());
    let mut b = Vec::new();
    for e in history() {
        b.extend(apply(&apart, vec![e]));
    }
    assert_eq!(a, b);
    assert_eq!(dump(&together), dump(&apart));
}

#[test]
fn a_one_pc_prewrite_without_a_carried_ts_is_a_plain_prewrite() {
    let e = engine();
    let out = apply(
        &e,
        vec![entry(6, vec![cmd(prewrite(b"b", b"1", 10, true), 0)])],
    );
    let r = txn(&out[0][0]);
    assert!(!r.has_key_error());
    assert_eq!(r.get_prewrite().get_one_pc_commit_ts(), 0);
    let snap = e.snapshot();
    assert!(MvccReader::new(&snap)
        .load_lock(b"b")
        .expect("lock")
        .is_some());
}

#[test]
fn a_command_with_a_key_outside_the_region_or_a_stale_epoch_writes_nothing() {
    let e = engine();
    let before = dump(&e);
    let mut stale = cmd(prewrite(b"b", b"1", 10, false), 0);
    stale.mut_region_epoch().set_version(0);
    let out = apply(
        &e,
        vec![entry(
            6,
            vec![cmd(prewrite(b"z", b"1", 10, false), 0), stale],
        )],
    );
    assert!(out[0][0].get_error().has_key_not_in_region());
    assert!(out[0][1].get_error().has_epoch_not_match());
    assert_eq!(dump(&e), before);
}

fn admin_entry(index: u64, admin: regatta_proto::raft_serverpb::AdminCmd) -> Entry {
    let mut b = RaftCmdBatch::new();
    b.set_admin(admin);
    let mut e = Entry::new();
    e.index = index;
    e.term = 6;
    e.data = b.write_to_bytes().expect("encode").into();
    e
}

fn raise_gc(safe_point: u64) -> regatta_proto::raft_serverpb::AdminCmd {
    let mut a = regatta_proto::raft_serverpb::AdminCmd::new();
    a.set_region_epoch(region().get_region_epoch().clone());
    a.set_gc_safe_point(safe_point);
    a
}

/// Whether an applied entry noted a raised GC safe point.
/// Whether an applied entry handed any key to lock waiters.
fn released_any(a: &regatta_raftstore::apply::AppliedEntry) -> bool {
    a.notes
        .iter()
        .filter_map(|n| n.downcast_ref::<crate::Released>())
        .any(|r| !r.0.is_empty())
}

fn raised_safe_point(a: &regatta_raftstore::apply::AppliedEntry) -> bool {
    a.notes.iter().any(|n| n.is::<crate::SafePointRaised>())
}

/// Applies `entries` in one call; what each entry did.
fn apply_full(e: &MemEngine, entries: Vec<Entry>) -> Vec<regatta_raftstore::apply::AppliedEntry> {
    let mut wb = e.write_batch();
    let logger = Logger::root(slog::Discard, slog::o!());
    let out = apply_entries(
        &e.snapshot(),
        &mut wb,
        &region(),
        &[11],
        entries,
        regatta_raftstore::apply::ApplyEnv {
            session_ttl_ms: 60_000,
            cop: crate::TxnCoprocessor::for_tests(),
            logger: &logger,
        },
    )
    .expect("apply");
    e.write(wb, false).expect("write");
    out
}

fn get(key: &[u8], ts: u64) -> TxnRequest {
    let mut g = TxnGetRequest::new();
    g.set_key(key.to_vec());
    g.set_start_ts(ts);
    let mut t = TxnRequest::new();
    t.set_get(g);
    t
}

fn pessimistic_lock(key: &[u8], start_ts: u64) -> TxnRequest {
    let mut p = PessimisticLockRequest::new();
    p.set_primary(key.to_vec());
    p.mut_keys().push(key.to_vec());
    p.set_start_ts(start_ts);
    p.set_for_update_ts(start_ts);
    p.set_lock_ttl_ms(3000);
    let mut t = TxnRequest::new();
    t.set_pessimistic_lock(p);
    t
}

#[test]
fn entries_name_the_locks_their_commands_removed_for_the_lock_waiters() {
    // What the leader hands to waiters: every lock a command removed (commit, rollback,
    // 1PC over a pessimistic lock), with its transaction; nothing for commands that only
    // lock, or that failed.
    let e = engine();
    let mut rollback = RollbackRequest::new();
    rollback.mut_keys().push(b"c".to_vec());
    rollback.set_start_ts(30);
    let mut rb = TxnRequest::new();
    rb.set_rollback(rollback);
    let entries = vec![
        entry(
            10,
            vec![
                cmd(prewrite(b"b", b"1", 10, false), 0),
                cmd(pessimistic_lock(b"c", 30), 0),
                cmd(pessimistic_lock(b"d", 40), 0),
            ],
        ),
        entry(
            11,
            vec![
                cmd(commit(b"b", 10, 20), 0),
                cmd(rb, 0),
                cmd(commit(b"e", 50, 60), 0), // no such lock: fails, removes nothing
            ],
        ),
        entry(12, vec![cmd(prewrite(b"d", b"v", 40, true), 45)]),
    ];
    let released: Vec<Vec<(Vec<u8>, u64)>> = apply_full(&e, entries)
        .into_iter()
        .map(|a| {
            a.notes
                .into_iter()
                .filter_map(|n| n.downcast::<crate::Released>().ok())
                .flat_map(|r| r.0)
                .collect()
        })
        .collect();
    assert_eq!(
        released,
        vec![
            vec![],
            vec![(b"b".to_vec(), 10), (b"c".to_vec(), 30)],
            vec![(b"d".to_vec(), 40)],
        ]
    );
}

#[test]
fn a_one_pc_below_a_handed_over_lock_becomes_a_plain_prewrite_with_the_floor() {
    // A waiter (start 5) is handed `k` at the holder's commit ts 20, then prewrites with
    // its stale for_update_ts 5 asking for 1PC, and the leader picks 1PC ts 12: that
    // would hide its write under the version it read. Apply prewrites instead: no 1PC
    // ts, the floor 21 in the answer and the lock, no lock released, and a retry of the
    // prewrite (a lost answer) names the floor again.
    let e = engine();
    apply(
        &e,
        vec![
            entry(10, vec![cmd(prewrite(b"k", b"holder", 10, false), 0)]),
            entry(11, vec![cmd(commit(b"k", 10, 20), 0)]),
        ],
    );
    let mut handed = pessimistic_lock(b"k", 5);
    handed
        .mut_pessimistic_lock()
        .set_allow_lock_with_conflict(true);
    apply(&e, vec![entry(12, vec![cmd(handed, 0)])]);
    let mut pw = prewrite(b"k", b"waiter", 5, true);
    pw.mut_prewrite().set_for_update_ts(5);
    pw.mut_prewrite().mut_mutations()[0].set_pessimistic(true);
    let out = apply_full(&e, vec![entry(13, vec![cmd(pw.clone(), 12)])]);
    let r = txn(&out[0].responses[0]);
    assert!(!r.has_key_error(), "{r:?}");
    assert_eq!(r.get_prewrite().get_one_pc_commit_ts(), 0, "no 1PC");
    assert_eq!(r.get_prewrite().get_min_commit_ts(), 21, "the floor");
    assert!(!released_any(&out[0]), "a prewrite releases no lock");
    let retry = apply(&e, vec![entry(14, vec![cmd(pw.clone(), 0)])]);
    assert_eq!(
        txn(&retry[0][0]).get_prewrite().get_min_commit_ts(),
        21,
        "a retry names the floor again"
    );
    let below = apply(&e, vec![entry(15, vec![cmd(commit(b"k", 5, 20), 0)])]);
    assert!(
        txn(&below[0][0])
            .get_key_error()
            .get_commit_ts_expired_min()
            == 21
    );
    let ok = apply(&e, vec![entry(16, vec![cmd(commit(b"k", 5, 21), 0)])]);
    assert!(!txn(&ok[0][0]).has_key_error());
}

#[test]
fn a_lock_with_conflict_is_taken_at_the_newest_commit_and_says_so() {
    let e = engine();
    apply(
        &e,
        vec![
            entry(10, vec![cmd(prewrite(b"k", b"new", 10, false), 0)]),
            entry(11, vec![cmd(commit(b"k", 10, 20), 0)]),
        ],
    );
    // A waiter that started at 5 is handed the key after that commit.
    let mut handed = pessimistic_lock(b"k", 5);
    handed.mut_pessimistic_lock().set_return_values(true);
    let mut plain = handed.clone();
    handed
        .mut_pessimistic_lock()
        .set_allow_lock_with_conflict(true);
    let out = apply(&e, vec![entry(12, vec![cmd(plain.clone(), 0)])]);
    assert!(txn(&out[0][0]).get_key_error().has_conflict(), "{out:?}");
    let out = apply(&e, vec![entry(13, vec![cmd(handed, 0)])]);
    let r = txn(&out[0][0]).get_pessimistic_lock();
    assert_eq!(r.get_locked_with_conflict_ts(), 20);
    assert_eq!(r.get_values()[0].get_value(), b"new");
    // Without a newer write the field stays 0.
    plain.mut_pessimistic_lock().set_start_ts(30);
    plain.mut_pessimistic_lock().set_for_update_ts(30);
    plain
        .mut_pessimistic_lock()
        .set_allow_lock_with_conflict(true);
    plain
        .mut_pessimistic_lock()
        .set_keys(vec![b"f".to_vec()].into());
    let out = apply(&e, vec![entry(14, vec![cmd(plain, 0)])]);
    assert_eq!(
        txn(&out[0][0])
            .get_pessimistic_lock()
            .get_locked_with_conflict_ts(),
        0
    );
}

fn below_gc(r: &KvResponse) -> u64 {
    txn(r).get_key_error().get_below_gc_safe_point()
}

#[test]
fn the_gc_safe_point_refuses_locks_at_or_below_it_and_reads_below_it() {
    // Goal: once an entry raised the region's safe point, every replica refuses a prewrite
    // or pessimistic lock at or below it (their checks need records GC may have dropped)
    // and a read below it, and writes nothing for them; the safe point never goes back.
    // Method: entries applied as data, the refusals checked in the same apply call as the
    // raise and in later ones.
    let e = engine();
    let out = apply_full(
        &e,
        vec![
            admin_entry(6, raise_gc(100)),
            entry(
                7,
                vec![
                    cmd(prewrite(b"b", b"1", 100, false), 0),
                    cmd(prewrite(b"c", b"1", 40, true), 150),
                    cmd(pessimistic_lock(b"d", 90), 0),
                    cmd(prewrite(b"e", b"1", 101, false), 0),
                ],
            ),
        ],
    );
    assert!(raised_safe_point(&out[0]));
    assert_eq!(
        below_gc(&out[1].responses[0]),
        100,
        "start_ts at the safe point"
    );
    assert_eq!(below_gc(&out[1].responses[1]), 100, "a 1PC prewrite too");
    assert_eq!(
        below_gc(&out[1].responses[2]),
        100,
        "a pessimistic lock too"
    );
    assert!(!txn(&out[1].responses[3]).has_key_error(), "above it: fine");
    let snap = e.snapshot();
    let reader = MvccReader::new(&snap);
    for refused in [b"b", b"c", b"d"] {
        assert!(reader.load_lock(refused).expect("lock").is_none());
    }
    assert!(reader.load_lock(b"e").expect("lock").is_some());
    assert_eq!(
        regatta_engine::read_gc_safe_point(&snap, 1).expect("read"),
        100
    );
    drop(snap);
    // A lower safe point changes nothing; a read below the safe point is refused, a read
    // at it is served (here through the log, as a leader would by ReadIndex).
    let out = apply_full(
        &e,
        vec![
            admin_entry(8, raise_gc(50)),
            entry(9, vec![cmd(get(b"b", 99), 0), cmd(get(b"b", 100), 0)]),
        ],
    );
    assert!(!raised_safe_point(&out[0]));
    assert_eq!(
        regatta_engine::read_gc_safe_point(&e.snapshot(), 1).expect("read"),
        100
    );
    assert_eq!(below_gc(&out[1].responses[0]), 100);
    assert!(!txn(&out[1].responses[1]).has_key_error());
    // The store's read path (leader reads) refuses the same way.
    let mut req = Request::new();
    req.set_txn(get(b"b", 99));
    let cop = crate::TxnCoprocessor::for_tests();
    let resp = match regatta_raftstore::coprocessor::Coprocessor::read(
        cop,
        &e.snapshot(),
        &region(),
        &req,
    ) {
        Ok(r) => regatta_raftstore::coprocessor::response(r),
        Err(e) => e.into_response(),
    };
    assert_eq!(below_gc(&resp), 100);
}

#[test]
fn a_split_hands_the_gc_safe_point_to_both_halves() {
    // Goal: reads below the safe point stay refused on either side of a split. Method: a
    // raise, then a split applied as data; read both regions' recorded safe points.
    let e = engine();
    let mut split = regatta_proto::raft_serverpb::SplitCmd::new();
    split.set_split_key(b"f".to_vec());
    split.set_new_region_id(2);
    split.set_new_peer_ids(vec![21]);
    let mut admin = regatta_proto::raft_serverpb::AdminCmd::new();
    admin.set_region_epoch(region().get_region_epoch().clone());
    admin.set_split(split);
    let out = apply_full(
        &e,
        vec![admin_entry(6, raise_gc(70)), admin_entry(7, admin)],
    );
    assert!(out[1].split.is_some(), "{:?}", out[1].responses);
    let snap = e.snapshot();
    assert_eq!(
        regatta_engine::read_gc_safe_point(&snap, 1).expect("left"),
        70
    );
    assert_eq!(
        regatta_engine::read_gc_safe_point(&snap, 2).expect("right"),
        70
    );
}
