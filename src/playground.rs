//! [`Playground`]: PD and N stores in one process, talking real TCP on loopback — the
//! embedded cluster behind `regatta playground`, the benches and the integration tests.
//! Stores can be stopped (gracefully) or crashed (as by SIGKILL) and started again from
//! their data directories.

use crate::pd_seam::TcpPd;
use anyhow::{Context, Result};
use regatta_server::{
    EngineConfig, PdClient, Store, StoreConfig, StoreOptions, TcpTransport, Transport, TxnConfig,
};
use slog::{info, Logger};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wraps a store's TCP transport (for fault injection); called with the store id.
pub type TransportWrap = Arc<dyn Fn(u64, TcpTransport) -> Arc<dyn Transport> + Send + Sync>;

/// How to start a playground.
#[derive(Clone)]
pub struct PlaygroundConfig {
    /// Number of stores (ids 1..=stores).
    pub stores: usize,
    /// Regions the key space starts cut into.
    pub regions: usize,
    /// Where PD (`pd/`) and the stores (`store<N>/`) keep their data.
    pub data_dir: PathBuf,
    /// PD's listen address (`127.0.0.1:0`: any free port).
    pub pd_addr: String,
    /// Port of store 1; store N listens on BASE + N - 1 (0: any free ports).
    pub store_port: u16,
    /// The stores' raftstore configuration.
    pub store_config: StoreConfig,
    /// The stores' transactional layer configuration.
    pub txn_config: TxnConfig,
    /// The stores' RocksDB configuration.
    pub engine_config: EngineConfig,
    /// Optional layer around each store's transport.
    pub transport: Option<TransportWrap>,
    /// How far PD's GC safe point trails its clock (default 10 min).
    pub gc_life_time: Duration,
    /// PD's TSO reads its clock in steps of this many ms (default 1; see
    /// `regatta_pd::PdConfig::tso_clock_step_ms`).
    pub tso_clock_step_ms: u64,
}

impl PlaygroundConfig {
    /// Defaults for tests and benches: any free ports.
    pub fn local(stores: usize, regions: usize, data_dir: PathBuf) -> Self {
        PlaygroundConfig {
            stores,
            regions,
            data_dir,
            pd_addr: "127.0.0.1:0".into(),
            store_port: 0,
            store_config: StoreConfig::default(),
            txn_config: TxnConfig::default(),
            engine_config: EngineConfig::default(),
            transport: None,
            gc_life_time: regatta_pd::gc::DEFAULT_GC_LIFE_TIME,
            tso_clock_step_ms: 1,
        }
    }

    /// PD's configuration in this playground.
    fn pd_config(&self) -> regatta_pd::PdConfig {
        let mut c = regatta_pd::PdConfig::new(self.stores, self.regions, self.data_dir.join("pd"));
        c.gc_life_time = self.gc_life_time;
        c.tso_clock_step_ms = self.tso_clock_step_ms;
        c
    }
}

/// A running playground. Must live inside an actix system.
pub struct Playground {
    cfg: PlaygroundConfig,
    /// PD (`None` only while it restarts).
    pd: Option<regatta_pd::PdHandle>,
    /// PD's address (kept across PD restarts).
    pd_addr: String,
    stores: Vec<Option<Store>>,
    /// Each store's address (kept across restarts so it comes back on the same port).
    store_addrs: Vec<String>,
    /// GC's resolve-locks phase (`gc_resolver.rs`), every `txn_config.gc_interval_ms`.
    resolver: Option<crate::gc_resolver::LockResolver>,
    logger: Logger,
}

impl Playground {
    /// Starts PD and every store; returns once every region has a leader.
    pub async fn start(cfg: PlaygroundConfig, logger: Logger) -> Result<Playground> {
        anyhow::ensure!(cfg.stores >= 1, "a playground needs at least one store");
        let pd = regatta_pd::start(cfg.pd_config(), &cfg.pd_addr, logger.clone())
            .await
            .with_context(|| format!("starting PD on {}", cfg.pd_addr))?;
        let store_addrs = (1..=cfg.stores)
            .map(|i| {
                let port = if cfg.store_port == 0 {
                    0
                } else {
                    cfg.store_port as usize + i - 1
                };
                format!("127.0.0.1:{port}")
            })
            .collect();
        let mut pg = Playground {
            stores: (0..cfg.stores).map(|_| None).collect(),
            cfg,
            pd_addr: pd.addr.to_string(),
            pd: Some(pd),
            store_addrs,
            resolver: None,
            logger,
        };
        for id in 1..=pg.cfg.stores as u64 {
            pg.start_store(id).await?;
        }
        // Thousands of regions take a while to elect on two cores.
        let wait = Duration::from_secs(60).max(Duration::from_millis(20) * pg.cfg.regions as u32);
        pg.wait_for_leaders(wait).await?;
        pg.resolver = Some(crate::gc_resolver::LockResolver::start(
            pg.pd_addr.clone(),
            pg.cfg.gc_life_time,
            Duration::from_millis(pg.cfg.txn_config.gc_interval_ms),
            pg.logger.clone(),
        ));
        Ok(pg)
    }

    /// PD's address.
    pub fn pd_addr(&self) -> String {
        self.pd_addr.clone()
    }

    /// Stops PD and starts it again on the same address from its data directory, as
    /// after a PD crash; the stores and clients reconnect by themselves.
    pub async fn restart_pd(&mut self) -> Result<()> {
        if let Some(pd) = self.pd.take() {
            pd.stop().await;
        }
        let config = self.cfg.pd_config();
        // The old listener's port may take a moment to free up.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match regatta_pd::start(config.clone(), &self.pd_addr, self.logger.clone()).await {
                Ok(pd) => {
                    self.pd = Some(pd);
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    info!(self.logger, "PD restart: retrying"; "error" => %e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).context("restarting PD"),
            }
        }
    }

    /// The running stores.
    pub fn stores(&self) -> impl Iterator<Item = &Store> {
        self.stores.iter().flatten()
    }

    /// Store `id` if it runs.
    pub fn store(&self, id: u64) -> Option<&Store> {
        self.stores.get(id as usize - 1).and_then(Option::as_ref)
    }

    /// Number of stores (running or not).
    pub fn store_count(&self) -> usize {
        self.stores.len()
    }

    /// Starts (or restarts from its data directory) store `id`.
    pub async fn start_store(&mut self, id: u64) -> Result<()> {
        let idx = id as usize - 1;
        anyhow::ensure!(idx < self.stores.len(), "no store {id}");
        anyhow::ensure!(self.stores[idx].is_none(), "store {id} already runs");
        let pd_client: Arc<dyn PdClient> = Arc::new(TcpPd::new(vec![self.pd_addr()])?);
        let wrap = self.cfg.transport.clone();
        // A stopped store's port may take a moment to free up.
        let deadline = Instant::now() + Duration::from_secs(10);
        let store = loop {
            let opts = StoreOptions {
                store_id: id,
                listen_addr: self.store_addrs[idx].clone(),
                data_dir: self.store_dir(id),
                config: self.cfg.store_config.clone(),
                txn: self.cfg.txn_config.clone(),
                engine: self.cfg.engine_config.clone(),
            };
            let layer: regatta_server::TransportLayer = match wrap.clone() {
                Some(w) => Box::new(move |tcp| w(id, tcp)),
                None => Box::new(|tcp| Arc::new(tcp)),
            };
            match Store::start_with_transport(opts, pd_client.clone(), layer, self.logger.clone())
                .await
            {
                Ok(s) => break s,
                Err(regatta_server::Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("starting store {id}")),
            }
        };
        self.store_addrs[idx] = store.addr.to_string();
        self.stores[idx] = Some(store);
        Ok(())
    }

    /// Stops store `id` gracefully (its LogWriter writes what is queued; the data stays on
    /// disk); a no-op if it is not running.
    pub async fn stop_store(&mut self, id: u64) {
        if let Some(s) = self.take_store(id) {
            s.stop().await;
        }
    }

    /// Crashes store `id` as a SIGKILL of its process would ([`Store::crash`]: raft writes
    /// not yet handed to RocksDB are lost); a no-op if it is not running.
    pub async fn crash_store(&mut self, id: u64) {
        if let Some(s) = self.take_store(id) {
            s.crash().await;
        }
    }

    /// The data directory of store `id` (RocksDB lives in its `db/`).
    pub fn store_dir(&self, id: u64) -> PathBuf {
        self.cfg.data_dir.join(format!("store{id}"))
    }

    fn take_store(&mut self, id: u64) -> Option<Store> {
        let idx = usize::try_from(id).ok()?.checked_sub(1)?;
        self.stores.get_mut(idx).and_then(Option::take)
    }

    /// Waits until every region has a leader on a running store.
    pub async fn wait_for_leaders(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_report = Instant::now();
        loop {
            let mut led = BTreeSet::new();
            for s in self.stores() {
                for st in s.region_statuses().await {
                    if st.leader_id != 0 && st.leader_id == st.peer_id {
                        led.insert(st.region.get_id());
                    }
                }
            }
            if led.len() >= self.cfg.regions {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {} regions elected a leader within {timeout:?}",
                led.len(),
                self.cfg.regions
            );
            if last_report.elapsed() > Duration::from_secs(2) {
                info!(self.logger, "waiting for leaders"; "led" => led.len(), "regions" => self.cfg.regions);
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every store and PD.
    pub async fn stop(mut self) {
        self.resolver = None;
        for id in 1..=self.stores.len() as u64 {
            self.stop_store(id).await;
        }
        if let Some(pd) = self.pd.take() {
            pd.stop().await;
        }
    }
}
