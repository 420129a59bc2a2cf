//! Transactional commands through Raft on a real 3-store cluster: Percolator prewrite,
//! commit, rollback, lock checks and resolution, 1PC, across splits and leader changes.
//! Requests are raw `KvRequest`s with `txn` bodies sent straight to the leader of the
//! region holding their key (`send`), timestamps from PD's TSO.

use crate::common::{check_status_req, commit_req, prewrite_req, Cluster};
use regatta_proto::kvrpcpb::Request;
use regatta_proto::txnpb::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// As [`Cluster::send_txn`], for a command that must not fail at the store level.
async fn send(cluster: &Cluster, route_key: &[u8], req: TxnRequest) -> TxnResponse {
    let mut resp = cluster.send_txn(route_key, req).await;
    assert!(!resp.has_error(), "store error: {:?}", resp.get_error());
    resp.mut_response().take_txn()
}

async fn ts(cluster: &Cluster) -> u64 {
    cluster.client().await.pd().get_ts().await.expect("TSO")
}

fn get_req(key: &[u8], start_ts: u64) -> TxnRequest {
    let mut g = TxnGetRequest::new();
    g.set_key(key.to_vec());
    g.set_start_ts(start_ts);
    let mut r = TxnRequest::new();
    r.set_get(g);
    r
}

/// The value of `key` at `ts`: `Ok(None)` when absent, `Err(lock)` when a lock blocks.
async fn get(cluster: &Cluster, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>, LockInfo> {
    let mut r = send(cluster, key, get_req(key, ts)).await;
    if r.has_key_error() {
        let ke = r.take_key_error();
        assert!(ke.has_locked(), "a read fails only on a lock: {ke:?}");
        return Err(ke.get_locked().clone());
    }
    let g = r.take_get();
    Ok(g.get_found().then(|| g.get_value().to_vec()))
}

fn ok(r: &TxnResponse) {
    assert!(
        !r.has_key_error(),
        "unexpected key error: {:?}",
        r.get_key_error()
    );
}

/// Goal: the 2PC path end to end. Method: prewrite two keys, commit, read at a later ts
/// (the values), at the start ts (nothing) and between start and commit (nothing).
#[actix_rt::test]
async fn prewrite_and_commit_are_visible_to_a_read_at_a_later_ts_only() {
    let cluster = Cluster::new(3, 1).await;
    let start = ts(&cluster).await;
    ok(&send(
        &cluster,
        b"a",
        prewrite_req(b"a", &[(b"a", b"1"), (b"b", b"2")], start, 3000),
    )
    .await);
    let mid = ts(&cluster).await;
    let commit = ts(&cluster).await;
    ok(&send(&cluster, b"a", commit_req(&[b"a", b"b"], start, commit)).await);
    let later = ts(&cluster).await;
    assert_eq!(get(&cluster, b"a", later).await, Ok(Some(b"1".to_vec())));
    assert_eq!(get(&cluster, b"b", later).await, Ok(Some(b"2".to_vec())));
    assert_eq!(get(&cluster, b"a", start).await, Ok(None));
    assert_eq!(
        get(&cluster, b"a", mid).await,
        Ok(None),
        "committed after mid"
    );
    let r = send(&cluster, b"a", get_req(b"a", later)).await;
    assert_eq!(
        r.get_get().get_commit_ts(),
        commit,
        "a get names the version's commit ts"
    );
    let mut sc = TxnScanRequest::new();
    sc.set_start_ts(later);
    let mut req = TxnRequest::new();
    req.set_scan(sc);
    let r = send(&cluster, b"a", req).await;
    let pairs: Vec<_> = r
        .get_scan()
        .get_pairs()
        .iter()
        .map(|p| (p.get_key(), p.get_value(), p.get_commit_ts()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (&b"a"[..], &b"1"[..], commit),
            (&b"b"[..], &b"2"[..], commit)
        ]
    );
    // A repeated commit is idempotent.
    ok(&send(&cluster, b"a", commit_req(&[b"a", b"b"], start, commit)).await);
}

/// Goal: a reader meets a live lock as `KeyError.locked` naming the lock's transaction,
/// while a reader below the lock's start ts reads past it.
#[actix_rt::test]
async fn a_read_meeting_a_lock_gets_key_error_locked() {
    let cluster = Cluster::new(3, 1).await;
    let before = ts(&cluster).await;
    let start = ts(&cluster).await;
    ok(&send(
        &cluster,
        b"k",
        prewrite_req(b"p", &[(b"k", b"v")], start, 10_000),
    )
    .await);
    let lock = get(&cluster, b"k", ts(&cluster).await)
        .await
        .expect_err("the lock blocks a later read");
    assert_eq!(lock.get_key(), b"k");
    assert_eq!(lock.get_primary(), b"p");
    assert_eq!(lock.get_start_ts(), start);
    assert_eq!(lock.get_kind(), LockKind::LOCK_PUT);
    assert_eq!(get(&cluster, b"k", before).await, Ok(None));
}

/// Goal: first committer wins. Method: B (started after A) commits `k`; A's prewrite of
/// `k` is then a write conflict naming B's commit.
#[actix_rt::test]
async fn a_prewrite_after_a_newer_commit_is_a_write_conflict() {
    let cluster = Cluster::new(3, 1).await;
    let a = ts(&cluster).await;
    let b = ts(&cluster).await;
    ok(&send(&cluster, b"k", prewrite_req(b"k", &[(b"k", b"b")], b, 3000)).await);
    let b_commit = ts(&cluster).await;
    ok(&send(&cluster, b"k", commit_req(&[b"k"], b, b_commit)).await);
    let r = send(&cluster, b"k", prewrite_req(b"k", &[(b"k", b"a")], a, 3000)).await;
    let c = r.get_key_error().get_conflict();
    assert_eq!(
        (
            c.get_start_ts(),
            c.get_conflict_start_ts(),
            c.get_conflict_commit_ts()
        ),
        (a, b, b_commit),
        "{r:?}"
    );
    assert_eq!(c.get_primary(), b"k");
}

/// Goal: a rollback is final. Method: roll back a transaction before its prewrite
/// arrives; the late prewrite is refused (`already_rolled_back`) and writes nothing.
#[actix_rt::test]
async fn a_prewrite_after_its_rollback_is_refused() {
    let cluster = Cluster::new(3, 1).await;
    let start = ts(&cluster).await;
    let mut rb = RollbackRequest::new();
    rb.set_keys(vec![b"k".to_vec()].into());
    rb.set_start_ts(start);
    let mut req = TxnRequest::new();
    req.set_rollback(rb);
    ok(&send(&cluster, b"k", req).await);
    let r = send(
        &cluster,
        b"k",
        prewrite_req(b"k", &[(b"k", b"v")], start, 3000),
    )
    .await;
    assert!(r.get_key_error().get_already_rolled_back(), "{r:?}");
    assert_eq!(get(&cluster, b"k", ts(&cluster).await).await, Ok(None));
}

/// Goal: check_txn_status judges TTL by the `current_ts` it carries (so every replica
/// agrees): alive at the lock's own time, expired and rolled back one TTL later; the
/// expired transaction can no longer commit and its key reads as before it.
#[actix_rt::test]
async fn check_txn_status_rolls_back_an_expired_primary_by_the_ts_it_carries() {
    let cluster = Cluster::new(3, 1).await;
    let start = ts(&cluster).await;
    ok(&send(
        &cluster,
        b"p",
        prewrite_req(b"p", &[(b"p", b"v")], start, 1000),
    )
    .await);
    let r = send(&cluster, b"p", check_status_req(b"p", start, start)).await;
    assert_eq!(
        r.get_check_txn_status().get_status(),
        TxnStatusKind::ALIVE,
        "{r:?}"
    );
    assert_eq!(r.get_check_txn_status().get_lock().get_start_ts(), start);
    let expired_at = start + (1000 << regatta_proto::ts::LOGICAL_BITS);
    let r = send(&cluster, b"p", check_status_req(b"p", start, expired_at)).await;
    assert_eq!(
        r.get_check_txn_status().get_status(),
        TxnStatusKind::TTL_EXPIRED_ROLLED_BACK,
        "{r:?}"
    );
    let r = send(
        &cluster,
        b"p",
        commit_req(&[b"p"], start, ts(&cluster).await),
    )
    .await;
    assert!(r.get_key_error().get_already_rolled_back(), "{r:?}");
    assert_eq!(get(&cluster, b"p", ts(&cluster).await).await, Ok(None));
}

fn resolve_req(keys: &[&[u8]], start_ts: u64, commit_ts: u64) -> TxnRequest {
    let mut rl = ResolveLockRequest::new();
    rl.set_keys(keys.iter().map(|k| k.to_vec()).collect());
    rl.set_start_ts(start_ts);
    rl.set_commit_ts(commit_ts);
    let mut r = TxnRequest::new();
    r.set_resolve_lock(rl);
    r
}

/// Goal: a lock resolver finishes others' transactions either way. Method: two
/// transactions leave locks; one is resolved as committed, the other rolled back; reads
/// then see the first's values and nothing of the second.
#[actix_rt::test]
async fn resolve_lock_commits_or_rolls_back_the_locks_it_is_given() {
    let cluster = Cluster::new(3, 1).await;
    let t1 = ts(&cluster).await;
    ok(&send(
        &cluster,
        b"a",
        prewrite_req(b"a", &[(b"a", b"1"), (b"b", b"1")], t1, 3000),
    )
    .await);
    let t2 = ts(&cluster).await;
    ok(&send(
        &cluster,
        b"c",
        prewrite_req(b"c", &[(b"c", b"2")], t2, 3000),
    )
    .await);
    let c1 = ts(&cluster).await;
    let r = send(&cluster, b"a", resolve_req(&[b"a", b"b"], t1, c1)).await;
    ok(&r);
    assert_eq!(r.get_resolve_lock().get_resolved(), 2);
    ok(&send(&cluster, b"c", resolve_req(&[b"c"], t2, 0)).await);
    let now = ts(&cluster).await;
    assert_eq!(get(&cluster, b"a", now).await, Ok(Some(b"1".to_vec())));
    assert_eq!(get(&cluster, b"b", now).await, Ok(Some(b"1".to_vec())));
    assert_eq!(get(&cluster, b"c", now).await, Ok(None));
}

/// One write of the 1PC and async-commit tests: committed at `commit_ts` with `value`.
type Commit = (u64, Vec<u8>);
/// One read of those tests: at `ts`, what it saw.
type Read = (u64, Option<Vec<u8>>);

/// Two readers of `k`, 20 reads each at fresh timestamps, recording what they saw.
fn spawn_readers(
    cluster: &Arc<Cluster>,
    reads: &Arc<Mutex<Vec<Read>>>,
    tasks: &mut Vec<actix_rt::task::JoinHandle<()>>,
) {
    for _ in 0..2 {
        let (cluster, reads) = (cluster.clone(), reads.clone());
        tasks.push(actix_rt::spawn(async move {
            for _ in 0..20 {
                let at = ts(&cluster).await;
                if let Ok(v) = get(&cluster, b"k", at).await {
                    reads.lock().unwrap().push((at, v));
                }
            }
        }));
    }
}

/// Every read saw exactly the latest commit at or below its ts.
fn assert_reads_see_the_latest_commit(commits: &[Commit], reads: &[Read]) {
    for (at, seen) in reads {
        let expected = commits
            .iter()
            .filter(|(c, _)| c <= at)
            .max_by_key(|(c, _)| *c)
            .map(|(_, v)| v.clone());
        assert_eq!(seen, &expected, "the read at {at} (commits: {commits:?})");
    }
}

/// Goal: 1PC keeps snapshot isolation for concurrent readers: a read at `r` never misses
/// a commit below `r`. Method: writers commit `k` by 1PC (falling back to 2PC when the
/// store answers `one_pc_commit_ts = 0`) while readers read `k` at fresh TSO timestamps;
/// afterwards every read must equal the newest commit at or below its ts.
#[actix_rt::test]
async fn a_one_pc_commit_never_lands_below_a_read_that_missed_it() {
    let cluster = Arc::new(Cluster::new(3, 1).await);
    let commits: Arc<Mutex<Vec<Commit>>> = Arc::default();
    let reads: Arc<Mutex<Vec<Read>>> = Arc::default();
    let one_pc = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for w in 0..2u8 {
        let (cluster, commits, one_pc) = (cluster.clone(), commits.clone(), one_pc.clone());
        tasks.push(actix_rt::spawn(async move {
            for i in 0..15u8 {
                let value = vec![w, i];
                let start = ts(&cluster).await;
                let mut req = prewrite_req(b"k", &[(b"k", &value)], start, 3000);
                req.mut_prewrite().set_try_one_pc(true);
                let r = send(&cluster, b"k", req).await;
                if r.has_key_error() {
                    continue; // a conflict with the other writer: nothing committed
                }
                let mut commit_ts = r.get_prewrite().get_one_pc_commit_ts();
                if commit_ts == 0 {
                    commit_ts = ts(&cluster).await;
                    ok(&send(&cluster, b"k", commit_req(&[b"k"], start, commit_ts)).await);
                } else {
                    *one_pc.lock().unwrap() += 1;
                    assert!(commit_ts > start);
                }
                commits.lock().unwrap().push((commit_ts, value));
            }
        }));
    }
    spawn_readers(&cluster, &reads, &mut tasks);
    for t in tasks {
        t.await.expect("task");
    }
    let commits = commits.lock().unwrap().clone();
    assert!(*one_pc.lock().unwrap() > 0, "some writes committed by 1PC");
    assert_reads_see_the_latest_commit(&commits, &reads.lock().unwrap());
}

/// Goal: an async-commit transaction, committed when its prewrite lands at the
/// `min_commit_ts` the leader chose, never lands below a read that missed it, and a
/// transaction begun after it sees it (its ts is at most one above anything the TSO
/// handed out). Method: two writers prewrite one key with `use_async_commit` and commit at
/// the answered ts; two readers read at fresh timestamps meanwhile; every read must see
/// exactly the latest commit at or below its ts, and a TSO ts taken after each commit is
/// at or above it.
#[actix_rt::test]
async fn an_async_commit_never_lands_below_a_read_that_missed_it() {
    let cluster = Arc::new(Cluster::new(3, 1).await);
    let commits: Arc<Mutex<Vec<Commit>>> = Arc::default();
    let reads: Arc<Mutex<Vec<Read>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..2u8 {
        let (cluster, commits) = (cluster.clone(), commits.clone());
        tasks.push(actix_rt::spawn(async move {
            for i in 0..15u8 {
                let value = vec![w, i];
                let start = ts(&cluster).await;
                let mut req = prewrite_req(b"k", &[(b"k", &value)], start, 3000);
                req.mut_prewrite().set_use_async_commit(true);
                let r = send(&cluster, b"k", req).await;
                if r.has_key_error() {
                    continue; // a conflict with the other writer: nothing committed
                }
                let commit_ts = r.get_prewrite().get_min_commit_ts();
                assert!(
                    commit_ts > start,
                    "async commit at {commit_ts} after {start}"
                );
                ok(&send(&cluster, b"k", commit_req(&[b"k"], start, commit_ts)).await);
                let after = ts(&cluster).await;
                assert!(
                    after >= commit_ts,
                    "TSO {after} below a commit at {commit_ts}"
                );
                commits.lock().unwrap().push((commit_ts, value));
            }
        }));
    }
    spawn_readers(&cluster, &reads, &mut tasks);
    for t in tasks {
        t.await.expect("task");
    }
    let commits = commits.lock().unwrap().clone();
    assert!(!commits.is_empty(), "some writes committed");
    assert_reads_see_the_latest_commit(&commits, &reads.lock().unwrap());
}

/// Goal: a command at a timestamp far beyond PD's TSO cannot poison the region's
/// `max_ts` (issue 20, hole 0: a read at `u64::MAX` made every later 1PC commit there,
/// invisible to every reader). Method: a read, a prewrite and a pessimistic lock at
/// timestamps an hour past the TSO and at `u64::MAX`, each answered `ts_too_far_ahead`
/// with nothing done; then a 1PC write commits below the next TSO timestamp and a read
/// there sees it.
#[actix_rt::test]
async fn timestamps_far_beyond_the_tso_are_refused_and_1pc_stays_visible() {
    let cluster = Cluster::new(3, 1).await;
    let hour_ahead = ts(&cluster).await + regatta_proto::ts::compose(3_600_000, 0);
    for far in [hour_ahead, u64::MAX] {
        let mut lock = PessimisticLockRequest::new();
        lock.set_keys(vec![b"k".to_vec()].into());
        lock.set_primary(b"k".to_vec());
        lock.set_start_ts(far - 1);
        lock.set_for_update_ts(far);
        lock.set_lock_ttl_ms(3_000);
        let mut lock_req = TxnRequest::new();
        lock_req.set_pessimistic_lock(lock);
        for req in [
            get_req(b"k", far),
            prewrite_req(b"k", &[(b"k", b"v")], far, 3_000),
            lock_req,
        ] {
            let r = send(&cluster, b"k", req).await;
            // The lock's start ts (far - 1) is refused first.
            let e = r.get_key_error().get_ts_too_far_ahead();
            assert!(e.get_ts() >= far - 1, "refused: {r:?}");
            assert!(e.get_limit() < far - 1);
        }
    }
    let start = ts(&cluster).await;
    let mut req = prewrite_req(b"k", &[(b"k", b"1")], start, 3_000);
    req.mut_prewrite().set_try_one_pc(true);
    let r = send(&cluster, b"k", req).await;
    ok(&r);
    let commit_ts = r.get_prewrite().get_one_pc_commit_ts();
    let now = ts(&cluster).await;
    assert!(
        commit_ts > start && commit_ts <= now,
        "1PC at {commit_ts}, between {start} and the next TSO ts {now}"
    );
    assert_eq!(get(&cluster, b"k", now).await, Ok(Some(b"1".to_vec())));
}

/// Goal: a split between prewrite and commit keeps the transaction intact. Method:
/// prewrite `a` and `z` in one region, split at `m`, commit each key in the region that
/// now holds it (the secondary's commit goes to the new region), read both.
#[actix_rt::test]
async fn a_split_between_prewrite_and_commit_keeps_the_transaction() {
    let cluster = Cluster::new(3, 1).await;
    let start = ts(&cluster).await;
    ok(&send(
        &cluster,
        b"a",
        prewrite_req(b"a", &[(b"a", b"1"), (b"z", b"2")], start, 10_000),
    )
    .await);
    let (left, right) = cluster.client().await.split(b"m").await.expect("split");
    assert_ne!(left.get_id(), right.get_id());
    // The old command over both keys is now refused by the region that holds `a`.
    let commit = ts(&cluster).await;
    let stale = cluster
        .send_txn(b"a", commit_req(&[b"a", b"z"], start, commit))
        .await;
    assert!(stale.get_error().has_key_not_in_region(), "{stale:?}");
    // The lock of `z` travelled with its key into the new region.
    let lock = get(&cluster, b"z", ts(&cluster).await)
        .await
        .expect_err("locked");
    assert_eq!(lock.get_start_ts(), start);
    ok(&send(&cluster, b"a", commit_req(&[b"a"], start, commit)).await);
    ok(&send(&cluster, b"z", commit_req(&[b"z"], start, commit)).await);
    let now = ts(&cluster).await;
    assert_eq!(get(&cluster, b"a", now).await, Ok(Some(b"1".to_vec())));
    assert_eq!(get(&cluster, b"z", now).await, Ok(Some(b"2".to_vec())));
}

/// Goal: locks are replicated state: a new leader commits what the old one prewrote,
/// and serves 1PC again once it synced its max_ts with the TSO. Method: prewrite,
/// transfer leadership, commit and read through the new leader; then 1PC until the new
/// leader commits one (with a commit ts above every read it served).
#[actix_rt::test]
async fn a_leader_change_between_prewrite_and_commit_keeps_the_transaction() {
    let cluster = Cluster::new(3, 1).await;
    let start = ts(&cluster).await;
    ok(&send(
        &cluster,
        b"k",
        prewrite_req(b"k", &[(b"k", b"v")], start, 10_000),
    )
    .await);
    let (_, region) = cluster.leader_for_key(b"k").await.expect("a leader");
    cluster.move_leader(region.get_id()).await;
    let commit = ts(&cluster).await;
    ok(&send(&cluster, b"k", commit_req(&[b"k"], start, commit)).await);
    let read_at = ts(&cluster).await;
    assert_eq!(get(&cluster, b"k", read_at).await, Ok(Some(b"v".to_vec())));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = ts(&cluster).await;
        let mut req = prewrite_req(b"k", &[(b"k", b"w")], s, 3000);
        req.mut_prewrite().set_try_one_pc(true);
        let r = send(&cluster, b"k", req).await;
        ok(&r);
        let c = r.get_prewrite().get_one_pc_commit_ts();
        if c != 0 {
            assert!(
                c > read_at && c > s,
                "1PC commit ts {c} above the read at {read_at}"
            );
            break;
        }
        // Not synced yet: it was a plain prewrite; finish it by 2PC and try again.
        ok(&send(&cluster, b"k", commit_req(&[b"k"], s, ts(&cluster).await)).await);
        assert!(Instant::now() < deadline, "the new leader never did 1PC");
    }
}

/// Goal: malformed transactional commands are refused before the log, as the wire
/// types say: ts 0, duplicate keys and async commit as `key_error.invalid`, a key outside
/// the region as the store's `KeyNotInRegion`.
#[actix_rt::test]
async fn malformed_commands_are_refused_with_the_documented_errors() {
    let cluster = Cluster::new(3, 1).await;
    let r = send(&cluster, b"k", get_req(b"k", 0)).await;
    assert!(!r.get_key_error().get_invalid().is_empty(), "{r:?}");
    let start = ts(&cluster).await;
    let r = send(
        &cluster,
        b"k",
        prewrite_req(b"k", &[(b"k", b"1"), (b"k", b"2")], start, 3000),
    )
    .await;
    assert!(r.get_key_error().get_invalid().contains("twice"), "{r:?}");
    let r = send(&cluster, b"k", commit_req(&[b"k"], start, start)).await;
    assert!(!r.get_key_error().get_invalid().is_empty(), "{r:?}");
    let r = cluster.send_txn(b"k", get_req(b"", start)).await;
    assert!(r.get_error().has_invalid_argument(), "an empty key: {r:?}");
    // Async commit and 1PC at once, and secondaries without async commit, are refused.
    let mut both = prewrite_req(b"k", &[(b"k", b"1")], start, 3000);
    both.mut_prewrite().set_use_async_commit(true);
    both.mut_prewrite().set_try_one_pc(true);
    let r = send(&cluster, b"k", both).await;
    assert!(
        r.get_key_error().get_invalid().contains("async commit"),
        "{r:?}"
    );
    let mut stray = prewrite_req(b"k", &[(b"k", b"1")], start, 3000);
    stray.mut_prewrite().mut_secondaries().push(b"k2".to_vec());
    let r = send(&cluster, b"k", stray).await;
    assert!(
        r.get_key_error().get_invalid().contains("secondaries"),
        "{r:?}"
    );
    let mut itself = prewrite_req(b"k", &[(b"k", b"1")], start, 3000);
    itself.mut_prewrite().set_use_async_commit(true);
    itself.mut_prewrite().mut_secondaries().push(b"k".to_vec());
    let r = send(&cluster, b"k", itself).await;
    assert!(r.get_key_error().get_invalid().contains("primary"), "{r:?}");
    assert_eq!(
        get(&cluster, b"k", ts(&cluster).await).await,
        Ok(None),
        "no lock left"
    );
}

/// Goal: transactional reads are the leader's (its max_ts must see them): a follower
/// answers `NotLeader` whatever consistency is asked, and a lease read on the leader is
/// served. Pessimistic locks do not wait yet: a conflicting one answers `locked` at once.
#[actix_rt::test]
async fn followers_refuse_txn_reads_and_a_pessimistic_lock_waits_then_names_the_holder() {
    use regatta_proto::kvrpcpb::ReadConsistency;
    let cluster = Cluster::new(3, 1).await;
    let start = ts(&cluster).await;
    ok(&send(
        &cluster,
        b"k",
        prewrite_req(b"k", &[(b"k", b"v")], start, 3000),
    )
    .await);
    ok(&send(
        &cluster,
        b"k",
        commit_req(&[b"k"], start, ts(&cluster).await),
    )
    .await);
    let (leader, region) = cluster.leader_for_key(b"k").await.expect("a leader");
    let follower = cluster
        .pg
        .stores()
        .map(|s| s.store_id)
        .find(|s| *s != leader)
        .expect("a follower");
    let read_at = ts(&cluster).await;
    for consistency in [ReadConsistency::FOLLOWER, ReadConsistency::LEASE] {
        let mut r = Request::new();
        r.set_txn(get_req(b"k", read_at));
        let resp = cluster
            .direct_request(follower, region.get_id(), r, |ctx| {
                ctx.set_consistency(consistency);
                ctx.set_max_staleness_ms(60_000);
            })
            .await;
        assert!(
            resp.get_error().has_not_leader(),
            "{consistency:?}: {resp:?}"
        );
    }
    let mut r = Request::new();
    r.set_txn(get_req(b"k", read_at));
    let lease_read = cluster
        .direct_request(leader, region.get_id(), r, |ctx| {
            ctx.set_consistency(ReadConsistency::LEASE)
        })
        .await;
    let got = lease_read.get_response().get_txn().get_get().get_value();
    assert_eq!(got, b"v", "{lease_read:?}");

    let lock_req = |start_ts: u64, primary: &[u8]| {
        let mut p = PessimisticLockRequest::new();
        p.set_keys(vec![b"k".to_vec()].into());
        p.set_primary(primary.to_vec());
        p.set_start_ts(start_ts);
        p.set_for_update_ts(start_ts);
        p.set_lock_ttl_ms(10_000);
        p.set_return_values(true);
        // The second waits this long in the key's queue, then is told whom it waited for.
        p.set_wait_timeout_ms(200);
        let mut r = TxnRequest::new();
        r.set_pessimistic_lock(p);
        r
    };
    let first = ts(&cluster).await;
    let r = send(&cluster, b"k", lock_req(first, b"k")).await;
    ok(&r);
    let values = r.get_pessimistic_lock().get_values();
    assert!(
        values[0].get_found() && values[0].get_value() == b"v",
        "{r:?}"
    );
    let second = ts(&cluster).await;
    let r = send(&cluster, b"k", lock_req(second, b"k")).await;
    assert_eq!(
        r.get_key_error().get_locked().get_start_ts(),
        first,
        "{r:?}"
    );
    assert_eq!(
        r.get_key_error().get_locked().get_kind(),
        LockKind::LOCK_PESSIMISTIC
    );
    assert!(r.get_key_error().get_lock_wait_timeout(), "{r:?}");
}
