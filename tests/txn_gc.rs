//! MVCC GC on a real 3-store cluster with a short GC life time (2 s): PD's safe point
//! reaches the regions through raft, every replica collects its copy in the background,
//! and GC keeps exactly what a reader at or above the safe point needs. Method: a model
//! of every committed write (key -> (commit ts, value or delete)) written by one client
//! over two regions; reads at the safe point compared with the model; the write records
//! left on each store counted against GC's contract.

use crate::common::{wait_until, Cluster};
use rand::Rng;
use regatta_client::{Error, TxnClient};
use regatta_engine::{keys, Cf, Engine, Snapshot};
use regatta_proto::kvrpcpb::Request;
use regatta_proto::txnpb::{Mutation, PrewriteRequest, TxnRequest};
use regatta_server::{RegionStatus, StoreConfig, TxnConfig};
use regatta_txn::{Write, WriteKind};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Key -> every committed version, in commit order: (commit ts, value; `None` = delete).
type Model = BTreeMap<Vec<u8>, Vec<(u64, Option<Vec<u8>>)>>;

/// The value a snapshot read of `key` at `ts` must return.
fn expected(model: &Model, key: &[u8], ts: u64) -> Option<Vec<u8>> {
    model
        .get(key)?
        .iter()
        .rev()
        .find(|(commit_ts, _)| *commit_ts <= ts)
        .and_then(|(_, v)| v.clone())
}

/// Eight keys in each of the two initial regions (split at 0x80 0x00).
fn keys() -> Vec<Vec<u8>> {
    (0..8u8)
        .flat_map(|i| [vec![b'l', b'o', b'0' + i], vec![0xf0, b'h', b'i', b'0' + i]])
        .collect()
}

/// One transaction over all keys: each is put (sometimes a value too large to inline in
/// its write record), deleted or left alone; retried on retryable errors. Records the
/// commit in `model`.
async fn write_round(txns: &TxnClient, rng: &mut impl Rng, model: &mut Model, round: usize) {
    for attempt in 0..20 {
        let mut t = txns.begin_optimistic().await.expect("begin");
        let mut ops = Vec::new();
        for (i, k) in keys().into_iter().enumerate() {
            let op = match rng.gen_range(0..6) {
                0..=2 => Some(format!("r{round}-k{i}").into_bytes()),
                3 => Some(vec![b'a' + (round % 26) as u8; 300]),
                4 => None,
                _ => continue,
            };
            match &op {
                Some(v) => t.put(&k, v),
                None => t.delete(&k),
            }
            ops.push((k, op));
        }
        match t.commit().await {
            Ok(commit_ts) => {
                for (k, op) in ops {
                    model.entry(k).or_default().push((commit_ts, op));
                }
                return;
            }
            Err(e) if e.is_retryable() && attempt < 19 => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("round {round} did not commit: {e}"),
        }
    }
}

/// Every replica of every region on the running stores.
async fn replicas(cluster: &Cluster) -> Vec<(u64, RegionStatus)> {
    let mut out = Vec::new();
    for s in cluster.pg.stores() {
        for st in s.region_statuses().await {
            out.push((s.store_id, st));
        }
    }
    out
}

/// The highest GC safe point any replica applied.
async fn region_safe_point(cluster: &Cluster) -> u64 {
    replicas(cluster)
        .await
        .iter()
        .map(|(_, st)| st.observed(regatta_server::GC_SAFE_POINT))
        .max()
        .unwrap_or(0)
}

/// Reads every key at `ts`; `None` if the read was refused as below the safe point.
async fn read_all(txns: &TxnClient, ts: u64) -> Option<Vec<Option<Vec<u8>>>> {
    let snap = txns.snapshot(ts).await.expect("snapshot");
    let mut out = Vec::new();
    for k in keys() {
        match snap.get(&k).await {
            Ok(v) => out.push(v),
            Err(Error::BelowGcSafePoint { .. }) => return None,
            Err(e) => panic!("read of {k:?} at {ts}: {e}"),
        }
    }
    Some(out)
}

/// Checks GC's contract on one replica: per key, at most one write record at or below
/// the safe point it collected at, and that one a `Put`.
fn assert_collected(cluster: &Cluster, store_id: u64, st: &RegionStatus) {
    let collected = st.observed(regatta_server::GC_COLLECTED_SAFE_POINT);
    let engine = cluster.pg.store(store_id).expect("store runs").engine();
    let (lo, hi) = keys::txn_data_range(st.region.get_start_key(), st.region.get_end_key());
    let mut below: BTreeMap<Vec<u8>, Vec<WriteKind>> = BTreeMap::new();
    engine
        .snapshot()
        .scan(Cf::Write, &lo, &hi, |k, v| {
            let (_, commit_ts) = regatta_txn::key::split_version_key(k).expect("version key");
            if commit_ts <= collected {
                let user = regatta_txn::key::user_key(k).expect("user key");
                let w = Write::decode(v).expect("write record");
                below.entry(user).or_default().push(w.kind);
            }
            Ok(true)
        })
        .expect("scan");
    for (key, kinds) in &below {
        assert!(
            kinds.len() == 1 && kinds[0] == WriteKind::Put,
            "store {store_id} region {} keeps {kinds:?} of {key:?} at or below the safe \
             point {collected} it collected at",
            st.region.get_id()
        );
    }
}

/// Sends prewrite `req` to the leader of its primary's region (retrying routing errors);
/// its answer.
async fn prewrite(cluster: &Cluster, req: Request) -> regatta_proto::txnpb::TxnResponse {
    let key = match &req.get_txn().cmd {
        Some(regatta_proto::txnpb::TxnRequest_oneof_cmd::prewrite(p)) => p.get_primary().to_vec(),
        _ => panic!("not a prewrite"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let region = cluster.region_of(&key).await;
        let leader = cluster.wait_leader(region).await;
        let resp = cluster
            .direct_request(leader, region, req.clone(), |_| {})
            .await;
        if !resp.has_error() {
            return resp.get_response().get_txn().clone();
        }
        assert!(
            Instant::now() < deadline,
            "no answer: {:?}",
            resp.get_error()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GC and region reports (which carry the regions' oldest locks to PD) every 200 ms, on
/// regions that never hibernate (a hibernating region's clock, which paces both, ticks
/// every 5 s).
fn gc_config() -> (StoreConfig, TxnConfig) {
    let store = StoreConfig {
        region_heartbeat_interval_ms: 200,
        hibernate_after_ms: 0,
        ..StoreConfig::default()
    };
    let txn = TxnConfig {
        gc_interval_ms: 200,
        ..TxnConfig::default()
    };
    (store, txn)
}

/// A prewrite of `key` (its own primary) at `start_ts`.
fn prewrite_req(key: &[u8], start_ts: u64, ttl_ms: u64) -> Request {
    let mut m = Mutation::new();
    m.set_key(key.to_vec());
    m.set_value(b"late".to_vec());
    let mut p = PrewriteRequest::new();
    p.set_primary(key.to_vec());
    p.set_start_ts(start_ts);
    p.set_lock_ttl_ms(ttl_ms);
    p.mut_mutations().push(m);
    let mut t = TxnRequest::new();
    t.set_prewrite(p);
    let mut req = Request::new();
    req.set_txn(t);
    req
}

#[actix_rt::test]
async fn gc_keeps_what_a_reader_at_the_safe_point_needs() {
    let mut cluster = Cluster::with_gc_life_time(3, 2, gc_config(), Duration::from_secs(2)).await;
    let txns = TxnClient::connect(&[cluster.pg.pd_addr()])
        .await
        .expect("connect");
    let mut rng = cluster.rng();
    let mut model = Model::new();

    // The history GC will collect: five rounds over both regions.
    for round in 0..5 {
        write_round(&txns, &mut rng, &mut model, round).await;
    }
    let first_commit = model.values().map(|v| v[0].0).min().expect("writes");
    let history_end = txns.current_timestamp().await.expect("ts");
    // Before GC every read equals the model (or, on a slow machine, is already refused).
    for ts in [first_commit, history_end] {
        if let Some(values) = read_all(&txns, ts).await {
            for (k, v) in keys().iter().zip(values) {
                assert_eq!(v, expected(&model, k, ts), "{k:?} at {ts} before GC");
            }
        }
    }

    // Keep writing (versions above the safe point) until every replica of both regions
    // has collected at a safe point past the whole history.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 5;
    loop {
        write_round(&txns, &mut rng, &mut model, round).await;
        round += 1;
        let all = replicas(&cluster).await;
        if all.len() == 6
            && all
                .iter()
                .all(|(_, st)| st.observed(regatta_server::GC_COLLECTED_SAFE_POINT) >= history_end)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not collect past {history_end}: {:?}",
            all.iter()
                .map(|(s, st)| (
                    s,
                    st.region.get_id(),
                    st.observed(regatta_server::GC_COLLECTED_SAFE_POINT)
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two more rounds: versions above the safe point the reader below must not see.
    for _ in 0..2 {
        write_round(&txns, &mut rng, &mut model, round).await;
        round += 1;
    }

    // A reader at the safe point sees exactly the model (the newest version at or below
    // it survived GC, the newer ones are ignored); retried if the safe point moved past
    // the ts between choosing and reading it.
    let mut checked = false;
    for _ in 0..50 {
        let sp = region_safe_point(&cluster).await;
        assert!(sp >= history_end);
        if let Some(values) = read_all(&txns, sp).await {
            for (k, v) in keys().iter().zip(values) {
                assert_eq!(v, expected(&model, k, sp), "{k:?} at the safe point {sp}");
            }
            checked = true;
            break;
        }
    }
    assert!(checked, "no read at the safe point was served");

    // Old versions are gone on every replica: at most one record (a Put) per key at or
    // below the safe point collected at. The history wrote up to five versions per key
    // below it, so a GC that did nothing fails here.
    let versions_below_history: usize = model
        .values()
        .map(|v| v.iter().filter(|(ts, _)| *ts <= history_end).count())
        .sum();
    assert!(versions_below_history > 2 * keys().len());
    for (store_id, st) in replicas(&cluster).await {
        assert_collected(&cluster, store_id, &st);
    }

    // A read below the safe point gets the clear error, in both regions; so does a
    // prewrite of a transaction that started below it.
    for key in [&keys()[0], &keys()[1]] {
        match txns
            .snapshot(first_commit)
            .await
            .expect("snapshot")
            .get(key)
            .await
        {
            Err(e @ Error::BelowGcSafePoint { .. }) => {
                assert!(!e.is_retryable());
                assert!(e.to_string().contains("below the GC safe point"), "{e}");
            }
            other => panic!("a read below the safe point answered {other:?}"),
        }
        let sp = prewrite(&cluster, prewrite_req(key, first_commit, 3_000))
            .await
            .get_key_error()
            .get_below_gc_safe_point();
        assert!(
            sp >= history_end,
            "prewrite at an old start ts: refused at {sp}"
        );
    }

    // The region's safe point survives a restart: store 2, cut off so that nothing new
    // reaches it, comes back with the safe points it had.
    cluster.isolate(2);
    let before: Vec<(u64, u64)> = replicas(&cluster)
        .await
        .into_iter()
        .filter(|(s, _)| *s == 2)
        .map(|(_, st)| {
            (
                st.region.get_id(),
                st.observed(regatta_server::GC_SAFE_POINT),
            )
        })
        .collect();
    cluster.crash(2).await;
    cluster.restart(2).await;
    for (region_id, sp) in &before {
        let st = cluster.status(2, *region_id).await.expect("replica back");
        assert!(
            st.observed(regatta_server::GC_SAFE_POINT) >= *sp && *sp >= history_end,
            "region {region_id}: safe point {sp} before the restart, {} after",
            st.observed(regatta_server::GC_SAFE_POINT)
        );
    }
    cluster.heal();

    // And a split: both halves keep it, on every replica, and refuse reads below it.
    let client = cluster.client().await;
    let (_, right) = client.split(b"lo4").await.expect("split");
    wait_until(
        "every store hosts the split-off region",
        Duration::from_secs(30),
        || async {
            let all = replicas(&cluster).await;
            all.iter()
                .filter(|(_, st)| st.region.get_id() == right.get_id())
                .count()
                == 3
        },
    )
    .await;
    for (store_id, st) in replicas(&cluster).await {
        if st.region.get_id() == right.get_id() {
            assert!(
                st.observed(regatta_server::GC_SAFE_POINT) >= history_end,
                "store {store_id}: the split-off region's safe point is {}",
                st.observed(regatta_server::GC_SAFE_POINT)
            );
        }
    }
    assert!(matches!(
        txns.snapshot(first_commit)
            .await
            .expect("snapshot")
            .get(b"lo5")
            .await,
        Err(Error::BelowGcSafePoint { .. })
    ));
}

#[actix_rt::test]
async fn a_dead_clients_lock_is_resolved_by_gc_and_the_safe_point_moves_past_it() {
    // Goal: GC never collects past a lock left behind (its transaction's fate must stay
    // decidable from its primary's records), and a lock nobody reads does not hold the
    // safe point for ever (issue 20, hole 8): GC's resolve-locks phase rolls it back once
    // its TTL ran out and it is older than the life time. Method: a prewrite nobody
    // commits and nobody reads (a client that died; TTL 500 ms, life time 1 s, GC every
    // 200 ms); with no reader, the safe point must pass it within a bound (PD's safe
    // point never passes a lock a region reports, so the lock is gone by then).
    let cluster = Cluster::with_gc_life_time(3, 2, gc_config(), Duration::from_secs(1)).await;
    let txns = TxnClient::connect(&[cluster.pg.pd_addr()])
        .await
        .expect("connect");
    let key = b"lo-orphan".to_vec();
    let lock_ts = txns.current_timestamp().await.expect("ts");
    let resp = prewrite(&cluster, prewrite_req(&key, lock_ts, 500)).await;
    assert!(!resp.has_key_error(), "{:?}", resp.get_key_error());
    wait_until(
        "the safe point passes the dead client's lock",
        Duration::from_secs(30),
        || async { region_safe_point(&cluster).await > lock_ts },
    )
    .await;
    // It was rolled back, not committed: nothing to read.
    let now = txns.current_timestamp().await.expect("ts");
    let snap = txns.snapshot(now).await.expect("snapshot");
    assert_eq!(snap.get(&key).await.expect("read"), None);
}
