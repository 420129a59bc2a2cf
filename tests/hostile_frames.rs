//! Hostile frames against real `regatta pd` and `regatta store` processes: connections that
//! declare frames just under the limit and then go quiet must not pin the memory they
//! declare, must not stop ordinary clients, and are closed once they stall or idle.

use crate::common::process::{free_port, spawn_ready, Proc};
use regatta_client::{Client, Config};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// PD and one store on loopback (with `extra` flags for both); returns them, PD's address
/// and the store's.
fn cluster(dir: &std::path::Path, extra: &[&str]) -> (Proc, Proc, String, String) {
    let pd_addr = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<String> = [
        "pd",
        "--addr",
        &pd_addr,
        "--data-dir",
        &dir.join("pd").display().to_string(),
        "--initial-stores",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let pd = spawn_ready(&args, "error");
    let store_addr = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<String> = [
        "store",
        "--id",
        "1",
        "--addr",
        &store_addr,
        "--pd",
        &pd_addr,
        "--data-dir",
        &dir.join("s1").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let store = spawn_ready(&args, "error");
    (pd, store, pd_addr, store_addr)
}

/// Opens a connection to `addr` that declares a frame of `declared` bytes and sends 16 of
/// them.
async fn open_quiet_frame(addr: &str, declared: u32) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connects");
    s.write_all(&declared.to_be_bytes()).await.expect("writes");
    s.write_all(&[0x08; 16]).await.expect("writes");
    s
}

async fn connect_client(pd_addr: &str) -> Client {
    let cfg = Config {
        op_timeout: Duration::from_secs(30),
        rpc_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    Client::connect_with(&[pd_addr.to_string()], cfg)
        .await
        .expect("client connects")
}

/// Goal: declared-but-unsent frames cost (almost) nothing. Method: 8 connections to PD
/// declaring 64 MiB - 1 and 6 to the store declaring 256 MiB - 1 (before the fix each
/// allocated and zeroed its declared length: +1.5 GiB for the store), then ordinary puts
/// and gets through both, while the RSS of each process is sampled: it must stay within
/// 96 MiB of where it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_frames_pin_no_memory_and_clients_are_served_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let (pd, store, pd_addr, store_addr) = cluster(dir.path(), &[]);
    let client = connect_client(&pd_addr).await;
    client.put(b"warmup", b"1").await.unwrap();
    let (pd_base, store_base) = (pd.rss(), store.rss());

    let mut quiet = Vec::new();
    for _ in 0..8 {
        quiet.push(open_quiet_frame(&pd_addr, (64 << 20) - 1).await);
    }
    for _ in 0..6 {
        quiet.push(open_quiet_frame(&store_addr, (256 << 20) - 1).await);
    }
    const SLACK: u64 = 96 << 20;
    let check = |when: &str| {
        let (p, s) = (pd.rss(), store.rss());
        assert!(
            p < pd_base + SLACK,
            "PD grew from {} MiB to {} MiB {when}",
            pd_base >> 20,
            p >> 20
        );
        assert!(
            s < store_base + SLACK,
            "the store grew from {} MiB to {} MiB {when}",
            store_base >> 20,
            s >> 20
        );
    };
    // The servers read each prefix at once (before the fix, they allocated then); sample
    // for a while before and during ordinary traffic.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        check("with quiet frames open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Ordinary traffic goes through PD (a fresh client looks up the region) and the store.
    let fresh = connect_client(&pd_addr).await;
    for i in 0..20u32 {
        let key = format!("k{i}").into_bytes();
        fresh.put(&key, b"v").await.unwrap();
        assert_eq!(
            fresh.get(&key).await.unwrap().map(|v| v.value),
            Some(b"v".to_vec())
        );
        check("while quiet frames are open");
    }
    drop(quiet);
}

/// Goal: a connection that stalls mid-frame, or never sends a frame, is closed by the
/// server once its deadline passes. Method: PD and a store with 300 ms stall and 2 s idle
/// deadlines; a stalled and an idle connection to each must see the server close them
/// (end of stream) within a bounded wait, and clients are served afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_idle_connections_are_closed_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--frame-stall-timeout-ms",
        "300",
        "--conn-idle-timeout-ms",
        "2000",
    ];
    let (_pd, _store, pd_addr, store_addr) = cluster(dir.path(), &flags);
    for addr in [&pd_addr, &store_addr] {
        let stalled = open_quiet_frame(addr, 1 << 20).await;
        let idle = TcpStream::connect(addr.as_str()).await.unwrap();
        for (what, mut conn) in [("stalled", stalled), ("idle", idle)] {
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => {} // closed (or reset) by the server
                Ok(Ok(n)) => panic!("{what} connection to {addr} got {n} bytes"),
                Err(_) => panic!("{what} connection to {addr} still open after 20 s"),
            }
        }
    }
    let client = connect_client(&pd_addr).await;
    client.put(b"after", b"1").await.unwrap();
    assert_eq!(
        client.get(b"after").await.unwrap().map(|v| v.value),
        Some(b"1".to_vec())
    );
}

/// Goal: a client that sends requests and never reads the answers cannot make PD hold an
/// unbounded number of them. Method: one raw connection writes up to 2 million
/// `get_all_stores` requests without reading; PD must close it (a write fails) before
/// they are all written. Before the bound, PD read them all, each request a task holding
/// its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_is_disconnected() {
    use regatta_proto::framepb::Frame;
    use regatta_proto::pdpb::{GetAllStoresRequest, PdRequest};
    let dir = tempfile::tempdir().unwrap();
    let (_pd, _store, pd_addr, _) = cluster(dir.path(), &[]);
    let mut batch = Vec::new();
    for id in 0..1000u64 {
        let mut req = PdRequest::new();
        req.set_get_all_stores(GetAllStoresRequest::new());
        let mut f = Frame::new();
        f.id = id + 1;
        f.set_pd_request(req);
        regatta_proto::frame::encode_into(&f, &mut batch).unwrap();
    }
    let mut conn = TcpStream::connect(pd_addr.as_str()).await.unwrap();
    let mut written = 0u64;
    let closed = loop {
        if written >= 2_000_000 {
            break false;
        }
        let write = tokio::time::timeout(Duration::from_secs(30), conn.write_all(&batch)).await;
        match write {
            Ok(Ok(())) => written += 1000,
            Ok(Err(_)) => break true, // reset by PD
            Err(_) => panic!("PD stopped reading without closing, after {written} requests"),
        }
    };
    assert!(
        closed,
        "PD read {written} requests none of whose answers were read"
    );
    // PD itself is fine.
    let client = connect_client(&pd_addr).await;
    client.put(b"after", b"1").await.unwrap();
}
