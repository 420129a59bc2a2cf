//! The transaction CLI and the bank demo against a real cluster. Method: a one-process
//! playground (`regatta playground`) on loopback, then `regatta txn ...` and `regatta demo
//! txn` as a user runs them; exit codes and outputs checked.

use crate::common::process::{free_port, spawn_ready, Proc};
use std::process::{Command, Output};

fn playground(pd: &str) -> Proc {
    playground_with(pd, &[])
}

fn playground_with(pd: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "playground",
        "--regions",
        "4",
        "--store-port",
        "0",
        "--pd-addr",
        pd,
    ];
    args.extend_from_slice(extra);
    spawn_ready(&args, "error")
}

/// Runs `regatta ARGS --pd PD`.
fn regatta(pd: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_regatta"))
        .args(args)
        .args(["--pd", pd])
        .env("REGATTA_LOG", "error")
        .output()
        .expect("regatta ran")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The commit ts a `regatta txn` run reported on stderr (`committed at TS ...`).
fn commit_ts(o: &Output) -> u64 {
    let committed = String::from_utf8_lossy(&o.stderr).into_owned();
    committed
        .split("committed at ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no commit ts in {committed:?}"))
}

/// Goal: a script runs as one transaction and its gets print in order, a missing key as
/// an empty line (and `not found` on stderr); a snapshot at an old timestamp does not see
/// later writes; bad scripts exit 2 with the reason.
#[test]
fn txn_scripts_commit_atomically_and_print_their_reads_in_order() {
    let pd = format!("127.0.0.1:{}", free_port());
    let _pg = playground(&pd);
    // Keys in different regions ("apple" and "zebra" both start below 0x80, "\u{ff}"-led
    // keys would not be typeable: the two are still in one region; "~end" too).
    stdout(&regatta(
        &pd,
        &["txn", "put", "apple", "1", "put", "zebra", "2"],
    ));
    let out = regatta(
        &pd,
        &["txn", "get", "apple", "get", "missing", "get", "zebra"],
    );
    assert_eq!(stdout(&out), "1\n\n2\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found: missing"));
    let ts = commit_ts(&out);
    stdout(&regatta(
        &pd,
        &[
            "txn",
            "--pessimistic",
            "put",
            "apple",
            "3",
            "delete",
            "zebra",
        ],
    ));
    let now = regatta(&pd, &["txn", "get", "apple", "get", "zebra"]);
    assert_eq!(stdout(&now), "3\n\n");
    let then = regatta(
        &pd,
        &[
            "txn",
            "--read-ts",
            &ts.to_string(),
            "get",
            "apple",
            "get",
            "zebra",
        ],
    );
    assert_eq!(stdout(&then), "1\n2\n", "a snapshot at the old ts");
    for bad in [
        &["txn", "put", "k"][..],
        &["txn", "frob", "k"],
        &["txn", "--read-ts", "5", "put", "k", "v"],
    ] {
        let o = regatta(&pd, bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
    }
}

/// Goal: one read at a far-future timestamp cannot make a region lose acknowledged
/// writes (issue 20, hole 0). Method: the exact commands of the report on a fresh
/// playground: the read at `u64::MAX` is refused (exit 2, the reason on stderr, nothing
/// printed), and the writes after it commit at TSO-sized timestamps, are read back, and
/// are overwritten without a conflict.
#[test]
fn a_far_future_read_ts_is_refused_and_later_writes_stay_visible() {
    let pd = format!("127.0.0.1:{}", free_port());
    let _pg = playground(&pd);
    stdout(&regatta(&pd, &["txn", "put", "poison", "1"]));
    let far = regatta(
        &pd,
        &["txn", "--read-ts", "18446744073709551615", "get", "poison"],
    );
    assert_eq!(far.status.code(), Some(2), "the far-future read is refused");
    assert!(far.stdout.is_empty(), "nothing read");
    let err = String::from_utf8_lossy(&far.stderr);
    assert!(err.contains("beyond what PD's timestamp oracle"), "{err}");
    let put = regatta(&pd, &["txn", "put", "zulu", "1"]);
    stdout(&put);
    assert!(commit_ts(&put) < u64::MAX / 2, "a TSO-sized commit ts");
    assert_eq!(stdout(&regatta(&pd, &["txn", "get", "zulu"])), "1\n");
    stdout(&regatta(&pd, &["txn", "put", "zulu", "3"]));
    assert_eq!(stdout(&regatta(&pd, &["txn", "get", "zulu"])), "3\n");
}

/// Goal: a snapshot read below the GC safe point exits 1 and says why. Method: a
/// playground whose safe point trails its clock by 1 s; a committed write's ts is read
/// again until the safe point has passed it (bounded).
#[test]
fn a_read_below_the_gc_safe_point_exits_1_with_the_reason() {
    let pd = format!("127.0.0.1:{}", free_port());
    let _pg = playground_with(&pd, &["--gc-life-time", "1s", "--gc-interval", "200ms"]);
    let out = regatta(&pd, &["txn", "put", "apple", "1"]);
    stdout(&out);
    let ts = commit_ts(&out);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let o = regatta(&pd, &["txn", "--read-ts", &ts.to_string(), "get", "apple"]);
        match o.status.code() {
            Some(0) => assert_eq!(String::from_utf8_lossy(&o.stdout), "1\n"),
            Some(1) => {
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(err.contains("below the GC safe point"), "{err}");
                assert!(o.stdout.is_empty());
                return;
            }
            other => panic!("exit {other:?}: {}", String::from_utf8_lossy(&o.stderr)),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the safe point never passed {ts}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Goal: the bank demo runs against a cluster and ends with its invariant held.
#[test]
fn the_bank_demo_keeps_its_total() {
    let pd = format!("127.0.0.1:{}", free_port());
    let _pg = playground(&pd);
    let out = regatta(
        &pd,
        &[
            "demo",
            "txn",
            "--accounts",
            "200",
            "--clients",
            "8",
            "--seconds",
            "4",
            "--chaos",
        ],
    );
    let text = stdout(&out);
    assert!(text.contains("the total stayed 200000"), "{text}");
}

/// Goal: `regatta bench contention --json` runs every strategy against a cluster and
/// answers one object in the `contention_benchmark_ok` shape, each row's final value equal
/// to its commits (checked by the benchmark too), every increment committed; an unknown
/// strategy exits with the list of known ones.
#[test]
fn the_contention_benchmark_answers_in_the_seed_shape_and_loses_no_update() {
    let pd = format!("127.0.0.1:{}", free_port());
    let _pg = playground(&pd);
    let out = regatta(
        &pd,
        &[
            "bench",
            "contention",
            "--clients",
            "8",
            "--ops-per-client",
            "3",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    let rows = v["results"].as_array().expect("results");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["strategy"].as_str()).collect();
    assert_eq!(names, ["occ", "mvcc_snapshot", "serializable", "cas"]);
    for r in rows {
        for field in [
            "total_commits",
            "total_aborts",
            "abort_rate_pct",
            "avg_retries",
            "throughput_commits_sec",
        ] {
            assert!(r[field].is_number(), "{field} missing in {r}");
        }
        assert_eq!(r["total_commits"], 24, "{r}");
        assert_eq!(r["final_value"], r["total_commits"], "{r}");
    }
    let bad = regatta(&pd, &["bench", "contention", "--strategies", "2pl"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("mvcc_snapshot"));
}

/// Goal: `regatta bench txn --pd … --json` runs every mode and placement against a
/// cluster, one object per run, each with commits and no error, one region by 1PC and
/// two never; the figures only the embedded playground has (raft entries, write stages,
/// `sync_us`) are null there, and present on the embedded playground.
#[test]
fn the_transfer_benchmark_runs_every_mode_against_a_cluster() {
    let pd = format!("127.0.0.1:{}", free_port());
    let _pg = playground(&pd);
    let out = regatta(
        &pd,
        &[
            "bench",
            "txn",
            "--modes",
            "optimistic,pessimistic",
            "--placement",
            "same,cross",
            "--commit",
            "async,2pc",
            "--clients",
            "2",
            "--seconds",
            "1",
            "--accounts",
            "40",
            "--json",
        ],
    );
    let text = stdout(&out);
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let runs: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["mode"].as_str().unwrap(),
                r["placement"].as_str().unwrap(),
            )
        })
        .collect();
    for mode in ["optimistic", "pessimistic"] {
        for place in ["same", "cross", "cross-2pc"] {
            assert!(runs.contains(&(mode, place)), "{mode} {place} in {runs:?}");
        }
    }
    assert_eq!(rows.len(), 6, "{runs:?}");
    for r in &rows {
        assert!(r["commits"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
        // One region commits by 1PC, two never do.
        let one_pc = if r["placement"] == "same" { 100.0 } else { 0.0 };
        assert_eq!(r["one_pc_pct"].as_f64(), Some(one_pc), "{r}");
        for field in ["sync_us", "stage_persist_us", "entries_per_commit"] {
            assert_eq!(r.get(field), Some(&serde_json::Value::Null), "{field}: {r}");
        }
    }

    // On the embedded playground the store-side figures are there.
    let out = Command::new(env!("CARGO_BIN_EXE_regatta"))
        .args([
            "bench",
            "txn",
            "--modes",
            "optimistic",
            "--placement",
            "cross",
        ])
        .args([
            "--clients",
            "1",
            "--seconds",
            "1",
            "--accounts",
            "40",
            "--json",
        ])
        .env("REGATTA_LOG", "error")
        .output()
        .expect("regatta ran");
    let r: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    assert!(r["commits"].as_u64().unwrap() > 0, "{r}");
    for field in ["sync_us", "stage_persist_us", "entries_per_commit"] {
        assert!(r[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {r}");
    }
}
