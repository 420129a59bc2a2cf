//! Cluster tests of the KV API through the client: basic operations, many concurrent
//! clients, several regions at once. Method: a real PD and 3 real stores on loopback, the
//! client crate, histories checked for linearizability.

use crate::common::{run_workload, spread_keys, Cluster, Recorder};
use regatta_client::{ReadConsistency, Versioned};
use std::time::Duration;

/// Goal: the client's get/put/delete/cas/scan behave as documented on a healthy cluster.
#[actix_rt::test]
async fn basic_operations_behave_as_documented() {
    let cluster = Cluster::new(3, 1).await;
    let c = cluster.client().await;
    assert_eq!(c.get(b"k").await.unwrap().map(|v| v.value), None);
    let i1 = c.put(b"k", b"v1").await.unwrap();
    assert_eq!(
        c.get(b"k").await.unwrap().map(|v| v.value),
        Some(b"v1".to_vec())
    );
    let i2 = c.put(b"k", b"v2").await.unwrap();
    assert!(i2 > i1, "commit indexes grow");
    let miss = c.cas(b"k", Some(b"v1"), b"x").await.unwrap();
    assert!(!miss.succeeded);
    assert_eq!(miss.previous, Some(b"v2".to_vec()));
    let hit = c.cas(b"k", Some(b"v2"), b"v3").await.unwrap();
    assert!(hit.succeeded);
    assert!(!c.cas(b"new", Some(b"x"), b"y").await.unwrap().succeeded);
    assert!(c.cas(b"new", None, b"y").await.unwrap().succeeded);
    assert!(!c.cas(b"new", None, b"z").await.unwrap().succeeded);
    assert!(c.delete(b"k").await.unwrap());
    assert!(!c.delete(b"k").await.unwrap());
    assert_eq!(c.get(b"k").await.unwrap().map(|v| v.value), None);
    for i in 0..10 {
        c.put(format!("s{i}").as_bytes(), b"x").await.unwrap();
    }
    let pairs = c.scan(b"s3", b"s7", 0).await.unwrap();
    let keys: Vec<_> = pairs.iter().map(|p| p.key.clone()).collect();
    assert_eq!(
        keys,
        vec![
            b"s3".to_vec(),
            b"s4".to_vec(),
            b"s5".to_vec(),
            b"s6".to_vec()
        ]
    );
    assert_eq!(c.scan(b"s", b"", 2).await.unwrap().len(), 2);
    let reversed = c.scan(b"s7", b"s3", 0).await.unwrap_err();
    assert!(
        matches!(reversed, regatta_client::Error::InvalidArgument(_)),
        "{reversed}"
    );
    assert!(c.scan(b"s3", b"s3", 0).await.unwrap().is_empty());
}

/// Goal: bad input gets a clear error and the cluster keeps serving.
#[actix_rt::test]
async fn bad_input_is_rejected_and_the_cluster_keeps_serving() {
    let cluster = Cluster::new(3, 1).await;
    let c = cluster.client().await;
    let err = c.put(b"", b"v").await.unwrap_err();
    assert!(
        matches!(err, regatta_client::Error::InvalidArgument(_)),
        "{err}"
    );
    let big_key = vec![b'k'; 4097];
    let err = c.put(&big_key, b"v").await.unwrap_err();
    assert!(
        matches!(err, regatta_client::Error::InvalidArgument(_)),
        "{err}"
    );
    let big_value = vec![0u8; 8 * 1024 * 1024 + 1];
    let err = c.put(b"k", &big_value).await.unwrap_err();
    assert!(
        matches!(err, regatta_client::Error::InvalidArgument(_)),
        "{err}"
    );
    c.put(b"k", b"fine").await.unwrap();
    assert_eq!(
        c.get(b"k").await.unwrap().map(|v| v.value),
        Some(b"fine".to_vec())
    );
}

/// Goal: many concurrent clients on few keys produce a linearizable history.
#[actix_rt::test]
async fn many_concurrent_clients_are_linearizable() {
    let cluster = Cluster::new(3, 1).await;
    let rec = Recorder::default();
    let keys: Vec<Vec<u8>> = (0..4).map(|i| format!("hot{i}").into_bytes()).collect();
    let known = run_workload(&cluster, &rec, 16, 40, &keys, Duration::from_secs(20)).await;
    assert_eq!(known, 16 * 40, "a healthy cluster answers every operation");
    rec.assert_linearizable();
}

/// Goal: with the key space cut into several regions, operations on all of them work at
/// once, and the history stays linearizable (group commit spans regions).
#[actix_rt::test]
async fn several_regions_serve_at_once() {
    let cluster = Cluster::new(3, 4).await;
    let keys = spread_keys(16);
    let mut regions = std::collections::BTreeSet::new();
    for k in &keys {
        regions.insert(cluster.region_of(k).await);
    }
    assert_eq!(regions.len(), 4, "the keys span all four regions");
    let rec = Recorder::default();
    let known = run_workload(&cluster, &rec, 12, 40, &keys, Duration::from_secs(20)).await;
    assert_eq!(known, 12 * 40);
    rec.assert_linearizable();
    // A scan over the whole key space crosses every region, in key order.
    let c = cluster.client().await;
    for k in &keys {
        c.put(k, b"x").await.unwrap();
    }
    let all = c.scan(b"", b"", 0).await.unwrap();
    let got: Vec<_> = all.iter().map(|p| p.key.clone()).collect();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(got, want);
}

/// Goal: a read returns the key's version, the log index of its last write (what
/// optimistic concurrency control compares), on every read path. Method: write, read back
/// through get, every consistency, batch_get and scan, and compare with the indexes the
/// writes returned.
#[actix_rt::test]
async fn reads_return_the_version_of_the_last_write() {
    let cluster = Cluster::new(3, 1).await;
    let c = cluster.client().await;
    let first = c.put(b"k", b"v1").await.unwrap();
    let got = c.get(b"k").await.unwrap().expect("just written");
    assert_eq!((got.value.as_slice(), got.version), (&b"v1"[..], first));

    let second = c.put(b"k", b"v2").await.unwrap();
    assert!(second > first);
    for consistency in [
        ReadConsistency::Linearizable,
        ReadConsistency::Lease,
        ReadConsistency::LogRead,
        ReadConsistency::ReadYourWrites,
    ] {
        let got = c.get_with(b"k", consistency).await.unwrap();
        assert_eq!(
            got,
            Some(Versioned {
                value: b"v2".to_vec(),
                version: second
            }),
            "{consistency:?}"
        );
    }

    // A failed compare-and-swap leaves the version; a successful one moves it to its index.
    assert!(!c.cas(b"k", Some(b"v1"), b"x").await.unwrap().succeeded);
    assert_eq!(c.get(b"k").await.unwrap().unwrap().version, second);
    let swapped = c.cas(b"k", Some(b"v2"), b"v3").await.unwrap();
    assert!(swapped.succeeded);
    assert_eq!(c.get(b"k").await.unwrap().unwrap().version, swapped.index);

    let other = c.put(b"other", b"o").await.unwrap();
    let both = c
        .batch_get(&[b"k".to_vec(), b"missing".to_vec(), b"other".to_vec()])
        .await
        .unwrap();
    let versions: Vec<Option<u64>> = both.iter().map(|v| v.as_ref().map(|v| v.version)).collect();
    assert_eq!(versions, vec![Some(swapped.index), None, Some(other)]);
    let scanned: Vec<u64> = c
        .scan(b"", b"", 0)
        .await
        .unwrap()
        .iter()
        .map(|p| p.version)
        .collect();
    assert_eq!(scanned, vec![swapped.index, other]);

    // Deleted: no value, so no version.
    c.delete(b"k").await.unwrap();
    assert_eq!(c.get(b"k").await.unwrap(), None);
}
