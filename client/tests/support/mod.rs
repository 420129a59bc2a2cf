//! A fake transactional cluster for the client's tests: one loopback port that plays PD
//! (regions cut at given split keys, one store, a TSO on the wall clock) and that store,
//! which answers `txnpb` commands by running the real `regatta_txn` actions over a
//! `MemEngine`, one command at a time (the store's latches, simplified to one lock).
//!
//! What it checks like a store: the region id, the epoch (`EpochNotMatch` with the current
//! regions) and that every key of a command lies in its region (`KeyNotInRegion`). What it
//! leaves out: raft, lock-wait queues (a pessimistic lock on a locked key answers `locked`
//! at once), the concurrency manager (1PC commits at a fresh TSO ts, which is above every
//! read ts served). It counts the commands it served, by name.

mod actions;
mod cluster;

pub use cluster::FakeCluster;

use regatta_client::TxnClient;

/// The value of `key` as a snapshot at `ts` reads it.
pub async fn read_at(txns: &TxnClient, key: &[u8], ts: u64) -> Option<Vec<u8>> {
    txns.snapshot(ts)
        .await
        .expect("snapshot")
        .get(key)
        .await
        .expect("snapshot read")
}

/// The value of `key` at a fresh timestamp.
pub async fn read(txns: &TxnClient, key: &[u8]) -> Option<Vec<u8>> {
    let ts = txns.current_timestamp().await.expect("ts");
    read_at(txns, key, ts).await
}
