//! [`Router`]: region id -> the `PeerActor` of that region on this store.

use crate::local_reader::ReadDelegate;
use crate::peer::PeerActor;
use actix::Addr;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Shared map from region id to the local replica's actor and read delegate.
#[derive(Clone, Default)]
pub struct Router {
    peers: Arc<RwLock<HashMap<u64, Addr<PeerActor>>>>,
    delegates: Arc<RwLock<HashMap<u64, Arc<ReadDelegate>>>>,
}

impl Router {
    /// Registers the actor of `region_id` and its read delegate.
    pub fn register(&self, region_id: u64, addr: Addr<PeerActor>, delegate: Arc<ReadDelegate>) {
        self.peers
            .write()
            .expect("router lock is never poisoned")
            .insert(region_id, addr);
        self.delegates
            .write()
            .expect("router lock is never poisoned")
            .insert(region_id, delegate);
    }

    /// Removes `region_id`.
    pub fn unregister(&self, region_id: u64) {
        self.peers
            .write()
            .expect("router lock is never poisoned")
            .remove(&region_id);
        self.delegates
            .write()
            .expect("router lock is never poisoned")
            .remove(&region_id);
    }

    /// The region hosted here whose range holds `key` (as its replica last published it).
    pub fn locate(&self, key: &[u8]) -> Option<regatta_proto::metapb::Region> {
        self.find_initialized(|r| regatta_proto::region::key_in_range(r, key))
    }

    /// A hosted, initialized region other than `except` whose range overlaps `region`'s.
    pub fn overlapping(
        &self,
        region: &regatta_proto::metapb::Region,
        except: u64,
    ) -> Option<regatta_proto::metapb::Region> {
        let (start, end) = (region.get_start_key(), region.get_end_key());
        self.find_initialized(|r| {
            r.get_id() != except
                && (end.is_empty() || r.get_start_key() < end)
                && (r.get_end_key().is_empty() || start < r.get_end_key())
        })
    }

    /// A hosted region, as last published, that knows its range and matches `pred`.
    fn find_initialized(
        &self,
        pred: impl Fn(&regatta_proto::metapb::Region) -> bool,
    ) -> Option<regatta_proto::metapb::Region> {
        self.delegates
            .read()
            .expect("router lock is never poisoned")
            .values()
            .map(|d| d.region())
            .find(|r| !r.get_peers().is_empty() && pred(r))
    }

    /// How many hosted replicas lead their region (as last published).
    pub fn leader_count(&self) -> usize {
        self.delegates
            .read()
            .expect("router lock is never poisoned")
            .values()
            .filter(|d| d.is_leader())
            .count()
    }

    /// The read delegate of `region_id`.
    pub fn delegate(&self, region_id: u64) -> Option<Arc<ReadDelegate>> {
        self.delegates
            .read()
            .expect("router lock is never poisoned")
            .get(&region_id)
            .cloned()
    }

    /// The actor of `region_id`.
    pub fn get(&self, region_id: u64) -> Option<Addr<PeerActor>> {
        self.peers
            .read()
            .expect("router lock is never poisoned")
            .get(&region_id)
            .cloned()
    }

    /// All region ids hosted here.
    pub fn region_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .peers
            .read()
            .expect("router lock is never poisoned")
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// All actors.
    pub fn all(&self) -> Vec<(u64, Addr<PeerActor>)> {
        self.peers
            .read()
            .expect("router lock is never poisoned")
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
}
