//! Process-level crash test: PD and 3 `regatta store` processes on loopback; the leader's
//! process is killed with SIGKILL while clients write; every acknowledged write must still
//! be readable afterwards, and the killed store must rejoin from its data directory.

mod common;

use common::process::{free_port, spawn_ready, Proc};
use common::wait_until;
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

/// Goal: SIGKILL of the leader's process under writes loses no acknowledged write, and the
/// survivors go on acknowledging writes (200 more after the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_process_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let pd_addr = format!("127.0.0.1:{}", free_port());
    let _pd = spawn_ready(
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
    let mut stores: Vec<Option<Proc>> = (1..=3u64)
        .map(|id| {
            Some(spawn_ready(
                &store_args(id, ports[id as usize - 1], &pd_addr, dir.path()),
                "warn",
            ))
        })
        .collect();
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
    drop(stores[victim as usize - 1].take()); // SIGKILL
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
    stores[victim as usize - 1] = Some(spawn_ready(
        &store_args(victim, ports[victim as usize - 1], &pd_addr, dir.path()),
        "warn",
    ));
    client.put(b"after", b"restart").await.unwrap();
    assert_eq!(
        client.get(b"after").await.unwrap().map(|v| v.value),
        Some(b"restart".to_vec())
    );
}
