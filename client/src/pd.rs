//! [`PdClient`]: requests to the placement driver, failing over between PD addresses
//! (over TCP by default: one multiplexed connection per address, reopened when it breaks).

use crate::config::Config;
use crate::error::{Error, PdError, Result};
use crate::wire::{TcpWire, Wire, WireError};
use regatta_proto::framepb::Frame_oneof_body;
use regatta_proto::metapb::{Peer, Region, Store};
use regatta_proto::pdpb::{
    AllocIdRequest, DetectRequest, DetectResponse, GetAllStoresRequest, GetRegionByIdRequest,
    GetRegionRequest, GetRegionResponse, GetStoreRequest, PdRequest, PdResponse, PutStoreRequest,
    RegionHeartbeatRequest, RegionHeartbeatResponse, RegionWithLeader, ScanRegionsRequest,
    StoreHeartbeatRequest, StoreHeartbeatResponse, TsoRequest,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A client of PD's service.
pub struct PdClient {
    addrs: Vec<String>,
    cfg: Config,
    wire: Arc<dyn Wire>,
    /// The address that answered last (tried first).
    current: AtomicUsize,
}

/// A region and its leader as PD last heard (`None`: unknown).
pub(crate) type RegionRoute = (Region, Option<Peer>);

fn route(mut r: GetRegionResponse) -> RegionRoute {
    let leader = if r.has_leader() && r.get_leader().get_id() != 0 {
        Some(r.take_leader())
    } else {
        None
    };
    (r.take_region(), leader)
}

impl PdClient {
    /// A client of the PD at any of `addrs`, over TCP (connects lazily).
    pub fn new(addrs: Vec<String>, cfg: Config) -> Result<PdClient> {
        let wire = Arc::new(TcpWire::new(cfg.connect_timeout));
        Self::over(addrs, cfg, wire)
    }

    /// A client of the PD at any of `addrs`, its requests carried by `wire`.
    pub fn over(addrs: Vec<String>, cfg: Config, wire: Arc<dyn Wire>) -> Result<PdClient> {
        if addrs.is_empty() || addrs.iter().any(|a| a.trim().is_empty()) {
            return Err(Error::InvalidArgument(
                "need at least one PD address".into(),
            ));
        }
        cfg.validate()?;
        Ok(PdClient {
            addrs,
            cfg,
            wire,
            current: AtomicUsize::new(0),
        })
    }

    /// Sends one request; a PD-side error comes back as `Err(Error::Pd)`. An address that
    /// cannot be reached is skipped for the next one, starting from the one that answered
    /// last; a request sent but not answered is not sent again here (the caller's retry
    /// loop decides).
    pub async fn call(&self, req: PdRequest) -> Result<PdResponse> {
        let first = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for i in 0..self.addrs.len() {
            let at = (first + i) % self.addrs.len();
            let addr = &self.addrs[at];
            let body = match self
                .wire
                .call(
                    addr,
                    Frame_oneof_body::pd_request(req.clone()),
                    self.cfg.rpc_timeout,
                )
                .await
            {
                Ok(body) => body,
                Err(WireError::Unreachable(reason)) => {
                    last = reason;
                    continue;
                }
                Err(WireError::NoAnswer(reason)) => {
                    return Err(Error::Pd(PdError::Unreachable(reason)))
                }
            };
            self.current.store(at, Ordering::Relaxed);
            return match body {
                Frame_oneof_body::pd_response(resp) => {
                    if resp.has_error() {
                        Err(Error::Pd(refusal(resp.get_error())))
                    } else {
                        Ok(resp)
                    }
                }
                _ => Err(Error::Pd(PdError::Refused(format!(
                    "{addr} answered with something that is not a PD response"
                )))),
            };
        }
        Err(Error::Pd(PdError::Unreachable(format!(
            "no PD reachable at {:?}: {last}",
            self.addrs
        ))))
    }

    /// The region holding `key` and its leader if known.
    pub async fn get_region(&self, key: &[u8]) -> Result<(Region, Option<Peer>)> {
        let mut r = GetRegionRequest::new();
        r.set_key(key.to_vec());
        let mut req = PdRequest::new();
        req.set_get_region(r);
        Ok(route(self.call(req).await?.take_get_region()))
    }

    /// The region with id `region_id` and its leader if known.
    pub async fn get_region_by_id(&self, region_id: u64) -> Result<(Region, Option<Peer>)> {
        let mut r = GetRegionByIdRequest::new();
        r.set_region_id(region_id);
        let mut req = PdRequest::new();
        req.set_get_region_by_id(r);
        Ok(route(self.call(req).await?.take_get_region()))
    }

    /// Regions overlapping `[start, end)` (empty end: unbounded), at most `limit` (0: all).
    pub async fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<(Region, Option<Peer>)>> {
        Ok(self
            .scan_region_infos(start, end, limit)
            .await?
            .into_iter()
            .map(|mut rl| {
                let leader = if rl.has_leader() && rl.get_leader().get_id() != 0 {
                    Some(rl.take_leader())
                } else {
                    None
                };
                (rl.take_region(), leader)
            })
            .collect())
    }

    /// Regions overlapping `[start, end)` as PD knows them, with their leader and the
    /// approximate size and key count from the leader's last heartbeat.
    pub async fn scan_region_infos(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<RegionWithLeader>> {
        let mut r = ScanRegionsRequest::new();
        r.set_start_key(start.to_vec());
        r.set_end_key(end.to_vec());
        r.set_limit(limit);
        let mut req = PdRequest::new();
        req.set_scan_regions(r);
        let mut resp = self.call(req).await?;
        Ok(resp.mut_scan_regions().take_regions().into_vec())
    }

    /// A store's record (its address).
    pub async fn get_store(&self, store_id: u64) -> Result<Store> {
        let mut r = GetStoreRequest::new();
        r.set_store_id(store_id);
        let mut req = PdRequest::new();
        req.set_get_store(r);
        Ok(self.call(req).await?.take_get_store().take_store())
    }

    /// Every registered store.
    pub async fn get_all_stores(&self) -> Result<Vec<Store>> {
        let mut req = PdRequest::new();
        req.set_get_all_stores(GetAllStoresRequest::new());
        Ok(self
            .call(req)
            .await?
            .take_get_all_stores()
            .take_stores()
            .into_vec())
    }

    /// `count` fresh ids; returns the first (they are consecutive).
    pub async fn alloc_id(&self, count: u32) -> Result<u64> {
        let mut r = AllocIdRequest::new();
        r.set_count(count);
        let mut req = PdRequest::new();
        req.set_alloc_id(r);
        Ok(self.call(req).await?.get_alloc_id().get_first_id())
    }

    /// One timestamp from PD's oracle (`physical_ms << 18 | logical`), greater than every
    /// timestamp handed out before, across PD restarts too.
    pub async fn get_ts(&self) -> Result<u64> {
        self.get_ts_batch(1).await
    }

    /// `count` consecutive timestamps (1..=65536); returns the first.
    pub async fn get_ts_batch(&self, count: u32) -> Result<u64> {
        let mut r = TsoRequest::new();
        r.set_count(count);
        let mut req = PdRequest::new();
        req.set_tso(r);
        Ok(self.call(req).await?.get_tso().get_first())
    }

    /// Registers a store (used by stores).
    pub async fn put_store(&self, store: Store) -> Result<()> {
        let mut r = PutStoreRequest::new();
        r.set_store(store);
        let mut req = PdRequest::new();
        req.set_put_store(r);
        self.call(req).await.map(|_| ())
    }

    /// A store's heartbeat (used by stores).
    pub async fn store_heartbeat(
        &self,
        hb: StoreHeartbeatRequest,
    ) -> Result<StoreHeartbeatResponse> {
        let mut req = PdRequest::new();
        req.set_store_heartbeat(hb);
        Ok(self.call(req).await?.take_store_heartbeat())
    }

    /// A region leader's heartbeat (used by stores); the answer may order a leader
    /// transfer.
    pub async fn region_heartbeat(
        &self,
        hb: RegionHeartbeatRequest,
    ) -> Result<RegionHeartbeatResponse> {
        let mut req = PdRequest::new();
        req.set_region_heartbeat(hb);
        Ok(self.call(req).await?.take_region_heartbeat())
    }

    /// A store leader's batch of pessimistic lock-wait reports, applied by PD in order;
    /// the answer lists the waits refused because they would close a cycle (used by
    /// stores).
    pub async fn detect(&self, r: DetectRequest) -> Result<DetectResponse> {
        let mut req = PdRequest::new();
        req.set_detect(r);
        Ok(self.call(req).await?.take_detect())
    }
}

/// PD's error answer as the kind a caller can act on.
fn refusal(e: &regatta_proto::pdpb::PdError) -> PdError {
    let message = e.get_message().to_string();
    if e.get_not_bootstrapped() {
        PdError::NotBootstrapped(message)
    } else {
        PdError::Refused(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unbootstrapped_cluster_is_told_apart_from_a_refusal() {
        let mut e = regatta_proto::pdpb::PdError::new();
        e.set_message("1 of 3 initial stores registered".into());
        e.set_not_bootstrapped(true);
        assert_eq!(
            refusal(&e),
            PdError::NotBootstrapped("1 of 3 initial stores registered".into())
        );
        e.set_not_bootstrapped(false);
        e.set_message("store 0 has no address".into());
        assert_eq!(
            refusal(&e),
            PdError::Refused("store 0 has no address".into())
        );
    }
}
