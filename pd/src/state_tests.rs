//! Unit tests of [`PdState`](super::PdState): bootstrap, routing, ids, timestamps,
//! restarts, bad requests and leader balance.

use super::*;
use regatta_proto::pdpb::{AllocIdRequest, GetRegionRequest, PutStoreRequest, ScanRegionsRequest};
use std::path::Path;

fn cfg(dir: &Path, stores: usize, regions: usize) -> PdConfig {
    PdConfig::new(stores, regions, dir.to_path_buf())
}

fn put_store(pd: &mut PdState, id: u64) -> PdResponse {
    let mut s = Store::new();
    s.set_id(id);
    s.set_address(format!("127.0.0.1:{}", 20000 + id));
    let mut r = PutStoreRequest::new();
    r.set_store(s);
    let mut req = PdRequest::new();
    req.set_put_store(r);
    pd.handle(req)
}

fn region_of(pd: &mut PdState, key: &[u8]) -> PdResponse {
    let mut r = GetRegionRequest::new();
    r.set_key(key.to_vec());
    let mut req = PdRequest::new();
    req.set_get_region(r);
    pd.handle(req)
}

fn alloc(pd: &mut PdState, count: u32) -> PdResponse {
    let mut r = AllocIdRequest::new();
    r.set_count(count);
    let mut req = PdRequest::new();
    req.set_alloc_id(r);
    pd.handle(req)
}

#[test]
fn split_keys_cut_the_prefix_space_evenly() {
    assert!(static_split_keys(1).is_empty());
    assert_eq!(static_split_keys(2), vec![vec![0x80, 0]]);
    let k = static_split_keys(4);
    assert_eq!(k, vec![vec![0x40, 0], vec![0x80, 0], vec![0xc0, 0]]);
    let many = static_split_keys(1000);
    assert_eq!(many.len(), 999);
    assert!(
        many.windows(2).all(|w| w[0] < w[1]),
        "split keys strictly increase"
    );
}

#[test]
fn bootstraps_once_enough_stores_registered_and_routes_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut pd = PdState::open(cfg(dir.path(), 3, 4)).unwrap();
    put_store(&mut pd, 1);
    put_store(&mut pd, 2);
    let early = region_of(&mut pd, b"a");
    assert!(early.get_error().get_not_bootstrapped());
    put_store(&mut pd, 3);
    assert!(pd.is_bootstrapped());
    let regions = pd.regions();
    assert_eq!(regions.len(), 4);
    for rl in &regions {
        let stores: Vec<u64> = rl
            .get_region()
            .get_peers()
            .iter()
            .map(|p| p.get_store_id())
            .collect();
        assert_eq!(stores, vec![1, 2, 3]);
    }
    for key in [
        &b""[..],
        b"\x00",
        b"\x3f\xff",
        b"\x40",
        b"zzz",
        b"\xff\xff\xff",
    ] {
        let resp = region_of(&mut pd, key);
        assert!(!resp.has_error(), "key {key:?}: {:?}", resp.get_error());
        assert!(key_in_range(resp.get_get_region().get_region(), key));
    }
    // Ranges tile the key space.
    assert!(regions[0].get_region().get_start_key().is_empty());
    assert!(regions[3].get_region().get_end_key().is_empty());
    for w in regions.windows(2) {
        assert_eq!(
            w[0].get_region().get_end_key(),
            w[1].get_region().get_start_key()
        );
    }
    let mut scan = ScanRegionsRequest::new();
    scan.set_start_key(b"\x50".to_vec());
    scan.set_end_key(b"\xc0\x00".to_vec());
    let mut req = PdRequest::new();
    req.set_scan_regions(scan);
    assert_eq!(pd.handle(req).get_scan_regions().get_regions().len(), 2);
}

#[test]
fn ids_stay_unique_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let mut pd = PdState::open(cfg(dir.path(), 1, 1)).unwrap();
        for count in [1u32, 5, 2000] {
            let r = alloc(&mut pd, count);
            assert!(!r.has_error());
            let first = r.get_alloc_id().get_first_id();
            for id in first..first + u64::from(count) {
                assert!(id > 0 && seen.insert(id), "id {id} handed out twice");
            }
        }
    }
    assert!(alloc(&mut PdState::open(cfg(dir.path(), 1, 1)).unwrap(), 0).has_error());
}

/// Issue 20, hole 3: a second PD on the same data directory would serve a second
/// timestamp oracle from the same persisted high water (duplicate timestamps).
#[test]
fn a_second_pd_on_the_same_data_dir_is_refused_until_the_first_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let first = PdState::open(cfg(dir.path(), 1, 1)).unwrap();
    match PdState::open(cfg(dir.path(), 1, 1)) {
        Err(e @ Error::DataDirLocked { .. }) => {
            assert!(e.to_string().contains("in use by another PD"), "{e}")
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("two PDs opened one data directory"),
    }
    drop(first);
    PdState::open(cfg(dir.path(), 1, 1)).expect("free again once the first is gone");
}

#[test]
fn state_survives_restart_and_older_epochs_never_win() {
    let dir = tempfile::tempdir().unwrap();
    let region = {
        let mut pd = PdState::open(cfg(dir.path(), 1, 1)).unwrap();
        put_store(&mut pd, 7);
        pd.regions()[0].get_region().clone()
    };
    let mut pd = PdState::open(cfg(dir.path(), 1, 1)).unwrap();
    assert!(pd.is_bootstrapped());
    assert_eq!(pd.regions()[0].get_region(), &region);
    // A report with a newer epoch and a leader is taken ...
    let mut newer = region.clone();
    newer.mut_region_epoch().set_conf_ver(2);
    let mut hb = RegionHeartbeatRequest::new();
    hb.set_region(newer.clone());
    hb.set_leader(region.get_peers()[0].clone());
    hb.set_term(3);
    let mut req = PdRequest::new();
    req.set_region_heartbeat(hb);
    assert!(!pd.handle(req).has_error());
    // ... a later one with the old epoch is not.
    let mut hb = RegionHeartbeatRequest::new();
    hb.set_region(region.clone());
    hb.set_term(9);
    let mut req = PdRequest::new();
    req.set_region_heartbeat(hb);
    assert!(!pd.handle(req).has_error());
    drop(pd); // a clean stop writes the region map
    let pd = PdState::open(cfg(dir.path(), 1, 1)).unwrap();
    let now = &pd.regions()[0];
    assert_eq!(now.get_region(), &newer);
    assert_eq!(now.get_leader(), &region.get_peers()[0]);
}

fn tso(pd: &mut PdState, count: u32) -> u64 {
    let mut r = regatta_proto::pdpb::TsoRequest::new();
    r.set_count(count);
    let mut req = PdRequest::new();
    req.set_tso(r);
    let resp = pd.handle(req);
    assert!(!resp.has_error(), "{:?}", resp.get_error());
    assert_eq!(resp.get_tso().get_count(), count);
    resp.get_tso().get_first()
}

#[test]
fn timestamps_stay_monotonic_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0;
    for _ in 0..3 {
        let mut pd = PdState::open(cfg(dir.path(), 1, 1)).unwrap();
        for count in [1, 100, 1, 5000] {
            let first = tso(&mut pd, count);
            assert!(first > last, "{first} after {last}");
            last = first + u64::from(count) - 1;
        }
    }
    let mut pd = PdState::open(cfg(dir.path(), 1, 1)).unwrap();
    let mut req = PdRequest::new();
    req.set_tso(regatta_proto::pdpb::TsoRequest::new());
    assert!(
        pd.handle(req).has_error(),
        "a request for 0 timestamps is refused"
    );
}

#[test]
fn bad_requests_get_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut pd = PdState::open(cfg(dir.path(), 1, 1)).unwrap();
    assert!(pd.handle(PdRequest::new()).has_error());
    assert!(put_store(&mut pd, 0).has_error());
    put_store(&mut pd, 1);
    let mut s = Store::new();
    s.set_id(2);
    s.set_address("127.0.0.1:20001".into()); // store 1's address
    let mut r = PutStoreRequest::new();
    r.set_store(s);
    let mut req = PdRequest::new();
    req.set_put_store(r);
    assert!(pd.handle(req).has_error());
    let mut req = PdRequest::new();
    req.set_region_heartbeat(RegionHeartbeatRequest::new());
    assert!(pd.handle(req).has_error());
    drop(pd); // the data directory's lock goes with it
    std::fs::write(dir.path().join("pd.state"), b"\xff\xff garbage").unwrap();
    assert!(matches!(
        PdState::open(cfg(dir.path(), 1, 1)),
        Err(Error::Corrupt { .. })
    ));
}

fn store_hb(pd: &mut PdState, id: u64, poisoned: &str) {
    let mut hb = StoreHeartbeatRequest::new();
    hb.set_store_id(id);
    hb.set_poisoned_reason(poisoned.into());
    let mut req = PdRequest::new();
    req.set_store_heartbeat(hb);
    assert!(!pd.handle(req).has_error());
}

/// Leader heartbeats of every region, led by store 1; how many got a transfer order.
fn transfer_orders(pd: &mut PdState) -> usize {
    let mut orders = 0;
    for rl in pd.regions() {
        let region = rl.get_region().clone();
        let leader = region
            .get_peers()
            .iter()
            .find(|p| p.get_store_id() == 1)
            .cloned()
            .unwrap();
        let mut hb = RegionHeartbeatRequest::new();
        hb.set_region(region);
        hb.set_leader(leader);
        hb.set_term(2);
        let mut req = PdRequest::new();
        req.set_region_heartbeat(hb);
        let resp = pd.handle(req);
        assert!(!resp.has_error());
        if resp.get_region_heartbeat().has_transfer_leader() {
            orders += 1;
        }
    }
    orders
}

#[test]
fn no_leader_is_moved_to_a_poisoned_store() {
    // Goal: a store that can no longer write (it reports a poison reason) never gets
    // leaders from balance-leader, though it leads the fewest regions.
    let dir = tempfile::tempdir().unwrap();
    let mut pd = PdState::open(cfg(dir.path(), 2, 8)).unwrap();
    put_store(&mut pd, 1);
    put_store(&mut pd, 2);
    store_hb(&mut pd, 1, "");
    store_hb(&mut pd, 2, "raft log write failed: No space left on device");
    transfer_orders(&mut pd); // PD learns that store 1 leads all 8 regions
    pd.leader_counts = None; // recount now rather than after a second
    assert_eq!(transfer_orders(&mut pd), 0, "store 2 is poisoned");
    // Restarted with space again, it reports no reason: balance resumes.
    store_hb(&mut pd, 2, "");
    pd.leader_counts = None;
    assert!(
        transfer_orders(&mut pd) > 0,
        "8 leaders against 0 are balanced"
    );
}

fn gc_safe_point(pd: &mut PdState) -> u64 {
    let mut req = PdRequest::new();
    req.set_get_gc_safe_point(regatta_proto::pdpb::GetGcSafePointRequest::new());
    let resp = pd.handle(req);
    assert!(!resp.has_error(), "{:?}", resp.get_error());
    resp.get_get_gc_safe_point().get_safe_point()
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn the_gc_safe_point_trails_the_clock_by_the_life_time_and_survives_restarts() {
    // Goal: the safe point is `now - gc_life_time` (in steps), handed to stores in their
    // heartbeat answers, and never moves back, even after a restart with a longer life
    // time. Method: a 1 s life time, read it by RPC and heartbeat, restart with 10 min.
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), 1, 1);
    c.gc_life_time = Duration::from_secs(1);
    let mut pd = PdState::open(c.clone()).unwrap();
    let before = wall_ms();
    let sp = gc_safe_point(&mut pd);
    let after = wall_ms();
    let (physical, logical) = crate::tso::split(sp);
    assert_eq!(logical, 0);
    assert!(
        physical + 1_000 <= after && physical + 1_000 >= before,
        "{physical} is not a life time behind [{before}, {after}]"
    );
    let mut hb = StoreHeartbeatRequest::new();
    hb.set_store_id(1);
    let mut req = PdRequest::new();
    req.set_store_heartbeat(hb);
    let hb_sp = pd.handle(req).get_store_heartbeat().get_gc_safe_point();
    assert!(hb_sp >= sp, "heartbeat answers carry it");
    // Within one step (100 ms here) it stays put; later it moves forward.
    let mut later = hb_sp;
    let deadline = Instant::now() + Duration::from_secs(5);
    while later == hb_sp {
        assert!(Instant::now() < deadline, "the safe point never moved");
        std::thread::sleep(Duration::from_millis(20));
        later = gc_safe_point(&mut pd);
    }
    assert!(later > hb_sp);
    drop(pd);
    // Restarted with a 10 min life time: it stays where it was rather than going back.
    c.gc_life_time = Duration::from_secs(600);
    let mut pd = PdState::open(c.clone()).unwrap();
    assert_eq!(gc_safe_point(&mut pd), later);
    drop(pd);
    c.gc_life_time = Duration::from_millis(10);
    assert!(matches!(PdState::open(c), Err(Error::InvalidConfig(_))));
}

/// A leader's heartbeat of `region` reporting its oldest lock (0: none), scanned now.
fn report_locks(pd: &mut PdState, region: &Region, oldest: u64) {
    let mut hb = RegionHeartbeatRequest::new();
    hb.set_region(region.clone());
    hb.set_leader(region.get_peers()[0].clone());
    hb.set_term(2);
    let mut locks = regatta_proto::pdpb::LockReport::new();
    locks.set_oldest_start_ts(oldest);
    locks.set_scanned_at_ms(wall_ms());
    hb.set_locks(locks);
    let mut req = PdRequest::new();
    req.set_region_heartbeat(hb);
    assert!(!pd.handle(req).has_error());
}

#[test]
fn the_gc_safe_point_stays_below_every_reported_lock() {
    // Goal: GC never passes a lock a region reported (a dead client's lock stays
    // decidable until a reader resolves it), nor moves before every region reported.
    // Method: a 1 s life time, two regions; a lock 5 s old reported by one, then gone.
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), 1, 2);
    c.gc_life_time = Duration::from_secs(1);
    let mut pd = PdState::open(c).unwrap();
    put_store(&mut pd, 1);
    let regions: Vec<Region> = pd
        .regions()
        .iter()
        .map(|r| r.get_region().clone())
        .collect();
    assert_eq!(regions.len(), 2);
    assert_eq!(
        gc_safe_point(&mut pd),
        0,
        "no region reported its locks yet"
    );
    report_locks(&mut pd, &regions[1], 0);
    assert_eq!(gc_safe_point(&mut pd), 0, "one region still unreported");
    let lock_ts = crate::tso::compose(wall_ms() - 5_000, 3);
    report_locks(&mut pd, &regions[0], lock_ts);
    assert_eq!(
        gc_safe_point(&mut pd),
        lock_ts - 1,
        "held just below the lock"
    );
    assert_eq!(gc_safe_point(&mut pd), lock_ts - 1);
    report_locks(&mut pd, &regions[0], 0);
    let sp = gc_safe_point(&mut pd);
    assert!(sp > lock_ts, "the lock is gone: the safe point moves on");
    assert!(crate::tso::split(sp).0 + 1_000 <= wall_ms());
}
