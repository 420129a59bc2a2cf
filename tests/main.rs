//! The integration tests of the `regatta` crate, one binary (each test binary links
//! RocksDB, so one binary links it once). Each module is one topic and opens with its goal
//! and method; `common` is the harness they share: the in-process [`common::Cluster`], the
//! `regatta maelstrom` node harness, real processes, the linearizability and snapshot
//! isolation checkers, and [`common::machine`], the claim that lets a test that needs the
//! machine to itself run alone.
//!
//! Run one topic with `cargo test --release --test integration TOPIC::`, e.g.
//! `cargo test --release --test integration txn_cluster::`.

mod common;

mod atomic_batch;
mod cli_process;
mod cli_values;
mod cluster_faults;
mod cluster_kv;
mod disk_failure;
mod hibernation;
mod hostile_frames;
mod linearizability_checker;
mod maelstrom;
mod maelstrom_hostile;
mod maelstrom_published;
mod maelstrom_txn;
mod nemesis;
mod occ;
mod process_crash;
mod read_strategies;
mod region_split;
mod store_lifecycle;
mod txn_cli;
mod txn_cluster;
mod txn_gc;
mod txn_lock_wait;
mod txn_mem_locks;
mod txn_store;

/// Goal: no test file is left out. With `autotests = false` cargo builds only the modules
/// a test binary's `main.rs` names, so a new `tests/*.rs` not named there would never run.
/// Method: in this crate's `tests/` and the client's, every `.rs` file beside `main.rs`
/// must have its `mod` line in it.
#[test]
fn every_test_file_is_a_module_of_its_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [root.join("tests"), root.join("client").join("tests")] {
        let main = std::fs::read_to_string(dir.join("main.rs")).expect("main.rs");
        for entry in std::fs::read_dir(&dir).expect("a tests directory") {
            let path = entry.expect("a directory entry").path();
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_some_and(|e| e == "rs") && name != "main" {
                assert!(
                    main.lines().any(|l| l == format!("mod {name};")),
                    "{} is not a module of {}: add `mod {name};`",
                    path.display(),
                    dir.join("main.rs").display()
                );
            }
        }
    }
}
