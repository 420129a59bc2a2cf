//! Three real stores (TCP on loopback, RocksDB in temp dirs) with the in-memory PD:
//! election, linearizable KV, leader hints, at-most-once retries, restart from disk;
//! requests that arrive before a region has a leader.

use regatta_engine::{Engine as _, Snapshot as _};
use regatta_proto::framepb::Frame_oneof_body;
use regatta_proto::kvrpcpb::*;
use regatta_proto::metapb::Region;
use regatta_proto::rpc::Connection;
use regatta_server::{MemPd, PdClient, Store, StoreConfig, StoreOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn region() -> Region {
    region_of(3)
}

/// Region 1 with a replica on each of stores `1..=stores`.
fn region_of(stores: u64) -> Region {
    regatta_engine::initial_region(1, (1..=stores).map(|s| (10 + s, s)))
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

async fn start_store(dir: &Path, pd: &Arc<MemPd>, id: u64, config: StoreConfig) -> Store {
    let opts = StoreOptions {
        store_id: id,
        listen_addr: "127.0.0.1:0".into(),
        data_dir: dir.join(format!("s{id}")),
        config,
        txn: regatta_server::TxnConfig::default(),
        engine: regatta_server::EngineConfig::short_lived(),
    };
    let pd: Arc<dyn PdClient> = pd.clone();
    Store::start(opts, pd, logger()).await.unwrap()
}

async fn start_stores(dir: &Path, pd: Arc<MemPd>) -> Vec<Store> {
    let mut stores = Vec::new();
    for id in 1..=3u64 {
        stores.push(start_store(dir, &pd, id, StoreConfig::default()).await);
    }
    stores
}

/// Waits (bounded) until some store leads region 1; returns its index in `stores`.
async fn leader(stores: &[Store]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, s) in stores.iter().enumerate() {
            for st in s.region_statuses().await {
                if st.leader_id != 0 && st.leader_id == st.peer_id {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader elected in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn request(cmd: Request_oneof_cmd, client_id: u64, seq: u64) -> KvRequest {
    let mut ctx = Context::new();
    ctx.set_region_id(1);
    ctx.set_region_epoch(region().get_region_epoch().clone());
    ctx.set_client_id(client_id);
    ctx.set_seq(seq);
    let mut req = Request::new();
    req.cmd = Some(cmd);
    let mut kv = KvRequest::new();
    kv.set_context(ctx);
    kv.set_request(req);
    kv
}

async fn call(store: &Store, req: KvRequest) -> KvResponse {
    let conn = Connection::connect(&store.addr.to_string(), Duration::from_secs(5))
        .await
        .unwrap();
    let mut f = conn
        .call(Frame_oneof_body::kv_request(req), Duration::from_secs(10))
        .await
        .unwrap();
    f.take_kv_response()
}

fn put(key: &str, value: &str) -> Request_oneof_cmd {
    let mut p = PutRequest::new();
    p.set_key(key.into());
    p.set_value(value.into());
    Request_oneof_cmd::put(p)
}

fn get(key: &str) -> Request_oneof_cmd {
    let mut g = GetRequest::new();
    g.set_key(key.into());
    Request_oneof_cmd::get(g)
}

fn cas(key: &str, expected: Option<&str>, new: &str) -> Request_oneof_cmd {
    let mut c = CasRequest::new();
    c.set_key(key.into());
    match expected {
        Some(e) => c.set_expected(e.into()),
        None => c.set_expect_absent(true),
    }
    c.set_new_value(new.into());
    Request_oneof_cmd::cas(c)
}

async fn read(store: &Store, key: &str) -> Option<Vec<u8>> {
    let resp = call(store, request(get(key), 0, 0)).await;
    assert!(!resp.has_error(), "{:?}", resp.get_error());
    let g = resp.get_response().get_get();
    g.get_found().then(|| g.get_value().to_vec())
}

#[actix_rt::test]
async fn three_stores_serve_linearizable_kv_with_at_most_once_writes() {
    // Goal: the basic contract end to end. Method: real stores, raw requests to the leader.
    let dir = tempfile::tempdir().unwrap();
    let pd = Arc::new(MemPd::with_regions(vec![region()]));
    let stores = start_stores(dir.path(), pd.clone()).await;
    let l = leader(&stores).await;
    let ls = &stores[l];

    let r = call(ls, request(put("k", "v1"), 7, 1)).await;
    assert!(!r.has_error(), "{:?}", r.get_error());
    let index = r.get_response().get_put().get_index();
    assert!(index > 5);
    assert_eq!(read(ls, "k").await.as_deref(), Some(&b"v1"[..]));

    // CAS: mismatch reports the current value and changes nothing; a match swaps.
    let r = call(ls, request(cas("k", Some("nope"), "x"), 7, 2)).await;
    let c = r.get_response().get_cas();
    assert!(!c.get_succeeded());
    assert_eq!(c.get_previous(), b"v1");
    let r = call(ls, request(cas("k", Some("v1"), "v2"), 7, 3)).await;
    assert!(r.get_response().get_cas().get_succeeded());
    let r = call(ls, request(cas("fresh", None, "a"), 7, 4)).await;
    assert!(r.get_response().get_cas().get_succeeded());
    let r = call(ls, request(cas("fresh", None, "b"), 7, 5)).await;
    assert!(!r.get_response().get_cas().get_succeeded());

    // A retry of an applied write returns the cached answer and is not applied again.
    // (The session's newest seq is 5: the failed CAS on "fresh".)
    let r = call(ls, request(put("fresh", "retried"), 7, 5)).await;
    assert!(r.get_response().has_cas(), "cached answer of seq 5: {r:?}");
    assert!(!r.get_response().get_cas().get_succeeded());
    assert_eq!(read(ls, "fresh").await.as_deref(), Some(&b"a"[..]));
    let r = call(ls, request(put("k", "old"), 7, 3)).await;
    assert!(r.get_error().has_stale_sequence(), "{r:?}");
    assert_eq!(read(ls, "k").await.as_deref(), Some(&b"v2"[..]));

    // Followers redirect with a leader hint.
    let f = &stores[(l + 1) % 3];
    let r = call(f, request(get("k"), 0, 0)).await;
    let nl = r.get_error().get_not_leader();
    assert_eq!(nl.get_leader().get_store_id(), ls.store_id);

    // Bad input gets a typed error, not a crash.
    let r = call(ls, request(put("", "v"), 0, 0)).await;
    assert!(r.get_error().has_invalid_argument());
    let big = "x".repeat(5000);
    let r = call(ls, request(put(&big, "v"), 0, 0)).await;
    assert!(r.get_error().has_invalid_argument());
    let mut wrong = request(get("k"), 0, 0);
    wrong.mut_context().set_region_id(99);
    assert!(call(ls, wrong).await.get_error().has_region_not_found());

    // A batch is one command: its writes apply together, a retry gets the cached answer.
    let mut bp = BatchPutRequest::new();
    for (k, v) in [("b1", "x"), ("b2", "y"), ("k", "v3")] {
        let mut p = KvPair::new();
        p.set_key(k.into());
        p.set_value(v.into());
        bp.mut_pairs().push(p);
    }
    let batch = Request_oneof_cmd::batch_put(bp);
    let r = call(ls, request(batch.clone(), 8, 1)).await;
    let at = r.get_response().get_batch_put().get_index();
    assert!(at > index, "{r:?}");
    let r = call(ls, request(batch, 8, 1)).await;
    assert_eq!(
        r.get_response().get_batch_put().get_index(),
        at,
        "applied twice"
    );
    let mut bg = BatchGetRequest::new();
    bg.set_keys(vec![b"b2".to_vec(), b"none".to_vec(), b"k".to_vec()].into());
    let r = call(ls, request(Request_oneof_cmd::batch_get(bg), 0, 0)).await;
    let got: Vec<(Vec<u8>, Vec<u8>)> = r
        .get_response()
        .get_batch_get()
        .get_pairs()
        .iter()
        .map(|p| (p.get_key().to_vec(), p.get_value().to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            (b"b2".to_vec(), b"y".to_vec()),
            (b"k".to_vec(), b"v3".to_vec())
        ]
    );
    let mut bd = BatchDeleteRequest::new();
    bd.set_keys(vec![b"b1".to_vec(), b"none".to_vec()].into());
    let r = call(ls, request(Request_oneof_cmd::batch_delete(bd), 8, 2)).await;
    assert_eq!(r.get_response().get_batch_delete().get_deleted(), 1);
    assert_eq!(read(ls, "b1").await, None);
    // Empty, oversized or bad-key batches are refused as a whole.
    let empty = Request_oneof_cmd::batch_get(BatchGetRequest::new());
    assert!(call(ls, request(empty, 0, 0))
        .await
        .get_error()
        .has_invalid_argument());
    let mut bg = BatchGetRequest::new();
    bg.set_keys((0..10_001).map(|i| format!("k{i}").into_bytes()).collect());
    let r = call(ls, request(Request_oneof_cmd::batch_get(bg), 0, 0)).await;
    assert!(r.get_error().has_invalid_argument());
    let mut bd = BatchDeleteRequest::new();
    bd.set_keys(vec![b"k".to_vec(), Vec::new()].into());
    let r = call(ls, request(Request_oneof_cmd::batch_delete(bd), 8, 3)).await;
    assert!(r.get_error().has_invalid_argument());
    assert_eq!(read(ls, "k").await.as_deref(), Some(&b"v3"[..]));

    // Restart every store from its data dir: the data is still there. (A stop returns once
    // RocksDB is closed, so the directories open again at once.)
    for s in stores {
        s.stop().await;
    }
    let stores = start_stores(dir.path(), pd).await;
    let l = leader(&stores).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call(&stores[l], request(get("k"), 0, 0)).await;
        if !r.has_error() {
            assert_eq!(r.get_response().get_get().get_value(), b"v3");
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", r.get_error());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read(&stores[l], "fresh").await.as_deref(), Some(&b"a"[..]));
    // Stopped before the directory goes: a store still flushing would recreate files in it.
    for s in stores {
        s.stop().await;
    }
}

#[actix_rt::test]
async fn follower_down_while_the_log_compacts_catches_up_by_snapshot() {
    // Goal: a replica that missed compacted entries is repaired by a snapshot that carries
    // data and sessions. Method: tiny GC limit, stop a follower, write, restart it.
    let dir = tempfile::tempdir().unwrap();
    let pd = Arc::new(MemPd::with_regions(vec![region()]));
    let config = StoreConfig {
        raft_log_gc_count_limit: 20,
        ..StoreConfig::default()
    };
    let mut stores = Vec::new();
    for id in 1..=3u64 {
        stores.push(Some(start_store(dir.path(), &pd, id, config.clone()).await));
    }
    let all: Vec<Store> = stores.iter_mut().map(|s| s.take().unwrap()).collect();
    let l = leader(&all).await;
    let f = (l + 1) % 3;
    let mut all: Vec<Option<Store>> = all.into_iter().map(Some).collect();
    let follower = all[f].take().unwrap();
    let follower_id = follower.store_id;
    follower.stop().await;
    let ls = all[l].as_ref().unwrap();
    for i in 0..120 {
        let r = call(
            ls,
            request(put(&format!("key{i:03}"), &format!("v{i}")), 9, i + 1),
        )
        .await;
        assert!(!r.has_error(), "{:?}", r.get_error());
    }
    // The leader must compact past everything the follower has.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader_applied = loop {
        let st = ls.region_statuses().await.remove(0);
        if st.truncated_index > 60 {
            break st.applied_index;
        }
        assert!(Instant::now() < deadline, "leader never compacted: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let back = start_store(dir.path(), &pd, follower_id, config).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = back.region_statuses().await.remove(0);
        if st.applied_index >= leader_applied {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "follower never caught up: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in [0u64, 59, 119] {
        let v = back
            .engine()
            .snapshot()
            .get_raw(format!("key{i:03}").as_bytes())
            .unwrap();
        assert_eq!(v.unwrap().value, format!("v{i}").into_bytes());
    }
    // The session table came with the snapshot: a retry of the last write is not re-applied.
    let session: Option<regatta_proto::raft_serverpb::DedupEntry> = back
        .engine()
        .get_msg(
            regatta_engine::Cf::Raft,
            &regatta_engine::keys::dedup_key(1, 9),
            "session",
            1,
        )
        .unwrap();
    assert_eq!(session.unwrap().get_seq(), 120);
    back.stop().await;
    for s in all.into_iter().flatten() {
        s.stop().await;
    }
}

/// Waits (bounded) until `store` runs a replica of region 1.
async fn replica_started(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.router().get(1).is_none() {
        assert!(Instant::now() < deadline, "the replica did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_rt::test]
async fn a_sole_voter_serves_its_first_request_at_once_after_start_and_restart() {
    // Goal: a one-voter region needs no election timeout. Method: a write sent the moment
    // the replica exists succeeds (before, it met `NotLeader` with no hint: the replica
    // waited out an election timeout first); again after a restart from disk. Requests
    // are not held for a leader here (`leader_wait_ms` 0), so only an election already
    // won lets the write through.
    let config = StoreConfig {
        leader_wait_ms: 0,
        ..StoreConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let pd = Arc::new(MemPd::with_regions(vec![region_of(1)]));
    let store = start_store(dir.path(), &pd, 1, config.clone()).await;
    replica_started(&store).await;
    let r = call(&store, request(put("k", "v1"), 0, 0)).await;
    assert!(!r.has_error(), "{:?}", r.get_error());
    store.stop().await;

    let store = start_store(dir.path(), &pd, 1, config).await;
    replica_started(&store).await;
    let r = call(&store, request(put("k", "v2"), 0, 0)).await;
    assert!(!r.has_error(), "after a restart: {:?}", r.get_error());
    store.stop().await;
}

#[actix_rt::test]
async fn a_write_sent_before_the_first_election_waits_for_it() {
    // Goal: a replica that knows no leader holds a request until one is known. Method: a
    // fresh three-store group, a write to store 1 the moment its replica exists (the
    // first election takes at least one election timeout, here 2 s): it is answered once
    // the election ended — applied, or `NotLeader` naming the leader — never with a
    // hint-less `NotLeader`, which sends a client into its backoff. The hold outlasts a
    // split vote (another election timeout).
    let config = StoreConfig {
        election_ticks: 40,
        leader_wait_ms: 9_000,
        ..StoreConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let pd = Arc::new(MemPd::with_regions(vec![region_of(3)]));
    let mut stores = Vec::new();
    for id in 1..=3 {
        stores.push(start_store(dir.path(), &pd, id, config.clone()).await);
    }
    replica_started(&stores[0]).await;
    let before = stores[0].region_statuses().await;
    assert!(
        before.iter().all(|s| s.leader_id == 0),
        "no leader yet when the write is sent: {before:?}"
    );
    let r = call(&stores[0], request(put("k", "v"), 0, 0)).await;
    if r.has_error() {
        let e = r.get_error();
        assert!(e.has_not_leader(), "{e:?}");
        assert_ne!(
            e.get_not_leader().get_leader().get_id(),
            0,
            "the answer names the elected leader: {e:?}"
        );
    }
    for s in stores {
        s.stop().await;
    }
}
