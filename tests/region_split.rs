//! Region splits: manual splits under concurrent clients are invisible to them (no error
//! reaches the application) and keep histories linearizable; a client with a stale region
//! cache reaches the right region after a retry; automatic splits by key count, then a
//! crash and restart of every store, lose nothing; a store that missed a split gets the
//! new region by snapshot; batches span regions through splits; a PD restart keeps ids
//! and timestamps monotonic.

use crate::common;
use crate::common::linearizability::Op;
use crate::common::{wait_until, Cluster, Recorder};
use regatta_server::StoreConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Goal: while 6 clients write and read, the single region is split three times; no
/// operation fails, and the history, with a final read of every written key from the
/// region that now holds it, is linearizable (so no acknowledged write was lost behind an
/// older value).
#[actix_rt::test]
async fn splits_under_load_are_invisible_to_clients() {
    let cluster = Cluster::new(3, 1).await;
    let keys = common::spread_keys(12);
    let rec = Recorder::default();
    let last: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for c in 0..6 {
        let (client, rec, last, stop, keys) = (
            cluster.client().await,
            rec.clone(),
            last.clone(),
            stop.clone(),
            keys.clone(),
        );
        workers.push(actix_rt::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = keys[(c * 7 + i * 5) % keys.len()].clone();
                let value = format!("c{c}-{i}").into_bytes();
                if i.is_multiple_of(3) {
                    rec.record(&key, async {
                        let v = client.get(&key).await.expect("a get failed during splits");
                        common::Outcome::Known(Op::Get(v.map(|v| v.value)))
                    })
                    .await;
                } else {
                    rec.record(&key, async {
                        client
                            .put(&key, &value)
                            .await
                            .expect("a put failed during splits");
                        common::Outcome::Known(Op::Put(value.clone()))
                    })
                    .await;
                    last.lock().unwrap().insert(key.clone(), value);
                }
            }
            i
        }));
    }
    let admin = cluster.client().await;
    // Each split, and the end, comes after 60 more answered operations: the splits fall
    // amid the traffic, and the clients keep going through every one of them.
    let progress = |what: String| {
        let answered = rec.answered();
        let rec = &rec;
        async move {
            wait_until(&what, Duration::from_secs(30), || async {
                rec.answered() >= answered + 60
            })
            .await
        }
    };
    for k in [&keys[3], &keys[6], &keys[9]] {
        progress(format!("60 answers before the split at {k:?}")).await;
        admin.split(k).await.expect("split");
    }
    progress("60 answers after the last split".into()).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let regions = admin.pd().scan_regions(b"", b"", 0).await.unwrap();
    assert_eq!(regions.len(), 4, "three splits make four regions");
    // Every written key is read once more, after every writer stopped; the reads join
    // the history. Two clients may write one key concurrently, so which write is the last
    // is the checker's to decide: a lost acknowledged write makes the history fail.
    let written: Vec<Vec<u8>> = last.lock().unwrap().keys().cloned().collect();
    let mut expected: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for key in &written {
        let outcome = rec
            .record(key, async {
                let v = admin
                    .get(key)
                    .await
                    .expect("a final get failed")
                    .map(|v| v.value);
                common::Outcome::Known(Op::Get(v))
            })
            .await;
        let common::Outcome::Known(Op::Get(Some(v))) = outcome else {
            panic!("written key {key:?} reads as absent");
        };
        expected.push((key.clone(), v));
    }
    rec.assert_linearizable();
    // A scan across the four regions (in parallel) returns every key once, in order.
    let all = admin.scan(b"", b"", 0).await.unwrap();
    let scanned: Vec<(Vec<u8>, Vec<u8>)> = all.into_iter().map(|p| (p.key, p.value)).collect();
    expected.sort();
    assert_eq!(scanned, expected);
    let first_three = admin.scan(b"", b"", 3).await.unwrap();
    assert_eq!(first_three.len(), 3.min(expected.len()));
    // A client whose cache predates another split still reaches the right region.
    let stale = cluster.client().await;
    stale.put(&keys[10], b"before").await.unwrap();
    admin.split(&keys[11]).await.unwrap();
    stale.put(&keys[11], b"after").await.unwrap();
    assert_eq!(
        stale.get(&keys[11]).await.unwrap().map(|v| v.value),
        Some(b"after".to_vec())
    );
    assert_eq!(
        admin.get(&keys[11]).await.unwrap().map(|v| v.value),
        Some(b"after".to_vec())
    );
}

/// Goal: with tiny thresholds, loading keys makes regions split by themselves; then every
/// store is crashed and restarted in turn, and every key still reads its value.
#[actix_rt::test]
async fn automatic_splits_survive_a_restart_of_every_store() {
    let config = StoreConfig {
        region_split_keys: 40,
        split_check_interval_ms: 100,
        split_check_diff_bytes: 0,
        ..StoreConfig::default()
    };
    let mut cluster = Cluster::with_config(3, 1, config).await;
    let c = cluster.client().await;
    let keys = common::spread_keys(200);
    for (i, k) in keys.iter().enumerate() {
        c.put(k, format!("v{i}").as_bytes()).await.unwrap();
    }
    wait_until(
        "regions split by themselves",
        Duration::from_secs(60),
        || async { c.pd().scan_regions(b"", b"", 0).await.unwrap().len() >= 4 },
    )
    .await;
    for store in 1..=3 {
        cluster.crash(store).await;
        c.put(&keys[store as usize], b"while-down").await.unwrap();
        cluster.restart(store).await;
    }
    for (i, k) in keys.iter().enumerate() {
        let want = if (1..=3).contains(&i) {
            b"while-down".to_vec()
        } else {
            format!("v{i}").into_bytes()
        };
        assert_eq!(
            c.get(k).await.unwrap().map(|v| v.value),
            Some(want),
            "key {i}"
        );
    }
    // Every region has a leader again, and the map covers the whole key space.
    let regions = c.pd().scan_regions(b"", b"", 0).await.unwrap();
    assert!(regions.first().unwrap().0.get_start_key().is_empty());
    assert!(regions.last().unwrap().0.get_end_key().is_empty());
    for w in regions.windows(2) {
        assert_eq!(w[0].0.get_end_key(), w[1].0.get_start_key());
    }
}

/// Goal: PD spreads region leaders across stores. All six regions' leaders are first
/// moved to store 1; PD's balance-leader orders then give every store some leaders.
#[actix_rt::test]
async fn pd_spreads_leaders_across_stores() {
    let config = StoreConfig {
        region_heartbeat_interval_ms: 200,
        ..StoreConfig::default()
    };
    let cluster = Cluster::with_config(3, 6, config).await;
    let c = cluster.client().await;
    let regions: Vec<u64> = c
        .pd()
        .scan_regions(b"", b"", 0)
        .await
        .unwrap()
        .iter()
        .map(|(r, _)| r.get_id())
        .collect();
    assert_eq!(regions.len(), 6);
    let leaders_per_store = || async {
        let mut counts = [0usize; 3];
        for rid in &regions {
            if let Some(s) = cluster.leader_of(*rid).await {
                counts[s as usize - 1] += 1;
            }
        }
        counts
    };
    // Concentrate: ask store 1 to lead everything (PD may already be moving some away,
    // so this only has to hold for a moment).
    wait_until(
        "store 1 leads most regions",
        Duration::from_secs(20),
        || async {
            for rid in &regions {
                cluster.request_leadership(1, *rid);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            leaders_per_store().await[0] >= 5
        },
    )
    .await;
    wait_until(
        "every store leads some region",
        Duration::from_secs(60),
        || async { leaders_per_store().await.iter().all(|n| *n >= 1) },
    )
    .await;
}

/// A CAS of `key` from absent to `new`, with an explicit session, sent straight to store
/// `store`'s replica of `region`.
async fn cas_direct(
    cluster: &Cluster,
    store: u64,
    region: &regatta_proto::metapb::Region,
    key: &[u8],
    new: &[u8],
    session: (u64, u64),
) -> regatta_proto::kvrpcpb::KvResponse {
    use regatta_proto::framepb::Frame_oneof_body;
    use regatta_proto::kvrpcpb::{CasRequest, KvRequest, Request};
    let mut kv = KvRequest::new();
    kv.mut_context().set_region_id(region.get_id());
    kv.mut_context()
        .set_region_epoch(region.get_region_epoch().clone());
    kv.mut_context().set_client_id(session.0);
    kv.mut_context().set_seq(session.1);
    let mut c = CasRequest::new();
    c.set_key(key.to_vec());
    c.set_expect_absent(true);
    c.set_new_value(new.to_vec());
    let mut req = Request::new();
    req.set_cas(c);
    kv.set_request(req);
    let addr = cluster.pg.store(store).unwrap().addr.to_string();
    let conn = regatta_proto::rpc::Connection::connect(&addr, Duration::from_secs(2))
        .await
        .unwrap();
    match conn
        .call(Frame_oneof_body::kv_request(kv), Duration::from_secs(20))
        .await
        .unwrap()
        .body
    {
        Some(Frame_oneof_body::kv_response(r)) => r,
        other => panic!("not a KV answer: {other:?}"),
    }
}

/// Goal: a split under a partition. The old leader, cut off, keeps the old epoch: a write
/// sent to it never takes effect. The majority splits and writes to both halves. After
/// the heal the old leader's store applies the split, starts the new region's replica and
/// catches up. A write retried with the same session after the split (on the new region)
/// gets the original answer instead of running twice.
#[actix_rt::test]
async fn split_under_partition_and_retries_across_a_split_apply_once() {
    let cluster = Cluster::new(3, 1).await;
    let c = cluster.client().await;
    c.put(b"a", b"1").await.unwrap();
    let rid = cluster.region_of(b"a").await;

    // A CAS with session (77, 1) on the whole region, before any split.
    let leader = cluster.wait_leader(rid).await;
    let region = cluster.status(leader, rid).await.unwrap().region;
    let first = cas_direct(&cluster, leader, &region, b"q", b"x", (77, 1)).await;
    assert!(first.get_response().get_cas().get_succeeded(), "{first:?}");

    // Cut the leader off; the majority splits at "m" and writes on both sides.
    let old = cluster.isolate_leader(rid).await;
    let old_region = cluster.status(old, rid).await.unwrap().region;
    let (left, right) = c.split(b"m").await.unwrap();
    c.put(b"b", b"2").await.unwrap();
    c.put(b"z", b"3").await.unwrap();
    // The old leader still has the old epoch; a write sent to it must never apply.
    let stale = cas_direct(&cluster, old, &old_region, b"s", b"stale", (78, 1)).await;
    assert!(
        stale.has_error(),
        "a cut-off old leader acknowledged a write: {stale:?}"
    );

    // The retried CAS (same session) now routes to the new region: the cached answer.
    let leader_right = cluster.wait_leader(right.get_id()).await;
    let retried = cas_direct(&cluster, leader_right, &right, b"q", b"x", (77, 1)).await;
    assert!(
        retried.get_response().get_cas().get_succeeded(),
        "the retry ran again instead of returning the first answer: {retried:?}"
    );

    cluster.heal();
    wait_until(
        "the old leader's store catches up on both regions",
        Duration::from_secs(30),
        || caught_up(&cluster, old, [&left, &right]),
    )
    .await;
    for (k, v) in [
        (&b"a"[..], &b"1"[..]),
        (b"b", b"2"),
        (b"z", b"3"),
        (b"q", b"x"),
    ] {
        assert_eq!(c.get(k).await.unwrap().map(|v| v.value).as_deref(), Some(v));
    }
    assert_eq!(
        c.get(b"s").await.unwrap().map(|v| v.value),
        None,
        "the stale write took effect"
    );
}

/// Goal: a store that was down through a split and a log compaction catches up on the
/// parent region by snapshot (so it never applies the split itself) and still gets a
/// working replica of the region the split created: the new region's leader reaches it,
/// the store starts an uninitialized replica, and a snapshot initializes it. Without that
/// replica the new region would run on two stores for good. Checked by making the store
/// indispensable: with a third store down, both regions must still take writes.
#[actix_rt::test]
async fn a_store_that_missed_a_split_gets_the_new_region_by_snapshot() {
    let config = StoreConfig {
        raft_log_gc_count_limit: 20,
        ..StoreConfig::default()
    };
    let mut cluster = Cluster::with_config(3, 1, config).await;
    let c = cluster.client().await;
    let rid = cluster.region_of(b"a").await;
    let leader = cluster.wait_leader(rid).await;
    let behind = (1..=3).find(|&s| s != leader).expect("3 stores");
    let other = (1..=3)
        .find(|&s| s != leader && s != behind)
        .expect("3 stores");
    cluster.crash(behind).await;
    for i in 0..40 {
        c.put(format!("a{i:03}").as_bytes(), b"before")
            .await
            .unwrap();
        c.put(format!("z{i:03}").as_bytes(), b"before")
            .await
            .unwrap();
    }
    let (left, right) = c.split(b"m").await.unwrap();
    for i in 0..60 {
        c.put(format!("b{i:03}").as_bytes(), b"after")
            .await
            .unwrap();
        c.put(format!("y{i:03}").as_bytes(), b"after")
            .await
            .unwrap();
    }
    wait_until(
        "both regions compact their logs past the split",
        Duration::from_secs(30),
        || async {
            for r in [&left, &right] {
                let l = cluster.wait_leader(r.get_id()).await;
                if cluster
                    .status(l, r.get_id())
                    .await
                    .is_none_or(|st| st.truncated_index <= 40)
                {
                    return false;
                }
            }
            true
        },
    )
    .await;
    cluster.restart(behind).await;
    wait_until(
        "the restarted store holds both regions, caught up",
        Duration::from_secs(30),
        || caught_up(&cluster, behind, [&left, &right]),
    )
    .await;
    // With `other` down, every write needs the restarted store on both regions.
    cluster.crash(other).await;
    c.put(b"c", b"needs it (left)").await.unwrap();
    c.put(b"x", b"needs it (right)").await.unwrap();
    for i in 0..40 {
        for k in [format!("a{i:03}"), format!("z{i:03}")] {
            assert_eq!(
                c.get(k.as_bytes())
                    .await
                    .unwrap()
                    .map(|v| v.value)
                    .as_deref(),
                Some(&b"before"[..])
            );
        }
    }
    for i in 0..60 {
        for k in [format!("b{i:03}"), format!("y{i:03}")] {
            assert_eq!(
                c.get(k.as_bytes())
                    .await
                    .unwrap()
                    .map(|v| v.value)
                    .as_deref(),
                Some(&b"after"[..])
            );
        }
    }
    assert_eq!(
        c.get(b"x").await.unwrap().map(|v| v.value).as_deref(),
        Some(&b"needs it (right)"[..])
    );
}

/// Whether `store` hosts each of `regions` as its leader knows it (same range and epoch)
/// and has applied everything the leader committed.
async fn caught_up(
    cluster: &Cluster,
    store: u64,
    regions: [&regatta_proto::metapb::Region; 2],
) -> bool {
    for r in regions {
        let l = cluster.wait_leader(r.get_id()).await;
        let (Some(ls), Some(st)) = (
            cluster.status(l, r.get_id()).await,
            cluster.status(store, r.get_id()).await,
        ) else {
            return false;
        };
        if st.applied_index < ls.commit_index
            || st.region.get_region_epoch() != ls.region.get_region_epoch()
            || st.region.get_start_key() != ls.region.get_start_key()
            || st.region.get_end_key() != ls.region.get_end_key()
        {
            return false;
        }
    }
    true
}

/// Goal: batch operations span regions and survive splits. One writer keeps putting a
/// batch over the whole key space with a new generation of values and reads it back with
/// a batch get, while the region splits three times under it: no batch fails, every batch
/// get sees the whole generation just written (each region's part of a batch put is one
/// command), and a batch delete removes every key across the regions.
#[actix_rt::test]
async fn batches_span_regions_and_survive_splits() {
    let cluster = Cluster::new(3, 1).await;
    let keys = common::spread_keys(200);
    let stop = Arc::new(AtomicBool::new(false));
    // Generations written and read back in full.
    let generation = Arc::new(AtomicU64::new(0));
    let (client, stop2, keys2, checked) = (
        cluster.client().await,
        stop.clone(),
        keys.clone(),
        generation.clone(),
    );
    let writer = actix_rt::spawn(async move {
        let mut generation = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            generation += 1;
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = keys2
                .iter()
                .map(|k| (k.clone(), format!("g{generation}").into_bytes()))
                .collect();
            client
                .batch_put(&pairs)
                .await
                .expect("a batch put failed during splits");
            let got = client
                .batch_get(&keys2)
                .await
                .expect("a batch get failed during splits");
            let want = format!("g{generation}").into_bytes();
            assert!(
                got.iter()
                    .all(|v| v.as_ref().map(|v| &v.value) == Some(&want)),
                "generation {generation}: a batch get missed part of the batch put before it"
            );
            checked.store(generation, Ordering::Relaxed);
        }
        generation
    });
    let admin = cluster.client().await;
    // Each split, and the end, comes after two more checked generations.
    let progress = |what: String| {
        let before = generation.load(Ordering::Relaxed);
        let generation = &generation;
        async move {
            wait_until(&what, Duration::from_secs(30), || async {
                generation.load(Ordering::Relaxed) >= before + 2
            })
            .await
        }
    };
    for k in [&keys[50], &keys[100], &keys[150]] {
        progress(format!("two generations before the split at {k:?}")).await;
        admin.split(k).await.expect("split");
    }
    progress("two generations after the last split".into()).await;
    stop.store(true, Ordering::Relaxed);
    let generations = writer.await.expect("writer");
    let regions = admin.pd().scan_regions(b"", b"", 0).await.unwrap();
    assert_eq!(regions.len(), 4, "three splits make four regions");

    // Reads of keys with and without values, in the caller's order, on any strategy.
    let mut probe = vec![b"absent-1".to_vec(), keys[199].clone(), keys[0].clone()];
    probe.push(b"absent-2".to_vec());
    let want = Some(format!("g{generations}").into_bytes());
    for consistency in [
        regatta_client::ReadConsistency::Linearizable,
        regatta_client::ReadConsistency::Lease,
        regatta_client::ReadConsistency::LogRead,
    ] {
        let got = admin.batch_get_with(&probe, consistency).await.unwrap();
        let values: Vec<Option<Vec<u8>>> = got.into_iter().map(|v| v.map(|v| v.value)).collect();
        assert_eq!(values, vec![None, want.clone(), want.clone(), None]);
    }
    assert_eq!(admin.batch_get(&[]).await.unwrap(), Vec::new());
    assert!(matches!(
        admin.batch_put(&[(Vec::new(), b"v".to_vec())]).await,
        Err(regatta_client::Error::InvalidArgument(_))
    ));

    // A client whose cache predates a split cuts its batch again.
    let stale = cluster.client().await;
    stale.batch_get(&keys[..50]).await.unwrap();
    admin.split(&keys[25]).await.unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = keys[..50]
        .iter()
        .map(|k| (k.clone(), b"stale cache".to_vec()))
        .collect();
    stale.batch_put(&pairs).await.unwrap();
    let got = admin.batch_get(&keys[..50]).await.unwrap();
    assert!(got
        .iter()
        .all(|v| v.as_ref().map(|v| v.value.as_slice()) == Some(&b"stale cache"[..])));

    // Duplicates are fine; a key given twice to a batch put gets its last value.
    let mut dup = keys.clone();
    dup.extend_from_slice(&keys[..10]);
    admin.batch_delete(&dup).await.unwrap();
    assert!(admin.scan(b"", b"", 0).await.unwrap().is_empty());
    let twice = vec![
        (keys[0].clone(), b"first".to_vec()),
        (keys[0].clone(), b"last".to_vec()),
    ];
    admin.batch_put(&twice).await.unwrap();
    assert_eq!(
        admin
            .get(&keys[0])
            .await
            .unwrap()
            .map(|v| v.value)
            .as_deref(),
        Some(&b"last"[..])
    );
}

/// Goal: a PD restart (from its data directory, on the same address) keeps timestamps and
/// ids monotonic and the region map intact: timestamps after it are above every one
/// before, a split after it gets ids no region or peer had, and the cluster serves both
/// regions throughout.
#[actix_rt::test]
async fn pd_restart_keeps_ids_and_timestamps_monotonic() {
    let mut cluster = Cluster::new(3, 1).await;
    let c = cluster.client().await;
    c.put(b"a", b"1").await.unwrap();
    let (_, right) = c.split(b"m").await.unwrap();
    let mut before_ts = 0;
    for _ in 0..100 {
        let ts = c.pd().get_ts().await.unwrap();
        assert!(ts > before_ts);
        before_ts = ts;
    }
    let mut ids: Vec<u64> = Vec::new();
    for (r, _) in c.pd().scan_regions(b"", b"", 0).await.unwrap() {
        ids.push(r.get_id());
        ids.extend(r.get_peers().iter().map(|p| p.get_id()));
    }

    cluster.restart_pd().await;

    let after_ts = c.pd().get_ts().await.unwrap();
    assert!(
        after_ts > before_ts,
        "timestamp went back after a PD restart"
    );
    let regions = c.pd().scan_regions(b"", b"", 0).await.unwrap();
    assert_eq!(regions.len(), 2, "PD forgot a region: {regions:?}");
    let (_, newest) = c.split(b"t").await.unwrap();
    assert!(newest.get_id() > right.get_id());
    for id in std::iter::once(newest.get_id()).chain(newest.get_peers().iter().map(|p| p.get_id()))
    {
        assert!(!ids.contains(&id), "id {id} handed out twice");
    }
    for (k, v) in [(&b"b"[..], &b"2"[..]), (b"n", b"3"), (b"x", b"4")] {
        c.put(k, v).await.unwrap();
        assert_eq!(c.get(k).await.unwrap().map(|v| v.value).as_deref(), Some(v));
    }
    assert_eq!(
        c.get(b"a").await.unwrap().map(|v| v.value).as_deref(),
        Some(&b"1"[..])
    );
    wait_until(
        "PD learns the third region's leader",
        Duration::from_secs(20),
        || async {
            let regions = c.pd().scan_regions(b"", b"", 0).await.unwrap();
            regions.len() == 3 && regions.iter().all(|(_, l)| l.is_some())
        },
    )
    .await;
}
