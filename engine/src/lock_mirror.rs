//! The `lock` column family's live state, mirrored in memory ([`LockMirror`]).
//!
//! Percolator reads a key's lock at nearly every step (a prewrite's conflict check, a
//! commit, a transactional read), on every replica. The column family's live data is
//! small (the locks of transactions in flight) but its memtable holds every lock ever
//! put and deleted since the last flush, so a RocksDB `get` searches a skip list of
//! hundreds of thousands of versions: ~3 µs, with a cache miss per level. The mirror is
//! an ordered map of the live locks, kept beside RocksDB by [`crate::RocksEngine`]:
//! loaded at open, updated by every written batch's `lock` operations, and read by the
//! live view's point reads and scans ([`crate::RocksLive`]); snapshots still read RocksDB.
//! A scan of the live locks also skips what a RocksDB scan of the family would step over:
//! the tombstone of every lock deleted since the last compaction.
//!
//! Consistency: a batch's `lock` operations reach the mirror right after RocksDB took the
//! batch, before `write` returns (and even if its WAL sync then fails: the batch is
//! visible), and batches with `lock` operations pass both steps one at a time, so the
//! mirror applies them in RocksDB's order. A reader on another thread may see a batch in
//! RocksDB a moment before it sees it in the mirror; the live view promises no more
//! (two of its reads may see different states).
//!
//! Bound: past `limit` bytes (keys, values and a per-entry overhead) the mirror turns
//! itself off for the rest of the run and every read goes to RocksDB again, so a huge
//! transaction's locks cannot take the store's memory.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// What an entry costs beyond its key and value: its share of a map node, two `Vec`
/// headers, and the allocator's rounding of two heap blocks (counted generously).
const ENTRY_OVERHEAD: usize = 128;

/// One `lock` operation of a batch, in the batch's order.
#[derive(Debug)]
pub(crate) enum MirrorOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// The mirror: `None` while off.
pub(crate) struct LockMirror {
    /// Whether batches should record their `lock` operations (false once off, for good).
    on: AtomicBool,
    state: Mutex<Mirrored>,
    /// Held by a writer of `lock` operations across its RocksDB write and its mirror
    /// update, so the mirror applies batches in RocksDB's order.
    write_order: Mutex<()>,
    limit: usize,
}

#[derive(Default)]
struct Mirrored {
    map: Option<BTreeMap<Vec<u8>, Vec<u8>>>,
    bytes: usize,
}

fn entry_bytes(k: &[u8], v: &[u8]) -> usize {
    k.len() + v.len() + ENTRY_OVERHEAD
}

impl LockMirror {
    /// A mirror of `entries` (the column family's content at open, in any order), off
    /// if they take more than `limit` bytes.
    pub(crate) fn new(entries: Vec<(Vec<u8>, Vec<u8>)>, limit: usize) -> LockMirror {
        let mut map = BTreeMap::new();
        let mut bytes = 0;
        for (k, v) in entries {
            let (added, key_len) = (entry_bytes(&k, &v), k.len());
            bytes += added;
            if let Some(old) = map.insert(k, v) {
                bytes -= key_len + old.len() + ENTRY_OVERHEAD;
            }
        }
        if bytes > limit {
            return LockMirror::off();
        }
        LockMirror {
            on: AtomicBool::new(true),
            state: Mutex::new(Mirrored {
                map: Some(map),
                bytes,
            }),
            write_order: Mutex::new(()),
            limit,
        }
    }

    /// No mirror: every read goes to RocksDB.
    pub(crate) fn off() -> LockMirror {
        LockMirror {
            on: AtomicBool::new(false),
            state: Mutex::new(Mirrored::default()),
            write_order: Mutex::new(()),
            limit: 0,
        }
    }

    /// What an entry counts against the limit.
    pub(crate) fn entry_bytes(k: &[u8], v: &[u8]) -> usize {
        entry_bytes(k, v)
    }

    /// Whether batches should record their `lock` operations.
    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// The mirrored state. A thread that panicked while holding it may have left it half
    /// updated: the mirror is then turned off (reads go to RocksDB), not trusted.
    fn state(&self) -> MutexGuard<'_, Mirrored> {
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut s = poisoned.into_inner();
            self.turn_off(&mut s);
            s
        })
    }

    fn turn_off(&self, s: &mut Mirrored) {
        s.map = None;
        s.bytes = 0;
        self.on.store(false, Ordering::Release);
    }

    /// The map for a read, under the mutex; `None` when off (ask RocksDB).
    fn read<T>(&self, f: impl FnOnce(&BTreeMap<Vec<u8>, Vec<u8>>) -> T) -> Option<T> {
        if !self.is_on() {
            return None;
        }
        let mut s = self.state();
        if self.write_order.is_poisoned() {
            // A writer panicked between RocksDB's write and the mirror's update.
            self.turn_off(&mut s);
            return None;
        }
        s.map.as_ref().map(f)
    }

    /// `Some(value)` from the mirror; `None` when off (ask RocksDB).
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.read(|m| m.get(key).cloned())
    }

    /// Up to `max` mirrored entries of `[start, end)` in key order, from `start` on;
    /// `None` when off (ask RocksDB). A scan takes the range in such chunks, so the mutex
    /// is never held for long.
    pub(crate) fn range(
        &self,
        start: &[u8],
        end: &[u8],
        max: usize,
    ) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
        self.read(|m| {
            if end <= start {
                return Vec::new();
            }
            m.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
                .take(max)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// Held across a batch's RocksDB write and [`LockMirror::apply`]. A writer that
    /// panicked in between may have left a batch out of the mirror: it is then turned off.
    pub(crate) fn write_order(&self) -> MutexGuard<'_, ()> {
        self.write_order.lock().unwrap_or_else(|poisoned| {
            let mut s = self.state();
            self.turn_off(&mut s);
            poisoned.into_inner()
        })
    }

    /// Applies a written batch's `lock` operations, in order; turns the mirror off if it
    /// grows past its limit (checked once the whole batch is in).
    pub(crate) fn apply(&self, ops: Vec<MirrorOp>) {
        // What a range delete takes out is freed after the mutex is released.
        let mut removed = Vec::new();
        let mut s = self.state();
        let Mirrored { map, bytes } = &mut *s;
        let Some(m) = map else {
            return;
        };
        for op in ops {
            match op {
                MirrorOp::Put(k, v) => {
                    let (added, key_len) = (entry_bytes(&k, &v), k.len());
                    *bytes += added;
                    if let Some(old) = m.insert(k, v) {
                        *bytes -= key_len + old.len() + ENTRY_OVERHEAD;
                    }
                }
                MirrorOp::Delete(k) => {
                    if let Some(old) = m.remove(&k) {
                        *bytes -= entry_bytes(&k, &old);
                    }
                }
                MirrorOp::DeleteRange(start, end) => {
                    if end > start {
                        let doomed: Vec<Vec<u8>> =
                            m.range(start..end).map(|(k, _)| k.clone()).collect();
                        for k in doomed {
                            if let Some(old) = m.remove(&k) {
                                *bytes -= entry_bytes(&k, &old);
                                removed.push((k, old));
                            }
                        }
                    }
                }
            }
        }
        if *bytes > self.limit {
            let passed = map.take();
            self.turn_off(&mut s);
            drop(s);
            drop(passed);
        }
    }

    /// Entries mirrored (`None`: off), for tests and metrics.
    pub(crate) fn len(&self) -> Option<usize> {
        self.state().map.as_ref().map(BTreeMap::len)
    }
}

#[cfg(test)]
impl LockMirror {
    fn bytes(&self) -> usize {
        self.state().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> MirrorOp {
        MirrorOp::Put(k.into(), v.into())
    }

    #[test]
    fn its_byte_count_follows_puts_overwrites_deletes_and_range_deletes() {
        let m = LockMirror::new(vec![(b"a".to_vec(), b"1".to_vec())], 1 << 20);
        assert_eq!(m.bytes(), entry_bytes(b"a", b"1"));
        m.apply(vec![put("b", "22"), put("a", "333"), put("c", "4")]);
        let want = entry_bytes(b"a", b"333") + entry_bytes(b"b", b"22") + entry_bytes(b"c", b"4");
        assert_eq!(m.bytes(), want);
        assert_eq!(m.get(b"a"), Some(Some(b"333".to_vec())));
        m.apply(vec![
            MirrorOp::Delete(b"a".to_vec()),
            MirrorOp::Delete(b"zz".to_vec()),
        ]);
        assert_eq!(m.get(b"a"), Some(None));
        m.apply(vec![MirrorOp::DeleteRange(b"b".to_vec(), b"c".to_vec())]);
        assert_eq!(
            (m.get(b"b"), m.len()),
            (Some(None), Some(1)),
            "c is past the range"
        );
        m.apply(vec![MirrorOp::DeleteRange(b"c".to_vec(), b"b".to_vec())]);
        assert_eq!(m.len(), Some(1), "an inverted range removes nothing");
        m.apply(vec![MirrorOp::Delete(b"c".to_vec())]);
        assert_eq!((m.bytes(), m.len()), (0, Some(0)));
    }

    #[test]
    fn past_its_limit_it_turns_off_for_good() {
        let m = LockMirror::new(Vec::new(), 3 * entry_bytes(b"k1", b"v"));
        m.apply(vec![put("k1", "v"), put("k2", "v"), put("k3", "v")]);
        assert!(m.is_on());
        m.apply(vec![put("k4", "v")]);
        assert!(!m.is_on());
        assert_eq!((m.get(b"k1"), m.len()), (None, None), "off: ask RocksDB");
        m.apply(vec![MirrorOp::Delete(b"k1".to_vec())]);
        assert!(!m.is_on(), "it does not come back within the run");
        assert!(!LockMirror::new(vec![(b"k".to_vec(), vec![0; 100])], 100).is_on());
        assert!(!LockMirror::off().is_on());
    }
}
