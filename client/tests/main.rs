//! The client's integration tests, one binary: one module per topic, each opening with its
//! goal and method. `support` is the fake transactional cluster the `txn_*` topics run
//! against; `retry_policy` scripts its own node.
//!
//! Run one topic with `cargo test --release -p regatta-client --test integration TOPIC::`.

mod support;

mod retry_policy;
mod txn_async_commit;
mod txn_bank;
mod txn_commit_paths;
mod txn_isolation;
mod txn_lock_resolution;
mod txn_occ;
