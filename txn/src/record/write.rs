//! The `write` CF record at `key + commit_ts`: Percolator's write column. A `Put` points at
//! its value (inlined when short, else the `default` CF at `key + start_ts`); `Delete`
//! hides older versions; `Lock` and `Rollback` change no data and readers skip them.
//!
//! A `Rollback` sits at `key + start_ts` of the rolled-back transaction, so a late prewrite
//! of it finds its own rollback and fails. When that slot already holds another
//! transaction's commit record (async commit / 1PC can pick a commit ts equal to a start
//! ts), the rollback is recorded as the `overlapped_rollback` flag of that record instead —
//! if it is `protected` (TiKV's overlapped rollback); an unprotected one (a secondary's) is
//! dropped, as in TiKV, and a late prewrite there leaves an orphan lock that resolvers roll
//! back (see `actions::put_rollback`).
//!
//! Layout (tag `W`): `W kind flags start_ts [short_value]`, flags bit 0 = short value,
//! bit 1 = protected rollback, bit 2 = overlapped rollback.

use super::{put_short_value, put_varint, Cursor};
use crate::error::Result;
use crate::record::LockKind;

const TAG: u8 = b'W';
const FLAG_SHORT_VALUE: u8 = 1;
const FLAG_PROTECTED: u8 = 2;
const FLAG_OVERLAPPED_ROLLBACK: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_SHORT_VALUE | FLAG_PROTECTED | FLAG_OVERLAPPED_ROLLBACK;

/// What a committed (or rolled-back) transaction did to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// Wrote a value.
    Put,
    /// Deleted the key.
    Delete,
    /// Read-locked the key; no data change.
    Lock,
    /// Rolled back; no data change.
    Rollback,
}

impl WriteKind {
    /// The write a committed lock of `kind` leaves, or `None` for a pessimistic lock
    /// (which must be prewritten before it can commit).
    pub fn from_lock(kind: LockKind) -> Option<WriteKind> {
        match kind {
            LockKind::Put => Some(WriteKind::Put),
            LockKind::Delete => Some(WriteKind::Delete),
            LockKind::Lock => Some(WriteKind::Lock),
            LockKind::Pessimistic => None,
        }
    }

    fn code(self) -> u8 {
        match self {
            WriteKind::Put => b'P',
            WriteKind::Delete => b'D',
            WriteKind::Lock => b'L',
            WriteKind::Rollback => b'R',
        }
    }

    fn from_code(code: u8) -> Option<WriteKind> {
        Some(match code {
            b'P' => WriteKind::Put,
            b'D' => WriteKind::Delete,
            b'L' => WriteKind::Lock,
            b'R' => WriteKind::Rollback,
            _ => return None,
        })
    }
}

/// A commit or rollback record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// What the transaction did.
    pub kind: WriteKind,
    /// The transaction's start timestamp (where its large value lives in `default`).
    pub start_ts: u64,
    /// The value of a `Put` of at most 255 bytes ([`Write::encode`] panics on a longer
    /// one; longer values live in the `default` CF).
    pub short_value: Option<Vec<u8>>,
    /// A `Rollback` that must not be dropped or overwritten (see the module doc).
    pub protected: bool,
    /// A commit record that also stands for the rollback of the transaction whose start
    /// ts equals this record's commit ts.
    pub overlapped_rollback: bool,
}

impl Write {
    /// A write of `kind` by the transaction that started at `start_ts`.
    pub fn new(kind: WriteKind, start_ts: u64, short_value: Option<Vec<u8>>) -> Write {
        Write {
            kind,
            start_ts,
            short_value,
            protected: false,
            overlapped_rollback: false,
        }
    }

    /// A rollback record of the transaction `start_ts`.
    pub fn rollback(start_ts: u64, protected: bool) -> Write {
        Write {
            protected,
            ..Write::new(WriteKind::Rollback, start_ts, None)
        }
    }

    /// Whether readers see through it (`Lock` and `Rollback` change no data).
    pub fn is_data(&self) -> bool {
        matches!(self.kind, WriteKind::Put | WriteKind::Delete)
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.short_value.as_ref().map_or(0, |v| v.len()));
        out.push(TAG);
        out.push(self.kind.code());
        let mut flags = 0;
        if self.short_value.is_some() {
            flags |= FLAG_SHORT_VALUE;
        }
        if self.protected {
            flags |= FLAG_PROTECTED;
        }
        if self.overlapped_rollback {
            flags |= FLAG_OVERLAPPED_ROLLBACK;
        }
        out.push(flags);
        put_varint(&mut out, self.start_ts);
        if let Some(v) = &self.short_value {
            put_short_value(&mut out, v);
        }
        out
    }

    /// Decodes a stored write; anything malformed is [`Error::Corrupt`](crate::Error).
    pub fn decode(bytes: &[u8]) -> Result<Write> {
        let mut c = Cursor::new("write", bytes);
        c.expect_tag(TAG)?;
        let code = c.u8()?;
        let kind = WriteKind::from_code(code)
            .ok_or_else(|| c.corrupt(format!("write kind {code:#04x}")))?;
        let flags = c.u8()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(c.corrupt(format!("unknown write flags {flags:#04x}")));
        }
        let start_ts = c.varint()?;
        let short_value = if flags & FLAG_SHORT_VALUE != 0 {
            Some(c.short_value()?)
        } else {
            None
        };
        c.finish()?;
        Ok(Write {
            kind,
            start_ts,
            short_value,
            protected: flags & FLAG_PROTECTED != 0,
            overlapped_rollback: flags & FLAG_OVERLAPPED_ROLLBACK != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// Every kind x value shape x flag combination.
    fn samples() -> Vec<Write> {
        let mut out = Vec::new();
        for kind in [
            WriteKind::Put,
            WriteKind::Delete,
            WriteKind::Lock,
            WriteKind::Rollback,
        ] {
            for short in [None, Some(vec![]), Some(vec![0xAB; 255])] {
                for flags in 0..4u8 {
                    for start_ts in [0, 300, u64::MAX] {
                        out.push(Write {
                            kind,
                            start_ts,
                            short_value: short.clone(),
                            protected: flags & 1 != 0,
                            overlapped_rollback: flags & 2 != 0,
                        });
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_write_shape_round_trips() {
        for w in samples() {
            assert_eq!(Write::decode(&w.encode()).unwrap(), w);
        }
    }

    #[test]
    fn every_truncation_a_trailing_byte_and_unknown_bits_are_corrupt() {
        for w in samples() {
            let bytes = w.encode();
            for cut in 0..bytes.len() {
                assert!(matches!(
                    Write::decode(&bytes[..cut]),
                    Err(Error::Corrupt { .. })
                ));
            }
            let mut long = bytes.clone();
            long.push(1);
            assert!(Write::decode(&long).is_err());
            for (at, b) in [(0, b'L'), (1, b'x'), (2, 0x08)] {
                let mut bad = bytes.clone();
                bad[at] = b;
                assert!(Write::decode(&bad).is_err());
            }
        }
    }
}
