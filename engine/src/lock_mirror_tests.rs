//! The lock mirror behind a real RocksDB: every live point read of the `lock` column
//! family must answer what RocksDB holds, through any mix of batches, faults and reopens.

use crate::{Cf, Engine, EngineConfig, RocksEngine, Snapshot, WriteBatch};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// Test hooks inside [`RocksEngine::write`].
#[derive(Default)]
pub(crate) struct Hooks {
    /// Run once, by the next batch carrying locks, between its RocksDB write and the
    /// mirror's update.
    pause: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Hooks {
    pub(crate) fn after_db_write(&self) {
        let hook = self.pause.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
    }
}

fn open(path: &std::path::Path, lock_mirror_bytes: usize) -> RocksEngine {
    let config = EngineConfig {
        lock_mirror_bytes,
        ..EngineConfig::short_lived()
    };
    RocksEngine::open(path, &config).expect("open")
}

fn key(i: u64) -> Vec<u8> {
    format!("lock-{i:02}").into_bytes()
}

fn scan_all<S: Snapshot>(s: &S, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    s.scan(Cf::Lock, start, end, |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(true)
    })
    .unwrap();
    out
}

/// Checks every key's live read (the mirror) against a snapshot's (RocksDB), and live
/// scans of a few ranges against the snapshot's.
fn assert_agrees(e: &RocksEngine, keys: u64, when: &str) {
    let (live, snap) = (e.live(), e.snapshot());
    for i in 0..keys {
        let k = key(i);
        assert_eq!(
            live.get(Cf::Lock, &k).unwrap(),
            snap.get(Cf::Lock, &k).unwrap(),
            "{when}: key {i}"
        );
    }
    for (lo, hi) in [(0, keys), (keys / 3, keys / 2), (keys / 2, keys / 3)] {
        let (lo, hi) = (key(lo), key(hi));
        assert_eq!(
            scan_all(&live, &lo, &hi),
            scan_all(&snap, &lo, &hi),
            "{when}: scan [{lo:?}, {hi:?})"
        );
    }
}

fn rocksdb_locks(e: &RocksEngine) -> usize {
    let mut n = 0;
    e.snapshot()
        .scan(Cf::Lock, b"", &[0xff; 8], |_, _| {
            n += 1;
            Ok(true)
        })
        .unwrap();
    n
}

#[test]
fn the_mirror_answers_what_rocksdb_holds_through_random_batches_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let keys = 40;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    {
        let e = open(dir.path(), 1 << 20);
        for batch in 0..400 {
            let mut wb = e.write_batch();
            for _ in 0..1 + next(6) {
                let k = key(next(keys));
                match next(10) {
                    0..=4 => wb.put(Cf::Lock, &k, format!("v{batch}").as_bytes()),
                    5..=7 => wb.delete(Cf::Lock, &k),
                    8 => wb.delete_range(Cf::Lock, &k, &key(next(keys))),
                    // Other column families share the batch, unmirrored.
                    _ => wb.put(Cf::Write, &k, b"w"),
                }
            }
            e.write(wb, batch % 7 == 0).unwrap();
            assert_agrees(&e, keys, &format!("after batch {batch}"));
            assert_eq!(e.lock_mirror_len(), Some(rocksdb_locks(&e)));
        }
        assert!(rocksdb_locks(&e) > 0, "the sequence leaves some locks");
    }
    let e = open(dir.path(), 1 << 20);
    assert_eq!(
        e.lock_mirror_len(),
        Some(rocksdb_locks(&e)),
        "loaded at open"
    );
    assert_agrees(&e, keys, "after a reopen");
}

#[test]
fn a_mirror_past_its_limit_turns_off_and_reads_go_to_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let value = vec![7u8; 100];
    // Room for five locks of 100 bytes, not six.
    let limit = 5 * crate::lock_mirror::LockMirror::entry_bytes(&key(0), &value) + 10;
    {
        let e = open(dir.path(), limit);
        for i in 0..5 {
            let mut wb = e.write_batch();
            wb.put(Cf::Lock, &key(i), &value);
            e.write(wb, false).unwrap();
        }
        assert_eq!(e.lock_mirror_len(), Some(5));
        let mut wb = e.write_batch();
        wb.put(Cf::Lock, &key(5), &value);
        wb.delete(Cf::Lock, &key(0));
        e.write(wb, false).unwrap();
        assert_eq!(
            e.lock_mirror_len(),
            Some(5),
            "a batch counts once it is applied"
        );
        let mut wb = e.write_batch();
        wb.put(Cf::Lock, &key(6), &value);
        e.write(wb, false).unwrap();
        assert_eq!(e.lock_mirror_len(), None, "six locks: off");
        assert_agrees(&e, 8, "off");
        let mut wb = e.write_batch();
        wb.delete(Cf::Lock, &key(1));
        e.write(wb, false).unwrap();
        assert_eq!(e.lock_mirror_len(), None, "off until the next open");
        assert_agrees(&e, 8, "off, after a delete");
        let mut wb = e.write_batch();
        wb.put(Cf::Lock, &key(7), &value);
        e.write(wb, false).unwrap();
    }
    let e = open(dir.path(), limit);
    assert_eq!(e.lock_mirror_len(), None, "six locks at open: off");
    assert_agrees(&e, 8, "reopened, off");
    drop(e);
    let e = open(dir.path(), 1 << 20);
    assert_eq!(e.lock_mirror_len(), Some(6), "a larger limit: on");
    assert_agrees(&e, 8, "reopened, on");
    drop(e);
    assert_eq!(open(dir.path(), 0).lock_mirror_len(), None, "0: no mirror");
}

#[test]
fn a_failed_write_leaves_the_mirror_as_rocksdb_and_a_failed_sync_shows_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 1 << 20);
    e.fail_writes(Some("IO error: No space left on device".into()));
    let mut wb = e.write_batch();
    wb.put(Cf::Lock, &key(1), b"l");
    assert!(e.write(wb, false).is_err());
    assert_eq!(e.live().get(Cf::Lock, &key(1)).unwrap(), None);
    e.fail_writes(None);
    e.fail_syncs(Some("IO error: fsync".into()));
    let mut wb = e.write_batch();
    wb.put(Cf::Lock, &key(2), b"l");
    assert!(e.write(wb, true).is_err());
    assert_eq!(
        e.live().get(Cf::Lock, &key(2)).unwrap(),
        Some(b"l".to_vec()),
        "the batch is visible, and so in the mirror"
    );
    assert_agrees(&e, 4, "after a failed sync");
}

/// Writer A's lock is in RocksDB but not yet in the mirror when writer B deletes it: B
/// must wait for A's mirror update, or the mirror would keep a lock RocksDB no longer has.
#[test]
fn two_writers_of_one_lock_reach_the_mirror_in_rocksdbs_order() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 1 << 20);
    let (paused_tx, paused_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    *e.test_hooks.pause.lock().unwrap() = Some(Box::new(move || {
        paused_tx.send(()).unwrap();
        go_rx.recv().unwrap();
    }));
    let writer = |op: fn(&mut crate::RocksWriteBatch)| {
        let e = e.clone();
        std::thread::spawn(move || {
            let mut wb = e.write_batch();
            op(&mut wb);
            e.write(wb, false).unwrap();
        })
    };
    let a = writer(|wb| wb.put(Cf::Lock, &key(1), b"a"));
    paused_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("writer A reaches the hook");
    let b = writer(|wb| wb.delete(Cf::Lock, &key(1)));
    // Room for B to overtake A, which it must not.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!b.is_finished(), "B waits for A's mirror update");
    go_tx.send(()).unwrap();
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(e.snapshot().get(Cf::Lock, &key(1)).unwrap(), None);
    assert_agrees(&e, 2, "after two interleaved writers");
}

/// A writer that panics between RocksDB's write and the mirror's update leaves a batch
/// the mirror never saw: the mirror must turn off, not answer from a stale map.
#[test]
fn a_writer_that_panics_between_the_two_updates_turns_the_mirror_off() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 1 << 20);
    *e.test_hooks.pause.lock().unwrap() = Some(Box::new(|| panic!("injected between the writes")));
    let writer = {
        let e = e.clone();
        std::thread::spawn(move || {
            let mut wb = e.write_batch();
            wb.put(Cf::Lock, &key(3), b"l");
            e.write(wb, false)
        })
    };
    assert!(writer.join().is_err(), "the writer panicked");
    assert_eq!(
        e.live().get(Cf::Lock, &key(3)).unwrap(),
        Some(b"l".to_vec()),
        "RocksDB's state, not the mirror's"
    );
    assert_eq!(e.lock_mirror_len(), None);
    let mut wb = e.write_batch();
    wb.delete(Cf::Lock, &key(3));
    e.write(wb, false).unwrap();
    assert_agrees(&e, 4, "after the panic");
}

/// Live scans of many locks cross the mirror's chunks and stop where told, as RocksDB's.
#[test]
fn a_live_lock_scan_reads_the_mirror_across_its_chunks_and_stops_where_told() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 4 << 20);
    let lock = |i: u64| format!("lock-{i:04}").into_bytes();
    let mut wb = e.write_batch();
    for i in 0..1000 {
        wb.put(Cf::Lock, &lock(i), b"l");
    }
    e.write(wb, false).unwrap();
    // Leave tombstones behind, as committed transactions do.
    let mut wb = e.write_batch();
    for i in (0..1000).filter(|i| i % 3 == 0) {
        wb.delete(Cf::Lock, &lock(i));
    }
    e.write(wb, false).unwrap();
    assert_eq!(e.lock_mirror_len(), Some(666));
    let (live, snap) = (e.live(), e.snapshot());
    // Every end from 0 to 1000: ranges holding exactly a chunk, or chunks, included.
    for (lo, hi) in (0..=1000)
        .map(|hi| (0, hi))
        .chain([(1, 999), (255, 771), (500, 500)])
    {
        let (lo, hi) = (lock(lo), lock(hi));
        assert_eq!(scan_all(&live, &lo, &hi), scan_all(&snap, &lo, &hi));
    }
    let mut seen = Vec::new();
    live.scan(Cf::Lock, &lock(0), &lock(1000), |k, _| {
        seen.push(k.to_vec());
        Ok(seen.len() < 300)
    })
    .unwrap();
    assert_eq!(
        seen.len(),
        300,
        "stopped at the callback's word, past a chunk's end"
    );
    assert_eq!(
        seen.last(),
        scan_all(&snap, &lock(0), &lock(1000))
            .get(299)
            .map(|p| &p.0)
    );
    assert_eq!(
        live.seek(Cf::Lock, &lock(300), &lock(1000)).unwrap(),
        snap.seek(Cf::Lock, &lock(300), &lock(1000)).unwrap()
    );
}

/// A mirror that turns off in the middle of a scan hands the rest of it to RocksDB: no
/// lock is missed or seen twice.
#[test]
fn a_lock_scan_goes_on_from_rocksdb_when_the_mirror_turns_off_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let lock = |i: u64| format!("lock-{i:04}").into_bytes();
    let small = crate::lock_mirror::LockMirror::entry_bytes(&lock(0), b"l");
    let e = open(dir.path(), 1000 * small);
    let mut wb = e.write_batch();
    for i in 0..900 {
        wb.put(Cf::Lock, &lock(i), b"l");
    }
    e.write(wb, false).unwrap();
    assert_eq!(e.lock_mirror_len(), Some(900));
    let mut seen = Vec::new();
    e.live()
        .scan(Cf::Lock, &lock(0), &lock(1000), |k, _| {
            seen.push(k.to_vec());
            if seen.len() == 100 {
                // A lock outside the range, too large for the mirror.
                let mut wb = e.write_batch();
                wb.put(Cf::Lock, b"zzzz", &vec![0; 1000 * small]);
                e.write(wb, false).unwrap();
            }
            Ok(true)
        })
        .unwrap();
    assert_eq!(e.lock_mirror_len(), None, "turned off mid-scan");
    let want: Vec<Vec<u8>> = (0..900).map(lock).collect();
    assert_eq!(seen, want);
}
