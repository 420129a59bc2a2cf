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
