//! Starting a store: failures a caller can act on, each with the typed error that says so.

use regatta_server::{Error, MemPd, PdClient, Store, StoreConfig, StoreOptions};
use std::sync::Arc;

/// Goal: a store whose listen address is taken fails to start with an I/O error that names
/// the address (not a bad-argument or storage error). Method: hold the port with a plain
/// listener, then start a store on it.
#[actix_rt::test]
async fn a_store_whose_address_is_taken_fails_with_an_io_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = taken.local_addr().expect("local addr").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let pd: Arc<dyn PdClient> = Arc::new(MemPd::with_regions(Vec::new()));
    let opts = StoreOptions {
        store_id: 1,
        listen_addr: addr.clone(),
        data_dir: dir.path().join("s1"),
        config: StoreConfig::default(),
        txn: regatta_server::TxnConfig::default(),
        engine: regatta_server::EngineConfig::short_lived(),
    };
    let err = match Store::start(opts, pd, slog::Logger::root(slog::Discard, slog::o!())).await {
        Ok(_) => panic!("a store started on {addr}, which is taken"),
        Err(e) => e,
    };
    match &err {
        Error::Io { op, source } => {
            assert_eq!(op, &format!("bind {addr}"));
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&addr),
        "the message names the address: {err}"
    );
}

/// Goal: a store whose bootstrap of a region fails its sync never starts a replica of that
/// region (the region's state may be visible but is not durable) and is poisoned, saying
/// why. Method: a store with no region; its disk's syncs fail from now on; PD then hands it
/// a one-replica region to bootstrap; once the store is poisoned, several more heartbeats
/// (50 ms apart) must not start the region either.
#[actix_rt::test]
async fn a_region_whose_bootstrap_failed_its_sync_is_never_started() {
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("temp dir");
    let pd = Arc::new(MemPd::with_regions(Vec::new()));
    let opts = StoreOptions {
        store_id: 1,
        listen_addr: "127.0.0.1:0".into(),
        data_dir: dir.path().join("s1"),
        config: StoreConfig {
            store_heartbeat_interval_ms: 50,
            ..StoreConfig::default()
        },
        txn: regatta_server::TxnConfig::default(),
        engine: regatta_server::EngineConfig::short_lived(),
    };
    let client: Arc<dyn PdClient> = pd.clone();
    let store = Store::start(opts, client, slog::Logger::root(slog::Discard, slog::o!()))
        .await
        .expect("store starts");
    store
        .engine()
        .fail_syncs(Some("IO error: fsync failed".into()));
    pd.add_bootstrap_region(regatta_engine::initial_region(1, [(11, 1)]));

    let deadline = Instant::now() + Duration::from_secs(20);
    let reason = loop {
        if let Some(reason) = store.poison_reason() {
            break reason;
        }
        assert!(Instant::now() < deadline, "the store was never poisoned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        reason.contains("bootstrapping region 1") && reason.contains("fsync failed"),
        "{reason}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.router().region_ids(),
        Vec::<u64>::new(),
        "no replica starts on a bootstrap that was not durable"
    );
    store.stop().await;
}
