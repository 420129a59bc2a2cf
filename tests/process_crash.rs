//! Process-level crash tests: PD and 3 `regatta store` processes on loopback; the leader's
//! process is killed with SIGKILL while clients write; every acknowledged write must still
//! be readable afterwards, and the killed store must rejoin from its data directory. The
//! transactional phase does the same under bank transfers (2PC across regions, 1PC within
//! one), and checks the whole history for snapshot isolation. And a second `regatta pd`
//! on a data directory another PD process holds refuses to start.

use crate::common;
use crate::common::bank;
use crate::common::process::{free_port, spawn_ready, Proc};
use crate::common::wait_until;
use regatta_client::{Client, Config};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn store_args(id: u64, port: u16, pd: &str, dir: &Path) -> Vec<String> {
    vec![
        "store".into(),
        "--id".into(),
        id.to_string(),
        "--addr".into(),
        format!("127.0.0.1:{port}"),
        "--pd".into(),
        pd.into(),
        "--data-dir".into(),
        dir.join(format!("s{id}")).display().to_string(),
    ]
}

/// PD and 3 stores as processes in a temp dir.
struct Procs {
    // Fields drop in this order: the processes stop before their data directory goes.
    stores: Vec<Option<Proc>>,
    _pd: Proc,
    pd_addr: String,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl Procs {
    fn start() -> Procs {
        let dir = tempfile::tempdir().unwrap();
        let pd_addr = format!("127.0.0.1:{}", free_port());
        let pd = spawn_ready(
            &[
                "pd".into(),
                "--addr".into(),
                pd_addr.clone(),
                "--data-dir".into(),
                dir.path().join("pd").display().to_string(),
                "--initial-stores".into(),
                "3".into(),
                "--regions".into(),
                "2".into(),
            ],
            "warn",
        );
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let stores: Vec<Option<Proc>> = (1..=3u64)
            .map(|id| {
                Some(spawn_ready(
                    &store_args(id, ports[id as usize - 1], &pd_addr, dir.path()),
                    "warn",
                ))
            })
            .collect();
        Procs {
            dir,
            pd_addr,
            _pd: pd,
            ports,
            stores,
        }
    }

    /// SIGKILLs store `id`.
    fn kill(&mut self, id: u64) {
        if let Some(store) = self.stores[id as usize - 1].take() {
            store.sigkill();
        }
    }

    /// Starts store `id` again from its data directory, on its old port.
    fn restart(&mut self, id: u64) {
        self.stores[id as usize - 1] = Some(spawn_ready(
            &store_args(
                id,
                self.ports[id as usize - 1],
                &self.pd_addr,
                self.dir.path(),
            ),
            "warn",
        ));
    }
}

/// Goal: SIGKILL of the leader's process under writes loses no acknowledged write, and the
/// survivors go on acknowledging writes (200 more after the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_process_loses_no_acknowledged_write() {
    let mut procs = Procs::start();
    let pd_addr = procs.pd_addr.clone();
    let cfg = Config {
        op_timeout: Duration::from_secs(30),
        rpc_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let client = Client::connect_with(std::slice::from_ref(&pd_addr), cfg)
        .await
        .unwrap();
    client.put(b"warmup", b"1").await.unwrap();

    // Writers: each acknowledged key goes into `acked`.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}-{i}").into_bytes();
                if client.put(&key, b"v").await.is_ok() {
                    acked.lock().unwrap().push(key);
                }
                i += 1;
            }
        }));
    }
    let acked_count = || acked.lock().unwrap().len();
    // Kill the leader of the region holding "w" keys once writes are flowing ...
    wait_until(
        "100 writes are acknowledged",
        Duration::from_secs(60),
        || async { acked_count() >= 100 },
    )
    .await;
    let (region, leader) = client.pd().get_region(b"w0-0").await.unwrap();
    let victim = leader
        .map(|p| p.get_store_id())
        .unwrap_or_else(|| region.get_peers()[0].get_store_id());
    procs.kill(victim);
    // ... and keep writing until the survivors acknowledged a good many more.
    let at_kill = acked_count();
    wait_until(
        &format!("the survivors of store {victim}'s SIGKILL acknowledge 200 more writes"),
        Duration::from_secs(60),
        || async { acked_count() >= at_kill + 200 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    // Every acknowledged key, by one scan of the writers' range (linearizable per region),
    // and the first and last hundred by point reads too.
    let present: std::collections::HashMap<Vec<u8>, Vec<u8>> = client
        .scan(b"w", b"x", 0)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect();
    for key in &acked {
        assert_eq!(
            present.get(key).map(Vec::as_slice),
            Some(&b"v"[..]),
            "acknowledged {:?} lost after SIGKILL of store {victim}",
            String::from_utf8_lossy(key)
        );
    }
    for key in acked.iter().take(100).chain(acked.iter().rev().take(100)) {
        assert_eq!(
            client.get(key).await.unwrap().map(|v| v.value),
            Some(b"v".to_vec())
        );
    }
    // The killed store rejoins from its data dir and the cluster keeps serving.
    procs.restart(victim);
    client.put(b"after", b"restart").await.unwrap();
    assert_eq!(
        client.get(b"after").await.unwrap().map(|v| v.value),
        Some(b"restart".to_vec())
    );
}

/// Goal: the transactional phase. SIGKILL of a leader's process in the middle of bank
/// transfers (1PC and 2PC, optimistic and pessimistic) loses no acknowledged commit, leaves
/// no half-done transfer visible (every snapshot sums to the total) and keeps the history
/// snapshot-isolated; the killed store rejoins and the next kill (of the other region's
/// leader) is survived too. Method: the bank workload of `common/bank.rs` over two
/// regions, one kill and restart per region, each after more commits went through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_transactions_keeps_them_atomic_and_snapshot_isolated() {
    let mut procs = Procs::start();
    let pd = vec![procs.pd_addr.clone()];
    let cfg = Config {
        op_timeout: Duration::from_secs(30),
        rpc_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let admin = Client::connect_with(&pd, cfg.clone()).await.unwrap();
    admin
        .split(&bank::account(bank::ACCOUNTS / 2))
        .await
        .expect("split");
    let txns = regatta_client::TxnClient::connect_with(&pd, cfg)
        .await
        .unwrap();
    let setup_ts = bank::open(&txns).await;
    let seed = common::test_seed();
    let rngs = (0..6).map(|i| common::seeded_rng(seed, i)).collect();
    let bank = bank::Bank::start(&txns, rngs, setup_ts);
    for account in [0, bank::ACCOUNTS - 1] {
        bank.progress(30).await;
        let (region, leader) = admin
            .pd()
            .get_region(&bank::account(account))
            .await
            .unwrap();
        let victim = leader
            .map(|p| p.get_store_id())
            .unwrap_or_else(|| region.get_peers()[0].get_store_id());
        procs.kill(victim);
        bank.progress(30).await;
        procs.restart(victim);
    }
    bank.progress(20).await;
    bank.finish(&txns, seed).await;
}

/// Goal: two PD processes never serve one data directory (two timestamp oracles resuming
/// from one persisted high water would hand out the same timestamps; issue 20, hole 3).
/// Method: `regatta pd` on a directory, then a second one on it (another port): it must
/// exit with an error naming the lock, not print `ready`; once the first is killed, a
/// new one starts there.
#[test]
fn a_second_pd_on_a_held_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("pd").display().to_string();
    let pd_args = |port: u16| {
        vec![
            "pd".to_string(),
            "--addr".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            data.clone(),
            "--initial-stores".into(),
            "1".into(),
        ]
    };
    let first = spawn_ready(&pd_args(free_port()), "error");
    let mut second = Proc::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_regatta"))
            .args(pd_args(free_port()))
            .env("REGATTA_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    // It must exit by itself (a PD that serves runs until killed).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.0.try_wait().expect("wait on the second PD") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second PD is still running beside the first"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "the second PD exited 0");
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    let child = &mut second.0;
    child.stdout.take().map(|mut o| o.read_to_string(&mut out));
    child.stderr.take().map(|mut e| e.read_to_string(&mut err));
    assert!(!out.contains("ready"), "{out}");
    assert!(err.contains("in use by another PD"), "{err}");
    first.sigkill();
    let _third = spawn_ready(&pd_args(free_port()), "error");
}
