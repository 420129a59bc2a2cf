//! Connects the store's PD seam (`regatta_server::PdClient`) to the real PD over TCP
//! (`regatta_client::PdClient`). Lives in the binary so that the server never depends on
//! the client crate.

use regatta_proto::metapb::Store;
use regatta_proto::pdpb::{
    DetectRequest, DetectResponse, RegionHeartbeatRequest, RegionHeartbeatResponse,
    StoreHeartbeatRequest, StoreHeartbeatResponse,
};
use regatta_server::pd::BoxFuture;
use regatta_server::PdError;
use std::future::Future;
use std::sync::Arc;

/// The TCP PD client, as the store sees it.
///
/// Every call runs on the runtime that created it, whichever thread calls: the PD
/// connection (whose reader and writer tasks start on the runtime of the first call)
/// then never lives on a store's arbiter, where a busy turn would delay every PD answer.
pub struct TcpPd {
    client: Arc<regatta_client::PdClient>,
    rt: tokio::runtime::Handle,
}

impl TcpPd {
    /// A PD client for `addrs` with the client's default deadlines. Must be called from
    /// within a tokio runtime (its calls run there).
    pub fn new(addrs: Vec<String>) -> anyhow::Result<TcpPd> {
        Ok(TcpPd {
            client: Arc::new(regatta_client::PdClient::new(
                addrs,
                regatta_client::Config::default(),
            )?),
            rt: tokio::runtime::Handle::try_current()
                .map_err(|e| anyhow::anyhow!("the PD client needs a tokio runtime: {e}"))?,
        })
    }

    /// Runs `call(client)` on the client's runtime.
    fn run<T, F, Fut>(&self, call: F) -> BoxFuture<'_, Result<T, PdError>>
    where
        T: Send + 'static,
        F: FnOnce(Arc<regatta_client::PdClient>) -> Fut,
        Fut: Future<Output = Result<T, regatta_client::Error>> + Send + 'static,
    {
        let task = self.rt.spawn(call(self.client.clone()));
        Box::pin(async move {
            match task.await {
                Ok(r) => r.map_err(pd_error),
                Err(e) => Err(PdError::Unreachable(format!("PD call did not finish: {e}"))),
            }
        })
    }
}

/// The client's error as the store's seam sees it: PD's kinds kept, anything else (a
/// deadline, a connection) as unreachable.
fn pd_error(e: regatta_client::Error) -> PdError {
    use regatta_client::PdError as Client;
    match e {
        regatta_client::Error::Pd(Client::NotBootstrapped(m)) => PdError::NotBootstrapped(m),
        regatta_client::Error::Pd(Client::Refused(m)) => PdError::Refused(m),
        regatta_client::Error::Pd(Client::Unreachable(m)) => PdError::Unreachable(m),
        other => PdError::Unreachable(other.to_string()),
    }
}

impl regatta_server::PdClient for TcpPd {
    fn put_store(&self, store: Store) -> BoxFuture<'_, Result<(), PdError>> {
        self.run(|c| async move { c.put_store(store).await })
    }

    fn get_store(&self, store_id: u64) -> BoxFuture<'_, Result<Store, PdError>> {
        self.run(move |c| async move { c.get_store(store_id).await })
    }

    fn store_heartbeat(
        &self,
        req: StoreHeartbeatRequest,
    ) -> BoxFuture<'_, Result<StoreHeartbeatResponse, PdError>> {
        self.run(|c| async move { c.store_heartbeat(req).await })
    }

    fn alloc_id(&self, count: u32) -> BoxFuture<'_, Result<u64, PdError>> {
        self.run(move |c| async move { c.alloc_id(count).await })
    }

    fn get_ts(&self) -> BoxFuture<'_, Result<u64, PdError>> {
        self.run(|c| async move { c.get_ts().await })
    }

    fn region_heartbeat(
        &self,
        req: RegionHeartbeatRequest,
    ) -> BoxFuture<'_, Result<RegionHeartbeatResponse, PdError>> {
        self.run(|c| async move { c.region_heartbeat(req).await })
    }

    fn detect(&self, req: DetectRequest) -> BoxFuture<'_, Result<DetectResponse, PdError>> {
        self.run(|c| async move { c.detect(req).await })
    }
}
