//! Snapshot isolation at the edges the transaction client must keep itself (issue 20):
//! a snapshot beyond the TSO is refused. Method: the public API against the fake
//! transactional store (real `regatta_txn` actions over a `MemEngine`).

mod support;

use regatta_client::Error;
use support::FakeCluster;

/// Goal: a snapshot beyond every timestamp the TSO handed out is refused, typed and not
/// retryable (hole 0), and one at a timestamp it handed out is served.
#[tokio::test]
async fn a_snapshot_beyond_the_tso_is_refused() {
    let fake = FakeCluster::start(&[]).await;
    let txns = fake.txn_client().await;
    let now = txns.current_timestamp().await.expect("ts");
    assert!(txns.snapshot(now).await.is_ok());
    match txns.snapshot(u64::MAX).await {
        Err(e @ Error::TimestampTooFarAhead { ts: u64::MAX, .. }) => assert!(!e.is_retryable()),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a snapshot at u64::MAX was accepted"),
    }
}
