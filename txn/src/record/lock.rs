//! The `lock` CF record: a transaction's claim on a key between prewrite (or a pessimistic
//! lock) and commit / rollback. Percolator's lock column, with TiKV's additions:
//! `for_update_ts` (pessimistic), `min_commit_ts` (pushed by readers, floor of the commit
//! ts), and the secondaries of an async-commit primary.
//!
//! Layout (tag `L`): `L kind flags start_ts ttl_ms for_update_ts min_commit_ts primary
//! [short_value] [secondaries]`, flags bit 0 = short value present, bit 1 = async commit.

use super::{put_bytes, put_short_value, put_varint, Cursor};
use crate::error::Result;

const TAG: u8 = b'L';
const FLAG_SHORT_VALUE: u8 = 1;
const FLAG_ASYNC_COMMIT: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_SHORT_VALUE | FLAG_ASYNC_COMMIT;

/// What a lock will write when committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// A prewritten value.
    Put,
    /// A prewritten deletion.
    Delete,
    /// A read lock (prewritten `Op::Lock`): commits as a `Lock` write, no data change.
    Lock,
    /// A pessimistic lock (`acquire_pessimistic_lock`), to be turned into one of the
    /// above by a pessimistic prewrite. Does not block readers.
    Pessimistic,
}

impl LockKind {
    fn code(self) -> u8 {
        match self {
            LockKind::Put => b'P',
            LockKind::Delete => b'D',
            LockKind::Lock => b'L',
            LockKind::Pessimistic => b'S',
        }
    }

    fn from_code(code: u8) -> Option<LockKind> {
        Some(match code {
            b'P' => LockKind::Put,
            b'D' => LockKind::Delete,
            b'L' => LockKind::Lock,
            b'S' => LockKind::Pessimistic,
            _ => return None,
        })
    }
}

/// A lock on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    /// What the lock will write.
    pub kind: LockKind,
    /// The transaction's primary key: its status decides this lock's fate.
    pub primary: Vec<u8>,
    /// The transaction's start timestamp.
    pub start_ts: u64,
    /// Time to live in milliseconds, counted from the physical part of `start_ts`.
    pub ttl_ms: u64,
    /// A pessimistic transaction's `for_update_ts` (0 for optimistic ones).
    pub for_update_ts: u64,
    /// The smallest commit ts the transaction may use; readers push it above their own ts
    /// so they need not wait (0: no floor beyond `start_ts + 1`).
    pub min_commit_ts: u64,
    /// The value, if a `Put` of at most 255 bytes (else it is in the `default` CF;
    /// [`Lock::encode`] panics on a longer one).
    pub short_value: Option<Vec<u8>>,
    /// Whether the transaction uses async commit (its commit ts is then decided by the
    /// `min_commit_ts` of its locks, and readers may not push it).
    pub use_async_commit: bool,
    /// On an async-commit primary: every secondary key of the transaction.
    pub secondaries: Vec<Vec<u8>>,
}

impl Lock {
    /// A lock with no value, no pessimistic or async-commit parts.
    pub fn new(kind: LockKind, primary: Vec<u8>, start_ts: u64, ttl_ms: u64) -> Lock {
        Lock {
            kind,
            primary,
            start_ts,
            ttl_ms,
            for_update_ts: 0,
            min_commit_ts: 0,
            short_value: None,
            use_async_commit: false,
            secondaries: Vec::new(),
        }
    }

    /// Whether the lock's TTL has run out at `current_ts`: `physical(start_ts) + ttl_ms <=
    /// physical(current_ts)`. Only the physical (millisecond) parts are compared, as TiKV
    /// does; the logical counters carry no time.
    pub fn is_expired(&self, current_ts: u64) -> bool {
        crate::ts::physical_ms(self.start_ts).saturating_add(self.ttl_ms)
            <= crate::ts::physical_ms(current_ts)
    }

    /// Whether a reader at `read_ts` must wait for (or resolve) this lock before reading
    /// the key: a lock of a transaction that may commit at or below `read_ts`. Pessimistic
    /// and read (`Lock`) locks never change data and do not block; a lock that started
    /// after `read_ts`, or whose `min_commit_ts` was pushed above it, commits above it.
    pub fn blocks_read_at(&self, read_ts: u64) -> bool {
        matches!(self.kind, LockKind::Put | LockKind::Delete)
            && self.start_ts <= read_ts
            && self.min_commit_ts <= read_ts
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            40 + self.primary.len() + self.short_value.as_ref().map_or(0, |v| v.len() + 1),
        );
        out.push(TAG);
        out.push(self.kind.code());
        let mut flags = 0;
        if self.short_value.is_some() {
            flags |= FLAG_SHORT_VALUE;
        }
        if self.use_async_commit {
            flags |= FLAG_ASYNC_COMMIT;
        }
        out.push(flags);
        for n in [
            self.start_ts,
            self.ttl_ms,
            self.for_update_ts,
            self.min_commit_ts,
        ] {
            put_varint(&mut out, n);
        }
        put_bytes(&mut out, &self.primary);
        if let Some(v) = &self.short_value {
            put_short_value(&mut out, v);
        }
        if self.use_async_commit {
            put_varint(&mut out, self.secondaries.len() as u64);
            for s in &self.secondaries {
                put_bytes(&mut out, s);
            }
        }
        out
    }

    /// Decodes a stored lock; anything malformed is [`Error::Corrupt`](crate::Error).
    pub fn decode(bytes: &[u8]) -> Result<Lock> {
        let mut c = Cursor::new("lock", bytes);
        c.expect_tag(TAG)?;
        let code = c.u8()?;
        let kind =
            LockKind::from_code(code).ok_or_else(|| c.corrupt(format!("lock kind {code:#04x}")))?;
        let flags = c.u8()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(c.corrupt(format!("unknown lock flags {flags:#04x}")));
        }
        let start_ts = c.varint()?;
        let ttl_ms = c.varint()?;
        let for_update_ts = c.varint()?;
        let min_commit_ts = c.varint()?;
        let primary = c.bytes()?;
        let short_value = if flags & FLAG_SHORT_VALUE != 0 {
            Some(c.short_value()?)
        } else {
            None
        };
        let use_async_commit = flags & FLAG_ASYNC_COMMIT != 0;
        let mut secondaries = Vec::new();
        if use_async_commit {
            let n = c.varint()?;
            for _ in 0..n {
                secondaries.push(c.bytes()?);
            }
        }
        c.finish()?;
        Ok(Lock {
            kind,
            primary,
            start_ts,
            ttl_ms,
            for_update_ts,
            min_commit_ts,
            short_value,
            use_async_commit,
            secondaries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn samples() -> Vec<Lock> {
        let mut out = Vec::new();
        for kind in [
            LockKind::Put,
            LockKind::Delete,
            LockKind::Lock,
            LockKind::Pessimistic,
        ] {
            for short in [None, Some(vec![]), Some(vec![7; 255])] {
                for secondaries in [None, Some(vec![]), Some(vec![b"s1".to_vec(), vec![]])] {
                    let mut l = Lock::new(kind, b"primary".to_vec(), 1 << 40, 3000);
                    l.for_update_ts = u64::MAX;
                    l.min_commit_ts = 129;
                    l.short_value = short.clone();
                    if let Some(s) = secondaries {
                        l.use_async_commit = true;
                        l.secondaries = s;
                    }
                    out.push(l);
                }
            }
        }
        out.push(Lock::new(LockKind::Put, vec![], 0, 0));
        out
    }

    #[test]
    fn every_lock_shape_round_trips() {
        for l in samples() {
            assert_eq!(Lock::decode(&l.encode()).unwrap(), l);
        }
    }

    #[test]
    fn every_truncation_and_a_trailing_byte_are_corrupt() {
        for l in samples() {
            let bytes = l.encode();
            for cut in 0..bytes.len() {
                assert!(
                    matches!(Lock::decode(&bytes[..cut]), Err(Error::Corrupt { .. })),
                    "{l:?} cut at {cut}"
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(Lock::decode(&long).is_err());
        }
    }

    #[test]
    fn unknown_tag_kind_or_flags_are_corrupt() {
        let bytes = Lock::new(LockKind::Put, b"p".to_vec(), 1, 2).encode();
        for (at, b) in [(0, b'W'), (1, b'?'), (2, 0x80)] {
            let mut bad = bytes.clone();
            bad[at] = b;
            assert!(Lock::decode(&bad).is_err(), "byte {at} = {b:#x}");
        }
    }

    #[test]
    fn ttl_counts_on_the_physical_part_and_only_data_locks_block_readers() {
        let start = crate::ts::compose(1000, 7);
        let l = Lock::new(LockKind::Put, b"p".to_vec(), start, 100);
        assert!(!l.is_expired(crate::ts::compose(1099, (1 << crate::ts::LOGICAL_BITS) - 1)));
        assert!(l.is_expired(crate::ts::compose(1100, 0)));
        assert!(l.blocks_read_at(start) && !l.blocks_read_at(start - 1));
        let mut pushed = l.clone();
        pushed.min_commit_ts = start + 10;
        assert!(!pushed.blocks_read_at(start + 9) && pushed.blocks_read_at(start + 10));
        for kind in [LockKind::Lock, LockKind::Pessimistic] {
            assert!(!Lock::new(kind, b"p".to_vec(), 1, 1).blocks_read_at(5));
        }
    }
}
