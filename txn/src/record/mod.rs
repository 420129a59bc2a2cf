//! MVCC records, each a compact hand-written binary format opened by a tag byte that also
//! names the format version (`L` = lock v1, `W` = write v1; a new layout gets a new tag).
//! Numbers are LEB128 varints, byte strings a varint length and the bytes, a short value
//! a one-byte length (<= [`SHORT_VALUE_MAX_LEN`]). Anything that does not decode exactly —
//! unknown tag, kind or flag, truncation, trailing bytes — is [`Error::Corrupt`], never a
//! panic.

mod lock;
mod write;

pub use lock::{Lock, LockKind};
pub use write::{Write, WriteKind};

use crate::error::{Error, Result};

/// Values up to this many bytes are inlined in the lock and then the write record; longer
/// ones go to the `default` CF at `key + start_ts` (TiKV's short-value optimisation).
pub const SHORT_VALUE_MAX_LEN: usize = 255;

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_short_value(out: &mut Vec<u8>, v: &[u8]) {
    assert!(
        v.len() <= SHORT_VALUE_MAX_LEN,
        "a short value holds at most {SHORT_VALUE_MAX_LEN} bytes, got {}",
        v.len()
    );
    out.push(v.len() as u8);
    out.extend_from_slice(v);
}

/// A cursor over a stored record that turns every shortfall into a corruption error.
struct Cursor<'a> {
    what: &'static str,
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Cursor { what, buf }
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::Corrupt {
            what: self.what,
            key: Vec::new(),
            detail,
        }
    }

    fn u8(&mut self) -> Result<u8> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or_else(|| self.corrupt("truncated".into()))?;
        self.buf = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7F);
            if shift == 63 && bits > 1 {
                return Err(self.corrupt("varint overflows u64".into()));
            }
            n |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(self.corrupt("varint longer than 10 bytes".into()))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.buf.len() < len {
            return Err(self.corrupt(format!(
                "truncated: need {len} bytes, {} left",
                self.buf.len()
            )));
        }
        let (b, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(b)
    }

    fn bytes(&mut self) -> Result<Vec<u8>> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.corrupt(format!("length {len}")))?;
        Ok(self.take(len)?.to_vec())
    }

    fn short_value(&mut self) -> Result<Vec<u8>> {
        let len = usize::from(self.u8()?);
        Ok(self.take(len)?.to_vec())
    }

    fn expect_tag(&mut self, tag: u8) -> Result<()> {
        let got = self.u8()?;
        if got != tag {
            return Err(self.corrupt(format!("tag {got:#04x}, expected {tag:#04x}")));
        }
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        if !self.buf.is_empty() {
            return Err(self.corrupt(format!("{} trailing bytes", self.buf.len())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_width() {
        let mut ns = vec![0u64, 1, 127, 128, 255, 300, u64::MAX, u64::MAX - 1];
        ns.extend((0..64).map(|s| 1u64 << s));
        ns.extend((1..64).map(|s| (1u64 << s) - 1));
        for n in ns {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            let mut c = Cursor::new("t", &out);
            assert_eq!(c.varint().unwrap(), n);
            c.finish().unwrap();
        }
        let too_long = [0xFFu8; 11];
        assert!(Cursor::new("t", &too_long).varint().is_err());
        let overflow = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02];
        assert!(Cursor::new("t", &overflow).varint().is_err());
    }

    #[test]
    fn decoders_never_panic_on_mutated_or_random_bytes() {
        // Goal: a fuzz pass over the decoders that runs in the unit tests. Method: every
        // one-byte change of valid records, and random strings behind each valid tag;
        // decoding must return Ok or Err, and an Ok must re-encode to a record that
        // decodes to the same value.
        let mut lock = Lock::new(LockKind::Put, b"primary".to_vec(), 1 << 40, 3000);
        lock.short_value = Some(b"short".to_vec());
        lock.use_async_commit = true;
        lock.secondaries = vec![b"s1".to_vec(), b"s2".to_vec()];
        let write = Write::new(WriteKind::Put, 1 << 40, Some(b"short".to_vec()));
        let mut inputs = Vec::new();
        for valid in [lock.encode(), write.encode()] {
            for at in 0..valid.len() {
                for b in [0x00, 0x01, 0x7F, 0x80, 0xFF, valid[at].wrapping_add(1)] {
                    let mut m = valid.clone();
                    m[at] = b;
                    inputs.push(m);
                }
            }
        }
        let mut rng = crate::tests::Rng(0x1234_5678_9ABC_DEF1);
        for i in 0..20_000u64 {
            let len = rng.below(40) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if let Some(first) = bytes.first_mut() {
                *first = if i % 2 == 0 { b'L' } else { b'W' };
            }
            inputs.push(bytes);
        }
        for bytes in inputs {
            if let Ok(l) = Lock::decode(&bytes) {
                assert_eq!(Lock::decode(&l.encode()).unwrap(), l);
            }
            if let Ok(w) = Write::decode(&bytes) {
                assert_eq!(Write::decode(&w.encode()).unwrap(), w);
            }
        }
    }
}
