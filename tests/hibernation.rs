//! Hibernation: idle regions slow their raft clocks, wake on any request, and still fail
//! over when a store dies while they sleep.

use crate::common;
use crate::common::{wait_until, Cluster};
use regatta_server::StoreConfig;
use std::time::Duration;

/// Goal: with 24 idle regions every replica hibernates; a request wakes its region and is
/// served; killing the store that leads a sleeping region does not make it unavailable:
/// the next request wakes the followers, they elect a leader, and the write goes through.
#[actix_rt::test]
async fn idle_regions_hibernate_wake_on_requests_and_fail_over() {
    let config = StoreConfig {
        hibernate_after_ms: 300,
        ..StoreConfig::default()
    };
    let mut cluster = Cluster::with_config(3, 24, config).await;
    let c = cluster.client().await;
    let keys = common::spread_keys(24);
    for k in &keys {
        c.put(k, b"v1").await.unwrap();
    }
    let all_asleep = || async {
        for s in cluster.pg.stores() {
            if s.region_statuses().await.iter().any(|st| !st.hibernating) {
                return false;
            }
        }
        true
    };
    wait_until(
        "every replica hibernates",
        Duration::from_secs(30),
        all_asleep,
    )
    .await;

    // A request wakes its region.
    assert_eq!(
        c.get(&keys[5]).await.unwrap().map(|v| v.value),
        Some(b"v1".to_vec())
    );
    c.put(&keys[5], b"v2").await.unwrap();
    assert_eq!(
        c.get(&keys[5]).await.unwrap().map(|v| v.value),
        Some(b"v2".to_vec())
    );
    wait_until(
        "everything sleeps again",
        Duration::from_secs(30),
        all_asleep,
    )
    .await;

    // The leader of a sleeping region dies; its followers take over on the next request.
    let rid = cluster.region_of(&keys[17]).await;
    let leader = cluster.wait_leader(rid).await;
    cluster.crash(leader).await;
    c.put(&keys[17], b"v3").await.unwrap();
    assert_eq!(
        c.get(&keys[17]).await.unwrap().map(|v| v.value),
        Some(b"v3".to_vec())
    );
    let new_leader = cluster.wait_leader(rid).await;
    assert_ne!(new_leader, leader);
    cluster.restart(leader).await;
    for (i, k) in keys.iter().enumerate() {
        let want: &[u8] = match i {
            5 => b"v2",
            17 => b"v3",
            _ => b"v1",
        };
        assert_eq!(
            c.get(k).await.unwrap().map(|v| v.value).as_deref(),
            Some(want),
            "key {i}"
        );
    }
}
