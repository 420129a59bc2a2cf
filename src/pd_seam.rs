//! Connects the store's PD seam (`regatta_regions::PdClient`) to the real PD over TCP
//! (`regatta_client::PdClient`). Lives in the binary so that `regions` never depends on
//! the client crate.

use regatta_proto::metapb::Store;
use regatta_proto::pdpb::{
    RegionHeartbeatRequest, RegionHeartbeatResponse, StoreHeartbeatRequest, StoreHeartbeatResponse,
};
use regatta_regions::pd::BoxFuture;

/// The TCP PD client, as the store sees it.
pub struct TcpPd(pub regatta_client::PdClient);

impl TcpPd {
    /// A PD client for `addrs` with the client's default deadlines.
    pub fn new(addrs: Vec<String>) -> anyhow::Result<TcpPd> {
        Ok(TcpPd(regatta_client::PdClient::new(
            addrs,
            regatta_client::Config::default(),
        )?))
    }
}

impl regatta_regions::PdClient for TcpPd {
    fn put_store(&self, store: Store) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.put_store(store).await.map_err(|e| e.to_string()) })
    }

    fn get_store(&self, store_id: u64) -> BoxFuture<'_, Result<Store, String>> {
        Box::pin(async move { self.0.get_store(store_id).await.map_err(|e| e.to_string()) })
    }

    fn store_heartbeat(
        &self,
        req: StoreHeartbeatRequest,
    ) -> BoxFuture<'_, Result<StoreHeartbeatResponse, String>> {
        Box::pin(async move { self.0.store_heartbeat(req).await.map_err(|e| e.to_string()) })
    }

    fn alloc_id(&self, count: u32) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async move { self.0.alloc_id(count).await.map_err(|e| e.to_string()) })
    }

    fn region_heartbeat(
        &self,
        req: RegionHeartbeatRequest,
    ) -> BoxFuture<'_, Result<RegionHeartbeatResponse, String>> {
        Box::pin(async move {
            self.0
                .region_heartbeat(req)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
