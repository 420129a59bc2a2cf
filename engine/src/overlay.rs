//! [`Overlay`]: a write batch that can be read back — pending writes layered over a
//! [`Snapshot`], implementing both [`Snapshot`] and [`WriteBatch`].
//!
//! Why: the transaction actions (`regatta-txn`) read a snapshot and write a batch, and a
//! batch cannot be read back ("one action per key per batch"). Apply runs several
//! transactional commands of one raft entry (and several entries) in one batch, and each
//! must see the writes of the ones before. So apply gives each command an `Overlay` over
//! the overlay of the commands before it; on success the command's operations
//! ([`Overlay::into_ops`]) are replayed into the parent overlay and into the real batch,
//! on failure they are dropped.
//!
//! Contract: reads through an overlay are those of a snapshot of the base after the
//! overlay's operations were written in order (a later operation on a key wins); a
//! `delete_range` covers the base's keys in its range as of the call and every pending key
//! in it. The base never changes (it is a snapshot), so that is exact. Checked against
//! both engines by the conformance suite (`engine_tests.rs`, an overlay written over a
//! snapshot must read like the engine after the same batch). A base read that fails
//! inside `delete_range` (a batch operation cannot return it) makes every later read of
//! the overlay fail with [`Error::Deferred`](crate::Error::Deferred).

use crate::error::Result;
use crate::traits::{Cf, Snapshot, WriteBatch};
use std::collections::BTreeMap;
use std::ops::Bound;

/// One operation added to an [`Overlay`], replayable into any [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverlayOp {
    /// `put(cf, key, value)`.
    Put(Cf, Vec<u8>, Vec<u8>),
    /// `delete(cf, key)`.
    Delete(Cf, Vec<u8>),
    /// `delete_range(cf, start, end)`.
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

impl OverlayOp {
    /// Adds this operation to `wb`.
    pub fn replay<W: WriteBatch + ?Sized>(&self, wb: &mut W) {
        match self {
            OverlayOp::Put(cf, k, v) => wb.put(*cf, k, v),
            OverlayOp::Delete(cf, k) => wb.delete(*cf, k),
            OverlayOp::DeleteRange(cf, s, e) => wb.delete_range(*cf, s, e),
        }
    }
}

/// A write batch that only records its operations, to replay them elsewhere (into an
/// [`Overlay`] and the real batch, once the action that wrote them succeeded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpBatch {
    /// The operations, in the order added.
    pub ops: Vec<OverlayOp>,
}

impl WriteBatch for OpBatch {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.ops
            .push(OverlayOp::Put(cf, key.to_vec(), value.to_vec()));
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.ops.push(OverlayOp::Delete(cf, key.to_vec()));
    }

    fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        self.ops
            .push(OverlayOp::DeleteRange(cf, start.to_vec(), end.to_vec()));
    }

    fn count(&self) -> usize {
        self.ops.len()
    }
}

/// Pending writes over a base snapshot: readable like a snapshot, writable like a batch.
pub struct Overlay<'a, S: Snapshot + ?Sized> {
    base: &'a S,
    /// Per column family (index of [`Cf::ALL`]): the pending value of a key, `None` =
    /// deleted.
    pending: [BTreeMap<Vec<u8>, Option<Vec<u8>>>; Cf::ALL.len()],
    ops: Vec<OverlayOp>,
    /// A base read that failed inside `delete_range` (which cannot return it): every
    /// later read returns it.
    failed: Option<String>,
}

impl<'a, S: Snapshot + ?Sized> Overlay<'a, S> {
    /// An overlay with no pending writes over `base`.
    pub fn new(base: &'a S) -> Self {
        Overlay {
            base,
            pending: Default::default(),
            ops: Vec::new(),
            failed: None,
        }
    }

    /// The operations added, in order (to replay into a parent overlay and a real batch).
    pub fn into_ops(self) -> Vec<OverlayOp> {
        self.ops
    }

    /// Adds every operation of `ops`, in order.
    pub fn extend(&mut self, ops: &[OverlayOp]) {
        for op in ops {
            op.replay(self);
        }
    }

    fn map(&self, cf: Cf) -> &BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        &self.pending[cf.index()]
    }

    fn check(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(detail) => Err(crate::Error::Deferred {
                op: "overlay delete_range scanning its base",
                detail: detail.clone(),
            }),
        }
    }
}

impl<S: Snapshot + ?Sized> Snapshot for Overlay<'_, S> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check()?;
        match self.map(cf).get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(cf, key),
        }
    }

    fn scan<F>(&self, cf: Cf, start: &[u8], end: &[u8], mut f: F) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<bool>,
    {
        self.check()?;
        if end <= start {
            return Ok(());
        }
        let range = (Bound::Included(start), Bound::Excluded(end));
        let mut pending = self
            .map(cf)
            .range::<[u8], _>(range)
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .peekable();
        // Merge the base's pairs with the pending ones, ascending; a pending entry hides
        // the base's pair of the same key (a `None` hides it altogether).
        let mut stopped = false;
        self.base.scan(cf, start, end, |k, v| {
            while let Some((pk, pv)) = pending.peek().copied() {
                if pk > k {
                    break;
                }
                pending.next();
                if let Some(pv) = pv {
                    if !f(pk, pv)? {
                        stopped = true;
                        return Ok(false);
                    }
                }
                if pk == k {
                    return Ok(true); // the pending entry replaced the base's pair
                }
            }
            if !f(k, v)? {
                stopped = true;
                return Ok(false);
            }
            Ok(true)
        })?;
        if stopped {
            return Ok(());
        }
        for (pk, pv) in pending {
            if let Some(pv) = pv {
                if !f(pk, pv)? {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl<S: Snapshot + ?Sized> WriteBatch for Overlay<'_, S> {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.pending[cf.index()].insert(key.to_vec(), Some(value.to_vec()));
        self.ops
            .push(OverlayOp::Put(cf, key.to_vec(), value.to_vec()));
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.pending[cf.index()].insert(key.to_vec(), None);
        self.ops.push(OverlayOp::Delete(cf, key.to_vec()));
    }

    fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        self.ops
            .push(OverlayOp::DeleteRange(cf, start.to_vec(), end.to_vec()));
        if end <= start {
            return;
        }
        // The base never changes, so marking its keys in the range deleted now is exact.
        let mut base_keys = Vec::new();
        let scanned = self.base.scan(cf, start, end, |k, _| {
            base_keys.push(k.to_vec());
            Ok(true)
        });
        // `WriteBatch` methods cannot fail: the error is kept and every later read
        // returns it (`check`), so it is never lost.
        if let Err(e) = scanned {
            self.failed.get_or_insert_with(|| e.to_string());
        }
        let map = &mut self.pending[cf.index()];
        let range = (Bound::Included(start), Bound::Excluded(end));
        let pending: Vec<Vec<u8>> = map
            .range::<[u8], _>(range)
            .map(|(k, _)| k.clone())
            .collect();
        for k in base_keys.into_iter().chain(pending) {
            map.insert(k, None);
        }
    }

    fn count(&self) -> usize {
        self.ops.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, MemEngine};

    #[test]
    fn a_nested_overlay_sees_its_parent_and_hands_back_only_its_own_ops() {
        let e = MemEngine::new();
        let mut wb = e.write_batch();
        wb.put(Cf::Lock, b"a", b"base");
        e.write(wb, false).expect("write");
        let snap = e.snapshot();
        let mut parent = Overlay::new(&snap);
        parent.put(Cf::Lock, b"b", b"1");
        let mut child = Overlay::new(&parent);
        child.delete(Cf::Lock, b"a");
        assert_eq!(child.get(Cf::Lock, b"b").expect("get"), Some(b"1".to_vec()));
        assert_eq!(child.get(Cf::Lock, b"a").expect("get"), None);
        let ops = child.into_ops();
        assert_eq!(ops, vec![OverlayOp::Delete(Cf::Lock, b"a".to_vec())]);
        parent.extend(&ops);
        assert_eq!(parent.get(Cf::Lock, b"a").expect("get"), None);
        assert_eq!(
            snap.get(Cf::Lock, b"a").expect("get"),
            Some(b"base".to_vec())
        );
    }
}
