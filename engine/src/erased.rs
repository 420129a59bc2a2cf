//! Object-safe faces of [`Snapshot`] and [`WriteBatch`], for code behind a `dyn` seam.
//!
//! The engine traits are generic (`scan<F>`, `get_msg<M>`), so they cannot be trait
//! objects. A layer that plugs into another through `dyn` (the transactional layer's apply
//! hook in the raftstore) reads through a [`DynSnapshot`] and writes through a
//! [`DynWriteBatch`]: every `Snapshot` and `WriteBatch` is one (blanket impls), and
//! `dyn DynSnapshot` / `dyn DynWriteBatch` are a `Snapshot` / `WriteBatch` again, so the
//! generic code above them (an [`crate::Overlay`], MVCC actions) runs unchanged. The cost
//! is one indirect call per read or write, small beside a RocksDB lookup.

use crate::traits::{Cf, Engine, Snapshot, WriteBatch};
use crate::Result;
use std::sync::Arc;

/// An [`Engine`] as a trait object, for a layer behind a `dyn` seam that reads the live
/// state or writes from another thread (the transactional layer's GC passes). Every
/// `Engine` is one.
pub trait DynEngine: Send + Sync {
    /// [`Engine::live`].
    fn dyn_live(&self) -> Box<dyn DynSnapshot + '_>;
    /// [`Engine::snapshot`].
    fn dyn_snapshot(&self) -> Box<dyn DynSnapshot + '_>;
    /// A new batch, filled by `fill`, then written ([`Engine::write`]); nothing is written
    /// when `fill` fails.
    fn dyn_write(
        &self,
        sync: bool,
        fill: &mut dyn FnMut(&mut dyn DynWriteBatch) -> Result<()>,
    ) -> Result<()>;
    /// A handle on the same engine, for another thread.
    fn dyn_clone(&self) -> Arc<dyn DynEngine>;
}

impl<E: Engine> DynEngine for E {
    fn dyn_live(&self) -> Box<dyn DynSnapshot + '_> {
        Box::new(self.live())
    }

    fn dyn_snapshot(&self) -> Box<dyn DynSnapshot + '_> {
        Box::new(self.snapshot())
    }

    fn dyn_write(
        &self,
        sync: bool,
        fill: &mut dyn FnMut(&mut dyn DynWriteBatch) -> Result<()>,
    ) -> Result<()> {
        let mut wb = self.write_batch();
        fill(&mut wb)?;
        self.write(wb, sync)
    }

    fn dyn_clone(&self) -> Arc<dyn DynEngine> {
        Arc::new(self.clone())
    }
}

/// The visitor of a [`DynSnapshot::dyn_scan`] (see [`Snapshot::scan`]).
pub type ScanVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// A [`Snapshot`] as a trait object. Same contract.
pub trait DynSnapshot {
    /// [`Snapshot::get`].
    fn dyn_get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// [`Snapshot::scan`], with the visitor behind a reference.
    fn dyn_scan(&self, cf: Cf, start: &[u8], end: &[u8], f: &mut ScanVisitor) -> Result<()>;
    /// [`Snapshot::seek`] (kept: an implementation may bound its iterator better).
    fn dyn_seek(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
}

impl<S: Snapshot> DynSnapshot for S {
    fn dyn_get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(cf, key)
    }

    fn dyn_scan(&self, cf: Cf, start: &[u8], end: &[u8], f: &mut ScanVisitor) -> Result<()> {
        self.scan(cf, start, end, f)
    }

    fn dyn_seek(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.seek(cf, start, end)
    }
}

impl Snapshot for dyn DynSnapshot + '_ {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.dyn_get(cf, key)
    }

    fn scan<F>(&self, cf: Cf, start: &[u8], end: &[u8], mut f: F) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<bool>,
    {
        self.dyn_scan(cf, start, end, &mut f)
    }

    fn seek(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.dyn_seek(cf, start, end)
    }
}

/// A reference to a snapshot (so `&dyn DynSnapshot` is a sized `Snapshot`, for generic
/// code that needs one) and a boxed one (what [`DynEngine`] hands out) read as the
/// snapshot they point to.
macro_rules! forward_snapshot {
    ($($ty:ty),*) => {$(
        impl<S: Snapshot + ?Sized> Snapshot for $ty {
            fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
                (**self).get(cf, key)
            }

            fn scan<F>(&self, cf: Cf, start: &[u8], end: &[u8], f: F) -> Result<()>
            where
                F: FnMut(&[u8], &[u8]) -> Result<bool>,
            {
                (**self).scan(cf, start, end, f)
            }

            fn seek(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
                (**self).seek(cf, start, end)
            }
        }
    )*};
}

forward_snapshot!(&S, Box<S>);

/// A [`WriteBatch`] as a trait object. Same contract.
pub trait DynWriteBatch {
    /// [`WriteBatch::put`].
    fn dyn_put(&mut self, cf: Cf, key: &[u8], value: &[u8]);
    /// [`WriteBatch::delete`].
    fn dyn_delete(&mut self, cf: Cf, key: &[u8]);
    /// [`WriteBatch::delete_range`].
    fn dyn_delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]);
    /// [`WriteBatch::count`].
    fn dyn_count(&self) -> usize;
}

impl<W: WriteBatch> DynWriteBatch for W {
    fn dyn_put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.put(cf, key, value)
    }

    fn dyn_delete(&mut self, cf: Cf, key: &[u8]) {
        self.delete(cf, key)
    }

    fn dyn_delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        self.delete_range(cf, start, end)
    }

    fn dyn_count(&self) -> usize {
        self.count()
    }
}

impl WriteBatch for dyn DynWriteBatch + '_ {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.dyn_put(cf, key, value)
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.dyn_delete(cf, key)
    }

    fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        self.dyn_delete_range(cf, start, end)
    }

    fn count(&self) -> usize {
        self.dyn_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, MemEngine, Overlay};

    #[test]
    fn an_erased_snapshot_and_batch_read_and_write_like_the_typed_ones() {
        let engine = MemEngine::new();
        let mut wb = engine.write_batch();
        {
            let erased: &mut dyn DynWriteBatch = &mut wb;
            erased.put(Cf::Lock, b"a", b"1");
            erased.put(Cf::Lock, b"b", b"2");
            erased.delete(Cf::Lock, b"a");
            assert_eq!(erased.count(), 3);
        }
        engine.write(wb, false).unwrap();
        let snap = engine.snapshot();
        let erased: &dyn DynSnapshot = &snap;
        assert_eq!(erased.get(Cf::Lock, b"a").unwrap(), None);
        assert_eq!(erased.get(Cf::Lock, b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(
            erased.seek(Cf::Lock, b"a", b"z").unwrap(),
            Some((b"b".to_vec(), b"2".to_vec()))
        );
        // Generic code runs over the erased snapshot unchanged.
        let mut overlay = Overlay::new(erased);
        overlay.put(Cf::Lock, b"c", b"3");
        let mut seen = Vec::new();
        overlay
            .scan(Cf::Lock, b"", b"z", |k, _| {
                seen.push(k.to_vec());
                Ok(true)
            })
            .unwrap();
        assert_eq!(seen, vec![b"b".to_vec(), b"c".to_vec()]);
    }
}
