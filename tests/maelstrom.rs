//! `regatta maelstrom` as a harness drives it: 3 node processes whose node-to-node lines
//! are routed by the test (which can cut links: partitions); clients send requests to any
//! node. Checked: the KV and error codes, SIGKILL + restart, seeding and log compaction,
//! leadership on request, and a linearizable history under partitions.

use crate::common;
use crate::common::linearizability::{check, Event, Op};
use crate::common::maelstrom::{on_one_and_three_nodes, Cluster, NAMES};
use rand::Rng;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Goal: the JSON-lines node serves linearizable KV through any node, forwards to the
/// leader, answers with the protocol's error codes, and survives SIGKILL + restart.
#[test]
fn maelstrom_nodes_serve_kv_and_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Cluster::start(dir.path());
    let w = h.call_ok("n1", json!({"type": "write", "key": 1, "value": "a"}));
    assert_eq!(w["type"], "write_ok", "{w}");
    assert!(w["commit_index"].as_u64().unwrap() > 0);
    assert_eq!(
        h.call_ok("n2", json!({"type": "read", "key": 1}))["value"],
        "a"
    );
    assert_eq!(
        h.call_ok("n3", json!({"type": "read", "key": 9}))["value"],
        Value::Null
    );
    let ok = h.call_ok(
        "n3",
        json!({"type": "cas", "key": 1, "from": "a", "to": "b"}),
    );
    assert_eq!(ok["type"], "cas_ok");
    let miss = h.call_ok(
        "n2",
        json!({"type": "cas", "key": 1, "from": "a", "to": "c"}),
    );
    assert_eq!(miss["code"], 22);
    let absent = h.call_ok("n2", json!({"type": "cas", "key": 2, "from": 0, "to": 1}));
    assert_eq!(absent["code"], 20);
    let created = h.call_ok(
        "n1",
        json!({"type": "cas", "key": 2, "from": 0, "to": 1, "create_if_not_exists": true}),
    );
    assert_eq!(created["type"], "cas_ok");
    assert_eq!(
        h.call_ok("n1", json!({"type": "delete", "key": 2}))["type"],
        "delete_ok"
    );
    assert_eq!(h.call_ok("n1", json!({"type": "nonsense"}))["code"], 10);
    assert_eq!(
        h.call_ok("n1", json!({"type": "write", "key": 5}))["code"],
        12
    );
    // Retried writes with the same (client_id, seq) answer the same commit index.
    let first = h.call_ok(
        "n2",
        json!({"type": "write", "key": 3, "value": 1, "client_id": "c9", "seq": 1}),
    );
    let again = h.call_ok(
        "n3",
        json!({"type": "write", "key": 3, "value": 1, "client_id": "c9", "seq": 1}),
    );
    assert_eq!(first["commit_index"], again["commit_index"]);

    // SIGKILL n1, keep writing through the others, restart n1 from its data dir.
    h.kill("n1");
    let w = h.call_ok("n2", json!({"type": "write", "key": 4, "value": "during"}));
    assert_eq!(w["type"], "write_ok", "{w}");
    h.spawn("n1");
    h.init("n1");
    assert_eq!(
        h.call_ok("n1", json!({"type": "read", "key": 1}))["value"],
        "b"
    );
    assert_eq!(
        h.call_ok("n1", json!({"type": "read", "key": 4}))["value"],
        "during"
    );
}

/// Goal: a fresh one-node group takes a seed below what it committed at start (its
/// bootstrap entry, its leader's empty entry, the timestamp oracle's limit), keeps it
/// across a restart, and refuses a second seed once a client wrote (raw or
/// transactional data alike), naming the key. Method: one node; the oracle's limit is
/// written before the seed by an OCC read's timestamp (not client data: a plain read
/// writes nothing).
#[test]
fn maelstrom_seed_on_a_fresh_one_node_group_rewinds_its_start_up_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Cluster::start_nodes(dir.path(), &NAMES[..1]);
    let read = h.call_ok("n1", json!({"type": "occ_read", "key": "zz"}));
    assert_eq!(read["type"], "occ_read_ok", "{read}");
    let seed = json!({"type": "seed_state", "state": {"a": 1, "7": "seven"},
                      "commit_index": 5, "term": 2});
    let r = h.call_ok("n1", seed.clone());
    assert_eq!(r["type"], "seed_state_ok", "{r}");
    let snap = h.call_ok("n1", json!({"type": "take_snapshot", "up_to_index": 5}));
    assert_eq!(
        (&snap["last_included_index"], &snap["last_included_term"]),
        (&json!(5), &json!(2)),
        "{snap}"
    );
    assert_eq!(
        h.call_ok("n1", json!({"type": "read", "key": "a"}))["value"],
        1
    );
    assert_eq!(
        h.call_ok("n1", json!({"type": "read", "key": 7}))["value"],
        "seven"
    );
    // Transactions still get timestamps (the oracle's limit was carried), and commit.
    let t = h.call_ok(
        "n1",
        json!({"type": "txn_execute", "operations": [{"op": "put", "key": "t", "value": 1}]}),
    );
    assert_eq!(t["committed"], true, "{t}");

    h.kill("n1");
    h.spawn("n1");
    h.init("n1");
    assert_eq!(
        h.call_ok("n1", json!({"type": "read", "key": "a"}))["value"],
        1
    );
    let refused = h.call_ok("n1", seed.clone());
    assert_eq!(
        refused["code"], 22,
        "the seeded state is client data: {refused}"
    );
    assert!(
        refused["text"].as_str().unwrap().contains("holds data"),
        "{refused}"
    );

    let dir = tempfile::tempdir().unwrap();
    let h = Cluster::start_nodes(dir.path(), &NAMES[..1]);
    let w = h.call_ok("n1", json!({"type": "write", "key": "b", "value": 2}));
    assert_eq!(w["type"], "write_ok", "{w}");
    let refused = h.call_ok("n1", seed);
    assert_eq!(refused["code"], 22, "{refused}");
    assert!(
        refused["text"].as_str().unwrap().contains("holds data"),
        "{refused}"
    );
}

/// Goal: `seed_state` installs a snapshot on fresh nodes that the cluster then serves and
/// builds on; `take_snapshot` compacts the log and says through which entry;
/// `become_leader` makes the asked node leader (by transfer while another leads); a node
/// that already holds data refuses a seed.
#[test]
fn maelstrom_seed_snapshot_and_become_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Cluster::start(dir.path());
    let seed = json!({"type": "seed_state", "state": {"1": "one", "k": [1, 2]},
                      "commit_index": 40, "term": 3});
    for n in NAMES {
        let r = h.call_ok(n, seed.clone());
        assert_eq!(r["type"], "seed_state_ok", "{n}: {r}");
    }
    assert_eq!(
        h.call_ok("n2", json!({"type": "read", "key": 1}))["value"],
        "one"
    );
    assert_eq!(
        h.call_ok("n3", json!({"type": "read", "key": "k"}))["value"],
        json!([1, 2])
    );
    let w = h.call_ok("n1", json!({"type": "write", "key": 2, "value": "two"}));
    assert!(w["commit_index"].as_u64().unwrap() > 40, "{w}");
    let refused = h.call_ok("n1", seed.clone());
    assert_eq!(refused["code"], 22, "{refused}");

    for n in NAMES {
        let r = h.call_ok(n, json!({"type": "become_leader", "term": 0}));
        assert_eq!(r["type"], "become_leader_ok", "{n}: {r}");
        let w = h.call_ok(n, json!({"type": "write", "key": n, "value": 1}));
        assert_eq!(w["type"], "write_ok", "{w}");
    }

    let mut last = 0;
    for n in NAMES {
        let r = h.call_ok(
            n,
            json!({"type": "take_snapshot", "up_to_index": 1_000_000}),
        );
        assert_eq!(r["type"], "snapshot_ok", "{r}");
        let idx = r["last_included_index"].as_u64().unwrap();
        assert!(idx > 40, "{r}");
        assert!(r["last_included_term"].as_u64().unwrap() >= 3, "{r}");
        last = last.max(idx);
    }
    let again = h.call_ok("n1", json!({"type": "take_snapshot", "up_to_index": 41}));
    assert!(again["last_included_index"].as_u64().unwrap() > 40);

    // n3 misses writes while the others compact their logs past them: it comes back
    // through a snapshot from the leader.
    h.kill("n3");
    for i in 0..20 {
        h.call_ok(
            "n1",
            json!({"type": "write", "key": 2, "value": format!("v{i}")}),
        );
    }
    for n in ["n1", "n2"] {
        let r = h.call_ok(
            n,
            json!({"type": "take_snapshot", "up_to_index": 1_000_000}),
        );
        assert!(r["last_included_index"].as_u64().unwrap() > last, "{r}");
    }
    h.spawn("n3");
    h.init("n3");
    // Leading, n3 serves reads from its own state.
    let r = h.call_ok("n3", json!({"type": "become_leader", "term": 0}));
    assert_eq!(r["type"], "become_leader_ok", "{r}");
    for (k, v) in [
        (json!(1), json!("one")),
        (json!(2), json!("v19")),
        (json!("n2"), json!(1)),
    ] {
        assert_eq!(
            h.call_ok("n3", json!({"type": "read", "key": k}))["value"],
            v
        );
    }
}

fn as_bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Goal: with the leader cut off (and later another node), no acknowledged write is lost
/// and every answer fits one linearizable history per key; definite errors (11, 20, 22)
/// are only given for operations that did not take effect.
#[test]
fn maelstrom_history_is_linearizable_under_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let h = Arc::new(Cluster::start(dir.path()));
    let r = h.call_ok("n1", json!({"type": "become_leader", "term": 0}));
    assert_eq!(r["type"], "become_leader_ok", "{r}");
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let keys = 3u64;
    let seed = common::test_seed();
    let mut workers = Vec::new();
    for c in 0..4 {
        let (h, events, stop) = (h.clone(), events.clone(), stop.clone());
        let mut rng = common::seeded_rng(seed, c);
        workers.push(std::thread::spawn(move || {
            let client = format!("c{}", c + 10);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = rng.gen_range(0..keys);
                let node = NAMES[rng.gen_range(0..NAMES.len())];
                let value = json!(format!("{client}-{i}"));
                let (body, op) = match rng.gen_range(0..10) {
                    0..=3 => (json!({"type": "read", "key": key}), None),
                    4..=7 => (
                        json!({"type": "write", "key": key, "value": value}),
                        Some(Op::Put(as_bytes(&value))),
                    ),
                    _ => {
                        let from = json!(format!("c{}-{}", rng.gen_range(10..14), i - 1));
                        (
                            json!({"type": "cas", "key": key, "from": from, "to": value}),
                            Some(Op::Cas {
                                expected: Some(as_bytes(&from)),
                                new: as_bytes(&value),
                                succeeded: true,
                            }),
                        )
                    }
                };
                let invoked = Instant::now();
                let answer = h.call(&client, node, body, Duration::from_secs(20));
                let returned = Instant::now();
                let (op, returned) = match (answer, op) {
                    (Some(a), None) if a["type"] == "read_ok" => {
                        let v = (!a["value"].is_null()).then(|| as_bytes(&a["value"]));
                        (Op::Get(v), Some(returned))
                    }
                    (Some(a), Some(op)) if a["type"] == "write_ok" || a["type"] == "cas_ok" => {
                        (op, Some(returned))
                    }
                    (Some(a), Some(Op::Cas { expected, new, .. }))
                        if a["code"] == 22 || a["code"] == 20 =>
                    {
                        let failed = Op::Cas {
                            expected,
                            new,
                            succeeded: false,
                        };
                        (failed, Some(returned))
                    }
                    (Some(a), _) if a["code"] != 0 && a["code"] != 13 => continue, // definite
                    (_, None) => continue, // a read with no answer took no effect
                    (_, Some(op)) => (op, None), // unknown outcome
                };
                events.lock().unwrap().push(Event {
                    key: key.to_be_bytes().to_vec(),
                    op,
                    invoked,
                    returned,
                });
            }
        }));
    }
    // Fault windows last a fixed time; before the first and after each heal, the clients
    // must get 20 more writes acknowledged (within 60 s): the liveness check.
    let acked = || {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.returned.is_some() && matches!(e.op, Op::Put(_)))
            .count()
    };
    let more_acked_writes = |what: &str| {
        let (before, deadline) = (acked(), Instant::now() + Duration::from_secs(60));
        while acked() < before + 20 {
            assert!(
                Instant::now() < deadline,
                "no 20 more acknowledged writes {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let window = |ms| std::thread::sleep(Duration::from_millis(ms));
    more_acked_writes("before the first partition");
    h.isolate("n1"); // the leader, alone in a minority
    window(4000);
    h.heal();
    more_acked_writes("after the first partition healed");
    h.isolate("n2");
    window(3000);
    h.heal();
    more_acked_writes("after the second partition healed");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    // Final reads through every node close the history: nothing acknowledged is lost.
    let mut all = events.lock().unwrap().clone();
    for key in 0..keys {
        for n in NAMES {
            let invoked = Instant::now();
            let r = h.call_ok(n, json!({"type": "read", "key": key}));
            let v = (!r["value"].is_null()).then(|| as_bytes(&r["value"]));
            all.push(Event {
                key: key.to_be_bytes().to_vec(),
                op: Op::Get(v),
                invoked,
                returned: Some(Instant::now()),
            });
        }
    }
    if let Err(e) = check(&all) {
        panic!(
            "history of {} operations is not linearizable: {e}",
            all.len()
        );
    }
}

/// Goal: the read-strategy messages run real reads and report what was measured: the read
/// index and heartbeat confirmation, the log index, lease use with zero round trips, the
/// lease-config safety rule, follower reads with their staleness (or a redirect to the
/// leader for a zero bound), read-your-writes with the follower's applied index, and a
/// small read benchmark over every strategy.
#[test]
fn maelstrom_read_strategies_report_what_they_measured() {
    let dir = tempfile::tempdir().unwrap();
    let h = Cluster::start(dir.path());
    let r = h.call_ok("n1", json!({"type": "become_leader", "term": 0}));
    assert_eq!(r["type"], "become_leader_ok", "{r}");
    let w = h.call_ok("n2", json!({"type": "write", "key": "x", "value": 7}));
    let index = w["commit_index"].as_u64().unwrap();

    let r = h.call_ok("n2", json!({"type": "read_index", "key": "x"}));
    assert_eq!(r["type"], "read_index_ok", "{r}");
    assert_eq!(r["value"], 7);
    assert!(r["read_at_index"].as_u64().unwrap() >= index, "{r}");
    assert_eq!(r["heartbeat_confirmed"], true);
    assert_eq!(r["linearizable"], true);

    let r = h.call_ok("n3", json!({"type": "read_via_log", "key": "x"}));
    assert_eq!(r["value"], 7, "{r}");
    assert!(r["log_index_used"].as_u64().unwrap() > index, "{r}");
    assert!(r["latency_ms"].as_f64().unwrap() > 0.0);

    let r = h.call_ok(
        "n1",
        json!({"type": "compare_read_methods", "num_reads": 5}),
    );
    assert_eq!(r["both_linearizable"], true, "{r}");
    assert!(r["read_index_avg_ms"].as_f64().unwrap() > 0.0);
    assert!(r["read_via_log_avg_ms"].as_f64().unwrap() > 0.0);

    // The leader's lease warms up: then a lease read needs no round trip.
    let mut from_lease = None;
    for _ in 0..100 {
        let r = h.call_ok("n1", json!({"type": "lease_read", "key": "x"}));
        assert_eq!(r["value"], 7, "{r}");
        if r["lease_valid"] == true {
            from_lease = Some(r);
            break;
        }
        assert_eq!(r["fallback"], "read_index", "{r}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = from_lease.expect("the lease was used");
    assert_eq!(r["network_round_trips"], 0, "{r}");

    let unsafe_cfg = h.call_ok(
        "n1",
        json!({"type": "lease_read_config", "lease_duration_ms": 2000,
               "election_timeout_ms": 1000, "max_clock_skew_ms": 100}),
    );
    assert_eq!(unsafe_cfg["safe"], false, "{unsafe_cfg}");
    assert!(unsafe_cfg["reason"].is_string());
    let safe_cfg = h.call_ok(
        "n1",
        json!({"type": "lease_read_config", "lease_duration_ms": 400,
               "election_timeout_ms": 1000, "max_clock_skew_ms": 50}),
    );
    assert_eq!(safe_cfg["safe"], true, "{safe_cfg}");
    assert_eq!(safe_cfg["effective_lease_ms"], 350);

    let r = h.call_ok(
        "n2",
        json!({"type": "follower_read", "key": "x", "max_staleness_ms": 0}),
    );
    assert_eq!(r["linearizable"], true, "{r}");
    assert_eq!(r["served_by"], "n1");
    assert_eq!(r["reason"], "redirected_to_leader");
    let mut by_follower = None;
    for _ in 0..100 {
        let r = h.call_ok(
            "n2",
            json!({"type": "follower_read", "key": "x", "max_staleness_ms": 5000}),
        );
        assert_eq!(r["value"], 7, "{r}");
        if r["served_by"] == "n2" {
            by_follower = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = by_follower.expect("the follower served a bounded-staleness read");
    assert_eq!(r["linearizable"], false);
    assert!(r["actual_staleness_ms"].as_f64().unwrap() <= 5000.0, "{r}");

    let w = h.call_ok("n3", json!({"type": "write", "key": "y", "value": "mine"}));
    let index = w["commit_index"].as_u64().unwrap();
    let r = h.call_ok(
        "n3",
        json!({"type": "ryw_read", "key": "y", "last_write_index": index, "prefer_follower": true}),
    );
    assert_eq!(r["value"], "mine", "{r}");
    assert!(
        r["follower_applied_index"].as_u64().unwrap() >= index,
        "{r}"
    );
    if r["served_by"] != "n3" {
        assert_eq!(r["reason"], "follower_behind_redirected_to_leader", "{r}");
    }
    // An index no replica has reached yet: the follower waits, then the leader answers.
    let r = h.call_ok(
        "n3",
        json!({"type": "ryw_read", "key": "y", "last_write_index": index + 1_000_000,
               "prefer_follower": true}),
    );
    assert_eq!(r["served_by"], "n1", "{r}");
    assert_eq!(r["reason"], "follower_behind_redirected_to_leader");

    let r = h.call_ok(
        "n2",
        json!({"type": "read_benchmark", "read_pct": 80, "write_pct": 20, "total_ops": 200,
               "strategies": ["linearizable", "lease", "follower", "ryw", "log"]}),
    );
    let results = r["results"].as_array().expect("results");
    assert_eq!(results.len(), 5, "{r}");
    for res in results {
        assert!(res["throughput_ops"].as_f64().unwrap() > 0.0, "{res}");
        assert!(res["p99_ms"].as_f64().unwrap() >= res["p50_ms"].as_f64().unwrap());
        assert!(res["consistency"].is_string());
    }
}

/// Goal: the region messages: writes and reads say which region served them, a manual
/// split cuts the region in two (keys on both sides stay readable, each from its region),
/// and the region map lists both with a leader and their sizes.
#[test]
fn maelstrom_regions_split_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let h = Cluster::start(dir.path());
    for k in ["a", "b", "m", "x"] {
        let r = h.call_ok("n1", json!({"type": "region_put", "key": k, "value": k}));
        assert_eq!(r["type"], "region_put_ok", "{r}");
        assert_eq!(r["key_range"], json!(["", ""]), "{r}");
    }
    let r = h.call_ok(
        "n2",
        json!({"type": "region_split", "region_id": 1, "split_key": "m"}),
    );
    assert_eq!(r["type"], "region_split_ok", "{r}");
    let new = r["new_regions"].as_array().unwrap();
    assert_eq!(new[0]["id"], 1);
    assert_eq!(new[0]["range"], json!(["", "m"]));
    assert_eq!(new[1]["range"], json!(["m", ""]));
    let right = new[1]["id"].as_u64().unwrap();
    let r = h.call_ok("n3", json!({"type": "region_get", "key": "x"}));
    assert_eq!(r["value"], "x", "{r}");
    assert_eq!(r["region_id"], right);
    let r = h.call_ok("n3", json!({"type": "region_get", "key": "a"}));
    assert_eq!(r["value"], "a", "{r}");
    assert_eq!(r["region_id"], 1);
    let r = h.call_ok("n1", json!({"type": "region_put", "key": "z", "value": 1}));
    assert_eq!(r["region_id"], right, "{r}");
    assert_eq!(r["key_range"], json!(["m", ""]));
    // Plain reads and writes route by region too.
    let w = h.call_ok("n2", json!({"type": "write", "key": "y", "value": 2}));
    assert_eq!(w["type"], "write_ok", "{w}");
    assert_eq!(
        h.call_ok("n3", json!({"type": "read", "key": "y"}))["value"],
        2
    );
    let mut info = Value::Null;
    for _ in 0..100 {
        info = h.call_ok("n1", json!({"type": "region_info"}));
        let regions = info["regions"].as_array().unwrap();
        if regions.len() == 2 && regions.iter().all(|r| r["leader"].is_string()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let regions = info["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2, "{info}");
    assert!(regions.iter().all(|r| r["leader"].is_string()), "{info}");
    assert!(
        regions
            .iter()
            .all(|r| r["size_bytes"].as_u64().unwrap() > 0),
        "{info}"
    );
    // A split key in another region than the one named is refused.
    let r = h.call_ok(
        "n1",
        json!({"type": "region_split", "region_id": 1, "split_key": "q"}),
    );
    assert_eq!(r["code"], 12, "{r}");
}

/// Goal: the versioned registers on 1 node and on 3: `mvcc_put` counts versions 1, 2, ...
/// per key and refuses a timestamp not above the key's newest (nothing written);
/// `mvcc_get` answers the newest version at or below its read timestamp, from any node.
#[test]
fn maelstrom_mvcc_registers_keep_versions_by_timestamp() {
    on_one_and_three_nodes(|h| {
        let node = |i: usize| h.node(i);
        for (i, (ts, value)) in [(10, "a"), (20, "b"), (35, "c")].into_iter().enumerate() {
            let r = h.call_ok(
                node(i),
                json!({"type": "mvcc_put", "key": "reg", "value": value, "timestamp": ts}),
            );
            assert_eq!(r["type"], "mvcc_put_ok", "{r}");
            assert_eq!(r["version"], i + 1, "{r}");
            assert_eq!(r["timestamp"], ts, "{r}");
        }
        for ts in [35, 20, 5] {
            let r = h.call_ok(
                node(1),
                json!({"type": "mvcc_put", "key": "reg", "value": "x", "timestamp": ts}),
            );
            assert_eq!(r["type"], "error", "{r}");
            assert_eq!(r["code"], 22, "{r}");
            assert!(r["text"].as_str().unwrap().contains("not above"), "{r}");
        }
        // Another key counts its own versions.
        let r = h.call_ok(
            node(2),
            json!({"type": "mvcc_put", "key": 7, "value": [1], "timestamp": 1}),
        );
        assert_eq!(r["version"], 1, "{r}");
        for (read_ts, value, version) in [
            (9, Value::Null, 0),
            (10, json!("a"), 1),
            (19, json!("a"), 1),
            (20, json!("b"), 2),
            (34, json!("b"), 2),
            (35, json!("c"), 3),
            (1000, json!("c"), 3),
        ] {
            for i in 0..h.names().len() {
                let r = h.call_ok(
                    node(i),
                    json!({"type": "mvcc_get", "key": "reg", "read_timestamp": read_ts}),
                );
                assert_eq!(r["type"], "mvcc_get_ok", "{r}");
                assert_eq!(r["value"], value, "at {read_ts}: {r}");
                assert_eq!(r["version"], version, "at {read_ts}: {r}");
                assert_eq!(r["as_of_timestamp"], read_ts, "{r}");
            }
        }
        let r = h.call_ok(
            node(0),
            json!({"type": "mvcc_get", "key": "never", "read_timestamp": 5}),
        );
        assert_eq!(
            (r["value"].clone(), r["version"].clone()),
            (Value::Null, json!(0))
        );
        // The registers are not the plain keys.
        assert_eq!(
            h.call_ok(node(0), json!({"type": "read", "key": "reg"}))["value"],
            Value::Null
        );
        // Bad input is malformed, not a panic.
        for bad in [
            json!({"type": "mvcc_put", "key": "reg", "value": 1}),
            json!({"type": "mvcc_put", "key": "reg", "value": 1, "timestamp": -3}),
            json!({"type": "mvcc_get", "key": {"o": 1}, "read_timestamp": 1}),
            json!({"type": "mvcc_get", "key": "reg", "read_timestamp": "1"}),
        ] {
            assert_eq!(h.call_ok(node(0), bad.clone())["code"], 12, "{bad}");
        }
    });
}

/// Goal: racing `mvcc_put`s of one key through every node are ordered: versions grow with
/// timestamps, none is handed out twice, and (when every put got a definite answer) they
/// count 1..=n over the puts that succeeded; each version reads back at its timestamp.
#[test]
fn maelstrom_racing_mvcc_puts_are_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let h = Arc::new(Cluster::start(dir.path()));
    // A leader first, so the racing puts meet each other rather than an election.
    let r = h.call_ok(
        "n1",
        json!({"type": "mvcc_get", "key": "hot", "read_timestamp": 0}),
    );
    assert_eq!(r["type"], "mvcc_get_ok", "{r}");
    let unknown = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..6u64 {
        let (h, unknown) = (h.clone(), unknown.clone());
        threads.push(std::thread::spawn(move || {
            let mut ok = Vec::new();
            for i in 0..5u64 {
                let ts = 1 + i * 6 + t;
                let body = json!({"type": "mvcc_put", "key": "hot", "value": ts, "timestamp": ts});
                let node = NAMES[t as usize % NAMES.len()];
                // 11 is definite (not written): sent again, a bounded number of times.
                for _ in 0..50 {
                    match h.call("c1", node, body.clone(), Duration::from_secs(30)) {
                        Some(r) if r["type"] == "mvcc_put_ok" => {
                            ok.push((ts, r["version"].as_u64().unwrap()));
                        }
                        Some(r) if r["code"] == 11 => {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                        Some(r) if r["code"] == 22 => {} // a larger timestamp won: not written
                        _ => {
                            unknown.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    break;
                }
            }
            ok
        }));
    }
    let mut written: Vec<(u64, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(!written.is_empty());
    written.sort();
    let versions: Vec<u64> = written.iter().map(|w| w.1).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{written:?}");
    if unknown.load(Ordering::Relaxed) == 0 {
        let expected: Vec<u64> = (1..=written.len() as u64).collect();
        assert_eq!(versions, expected, "{written:?}");
    }
    for (ts, version) in written {
        let r = h.call_ok(
            "n3",
            json!({"type": "mvcc_get", "key": "hot", "read_timestamp": ts}),
        );
        assert_eq!(
            (r["value"].as_u64(), r["version"].as_u64()),
            (Some(ts), Some(version)),
            "{r}"
        );
    }
}
