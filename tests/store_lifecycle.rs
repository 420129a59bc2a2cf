//! A store's life: what a crash loses and what it must not, and a start that cannot reach
//! PD. Method: the cluster harness (a crash there is `Store::crash`, the in-process
//! SIGKILL), the store's RocksDB read directly after the crash, and a store started
//! against a PD address nothing listens on.

use crate::common::{wait_until, Cluster};
use regatta::pd_seam::TcpPd;
use regatta_engine::{keys, Cf, EngineConfig, RocksEngine};
use regatta_proto::raft_serverpb::RaftLocalState;
use regatta_server::{Error, PdClient, Store, StoreConfig, StoreOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Goal: a crash loses what a SIGKILL loses — the raft writes a store queued but had not
/// written — and never an acknowledged write. Method: a follower's disk is stalled, so its
/// LogWriter holds the entries of 20 writes the leader and the other follower acknowledge;
/// the follower is crashed and its RocksDB read: none of those entries is there (a
/// graceful stop writes them, so this fails if `crash` drains the queue). Restarted, it
/// catches up from the leader; with the other follower down it is then needed for every
/// write, and every acknowledged write reads back, also after all three stores crash and
/// restart.
#[actix_rt::test]
async fn a_crash_loses_unwritten_raft_writes_but_no_acknowledged_write() {
    let mut cluster = Cluster::new(3, 1).await;
    let c = cluster.client().await;
    let rid = cluster.region_of(b"k").await;
    let leader = cluster.wait_leader(rid).await;
    let victim = (1..=3).find(|&s| s != leader).expect("3 stores");
    let other = (1..=3)
        .find(|&s| s != leader && s != victim)
        .expect("3 stores");

    let mut acked = Vec::new();
    let mut last = 0;
    for i in 0..20 {
        let key = format!("before-{i}").into_bytes();
        last = c.put(&key, b"v").await.unwrap();
        acked.push(key);
    }
    wait_until(
        "the victim applies (so persisted) the first writes",
        Duration::from_secs(30),
        || async { applied(&cluster, victim, rid).await >= last },
    )
    .await;

    cluster.stall_disk(victim, true);
    let mut first_stalled = None;
    for i in 0..20 {
        let key = format!("during-{i}").into_bytes();
        last = c.put(&key, b"v").await.unwrap();
        first_stalled.get_or_insert(last);
        acked.push(key);
    }
    let first_stalled = first_stalled.expect("20 writes");
    wait_until(
        "the victim's replica holds every entry, unwritten",
        Duration::from_secs(30),
        || async {
            cluster
                .status(victim, rid)
                .await
                .is_some_and(|st| st.last_index >= last)
        },
    )
    .await;
    assert!(
        applied(&cluster, victim, rid).await < first_stalled,
        "a stalled disk applied entries it never wrote"
    );
    cluster.crash(victim).await;

    // The victim's RocksDB, as the crash left it.
    let engine = RocksEngine::open(
        cluster.pg.store_dir(victim).join("db"),
        &EngineConfig::short_lived(),
    )
    .unwrap();
    for index in first_stalled..=last {
        let entry = engine.get(Cf::Raft, &keys::entry_key(rid, index)).unwrap();
        assert!(
            entry.is_none(),
            "entry {index} (queued, never written) survived the crash of store {victim}"
        );
    }
    let state: RaftLocalState = engine
        .get_msg(Cf::Raft, &keys::raft_state_key(rid), "raft state", rid)
        .unwrap()
        .expect("the region's raft state");
    assert!(
        state.get_last_index() < first_stalled,
        "the durable log reaches {} though entries from {first_stalled} were never written",
        state.get_last_index()
    );
    drop(engine);

    // Restarted, the victim gets the lost entries again from the leader ...
    cluster.restart(victim).await;
    wait_until("the victim catches up", Duration::from_secs(30), || async {
        applied(&cluster, victim, rid).await >= last
    })
    .await;
    // ... and with the other follower down, every write needs it.
    cluster.crash(other).await;
    for i in 0..10 {
        let key = format!("after-{i}").into_bytes();
        c.put(&key, b"v").await.unwrap();
        acked.push(key);
    }
    for key in &acked {
        assert_eq!(
            c.get(key).await.unwrap().map(|v| v.value).as_deref(),
            Some(&b"v"[..]),
            "acknowledged {:?} lost",
            String::from_utf8_lossy(key)
        );
    }
    for s in 1..=3 {
        cluster.crash(s).await;
    }
    for s in 1..=3 {
        cluster.restart(s).await;
    }
    for key in &acked {
        assert_eq!(
            c.get(key).await.unwrap().map(|v| v.value).as_deref(),
            Some(&b"v"[..]),
            "acknowledged {:?} lost after every store crashed",
            String::from_utf8_lossy(key)
        );
    }
}

/// The index `store`'s replica of `region_id` applied (0 if it has none).
async fn applied(cluster: &Cluster, store: u64, region_id: u64) -> u64 {
    cluster
        .status(store, region_id)
        .await
        .map_or(0, |st| st.applied_index)
}

/// Goal: a store whose PD does not answer gives up after `pd_register_timeout_ms` with an
/// error that names PD — neither waiting for ever nor failing at the first refusal — and
/// leaves its data directory free to open again.
#[actix_rt::test]
async fn a_store_with_no_pd_gives_up_registering_within_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // A loopback port nothing listens on (bound, then released).
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    let timeout = Duration::from_millis(1_500);
    let started = Instant::now();
    let err = fail_to_start(&nobody, 7, "127.0.0.1:0", dir.path(), timeout).await;
    let took = started.elapsed();
    let Error::PdUnavailable { attempts, .. } = &err else {
        panic!("not a PD error: {err}");
    };
    let message = err.to_string();
    assert!(
        message.contains("PD") && message.contains("registering store 7"),
        "{message}"
    );
    assert!(*attempts > 1, "gave up at the first refusal: {message}");
    // Bounded by the configured time (plus one attempt and scheduling slack).
    assert!(
        took < timeout + Duration::from_secs(5),
        "gave up only after {took:?}: {message}"
    );
    RocksEngine::open(
        dir.path().join("s7").join("db"),
        &EngineConfig::short_lived(),
    )
    .expect("the failed start closed its RocksDB");
}

/// Goal: a store PD refuses (here: one started on the address another store registered)
/// fails at once with PD's refusal, instead of repeating a request PD will refuse again
/// until `pd_register_timeout_ms`. Method: a one-store cluster; store 1 stops, and a store
/// with another id starts on its address against the same PD, with a long register timeout.
#[actix_rt::test]
async fn a_store_pd_refuses_fails_at_once_with_the_refusal() {
    let mut cluster = Cluster::new(1, 1).await;
    let addr = cluster.pg.store(1).expect("store 1 runs").addr.to_string();
    cluster.pg.stop_store(1).await;
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_secs(60);
    let started = Instant::now();
    let err = fail_to_start(&cluster.pg.pd_addr(), 9, &addr, dir.path(), timeout).await;
    let Error::PdRefused { operation, .. } = &err else {
        panic!("not PD's refusal: {err}");
    };
    assert!(operation.contains("registering store 9"), "{err}");
    assert!(
        started.elapsed() < timeout,
        "retried a refusal until the timeout: {err}"
    );
}

/// Starts store `store_id` listening on `listen_addr` (its data under `dir`) against the
/// PD at `pd_addr`, with `timeout` to register, and returns why it could not start (a
/// store that starts is stopped and fails the test).
async fn fail_to_start(
    pd_addr: &str,
    store_id: u64,
    listen_addr: &str,
    dir: &Path,
    timeout: Duration,
) -> Error {
    let pd: Arc<dyn PdClient> = Arc::new(TcpPd::new(vec![pd_addr.to_string()]).unwrap());
    let opts = StoreOptions {
        store_id,
        listen_addr: listen_addr.to_string(),
        data_dir: dir.join(format!("s{store_id}")),
        config: StoreConfig {
            pd_register_timeout_ms: timeout.as_millis() as u64,
            ..StoreConfig::default()
        },
        txn: regatta_server::TxnConfig::default(),
        engine: regatta_server::EngineConfig::short_lived(),
    };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    match Store::start(opts, pd, logger).await {
        Ok(store) => {
            store.stop().await;
            panic!("store {store_id} started on {listen_addr} against PD at {pd_addr}")
        }
        Err(e) => e,
    }
}
