//! The raft-rs storage contract of [`PeerStorage`], across restarts, conflicts,
//! compaction and snapshot install: one suite, run on every engine (RocksDB and the
//! in-memory twin; openraft's storage `Suite` is the model). Each scenario is generic over
//! the engine and takes a factory of fresh engines; `on_every_engine!` instantiates it once
//! per engine.

use super::*;
use raft::Storage;
use regatta_proto::metapb::{Peer, RegionEpoch};

fn region(id: u64) -> Region {
    let mut r = Region::new();
    r.set_id(id);
    r.set_start_key(b"a".to_vec());
    r.set_end_key(b"m".to_vec());
    let mut e = RegionEpoch::new();
    e.set_conf_ver(1);
    e.set_version(1);
    r.set_region_epoch(e);
    for (pid, sid) in [(11, 1), (12, 2), (13, 3)] {
        let mut p = Peer::new();
        p.set_id(pid);
        p.set_store_id(sid);
        r.mut_peers().push(p);
    }
    r
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("data-{index}-{term}").into_bytes().into(),
        ..Default::default()
    }
}

fn open<E: Engine>(engine: &E, id: u64, cache: usize) -> PeerStorage<E> {
    PeerStorage::open(engine.clone(), id, cache)
        .unwrap()
        .unwrap()
}

/// What the LogWriter does with a staged write.
fn persist<E: Engine>(engine: &E, s: &mut PeerStorage<E>, mut w: LogWrite<E::WriteBatch>) {
    if let Some(extra) = w.extra.take() {
        engine.write(extra, false).unwrap();
    }
    let mut wb = engine.write_batch();
    w.write_into(&mut wb);
    engine.write(wb, true).unwrap();
    let last = w.entries.last().map_or(0, |e| e.index);
    s.on_persisted(last);
}

fn append<E: Engine>(engine: &E, s: &mut PeerStorage<E>, entries: Vec<Entry>) {
    let mut w = LogWrite {
        region_id: s.region().get_id(),
        ..LogWrite::default()
    };
    s.append(entries, &mut w);
    persist(engine, s, w);
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

fn bootstrapped_region_starts_at_the_init_index_on_every_replica<E: Engine>(new: &dyn Fn() -> E) {
    let engine = new();
    assert!(bootstrap_region(&engine, &region(1)).unwrap());
    assert!(
        !bootstrap_region(&engine, &region(1)).unwrap(),
        "idempotent"
    );
    let s = open(&engine, 1, 16);
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state.term, RAFT_INIT_LOG_TERM);
    assert_eq!(st.hard_state.commit, RAFT_INIT_LOG_INDEX);
    assert_eq!(st.conf_state.voters, vec![11, 12, 13]);
    assert_eq!(s.first_index().unwrap(), RAFT_INIT_LOG_INDEX + 1);
    assert_eq!(s.last_index().unwrap(), RAFT_INIT_LOG_INDEX);
    assert_eq!(s.term(RAFT_INIT_LOG_INDEX).unwrap(), RAFT_INIT_LOG_TERM);
    assert!(matches!(
        s.term(RAFT_INIT_LOG_INDEX - 1),
        Err(raft::Error::Store(StorageError::Compacted))
    ));
    assert!(matches!(
        s.term(RAFT_INIT_LOG_INDEX + 1),
        Err(raft::Error::Store(StorageError::Unavailable))
    ));
    assert!(PeerStorage::open(engine.clone(), 2, 16).unwrap().is_none());
}

fn entries_read_back_from_cache_and_from_disk_after_eviction_and_restart<E: Engine>(
    new: &dyn Fn() -> E,
) {
    let engine = new();
    bootstrap_region(&engine, &region(1)).unwrap();
    let mut s = open(&engine, 1, 4);
    append(&engine, &mut s, (6..=30).map(|i| entry(i, 6)).collect());
    s.set_applied(30, 6);
    assert_eq!(s.last_index().unwrap(), 30);
    let got = s.entries(6, 31, None, ctx()).unwrap();
    assert_eq!(got.len(), 25);
    assert!(got
        .iter()
        .zip(6..)
        .all(|(e, i)| e.index == i && e.term == 6));
    // Most entries were evicted (cache limit 4): the middle is read from RocksDB.
    let mid = s.entries(10, 20, None, ctx()).unwrap();
    assert_eq!(mid.first().unwrap().index, 10);
    assert_eq!(mid.last().unwrap().index, 19);
    // max_size limits the answer but always returns at least one entry.
    let one = s.entries(6, 31, Some(1), ctx()).unwrap();
    assert_eq!(one.len(), 1);
    let hs = HardState {
        term: 6,
        vote: 11,
        commit: 30,
        ..Default::default()
    };
    let mut w = LogWrite {
        region_id: 1,
        ..LogWrite::default()
    };
    s.set_hard_state(&hs, &mut w);
    persist(&engine, &mut s, w);
    drop(s);
    let s = open(&engine, 1, 4);
    assert_eq!(s.last_index().unwrap(), 30);
    assert_eq!(s.term(30).unwrap(), 6);
    assert_eq!(s.initial_state().unwrap().hard_state, hs);
    assert_eq!(s.entries(6, 31, None, ctx()).unwrap().len(), 25);
}

fn conflicting_append_replaces_the_suffix_in_memory_and_on_disk<E: Engine>(new: &dyn Fn() -> E) {
    let engine = new();
    bootstrap_region(&engine, &region(1)).unwrap();
    let mut s = open(&engine, 1, 1024);
    append(&engine, &mut s, (6..=12).map(|i| entry(i, 6)).collect());
    // A new leader overwrites 9.. with a shorter suffix of term 7.
    append(&engine, &mut s, (9..=10).map(|i| entry(i, 7)).collect());
    assert_eq!(s.last_index().unwrap(), 10);
    assert_eq!(s.term(8).unwrap(), 6);
    assert_eq!(s.term(9).unwrap(), 7);
    assert!(s.entries(6, 12, None, ctx()).is_err(), "11 is gone");
    drop(s);
    let s = open(&engine, 1, 1024);
    assert_eq!(s.last_index().unwrap(), 10);
    let all = s.entries(6, 11, None, ctx()).unwrap();
    let terms: Vec<u64> = all.iter().map(|e| e.term).collect();
    assert_eq!(terms, vec![6, 6, 6, 7, 7]);
    let (lo, hi) = keys::entry_range(1, 11, 13);
    let mut stale = 0;
    engine
        .snapshot()
        .scan(Cf::Raft, &lo, &hi, |_, _| {
            stale += 1;
            Ok(true)
        })
        .unwrap();
    assert_eq!(stale, 0, "overwritten entries deleted from disk");
}

fn compaction_moves_first_index_and_keeps_the_boundary_term<E: Engine>(new: &dyn Fn() -> E) {
    let engine = new();
    bootstrap_region(&engine, &region(1)).unwrap();
    let mut s = open(&engine, 1, 1024);
    append(&engine, &mut s, (6..=20).map(|i| entry(i, 6)).collect());
    assert!(
        s.compact_to(15).unwrap().is_none() || s.truncated_index() == 5,
        "nothing applied yet"
    );
    let mut wb = engine.write_batch();
    s.write_apply_state(&mut wb, 15, 6);
    engine.write(wb, false).unwrap();
    s.set_applied(15, 6);
    let wb = s.compact_to(15).unwrap().unwrap();
    engine.write(wb, false).unwrap();
    assert_eq!(s.first_index().unwrap(), 16);
    assert_eq!(s.term(15).unwrap(), 6);
    assert!(matches!(
        s.entries(10, 17, None, ctx()),
        Err(raft::Error::Store(StorageError::Compacted))
    ));
    assert_eq!(s.entries(16, 21, None, ctx()).unwrap().len(), 5);
    drop(s);
    let s = open(&engine, 1, 1024);
    assert_eq!(s.first_index().unwrap(), 16);
    assert_eq!(s.term(15).unwrap(), 6);
}

fn snapshot_from_leader_replaces_a_lagging_replicas_state<E: Engine>(new: &dyn Fn() -> E) {
    let le = new();
    let fe = new();
    bootstrap_region(&le, &region(1)).unwrap();
    bootstrap_region(&fe, &region(1)).unwrap();
    // Leader state: data applied through 40 of term 7.
    let mut ls = open(&le, 1, 1024);
    append(&le, &mut ls, (6..=40).map(|i| entry(i, 7)).collect());
    let mut wb = le.write_batch();
    wb.put(
        Cf::Default,
        &keys::raw_data_key(b"b"),
        &crate::encode_raw_value(33, b"v"),
    );
    wb.put(
        Cf::Default,
        &keys::raw_data_key(b"z"),
        &crate::encode_raw_value(1, b"out"),
    );
    ls.write_apply_state(&mut wb, 40, 7);
    write_gc_safe_point(&mut wb, 1, 500);
    le.write(wb, false).unwrap();
    ls.set_applied(40, 7);
    let snap = ls.snapshot(0, 12).unwrap();
    assert_eq!(snap.get_metadata().index, 40);
    assert_eq!(snap.get_metadata().term, 7);
    assert_eq!(
        snap.get_metadata().get_conf_state().voters,
        vec![11, 12, 13]
    );
    // Follower: stale data and a divergent log.
    let mut fs = open(&fe, 1, 1024);
    append(&fe, &mut fs, (6..=8).map(|i| entry(i, 6)).collect());
    let mut wb = fe.write_batch();
    wb.put(
        Cf::Default,
        &keys::raw_data_key(b"c"),
        &crate::encode_raw_value(7, b"stale"),
    );
    fe.write(wb, false).unwrap();
    let mut w = LogWrite {
        region_id: 1,
        ..LogWrite::default()
    };
    fs.apply_snapshot(&snap, &mut w).unwrap();
    persist(&fe, &mut fs, w);
    assert_eq!(fs.applied(), (40, 7));
    assert_eq!(
        fs.gc_safe_point().unwrap(),
        500,
        "the snapshot carries the GC safe point"
    );
    assert_eq!(fs.first_index().unwrap(), 41);
    assert_eq!(fs.last_index().unwrap(), 40);
    assert_eq!(fs.term(40).unwrap(), 7);
    drop(fs);
    let fs = open(&fe, 1, 1024);
    assert_eq!(fs.applied(), (40, 7));
    assert_eq!(fs.gc_safe_point().unwrap(), 500, "and it is durable");
    assert_eq!(fs.last_index().unwrap(), 40);
    assert_eq!(fe.snapshot().get_raw(b"b").unwrap().unwrap().value, b"v");
    assert!(
        fe.snapshot().get_raw(b"c").unwrap().is_none(),
        "stale key removed"
    );
    assert!(
        fe.snapshot().get_raw(b"z").unwrap().is_none(),
        "key outside the region not carried"
    );
}

/// An uninitialized replica (a store that missed the split making the region) has no
/// range, peers, log or state on disk; a leader's snapshot makes it a full replica that a
/// restart recovers — and installing it leaves data outside the snapshot's range alone
/// (it may belong to another region hosted on the same store).
fn uninitialized_replica_becomes_a_full_one_by_snapshot<E: Engine>(new: &dyn Fn() -> E) {
    let le = new();
    let fe = new();
    bootstrap_region(&le, &region(1)).unwrap();
    let ls = open(&le, 1, 1024);
    let mut wb = le.write_batch();
    wb.put(
        Cf::Default,
        &keys::raw_data_key(b"b"),
        &crate::encode_raw_value(6, b"v"),
    );
    ls.write_apply_state(&mut wb, 5, 5);
    le.write(wb, false).unwrap();
    let snap = ls.snapshot(0, 12).unwrap();

    // Another region's data on the follower's store, outside region 1's range.
    let mut wb = fe.write_batch();
    wb.put(
        Cf::Default,
        &keys::raw_data_key(b"x"),
        &crate::encode_raw_value(3, b"other region"),
    );
    fe.write(wb, false).unwrap();

    let mut fs = PeerStorage::uninitialized(fe.clone(), 1, 1024);
    assert!(!fs.is_initialized());
    assert!(PeerStorage::open(fe.clone(), 1, 1024).unwrap().is_none());
    let st = fs.initial_state().unwrap();
    assert_eq!(st.hard_state.term, 0);
    assert!(st.conf_state.voters.is_empty());
    assert_eq!(
        (fs.first_index().unwrap(), fs.last_index().unwrap()),
        (1, 0)
    );
    assert_eq!(fs.term(0).unwrap(), 0);

    let mut w = LogWrite {
        region_id: 1,
        ..LogWrite::default()
    };
    fs.apply_snapshot(&snap, &mut w).unwrap();
    persist(&fe, &mut fs, w);
    assert!(fs.is_initialized());
    assert_eq!(fs.region(), &region(1));
    drop(fs);
    let fs = open(&fe, 1, 1024);
    assert_eq!(fs.region(), &region(1));
    assert_eq!(fs.voters(), &[11, 12, 13]);
    assert_eq!(fs.applied(), (5, 5));
    assert_eq!(fe.snapshot().get_raw(b"b").unwrap().unwrap().value, b"v");
    assert_eq!(
        fe.snapshot().get_raw(b"x").unwrap().unwrap().value,
        b"other region",
        "data outside the snapshot's range was removed"
    );
}

fn corrupt_or_foreign_snapshots_are_rejected_not_applied<E: Engine>(new: &dyn Fn() -> E) {
    let engine = new();
    bootstrap_region(&engine, &region(1)).unwrap();
    bootstrap_region(&engine, &region(2)).unwrap();
    let s2 = open(&engine, 2, 16);
    let foreign = s2.snapshot(0, 1).unwrap();
    let mut s1 = open(&engine, 1, 16);
    let mut w = LogWrite::default();
    assert!(s1.apply_snapshot(&foreign, &mut w).is_err());
    let mut garbage = foreign.clone();
    garbage.data = vec![0xff, 0xff, 0x01].into();
    assert!(s1.apply_snapshot(&garbage, &mut w).is_err());
    assert_eq!(s1.applied(), (RAFT_INIT_LOG_INDEX, RAFT_INIT_LOG_TERM));
}

/// Seeding a fresh single-voter replica (the JSON node's `seed_state`) rewinds a log that
/// committed past the seed's index: the rewound storage keeps term and vote, forgets the
/// log, and a seed snapshot at a lower index and term then replaces log, states and data,
/// durably; until that write lands the disk still holds the old state.
fn a_rewound_replica_takes_a_seed_below_its_old_commit_index<E: Engine>(new: &dyn Fn() -> E) {
    let e = new();
    bootstrap_region(&e, &region(1)).unwrap();
    let mut s = open(&e, 1, 1024);
    append(&e, &mut s, (6..=7).map(|i| entry(i, 6)).collect());
    let mut w = LogWrite {
        region_id: 1,
        ..LogWrite::default()
    };
    let hs = HardState {
        term: 6,
        vote: 11,
        commit: 7,
        ..Default::default()
    };
    s.set_hard_state(&hs, &mut w);
    persist(&e, &mut s, w);
    let mut wb = e.write_batch();
    wb.put(
        Cf::Default,
        &keys::raw_data_key(b"b"),
        &crate::encode_raw_value(7, b"own"),
    );
    s.write_apply_state(&mut wb, 7, 6);
    e.write(wb, false).unwrap();
    s.set_applied(7, 6);

    let mut s = s.rewound();
    let st = s.initial_state().unwrap();
    assert_eq!((st.hard_state.term, st.hard_state.vote), (6, 11));
    assert_eq!(st.hard_state.commit, 0);
    assert_eq!(st.conf_state.voters, vec![11, 12, 13]);
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 0));
    assert_eq!(s.applied(), (0, 0));
    assert_eq!(
        open(&e, 1, 1024).applied(),
        (7, 6),
        "rewinding writes nothing"
    );

    let seed = crate::snapshot::build_seed(
        s.region(),
        s.voters(),
        5,
        2,
        &[(b"c".to_vec(), b"seeded".to_vec())],
    )
    .unwrap();
    let mut w = LogWrite {
        region_id: 1,
        ..LogWrite::default()
    };
    s.apply_snapshot(&seed, &mut w).unwrap();
    s.set_hard_state(
        &HardState {
            term: 6,
            vote: 11,
            commit: 5,
            ..Default::default()
        },
        &mut w,
    );
    persist(&e, &mut s, w);
    drop(s);
    let s = open(&e, 1, 1024);
    assert_eq!(s.applied(), (5, 2));
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 5));
    assert_eq!(s.term(5).unwrap(), 2);
    let st = s.initial_state().unwrap();
    assert_eq!(
        (st.hard_state.term, st.hard_state.vote, st.hard_state.commit),
        (6, 11, 5)
    );
    assert!(
        e.snapshot().get_raw(b"b").unwrap().is_none(),
        "old data gone"
    );
    assert_eq!(
        e.snapshot().get_raw(b"c").unwrap().unwrap().value,
        b"seeded"
    );
    assert!(
        s.entries(6, 8, None, ctx()).is_err(),
        "the old entries 6 and 7 are gone"
    );
}

/// A seed refuses a replica with client data, but not one holding only its node's own
/// keys: `first_data_key` finds the first key of any data column family besides them.
fn first_data_key_skips_the_given_raw_keys_only<E: Engine>(new: &dyn Fn() -> E) {
    let e = new();
    let r = region(1);
    let own = b"b-own".to_vec();
    let first =
        |skip: &[Vec<u8>]| crate::snapshot::first_data_key(&e.snapshot(), &r, skip).unwrap();
    assert_eq!(first(&[]), None);
    let mut wb = e.write_batch();
    wb.put(
        Cf::Default,
        &keys::raw_data_key(&own),
        &crate::encode_raw_value(6, b"v"),
    );
    wb.put(
        Cf::Default,
        &keys::raw_data_key(b"z"),
        &crate::encode_raw_value(6, b"outside the region"),
    );
    e.write(wb, false).unwrap();
    assert_eq!(first(std::slice::from_ref(&own)), None);
    assert_eq!(first(&[]), Some(own.clone()));
    let mut wb = e.write_batch();
    wb.put(Cf::Lock, &keys::txn_data_key(b"c"), b"a lock");
    e.write(wb, false).unwrap();
    assert_eq!(
        first(std::slice::from_ref(&own)),
        Some(b"c".to_vec()),
        "transactional records count"
    );
}

/// Opens region 1 after `corrupt` changed its stored states, expecting `Corrupt`.
fn open_refuses(corrupt: impl FnOnce(&RocksEngine)) {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path(), &crate::EngineConfig::short_lived()).unwrap();
    bootstrap_region(&engine, &region(1)).unwrap();
    corrupt(&engine);
    match PeerStorage::open(engine.clone(), 1, 16) {
        Err(Error::Corrupt {
            what, region_id, ..
        }) => {
            assert_eq!((what, region_id), ("raft states", 1));
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, the storage opened"),
    }
}

#[test]
fn applied_entries_missing_from_the_log_are_corruption() {
    open_refuses(|engine| {
        // Applied through 9, but the log ends at the init index (5).
        let mut wb = engine.write_batch();
        write_apply_state(&mut wb, 1, RAFT_INIT_LOG_INDEX + 4, RAFT_INIT_LOG_TERM);
        engine.write(wb, true).unwrap();
    });
}

#[test]
fn a_commit_index_past_the_last_entry_is_corruption() {
    open_refuses(|engine| {
        let mut rs: RaftLocalState = engine
            .get_msg(Cf::Raft, &keys::raft_state_key(1), "raft state", 1)
            .unwrap()
            .unwrap();
        rs.set_commit(rs.get_last_index() + 3);
        let mut wb = engine.write_batch();
        wb.put_msg(Cf::Raft, &keys::raft_state_key(1), &rs);
        engine.write(wb, true).unwrap();
    });
}

#[test]
fn a_commit_index_behind_the_applied_index_is_raised_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path(), &crate::EngineConfig::short_lived()).unwrap();
    bootstrap_region(&engine, &region(1)).unwrap();
    let mut s = open(&engine, 1, 16);
    append(&engine, &mut s, (6..=8).map(|i| entry(i, 6)).collect());
    // Applied through 8 while the stored commit still says 5: a commit change alone is not
    // synced, so a crash can leave this.
    let mut wb = engine.write_batch();
    write_apply_state(&mut wb, 1, 8, 6);
    engine.write(wb, true).unwrap();
    drop(s);
    let s = open(&engine, 1, 16);
    assert_eq!(s.commit_index(), 8);
}

fn a_commit_index_change_alone_is_not_staged_but_rides_with_the_next_write<E: Engine>(
    new: &dyn Fn() -> E,
) {
    let engine = new();
    bootstrap_region(&engine, &region(1)).unwrap();
    let mut s = open(&engine, 1, 16);
    let hs = |term, vote, commit| HardState {
        term,
        vote,
        commit,
        ..Default::default()
    };
    let staged = |s: &mut PeerStorage<E>, h: HardState| {
        let mut w = LogWrite {
            region_id: 1,
            ..LogWrite::default()
        };
        s.set_hard_state(&h, &mut w);
        w
    };
    // A new term and vote: staged, and synced.
    let w = staged(&mut s, hs(6, 11, 5));
    assert!(w.raft_state.is_some() && w.needs_sync());
    persist(&engine, &mut s, w);
    append(&engine, &mut s, (6..=8).map(|i| entry(i, 6)).collect());
    // The commit index alone: nothing to write, but readable at once.
    let w = staged(&mut s, hs(6, 11, 7));
    assert!(w.is_empty(), "a commit-only change costs no log write");
    assert_eq!(s.commit_index(), 7);
    assert_eq!(
        open(&engine, 1, 16)
            .initial_state()
            .unwrap()
            .hard_state
            .commit,
        5,
        "the disk lags: safe, commit only has to be at most what a quorum holds"
    );
    // The next log write carries the whole current state, commit included.
    let mut w = staged(&mut s, hs(6, 11, 8));
    s.append(vec![entry(9, 6)], &mut w);
    assert_eq!(w.raft_state.as_ref().unwrap().get_commit(), 8);
    persist(&engine, &mut s, w);
    drop(s);
    let st = open(&engine, 1, 16).initial_state().unwrap();
    assert_eq!((st.hard_state.term, st.hard_state.vote), (6, 11));
    assert_eq!(st.hard_state.commit, 8);
}

/// Instantiates each generic scenario once per engine.
macro_rules! on_every_engine {
    ($($name:ident),* $(,)?) => {
        mod on_rocksdb {
            $(
                #[test]
                fn $name() {
                    let dirs = std::cell::RefCell::new(Vec::new());
                    super::$name(&|| {
                        let dir = tempfile::tempdir().unwrap();
                        let e = crate::RocksEngine::open(dir.path(), &crate::EngineConfig::short_lived())
                            .unwrap();
                        dirs.borrow_mut().push(dir);
                        e
                    });
                }
            )*
        }
        mod on_memory {
            $(
                #[test]
                fn $name() {
                    super::$name(&crate::MemEngine::new);
                }
            )*
        }
    };
}

on_every_engine!(
    bootstrapped_region_starts_at_the_init_index_on_every_replica,
    entries_read_back_from_cache_and_from_disk_after_eviction_and_restart,
    conflicting_append_replaces_the_suffix_in_memory_and_on_disk,
    compaction_moves_first_index_and_keeps_the_boundary_term,
    snapshot_from_leader_replaces_a_lagging_replicas_state,
    uninitialized_replica_becomes_a_full_one_by_snapshot,
    corrupt_or_foreign_snapshots_are_rejected_not_applied,
    a_rewound_replica_takes_a_seed_below_its_old_commit_index,
    first_data_key_skips_the_given_raw_keys_only,
    a_commit_index_change_alone_is_not_staged_but_rides_with_the_next_write,
);
