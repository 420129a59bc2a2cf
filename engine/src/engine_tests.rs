//! The [`Engine`] contract (see `traits.rs`), one suite run against every implementation:
//! each check is a generic function, and `conformance!` makes one test per engine of it.

use crate::{Cf, Engine, MemEngine, RocksEngine, Snapshot, WriteBatch};

/// A fresh engine of the kind under test; the guard keeps its files alive.
trait Fresh: Engine {
    type Guard;
    fn fresh() -> (Self, Self::Guard);
}

impl Fresh for MemEngine {
    type Guard = ();
    fn fresh() -> (Self, ()) {
        (MemEngine::new(), ())
    }
}

impl Fresh for RocksEngine {
    type Guard = tempfile::TempDir;
    fn fresh() -> (Self, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine =
            RocksEngine::open(dir.path(), &crate::EngineConfig::short_lived()).expect("open");
        (engine, dir)
    }
}

fn write<E: Engine>(e: &E, build: impl FnOnce(&mut E::WriteBatch)) {
    let mut wb = e.write_batch();
    build(&mut wb);
    e.write(wb, false).expect("write");
}

fn all<S: Snapshot>(s: &S, cf: Cf, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    s.scan(cf, start, end, |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(true)
    })
    .expect("scan");
    out
}

fn pairs(kvs: &[(&[u8], &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
    kvs.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

const END: &[u8] = b"\xff\xff\xff";

fn get_sees_puts_and_deletes_and_tells_empty_from_absent<E: Fresh>() {
    let (e, _g) = E::fresh();
    write(&e, |wb| {
        wb.put(Cf::Default, b"a", b"1");
        wb.put(Cf::Default, b"empty", b"");
    });
    let s = e.snapshot();
    assert_eq!(s.get(Cf::Default, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(s.get(Cf::Default, b"empty").unwrap(), Some(Vec::new()));
    assert_eq!(s.get(Cf::Default, b"missing").unwrap(), None);
    drop(s);
    write(&e, |wb| wb.delete(Cf::Default, b"a"));
    write(&e, |wb| wb.delete(Cf::Default, b"never-there"));
    assert_eq!(e.snapshot().get(Cf::Default, b"a").unwrap(), None);
}

fn column_families_are_separate_key_spaces<E: Fresh>() {
    let (e, _g) = E::fresh();
    write(&e, |wb| {
        for (i, cf) in Cf::ALL.into_iter().enumerate() {
            wb.put(cf, b"k", &[i as u8]);
        }
    });
    write(&e, |wb| wb.delete(Cf::Write, b"k"));
    let s = e.snapshot();
    assert_eq!(s.get(Cf::Raft, b"k").unwrap(), Some(vec![0]));
    assert_eq!(s.get(Cf::Default, b"k").unwrap(), Some(vec![1]));
    assert_eq!(s.get(Cf::Write, b"k").unwrap(), None);
    assert_eq!(s.get(Cf::Lock, b"k").unwrap(), Some(vec![3]));
    assert_eq!(all(&s, Cf::Lock, b"", END), pairs(&[(b"k", &[3])]));
}

fn a_snapshot_sees_what_was_written_before_it_and_nothing_after<E: Fresh>() {
    let (e, _g) = E::fresh();
    write(&e, |wb| wb.put(Cf::Default, b"a", b"old"));
    let before = e.snapshot();
    let mut wb = e.write_batch();
    wb.put(Cf::Default, b"a", b"new");
    wb.put(Cf::Default, b"b", b"new");
    assert_eq!(
        e.snapshot().get(Cf::Default, b"a").unwrap(),
        Some(b"old".to_vec()),
        "a batch is invisible until written"
    );
    e.write(wb, true).unwrap();
    let after = e.snapshot();
    assert_eq!(
        before.get(Cf::Default, b"a").unwrap(),
        Some(b"old".to_vec())
    );
    assert_eq!(before.get(Cf::Default, b"b").unwrap(), None);
    assert_eq!(
        all(&before, Cf::Default, b"", END),
        pairs(&[(b"a", b"old")])
    );
    assert_eq!(
        all(&after, Cf::Default, b"", END),
        pairs(&[(b"a", b"new"), (b"b", b"new")])
    );
}

fn scan_is_ascending_bytewise_with_inclusive_start_and_exclusive_end<E: Fresh>() {
    let (e, _g) = E::fresh();
    let keys: [&[u8]; 7] = [b"\xff", b"b", b"a\x00", b"", b"a", b"c", b"b\xff"];
    write(&e, |wb| {
        for k in keys {
            wb.put(Cf::Default, k, k);
        }
    });
    let s = e.snapshot();
    let got: Vec<Vec<u8>> = all(&s, Cf::Default, b"", END)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut want: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    want.sort();
    assert_eq!(got, want, "unsigned bytewise; a prefix sorts first");
    assert_eq!(
        all(&s, Cf::Default, b"a", b"b"),
        pairs(&[(b"a", b"a"), (b"a\x00", b"a\x00")]),
        "start inclusive, end exclusive"
    );
    assert!(all(&s, Cf::Default, b"b", b"b").is_empty(), "end == start");
    assert!(all(&s, Cf::Default, b"c", b"a").is_empty(), "end < start");
    assert!(
        all(&s, Cf::Default, b"a", b"").is_empty(),
        "an empty end is no bound"
    );
    assert!(
        all(&s, Cf::Raft, b"", END).is_empty(),
        "other cfs untouched"
    );
}

fn scan_stops_when_told_and_returns_the_callers_error<E: Fresh>() {
    let (e, _g) = E::fresh();
    write(&e, |wb| {
        for k in [b"a", b"b", b"c", b"d"] {
            wb.put(Cf::Default, k, b"v");
        }
    });
    let s = e.snapshot();
    let mut seen = Vec::new();
    s.scan(Cf::Default, b"", END, |k, _| {
        seen.push(k.to_vec());
        Ok(seen.len() < 2)
    })
    .unwrap();
    assert_eq!(seen, vec![b"a".to_vec(), b"b".to_vec()]);
    let err = s.scan(Cf::Default, b"", END, |k, _| {
        if k == b"c" {
            Err(crate::Error::BadSnapshot {
                region_id: 7,
                detail: "stop".into(),
            })
        } else {
            Ok(true)
        }
    });
    assert!(matches!(
        err,
        Err(crate::Error::BadSnapshot { region_id: 7, .. })
    ));
}

fn seek_finds_the_first_key_at_or_after_start_below_end<E: Fresh>() {
    let (e, _g) = E::fresh();
    write(&e, |wb| {
        wb.put(Cf::Write, b"k1", b"v1");
        wb.put(Cf::Write, b"k3", b"v3");
    });
    let s = e.snapshot();
    let seek = |start: &[u8], end: &[u8]| s.seek(Cf::Write, start, end).unwrap();
    assert_eq!(seek(b"k1", END), Some((b"k1".to_vec(), b"v1".to_vec())));
    assert_eq!(seek(b"k2", END), Some((b"k3".to_vec(), b"v3".to_vec())));
    assert_eq!(seek(b"k2", b"k3"), None, "the end bound is exclusive");
    assert_eq!(seek(b"k4", END), None);
    assert_eq!(seek(b"k3", b"k1"), None, "inverted range");
    assert_eq!(s.seek(Cf::Default, b"", END).unwrap(), None);
}

fn batch_operations_take_effect_in_order<E: Fresh>() {
    let (e, _g) = E::fresh();
    write(&e, |wb| {
        for k in [b"a", b"b", b"c", b"d", b"e"] {
            wb.put(Cf::Default, k, b"old");
        }
    });
    let mut wb = e.write_batch();
    assert!(wb.is_empty());
    wb.put(Cf::Default, b"a", b"1");
    wb.delete(Cf::Default, b"a"); // delete after put: gone
    wb.delete(Cf::Default, b"b");
    wb.put(Cf::Default, b"b", b"2"); // put after delete: there
    wb.delete_range(Cf::Default, b"c", b"e"); // c, d
    wb.put(Cf::Default, b"d", b"3"); // put after the range delete: there
    wb.delete_range(Cf::Default, b"e", b"c"); // inverted: nothing
    assert!(!wb.is_empty());
    e.write(wb, false).unwrap();
    assert_eq!(
        all(&e.snapshot(), Cf::Default, b"", END),
        pairs(&[(b"b", b"2"), (b"d", b"3"), (b"e", b"old")])
    );
}

fn delete_range_removes_exactly_its_range_in_its_cf<E: Fresh>() {
    let (e, _g) = E::fresh();
    write(&e, |wb| {
        for k in [&b"a"[..], b"b", b"b\x00", b"c", b"c\x00"] {
            wb.put(Cf::Raft, k, b"v");
            wb.put(Cf::Default, k, b"v");
        }
    });
    write(&e, |wb| wb.delete_range(Cf::Raft, b"b", b"c"));
    let s = e.snapshot();
    assert_eq!(
        all(&s, Cf::Raft, b"", END),
        pairs(&[(b"a", b"v"), (b"c", b"v"), (b"c\x00", b"v")])
    );
    assert_eq!(all(&s, Cf::Default, b"", END).len(), 5);
}

fn messages_and_raw_records_read_back_through_a_snapshot<E: Fresh>() {
    use regatta_proto::raft_serverpb::RaftApplyState;
    let (e, _g) = E::fresh();
    let mut st = RaftApplyState::new();
    st.set_applied_index(9);
    write(&e, |wb| {
        wb.put_msg(Cf::Raft, b"state", &st);
        wb.put(Cf::Raft, b"junk", b"\xff\xff");
        for (i, k) in [&b"x"[..], b"y", b"z"].into_iter().enumerate() {
            let v = crate::encode_raw_value(i as u64, k);
            wb.put(Cf::Default, &crate::keys::raw_data_key(k), &v);
        }
    });
    let s = e.snapshot();
    let back: Option<RaftApplyState> = s.get_msg(Cf::Raft, b"state", "apply state", 1).unwrap();
    assert_eq!(back, Some(st));
    let junk = s.get_msg::<RaftApplyState>(Cf::Raft, b"junk", "apply state", 1);
    assert!(matches!(
        junk,
        Err(crate::Error::Corrupt { region_id: 1, .. })
    ));
    assert_eq!(s.get_raw(b"y").unwrap().unwrap().version, 1);
    let keys: Vec<Vec<u8>> = s
        .scan_raw(b"y", b"", 10)
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(keys, vec![b"y".to_vec(), b"z".to_vec()]);
    assert_eq!(s.scan_raw(b"", b"", 2).unwrap().len(), 2);
    assert!(s.scan_raw(b"", b"", 0).unwrap().is_empty());
}

/// The same operations added to an engine's batch and to an [`Overlay`] over a snapshot
/// taken before: the overlay reads (get, scan, seek, early stop) what the engine reads
/// after the batch is written.
fn an_overlay_reads_like_the_engine_after_the_same_batch<E: Fresh>() {
    use crate::overlay::Overlay;
    let (e, _g) = E::fresh();
    write(&e, |wb| {
        for k in [&b"a"[..], b"b", b"c", b"d", b"e", b"f"] {
            wb.put(Cf::Write, k, b"old");
        }
        wb.put(Cf::Lock, b"c", b"other cf");
    });
    // (op, key, value or range end): 0 put, 1 delete, 2 delete_range.
    type OverlayCase<'a> = (u8, &'a [u8], &'a [u8]);
    const OPS: [OverlayCase<'static>; 7] = [
        (0, b"a", b"1"),  // put over a base key
        (1, b"b", b""),   // delete a base key
        (0, b"bb", b"2"), // put a new key between base keys
        (2, b"c", b"e"),  // range delete: c, d
        (0, b"d", b"3"),  // put after the range delete
        (0, b"z", b"4"),  // a new key after every base key
        (1, b"zz", b""),  // delete an absent key
    ];
    fn add<W: WriteBatch>(wb: &mut W) {
        for (op, k, v) in OPS {
            match op {
                0 => wb.put(Cf::Write, k, v),
                1 => wb.delete(Cf::Write, k),
                _ => wb.delete_range(Cf::Write, k, v),
            }
        }
    }
    let snap = e.snapshot();
    let mut overlay = Overlay::new(&snap);
    add(&mut overlay);
    let mut wb = e.write_batch();
    add(&mut wb);
    assert_eq!(overlay.count(), wb.count());
    e.write(wb, false).unwrap();
    let after = e.snapshot();
    for (lo, hi) in [
        (&b""[..], END),
        (b"b", b"d"),
        (b"bb", b"z"),
        (b"d", b"d"),
        (b"z", END),
    ] {
        assert_eq!(
            all(&overlay, Cf::Write, lo, hi),
            all(&after, Cf::Write, lo, hi),
            "scan [{lo:?}, {hi:?})"
        );
        assert_eq!(
            overlay.seek(Cf::Write, lo, hi).unwrap(),
            after.seek(Cf::Write, lo, hi).unwrap()
        );
    }
    for k in [&b"a"[..], b"b", b"bb", b"c", b"d", b"e", b"f", b"z", b"zz"] {
        assert_eq!(
            overlay.get(Cf::Write, k).unwrap(),
            after.get(Cf::Write, k).unwrap()
        );
    }
    assert_eq!(
        all(&overlay, Cf::Lock, b"", END),
        all(&after, Cf::Lock, b"", END)
    );
    let mut firsts = Vec::new();
    overlay
        .scan(Cf::Write, b"", END, |k, _| {
            firsts.push(k.to_vec());
            Ok(firsts.len() < 3)
        })
        .unwrap();
    assert_eq!(firsts, vec![b"a".to_vec(), b"bb".to_vec(), b"d".to_vec()]);
    assert_eq!(
        snap.get(Cf::Write, b"b").unwrap(),
        Some(b"old".to_vec()),
        "the base is untouched"
    );
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod rocks {
            $( #[test] fn $check() { super::$check::<crate::RocksEngine>(); } )*
        }
        mod mem {
            $( #[test] fn $check() { super::$check::<crate::MemEngine>(); } )*
        }
    };
}

conformance!(
    get_sees_puts_and_deletes_and_tells_empty_from_absent,
    column_families_are_separate_key_spaces,
    a_snapshot_sees_what_was_written_before_it_and_nothing_after,
    scan_is_ascending_bytewise_with_inclusive_start_and_exclusive_end,
    scan_stops_when_told_and_returns_the_callers_error,
    seek_finds_the_first_key_at_or_after_start_below_end,
    batch_operations_take_effect_in_order,
    delete_range_removes_exactly_its_range_in_its_cf,
    messages_and_raw_records_read_back_through_a_snapshot,
    an_overlay_reads_like_the_engine_after_the_same_batch,
);

/// The memory engine's power-loss model: a loss keeps the synced state and a prefix of
/// the unsynced writes after it, in order; an engine without the model loses nothing.
#[test]
fn a_power_loss_keeps_the_synced_state_and_a_prefix_of_later_writes() {
    let put = |e: &MemEngine, k: &[u8], sync: bool| {
        let mut wb = e.write_batch();
        wb.put(Cf::Default, k, b"v");
        e.write(wb, sync).unwrap();
    };
    let keys = |e: &MemEngine| -> Vec<Vec<u8>> {
        all(&e.snapshot(), Cf::Default, b"", b"\xff")
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    let e = MemEngine::with_power_loss();
    put(&e, b"a", false);
    put(&e, b"b", true);
    put(&e, b"c", false);
    put(&e, b"d", false);
    put(&e, b"e", false);
    assert_eq!(e.unsynced_writes(), 3);
    e.lose_power(1);
    assert_eq!(
        keys(&e),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
        "the sync made a and b durable; c is the surviving prefix; d and e are lost"
    );
    assert_eq!(e.unsynced_writes(), 0, "what survived is durable now");
    e.lose_power(0);
    assert_eq!(keys(&e).len(), 3, "nothing more to lose");
    let plain = MemEngine::new();
    put(&plain, b"x", false);
    plain.lose_power(0);
    assert_eq!(keys(&plain), vec![b"x".to_vec()]);
}

/// RocksDB only: a synced write whose sync fails leaves its batch visible but not known
/// durable, so the engine (and every clone of it) refuses every later write, synced or
/// not, even once the fault is lifted; a reopened engine writes again.
#[test]
fn a_failed_sync_refuses_every_later_write_until_reopened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = crate::RocksEngine::open(dir.path(), &crate::EngineConfig::short_lived()).unwrap();
    let put = |e: &crate::RocksEngine, k: &[u8], sync: bool| {
        let mut wb = e.write_batch();
        wb.put(Cf::Default, k, b"v");
        e.write(wb, sync)
    };
    put(&e, b"a", true).unwrap();
    e.fail_syncs(Some("IO error: fsync failed".into()));
    let err = put(&e, b"b", true).unwrap_err().to_string();
    assert!(err.contains("fsync failed"), "{err}");
    assert_eq!(
        e.get(Cf::Default, b"b").unwrap().as_deref(),
        Some(&b"v"[..]),
        "written before the sync failed"
    );
    e.fail_syncs(None);
    let clone = e.clone();
    for (engine, sync) in [(&e, false), (&e, true), (&clone, false)] {
        let err = put(engine, b"c", sync).unwrap_err();
        assert!(
            matches!(&err, crate::Error::SyncFailed { reason } if reason.contains("fsync failed")),
            "{err}"
        );
    }
    assert_eq!(
        e.get(Cf::Default, b"c").unwrap(),
        None,
        "refused: nothing written"
    );
    drop((e, clone));
    let e = crate::RocksEngine::open(dir.path(), &crate::EngineConfig::short_lived()).unwrap();
    put(&e, b"d", true).unwrap();
    assert_eq!(
        e.get(Cf::Default, b"a").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

/// The WAL files of the RocksDB at `dir`: (number, bytes), in order.
fn wal_files(dir: &std::path::Path) -> Vec<(u64, u64)> {
    let mut logs: Vec<(u64, u64)> = std::fs::read_dir(dir)
        .expect("read the db dir")
        .filter_map(|e| {
            let e = e.expect("dir entry");
            let name = e.file_name().to_string_lossy().into_owned();
            let number = name.strip_suffix(".log")?.parse().ok()?;
            Some((number, e.metadata().expect("metadata").len()))
        })
        .collect();
    logs.sort();
    logs
}

/// RocksDB only: an engine starts on a reused WAL file of the prefill's size, with
/// another filled one in reserve, and what is synced into it survives a crash: a copy of
/// the files taken while the engine is open (what a power cut would leave, the writes
/// being synced) opens with every synced key and nothing of the prefill's bytes. A
/// reopened engine starts on a filled file again.
#[test]
fn an_engine_writes_into_a_prefilled_wal_that_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("db");
    let config = crate::EngineConfig {
        wal_prefill_bytes: 4 << 20,
        ..crate::EngineConfig::default()
    };
    let e = crate::RocksEngine::open(&db, &config).unwrap();
    let logs = wal_files(&db);
    let (current, size) = *logs.last().expect("a WAL");
    assert!(size >= 4 << 20, "the current WAL is a filled one: {logs:?}");
    assert!(
        logs.iter().filter(|l| l.1 >= 4 << 20).count() >= 2,
        "another filled WAL in reserve: {logs:?}"
    );
    for i in 0..100u32 {
        let mut wb = e.write_batch();
        wb.put(Cf::Default, format!("k{i:03}").as_bytes(), b"v");
        e.write(wb, true).unwrap();
    }
    let (after, _) = *wal_files(&db).last().expect("a WAL");
    assert_eq!(after, current, "the writes went into the filled WAL");
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(&db).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    drop(e);
    let crashed = crate::RocksEngine::open(&copy, &config).unwrap();
    let mut found = Vec::new();
    crashed
        .snapshot()
        .scan(Cf::Default, b"", b"\xff", |k, _| {
            found.push(k.to_vec());
            Ok(true)
        })
        .unwrap();
    let want: Vec<Vec<u8>> = (0..100u32)
        .map(|i| format!("k{i:03}").into_bytes())
        .collect();
    assert_eq!(found, want);
    let mut raft = 0;
    crashed
        .snapshot()
        .scan(Cf::Raft, b"", b"\xff", |_, _| {
            raft += 1;
            Ok(true)
        })
        .unwrap();
    assert_eq!(raft, 0, "the prefill leaves no key");
    drop(crashed);
    let reopened = crate::RocksEngine::open(&db, &config).unwrap();
    let logs = wal_files(&db);
    let (last, size) = *logs.last().expect("a WAL");
    assert!(
        last > current && size >= 4 << 20,
        "a reopened engine starts on a filled file of its own run: {logs:?}"
    );
    assert_eq!(
        reopened.get(Cf::Default, b"k099").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}
