//! The OCC client against a fake transactional store (PD + one store on loopback running
//! the real `regatta_txn` actions over a `MemEngine`). Goal: a one-region OCC commit is
//! one 1PC command, and its abort sends nothing more (the refused prewrite wrote
//! nothing); an abort across regions rolls back the region that validated before it
//! answers. Method: drive `OccTxn`, then look at the commands the fake counted and at its
//! locks.

use crate::support::FakeCluster;

#[tokio::test]
async fn a_one_region_commit_is_one_command_and_its_abort_sends_no_rollback() {
    let fake = FakeCluster::start(&[]).await;
    let txns = fake.client().await;
    let mut t = txns.occ_begin();
    assert_eq!(t.read(b"k").await.unwrap(), (None, 0));
    t.write(b"k", b"1");
    let out = t.commit().await.unwrap();
    assert!(out.committed && out.commit_ts > 0, "{out:?}");
    let committed_at = out.commit_ts;
    assert_eq!((fake.count("prewrite_1pc"), fake.count("prewrite")), (1, 0));

    let mut stale = txns.occ_from_reads([(b"k".to_vec(), 0)]);
    stale.write(b"k", b"2");
    let out = stale.commit().await.unwrap();
    assert_eq!(
        (out.committed, out.changed_key),
        (false, Some(b"k".to_vec()))
    );
    assert_eq!(fake.count("rollback"), 0, "nothing to roll back");
    assert!(fake.lock_on(b"k").is_none());
    let mut check = txns.occ_begin();
    assert_eq!(
        check.read(b"k").await.unwrap(),
        (Some(b"1".to_vec()), committed_at),
        "the version is the commit ts"
    );
}

#[tokio::test]
async fn an_abort_across_regions_rolls_back_before_it_answers() {
    let fake = FakeCluster::start(&[b"m"]).await;
    let txns = fake.client().await;
    let mut t = txns.occ_from_reads([(b"a".to_vec(), 0), (b"z".to_vec(), 7)]);
    t.write(b"a", b"1");
    t.write(b"z", b"1");
    let out = t.commit().await.unwrap();
    assert_eq!(
        (out.committed, out.changed_key),
        (false, Some(b"z".to_vec()))
    );
    assert_eq!(fake.count("prewrite"), 2, "both regions validated");
    assert!(fake.count("rollback") >= 1);
    assert!(
        fake.lock_on(b"a").is_none(),
        "a's lock released before the answer"
    );
    assert!(fake.lock_on(b"z").is_none());
}
