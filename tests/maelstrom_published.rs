//! The 21 published acceptance tests of the JSON-lines node (docs/PROTOCOL.md, "The
//! published tests"), each run exactly as published: fresh `regatta maelstrom` processes,
//! `n1`'s lines (its `init` first) written at once with no warm-up, no wait for an
//! election and no retries, 5 s to answer. One-node tests run on one process; the 3N
//! tests on three, their node-to-node lines routed by the harness. Where a test gives
//! exact replies, each reply holds every field shown with the value shown (compared as
//! parsed JSON); every reply line writes its keys in the protocol's order.

use crate::common::machine;
use crate::common::maelstrom::{run_as_published, Published};
use serde_json::{json, Value};

/// Checks the key order of every reply line: `src`, `dest`, `body`; in the body `type`
/// first, `in_reply_to` second, `msg_id` last. Also that `msg_id`s count 0, 1, 2, ... in
/// the order the replies were written.
fn check_lines(p: &Published) {
    for (i, line) in p.lines.iter().enumerate() {
        let v: Value = serde_json::from_str(line).expect("JSON");
        let top: Vec<&String> = v.as_object().expect("object").keys().collect();
        assert_eq!(top, ["src", "dest", "body"], "{line}");
        let body: Vec<&String> = v["body"].as_object().expect("body").keys().collect();
        assert_eq!(body.first().map(|k| k.as_str()), Some("type"), "{line}");
        assert_eq!(
            body.get(1).map(|k| k.as_str()),
            Some("in_reply_to"),
            "{line}"
        );
        assert_eq!(body.last().map(|k| k.as_str()), Some("msg_id"), "{line}");
        assert_eq!(v["body"]["msg_id"], i, "msg_ids count from 0: {line}");
    }
}

/// Runs a published test on `nodes` nodes and checks its lines and `init_ok`. Published
/// tests run with the machine to themselves, as published (each one's nodes have the
/// machine; the benchmark tests compare timings): no other test of the binary runs beside
/// one ([`machine::alone`]).
fn run(nodes: usize, lines: &[&str]) -> Published {
    let _alone = machine::alone();
    let p = run_as_published(nodes, lines);
    check_lines(&p);
    let init = p.reply_to(1);
    assert_eq!(init["type"], "init_ok", "{init}");
    p
}

/// Asserts that `reply` holds every field of `expected` with the value shown there.
fn holds(reply: &Value, expected: Value) {
    for (k, v) in expected.as_object().expect("object") {
        assert_eq!(&reply[k], v, "field {k:?} of {reply}");
    }
}

fn f64_of(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is a number: {v}"))
}

// ---- Tests with exact replies (one node unless 3N) ----

/// Goal: a write and a read written at once to a fresh node, before its first election,
/// both execute, in order.
#[test]
fn published_01_put_and_get() {
    let p = run(
        1,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"write","msg_id":2,"key":"x","value":1}}"#,
            r#"{"src":"c1","dest":"n1","body":{"type":"read","msg_id":3,"key":"x"}}"#,
        ],
    );
    holds(
        &p.reply_to(2),
        json!({"type": "write_ok", "in_reply_to": 2, "msg_id": 1}),
    );
    holds(
        &p.reply_to(3),
        json!({"type": "read_ok", "in_reply_to": 3, "msg_id": 2, "value": 1}),
    );
}

/// Goal: the first request of a session (dedup fields present) executes.
#[test]
fn published_02_first_request_executes() {
    let p = run(
        1,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"write","msg_id":2,"key":"x","value":1,"client_id":"c1","seq":1}}"#,
        ],
    );
    holds(
        &p.reply_to(2),
        json!({"type": "write_ok", "in_reply_to": 2, "msg_id": 1}),
    );
}

/// Goal: a fresh node is seeded at (5, 2) whatever it wrote at start, then compacts
/// through the seed.
#[test]
fn published_03_create_snapshot() {
    let p = run(
        1,
        &[
            r#"{"src":"c0","dest":"n1","body":{"type":"seed_state","msg_id":2,"state":{"x":1,"y":2},"commit_index":5,"term":2}}"#,
            r#"{"src":"c0","dest":"n1","body":{"type":"take_snapshot","msg_id":3,"up_to_index":5}}"#,
        ],
    );
    holds(
        &p.reply_to(2),
        json!({"type": "seed_state_ok", "in_reply_to": 2, "msg_id": 1}),
    );
    holds(
        &p.reply_to(3),
        json!({"type": "snapshot_ok", "in_reply_to": 3, "msg_id": 2,
               "last_included_index": 5, "last_included_term": 2}),
    );
}

/// Goal: a safe lease configuration is accepted, with the effective lease.
#[test]
fn published_04_safe_lease_configuration() {
    let p = run(
        1,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"lease_read_config","msg_id":2,"lease_duration_ms":3000,"election_timeout_ms":5000,"max_clock_skew_ms":500}}"#,
        ],
    );
    holds(
        &p.reply_to(2),
        json!({"type": "lease_read_config_ok", "in_reply_to": 2, "safe": true,
               "effective_lease_ms": 2500, "msg_id": 1}),
    );
}

/// Goal (3N): a node told to become leader campaigns and wins, then serves a read.
#[test]
fn published_05_leader_processes_a_read_locally() {
    let p = run(
        3,
        &[
            r#"{"src":"c0","dest":"n1","body":{"type":"become_leader","msg_id":2,"term":1}}"#,
            r#"{"src":"c1","dest":"n1","body":{"type":"read","msg_id":3,"key":"x"}}"#,
        ],
    );
    holds(
        &p.reply_to(2),
        json!({"type": "become_leader_ok", "in_reply_to": 2}),
    );
    holds(
        &p.reply_to(3),
        json!({"type": "read_ok", "in_reply_to": 3, "value": null}),
    );
}

// ---- Tests with an acceptance line ----

/// Goal: an atomic multi-key write commits, and a later batch reads both keys.
#[test]
fn published_06_atomic_multi_key_write() {
    let p = run(
        1,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"txn_execute","msg_id":2,"operations":[{"op":"put","key":"a","value":"1"},{"op":"put","key":"b","value":"2"}]}}"#,
            r#"{"src":"c1","dest":"n1","body":{"type":"txn_execute","msg_id":3,"operations":[{"op":"get","key":"a"},{"op":"get","key":"b"}]}}"#,
        ],
    );
    let w = p.reply_to(2);
    holds(&w, json!({"type": "txn_execute_ok", "committed": true}));
    let r = p.reply_to(3);
    holds(&r, json!({"type": "txn_execute_ok", "committed": true}));
    let results = r["results"].as_array().expect("results");
    assert_eq!(results[0]["key"], "a", "{r}");
    assert_eq!(results[0]["value"], "1", "{r}");
    assert_eq!(results[1]["key"], "b", "{r}");
    assert_eq!(results[1]["value"], "2", "{r}");
}

/// Goal: an OCC commit with a string transaction id commits.
#[test]
fn published_07_occ_commit() {
    let p = run(
        1,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"occ_begin","msg_id":2}}"#,
            r#"{"src":"c1","dest":"n1","body":{"type":"occ_commit","msg_id":3,"txn_id":"t1","writes":[{"key":"x","value":"1"}],"read_versions":[]}}"#,
        ],
    );
    holds(&p.reply_to(2), json!({"type": "occ_begin_ok"}));
    holds(
        &p.reply_to(3),
        json!({"type": "occ_commit_ok", "committed": true, "txn_id": "t1"}),
    );
}

/// Goal: a commit against a read version that does not match aborts (not an error),
/// with an id no `occ_begin` gave.
#[test]
fn published_08_occ_abort_with_no_begin() {
    let p = run(
        1,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"occ_commit","msg_id":2,"txn_id":"t1","writes":[{"key":"x","value":"new"}],"read_versions":[{"key":"x","version":999}]}}"#,
        ],
    );
    holds(
        &p.reply_to(2),
        json!({"type": "occ_commit_ok", "committed": false, "txn_id": "t1"}),
    );
}

fn mvcc(read_timestamp: u64) -> Published {
    let get = format!(
        r#"{{"src":"c1","dest":"n1","body":{{"type":"mvcc_get","msg_id":4,"key":"x","read_timestamp":{read_timestamp}}}}}"#
    );
    run(
        1,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"mvcc_put","msg_id":2,"key":"x","value":"old","timestamp":100}}"#,
            r#"{"src":"c1","dest":"n1","body":{"type":"mvcc_put","msg_id":3,"key":"x","value":"new","timestamp":200}}"#,
            &get,
        ],
    )
}

/// Goal: a versioned read between the two versions sees the older.
#[test]
fn published_09_mvcc_old() {
    let p = mvcc(150);
    holds(
        &p.reply_to(4),
        json!({"type": "mvcc_get_ok", "value": "old"}),
    );
}

/// Goal: a versioned read above both versions sees the newer.
#[test]
fn published_10_mvcc_latest() {
    let p = mvcc(300);
    holds(
        &p.reply_to(4),
        json!({"type": "mvcc_get_ok", "value": "new"}),
    );
}

/// Goal: a region write names the region whose range holds the key.
#[test]
fn published_11_region_put() {
    let p = run(
        1,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"region_put","msg_id":2,"key":"apple","value":"fruit"}}"#,
        ],
    );
    let r = p.reply_to(2);
    holds(&r, json!({"type": "region_put_ok"}));
    assert!(r["region_id"].as_u64().is_some_and(|id| id > 0), "{r}");
    let range = r["key_range"].as_array().expect("key_range");
    let key = json!("apple").to_string();
    let (lo, hi) = (range[0].clone(), range[1].clone());
    let text = |b: &Value| {
        if b == "" {
            String::new()
        } else {
            b.to_string()
        }
    };
    assert!(text(&lo) <= key, "{r}");
    assert!(hi == "" || key < text(&hi), "{r}");
}

/// Goal: the region map lists at least one region with its id, range and leader.
#[test]
fn published_12_region_info() {
    let p = run(
        1,
        &[r#"{"src":"c1","dest":"n1","body":{"type":"region_info","msg_id":2}}"#],
    );
    let r = p.reply_to(2);
    holds(&r, json!({"type": "region_info_ok"}));
    let regions = r["regions"].as_array().expect("regions");
    assert!(!regions.is_empty(), "{r}");
    for region in regions {
        assert!(region["id"].is_u64(), "{region}");
        assert!(region["range"].is_array(), "{region}");
        assert!(region.get("leader").is_some(), "{region}");
    }
}

/// Goal: on one hot key, OCC aborts more than the MVCC snapshot strategy.
#[test]
fn published_13_contention() {
    let p = run(
        1,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"contention_benchmark","msg_id":2,"clients":10,"key":"hot_key","ops_per_client":5,"strategies":["occ","mvcc_snapshot"]}}"#,
        ],
    );
    let r = p.reply_to(2);
    holds(&r, json!({"type": "contention_benchmark_ok"}));
    let results = r["results"].as_array().expect("results");
    let rate = |name: &str| {
        let s = results
            .iter()
            .find(|s| s["strategy"] == name)
            .unwrap_or_else(|| panic!("{name} in {r}"));
        f64_of(s, "abort_rate_pct")
    };
    assert!(rate("occ") > rate("mvcc_snapshot"), "{r}");
}

/// Goal (3N): a ReadIndex read confirms leadership by a heartbeat round.
#[test]
fn published_14_read_index() {
    let p = run(
        3,
        &[r#"{"src":"c1","dest":"n1","body":{"type":"read_index","msg_id":2,"key":"x"}}"#],
    );
    holds(
        &p.reply_to(2),
        json!({"type": "read_index_ok", "heartbeat_confirmed": true, "linearizable": true}),
    );
}

/// Goal (3N): ReadIndex reads are faster than reads through the log; both linearizable.
#[test]
fn published_15_compare_read_methods() {
    let p = run(
        3,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"compare_read_methods","msg_id":2,"num_reads":50}}"#,
        ],
    );
    let r = p.reply_to(2);
    holds(
        &r,
        json!({"type": "compare_read_methods_ok", "both_linearizable": true}),
    );
    assert!(
        f64_of(&r, "read_index_avg_ms") < f64_of(&r, "read_via_log_avg_ms"),
        "{r}"
    );
}

/// Goal (3N): a lease read is served from the leader's lease, with no round trip.
#[test]
fn published_16_lease_read() {
    let p = run(
        3,
        &[r#"{"src":"c1","dest":"n1","body":{"type":"lease_read","msg_id":2,"key":"x"}}"#],
    );
    holds(
        &p.reply_to(2),
        json!({"type": "lease_read_ok", "network_round_trips": 0, "lease_valid": true}),
    );
}

/// Goal (3N): a bounded-staleness read is within its bound, and not linearizable when a
/// follower served it.
#[test]
fn published_17_follower_read() {
    let p = run(
        3,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"follower_read","msg_id":2,"key":"x","max_staleness_ms":5000}}"#,
        ],
    );
    let r = p.reply_to(2);
    holds(&r, json!({"type": "follower_read_ok"}));
    assert!(f64_of(&r, "actual_staleness_ms") <= 5000.0, "{r}");
    // The leader serves it only when no follower is fresh enough, and then says so.
    if r["reason"] == "redirected_to_leader" {
        assert_eq!(r["linearizable"], true, "{r}");
    } else {
        assert_eq!(r["linearizable"], false, "a follower served it: {r}");
    }
}

/// Goal (3N): with no staleness allowed the leader serves the read, linearizably.
#[test]
fn published_18_zero_staleness() {
    let p = run(
        3,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"follower_read","msg_id":2,"key":"x","max_staleness_ms":0}}"#,
        ],
    );
    holds(
        &p.reply_to(2),
        json!({"type": "follower_read_ok", "linearizable": true}),
    );
}

/// Goal (3N): a read-your-writes read is served by a replica that applied the write.
#[test]
fn published_19_read_your_writes() {
    let p = run(
        3,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"ryw_read","msg_id":2,"key":"x","last_write_index":5,"prefer_follower":true}}"#,
        ],
    );
    let r = p.reply_to(2);
    holds(&r, json!({"type": "ryw_read_ok"}));
    assert!(
        r["follower_applied_index"].as_u64().unwrap_or(0) >= 5,
        "{r}"
    );
}

/// Goal (3N): a read-your-writes read of an index no follower has goes to the leader.
#[test]
fn published_20_follower_behind() {
    let p = run(
        3,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"ryw_read","msg_id":2,"key":"x","last_write_index":999,"prefer_follower":true}}"#,
        ],
    );
    holds(
        &p.reply_to(2),
        json!({"type": "ryw_read_ok", "reason": "follower_behind_redirected_to_leader"}),
    );
}

/// Goal (3N): the read benchmark runs the three strategies through the group; follower
/// reads have the highest throughput and the lowest latency.
#[test]
fn published_21_read_benchmark() {
    let p = run(
        3,
        &[
            r#"{"src":"c1","dest":"n1","body":{"type":"read_benchmark","msg_id":2,"read_pct":80,"write_pct":20,"total_ops":100,"strategies":["linearizable","lease","follower"]}}"#,
        ],
    );
    let r = p.reply_to(2);
    holds(&r, json!({"type": "read_benchmark_ok"}));
    let results = r["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{r}");
    let of = |name: &str| {
        results
            .iter()
            .find(|s| s["strategy"] == name)
            .unwrap_or_else(|| panic!("{name} in {r}"))
    };
    let follower = of("follower");
    for other in ["linearizable", "lease"] {
        let o = of(other);
        assert!(
            f64_of(follower, "throughput_ops") > f64_of(o, "throughput_ops"),
            "{r}"
        );
        assert!(f64_of(follower, "p50_ms") <= f64_of(o, "p50_ms"), "{r}");
    }
}
