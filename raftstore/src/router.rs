//! [`Router`]: region id -> the `PeerActor` of that region on this store, beside the
//! store's [`ReadRegistry`] of read delegates (kept apart: local reads never go through
//! the actors).

use crate::local_reader::{ReadDelegate, ReadRegistry};
use crate::peer::{Inbox, PeerActor};
use actix::Addr;
use regatta_proto::metapb::Region;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Shared map from region id to the local replica's actor, with the read registry.
#[derive(Clone, Default)]
pub struct Router {
    peers: Arc<RwLock<HashMap<u64, Inbox>>>,
    reads: ReadRegistry,
}

impl Router {
    /// A router whose replicas publish their read state into `reads`.
    pub fn new(reads: ReadRegistry) -> Router {
        Router {
            peers: Arc::default(),
            reads,
        }
    }

    /// Registers the actor of `region_id` (its inbox) and its read delegate.
    pub fn register(&self, region_id: u64, inbox: Inbox, delegate: Arc<ReadDelegate>) {
        self.peers
            .write()
            .expect("router lock is never poisoned")
            .insert(region_id, inbox);
        self.reads.insert(region_id, delegate);
    }

    /// Removes `region_id`.
    pub fn unregister(&self, region_id: u64) {
        self.peers
            .write()
            .expect("router lock is never poisoned")
            .remove(&region_id);
        self.reads.remove(region_id);
    }

    /// The store's read delegates.
    pub fn reads(&self) -> &ReadRegistry {
        &self.reads
    }

    /// The region hosted here whose range holds `key` (as its replica last published it).
    pub fn locate(&self, key: &[u8]) -> Option<Region> {
        self.reads.locate(key)
    }

    /// A hosted, initialized region other than `except` whose range overlaps `region`'s.
    pub fn overlapping(&self, region: &Region, except: u64) -> Option<Region> {
        self.reads.overlapping(region, except)
    }

    /// How many hosted replicas lead their region (as last published).
    pub fn leader_count(&self) -> usize {
        self.reads.leader_count()
    }

    /// The read delegate of `region_id`.
    pub fn delegate(&self, region_id: u64) -> Option<Arc<ReadDelegate>> {
        self.reads.get(region_id)
    }

    /// The actor of `region_id`.
    pub fn get(&self, region_id: u64) -> Option<Addr<PeerActor>> {
        self.inbox(region_id).map(|i| i.addr().clone())
    }

    /// The bounded way in to the actor of `region_id`, for messages from the network.
    pub fn inbox(&self, region_id: u64) -> Option<Inbox> {
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
            .map(|(k, v)| (*k, v.addr().clone()))
            .collect()
    }
}
