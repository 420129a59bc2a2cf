//! A store whose disk fails (every write refused, as on a full disk) must not take the
//! cluster down. Method: a real PD and 3 stores on loopback; the fault is injected into one
//! store's RocksDB (`Store::inject_write_failure`), so its LogWriter and its apply writes
//! fail as they would with `No space left on device`; writes continue through the client;
//! then the fault is lifted, the store restarts and must catch up. Every acknowledged write
//! is read back.

use crate::common::{wait_until, Cluster};
use std::time::Duration;

const DISK_FULL: &str = "IO error: No space left on device";

fn key(i: usize) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value{i}").into_bytes()
}

/// The applied index of `store`'s replica of `region_id`.
async fn applied_on(cluster: &Cluster, store: u64, region_id: u64) -> u64 {
    let Some(s) = cluster.pg.store(store) else {
        return 0;
    };
    s.region_statuses()
        .await
        .into_iter()
        .find(|st| st.region.get_id() == region_id)
        .map_or(0, |st| st.applied_index)
}

/// The disk is healthy again: the store `bad` is restarted (as an operator would) and
/// must catch up with the leader of `region_id`.
async fn restart_healed(cluster: &mut Cluster, bad: u64, region_id: u64) {
    cluster
        .pg
        .store(bad)
        .expect("still running")
        .inject_write_failure(None);
    cluster.crash(bad).await;
    cluster.restart(bad).await;
    let leader = cluster.wait_leader(region_id).await;
    let target = applied_on(cluster, leader, region_id).await;
    wait_until(
        "the restarted store catches up",
        Duration::from_secs(30),
        || async { applied_on(cluster, bad, region_id).await >= target },
    )
    .await;
}

/// Writes keys `range` one by one; every one must be acknowledged (the client retries
/// within its deadline).
async fn write_all(c: &regatta_client::Client, range: std::ops::Range<usize>) {
    for i in range {
        c.put(&key(i), &value(i))
            .await
            .unwrap_or_else(|e| panic!("put {i}: {e}"));
    }
}

/// Reads back every key of `range` linearizably.
async fn check_all(c: &regatta_client::Client, range: std::ops::Range<usize>) {
    for i in range {
        let got = c
            .get(&key(i))
            .await
            .unwrap_or_else(|e| panic!("get {i}: {e}"));
        assert_eq!(
            got.map(|v| v.value),
            Some(value(i)),
            "acknowledged write {i} lost"
        );
    }
}

/// Goal: a leader whose disk fails stops leading (it hands leadership over and stops
/// campaigning), the healthy majority serves within a bounded time, nothing acknowledged
/// is lost, the store reports itself poisoned, and once the disk is healthy again and the
/// store restarts, it catches up.
#[actix_rt::test]
async fn a_leader_whose_disk_fails_hands_over_and_the_cluster_keeps_serving() {
    let mut cluster = Cluster::new(3, 1).await;
    let c = cluster.client_with_deadline(Duration::from_secs(30)).await;
    let rid = cluster.region_of(&key(0)).await;
    write_all(&c, 0..50).await;
    let bad = cluster.wait_leader(rid).await;
    cluster
        .pg
        .store(bad)
        .expect("the leader's store runs")
        .inject_write_failure(Some(DISK_FULL.into()));

    // The next write reaches the failing disk; from then on a healthy store must lead.
    write_all(&c, 50..150).await;
    let new_leader = cluster.wait_leader(rid).await;
    assert_ne!(new_leader, bad, "the store that cannot write still leads");
    let reason = cluster
        .pg
        .store(bad)
        .and_then(|s| s.poison_reason())
        .expect("the failing store says it is poisoned");
    assert!(reason.contains("No space left"), "{reason}");
    check_all(&c, 0..150).await;
    // It stays out of the way: more writes are served by the healthy pair.
    write_all(&c, 150..200).await;
    assert_ne!(cluster.wait_leader(rid).await, bad);

    // Space comes back; the operator restarts the store; it catches up.
    restart_healed(&mut cluster, bad, rid).await;
    assert!(cluster
        .pg
        .store(bad)
        .and_then(|s| s.poison_reason())
        .is_none());
    write_all(&c, 200..220).await;
    check_all(&c, 0..220).await;
}

/// Goal: a follower whose disk fails stops (it neither acknowledges appends nor votes);
/// the leader and the other follower keep serving; after a restart it catches up.
#[actix_rt::test]
async fn a_follower_whose_disk_fails_stops_and_catches_up_after_a_restart() {
    let mut cluster = Cluster::new(3, 1).await;
    let c = cluster.client_with_deadline(Duration::from_secs(30)).await;
    let rid = cluster.region_of(&key(0)).await;
    write_all(&c, 0..20).await;
    let leader = cluster.wait_leader(rid).await;
    let bad = (1..=3).find(|s| *s != leader).expect("a follower");
    cluster
        .pg
        .store(bad)
        .expect("the follower's store runs")
        .inject_write_failure(Some(DISK_FULL.into()));
    write_all(&c, 20..120).await;
    wait_until(
        "the follower finds its disk failed",
        Duration::from_secs(10),
        || async {
            cluster
                .pg
                .store(bad)
                .and_then(|s| s.poison_reason())
                .is_some()
        },
    )
    .await;
    let stuck = applied_on(&cluster, bad, rid).await;
    write_all(&c, 120..140).await;
    assert_eq!(
        applied_on(&cluster, bad, rid).await,
        stuck,
        "a fenced replica applies nothing more"
    );
    check_all(&c, 0..140).await;
    restart_healed(&mut cluster, bad, rid).await;
}
