//! The read strategies under faults: no linearizable strategy (ReadIndex, lease, log) ever
//! serves a stale read from a partitioned old leader; leases are not used across a leader
//! transfer or term change, and unsafe lease configurations are refused; follower reads
//! never return data older than their bound; read-your-writes reads always see the
//! client's own writes, a follower restart included. No timing is asserted.

use crate::common::{run_workload_with, wait_until, Cluster, Recorder};
use regatta::playground::{Playground, PlaygroundConfig};
use regatta_client::{ReadConsistency, Versioned};
use regatta_proto::kvrpcpb::ReadConsistency as Wire;
use regatta_server::StoreConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Goal: with a nemesis that repeatedly cuts the leader off into a minority and heals,
/// histories read with each linearizable strategy stay linearizable; and the cut-off old
/// leader answers a direct read of a key overwritten on the majority side with an error,
/// never the old value.
#[actix_rt::test]
async fn partitioned_old_leader_never_serves_stale_reads_with_any_linearizable_strategy() {
    let cluster = Arc::new(Cluster::new(3, 1).await);
    let rid = cluster.region_of(b"k").await;
    for (round, reads) in [
        ReadConsistency::Lease,
        ReadConsistency::Linearizable,
        ReadConsistency::LogRead,
    ]
    .into_iter()
    .enumerate()
    {
        // The directed check: overwrite on the majority side, ask the old leader.
        let c = cluster.client_with_deadline(Duration::from_secs(30)).await;
        let key = format!("k{round}").into_bytes();
        c.put(&key, b"before").await.unwrap();
        // Warm the lease so the old leader would be tempted to use it.
        for _ in 0..20 {
            c.get_with(&key, ReadConsistency::Lease).await.unwrap();
        }
        let old = cluster.isolate_leader(rid).await;
        c.put(&key, b"after").await.unwrap();
        for wire in [Wire::LEASE, Wire::LINEARIZABLE, Wire::LOG_READ] {
            let r = cluster.direct_get(old, rid, &key, wire, |_| {}).await;
            assert!(
                r.has_error() || r.get_response().get_get().get_value() != b"before",
                "the partitioned old leader served a stale value with {wire:?}"
            );
        }
        cluster.heal();

        // The checked history, with a nemesis isolating whoever leads.
        let rec = Recorder::default();
        let keys: Vec<Vec<u8>> = (0..3)
            .map(|i| format!("h{round}-{i}").into_bytes())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let nemesis = {
            let (cluster, stop, rec) = (cluster.clone(), stop.clone(), rec.clone());
            actix_rt::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // Healed, the clients get answers again before the next cut.
                    let answered = rec.answered();
                    while !stop.load(Ordering::Relaxed) && rec.answered() < answered + 5 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if let Some(l) = cluster.leader_of(rid).await {
                        cluster.isolate(l);
                    }
                    tokio::time::sleep(Duration::from_millis(1200)).await; // the cut lasts
                    cluster.heal();
                }
            })
        };
        let known =
            run_workload_with(&cluster, &rec, 6, 20, &keys, Duration::from_secs(20), reads).await;
        stop.store(true, Ordering::Relaxed);
        nemesis.await.unwrap();
        cluster.heal();
        // Healed, every operation of a fresh workload is answered (same history).
        let healed =
            run_workload_with(&cluster, &rec, 4, 10, &keys, Duration::from_secs(20), reads).await;
        assert_eq!(
            healed,
            4 * 10,
            "the healed cluster left operations unanswered ({reads:?}; {known} of 120 \
             answered under the nemesis)"
        );
        rec.assert_linearizable();
    }
}

/// Goal: a leader does not use its lease while it transfers leadership (the transferee may
/// be elected without waiting out election timers), an old leader does not serve lease
/// reads after the transfer (term change), and a lease that is too long for the election
/// timeout and clock drift is refused at start and at runtime.
#[actix_rt::test]
async fn lease_is_not_used_across_transfer_or_term_change_and_unsafe_leases_are_refused() {
    let cluster = Cluster::new(3, 1).await;
    let c = cluster.client().await;
    c.put(b"k", b"v").await.unwrap();
    let rid = cluster.region_of(b"k").await;
    let leader = cluster.wait_leader(rid).await;
    let lease_read = |store| cluster.direct_get(store, rid, b"k", Wire::LEASE, |_| {});
    // The lease is used once warm.
    wait_until(
        "the leader serves from its lease",
        Duration::from_secs(10),
        || async { lease_read(leader).await.get_read_info().get_lease_used() },
    )
    .await;

    // A transfer that cannot finish: the leader's messages to the transferee are cut, so
    // its TimeoutNow never arrives and the transfer stays in flight.
    let target = (1..=3).find(|&s| s != leader).unwrap();
    cluster.cut_one_way(leader, target);
    cluster.request_leadership(target, rid);
    wait_until(
        "the transfer is in flight",
        Duration::from_secs(10),
        || async {
            cluster
                .status(leader, rid)
                .await
                .is_some_and(|s| s.transferring_leadership)
        },
    )
    .await;
    let mut served = 0;
    while cluster
        .status(leader, rid)
        .await
        .is_some_and(|s| s.transferring_leadership)
    {
        let r = lease_read(leader).await;
        assert!(
            !r.get_read_info().get_lease_used(),
            "a lease read was served while a leader transfer was in flight"
        );
        served += u32::from(!r.has_error());
    }
    assert!(served > 0, "reads fell back to ReadIndex and were served");
    cluster.heal();

    // A real transfer: the old leader's lease does not survive the term change.
    let term_before = cluster.status(leader, rid).await.unwrap().term;
    wait_until("the transferee leads", Duration::from_secs(20), || async {
        // Asked again until it works: right after the heal the transferee may not know
        // the leader yet, and then it campaigns, which the leader's followers refuse.
        cluster.request_leadership(target, rid);
        tokio::time::sleep(Duration::from_millis(50)).await;
        cluster.leader_of(rid).await == Some(target)
    })
    .await;
    let r = lease_read(leader).await;
    assert!(
        r.get_error().has_not_leader(),
        "the old leader must redirect, got {r:?}"
    );
    let new = cluster.status(target, rid).await.unwrap();
    assert!(new.term > term_before);
    let r = lease_read(target).await;
    assert!(!r.has_error(), "{r:?}");
    assert_eq!(r.get_response().get_get().get_value(), b"v");

    // Unsafe leases are refused: at start ...
    let unsafe_cfg = StoreConfig {
        lease_ms: 440,
        max_clock_drift_ms: 20,
        ..StoreConfig::default()
    };
    assert!(unsafe_cfg.validate().is_err());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = PlaygroundConfig::local(1, 1, dir.path().to_path_buf());
    cfg.store_config = unsafe_cfg;
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let refused = Playground::start(cfg, logger).await;
    assert!(
        refused.is_err(),
        "a store with an unsafe lease must not start"
    );
    // ... and at runtime, leaving the lease as it was.
    let store = cluster.pg.store(target).unwrap();
    let err = store.set_lease(1_000, 50).unwrap_err();
    assert!(err.contains("unsafe lease"), "{err}");
    store.set_lease(300, 100).unwrap();
}

/// Goal: a follower read never returns data older than its bound. A writer bumps a counter
/// and records when each value was acknowledged; readers read with `max_staleness`; every
/// read must see at least the newest value acknowledged `max_staleness` before the read
/// began. A follower cut off mid-run must redirect rather than serve old data. With
/// `max_staleness = 0` the leader serves, linearizably.
#[actix_rt::test]
async fn follower_reads_respect_their_staleness_bound() {
    let cluster = Cluster::new(3, 1).await;
    let rid = cluster.region_of(b"counter").await;
    let bound = Duration::from_millis(300);
    let acked: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (c, acked, stop) = (cluster.client().await, acked.clone(), stop.clone());
        actix_rt::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if c.put(b"counter", format!("{n:012}").as_bytes())
                    .await
                    .is_ok()
                {
                    acked.lock().unwrap().push((Instant::now(), n));
                }
            }
        })
    };
    let reader = cluster.client().await;
    let (mut by_follower, mut checked) = (0, 0);
    let leader = cluster.wait_leader(rid).await;
    let victim = (1..=3).find(|&s| s != leader).unwrap();
    for i in 0..400 {
        if i == 150 {
            cluster.isolate(victim);
        }
        if i == 250 {
            cluster.heal();
        }
        let began = Instant::now();
        let read = reader
            .get_detailed(
                b"counter",
                ReadConsistency::Follower {
                    max_staleness: bound,
                },
            )
            .await
            .unwrap();
        let seen: u64 = read
            .value
            .map_or(0, |v| String::from_utf8(v.value).unwrap().parse().unwrap());
        let must_see = acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at + bound < began)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        assert!(
            seen >= must_see,
            "read {seen} but {must_see} was acknowledged more than {bound:?} before the read \
             (served by store {}, reported staleness {:?})",
            read.served_by_store,
            read.staleness
        );
        assert!(read.linearizable || read.staleness <= bound);
        checked += 1;
        if !read.linearizable {
            by_follower += 1;
        }
    }
    // A zero bound is served by the leader.
    let zero = reader
        .get_detailed(
            b"counter",
            ReadConsistency::Follower {
                max_staleness: Duration::ZERO,
            },
        )
        .await
        .unwrap();
    assert!(zero.linearizable);
    assert_eq!(Some(zero.served_by_store), cluster.leader_of(rid).await);
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert_eq!(checked, 400);
    // Followers do serve bounded reads: under a busy machine they may have stayed behind
    // the bound for the whole loop (then every read above went to the leader, correctly),
    // so once the writer stopped they must catch up and serve one.
    if by_follower == 0 {
        wait_until(
            "a follower serves a bounded read",
            Duration::from_secs(30),
            || async {
                let r = reader
                    .get_detailed(
                        b"counter",
                        ReadConsistency::Follower {
                            max_staleness: bound,
                        },
                    )
                    .await;
                r.is_ok_and(|r| !r.linearizable)
            },
        )
        .await;
    }
}

/// Goal: with read-your-writes, a client always sees its own last write on whichever
/// replica serves it, including a follower that was down and restarted behind the log.
#[actix_rt::test]
async fn read_your_writes_sees_own_writes_across_a_follower_restart() {
    let mut cluster = Cluster::new(3, 1).await;
    let c = cluster.client().await;
    let rid = cluster.region_of(b"mine").await;
    let mut followers_served = 0;
    for round in 0..3 {
        if round == 1 {
            let leader = cluster.wait_leader(rid).await;
            let victim = (1..=3).find(|&s| s != leader).unwrap();
            cluster.crash(victim).await;
            for i in 0..20 {
                c.put(b"other", format!("{i}").as_bytes()).await.unwrap();
            }
            cluster.restart(victim).await;
        }
        for i in 0..60 {
            let value = format!("{round}-{i}").into_bytes();
            let index = c.put(b"mine", &value).await.unwrap();
            assert_eq!(c.last_write_index(rid), index);
            let read = c
                .get_detailed(b"mine", ReadConsistency::ReadYourWrites)
                .await
                .unwrap();
            assert_eq!(
                read.value,
                Some(Versioned {
                    value,
                    version: index
                }),
                "a read missed the client's own write (or its version is not the write's index)"
            );
            assert!(read.applied_index >= index);
            if !read.linearizable {
                followers_served += 1;
            }
        }
    }
    assert!(followers_served > 0, "followers served some of the reads");
}

/// Goal: a local read of several keys returns one state of the region even while the
/// region applies on another raft thread (`raft_threads` = 2: a connection and the region
/// its request is for may live on different threads). Method: one region; a writer puts
/// two keys to the same new value in one request (one command, one apply write), over
/// and over; four readers, each on its own connection (dealt to the threads in turn),
/// read both keys in one `batch_get` by lease (served locally by the leader) and must
/// always see them equal.
#[actix_rt::test]
async fn a_local_batch_get_on_several_raft_threads_reads_one_state() {
    let config = StoreConfig {
        raft_threads: 2,
        ..StoreConfig::default()
    };
    let cluster = Cluster::with_config(3, 1, config).await;
    let keys = vec![b"pair-a".to_vec(), b"pair-b".to_vec()];
    let pair_keys = keys.clone();
    let pair = move |v: u64| {
        let (keys, v) = (&pair_keys, v.to_string().into_bytes());
        vec![(keys[0].clone(), v.clone()), (keys[1].clone(), v)]
    };
    let writer = cluster.client().await;
    writer.batch_put(&pair(0)).await.expect("first put");
    let local_reads = |cluster: &Cluster| -> u64 {
        cluster
            .pg
            .stores()
            .map(|s| s.metrics().local_reads_leader)
            .sum()
    };
    let local_before = local_reads(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let write_loop = {
        let (stop, pairs) = (stop.clone(), (1..).map(pair));
        actix_rt::spawn(async move {
            let mut written = 0u64;
            for p in pairs {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                writer.batch_put(&p).await.expect("put");
                written += 1;
            }
            written
        })
    };
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (client, keys) = (cluster.client().await, keys.clone());
        readers.push(actix_rt::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut reads = 0u64;
            while Instant::now() < deadline {
                let got = client
                    .batch_get_with(&keys, ReadConsistency::Lease)
                    .await
                    .expect("batch_get");
                let values: Vec<_> = got.iter().map(|v| v.as_ref().map(|v| &v.value)).collect();
                assert_eq!(values[0], values[1], "one state of the region");
                reads += 1;
            }
            reads
        }));
    }
    let mut reads = 0;
    for r in readers {
        reads += r.await.expect("reader");
    }
    stop.store(true, Ordering::Relaxed);
    let written = write_loop.await.expect("writer");
    assert!(
        reads > 100 && written > 100,
        "{reads} reads, {written} writes"
    );
    let local = local_reads(&cluster) - local_before;
    assert!(
        local * 2 > reads,
        "most reads served locally by the leader: {local} of {reads}"
    );
}
