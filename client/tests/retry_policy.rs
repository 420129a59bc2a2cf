//! The client's retry policy, against a scripted node on loopback that plays PD and a
//! one-region store on one port. Goal: what the docs call retryable is retried (with the
//! same request, until it succeeds), what they call not retryable ends the operation after
//! one request, an unreachable PD or store ends in the documented error, and a get returns
//! the version the store sent. Method: the script answers the n-th KV request; the tests
//! count the requests the node saw.

use regatta_client::{Client, Config, Error, Versioned};
use regatta_proto::frame::{encode, MAX_FRAME_LEN};
use regatta_proto::framepb::{Frame, Frame_oneof_body};
use regatta_proto::kvrpcpb::{self, KvResponse};
use regatta_proto::metapb::{Peer, Region, Store};
use regatta_proto::pdpb::{PdRequest_oneof_req, PdResponse};
use regatta_proto::rpc::{serve_connection, InboundLimits, ReadBudget};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The answer to the n-th (0-based) KV request.
type KvScript = Arc<dyn Fn(usize) -> KvResponse + Send + Sync>;

/// A scripted node: PD for one region on store 1 at `store_addr`, and that store.
struct Node {
    addr: String,
    kv_requests: Arc<AtomicUsize>,
}

impl Node {
    /// Serves on a fresh loopback port. PD sends clients to `store_addr` for store 1
    /// (`None`: this node's own address). The first `refuse_first` connections are closed
    /// unanswered, as a PD that is not up yet would.
    async fn start(store_addr: Option<String>, refuse_first: usize, kv: KvScript) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr").to_string();
        let store_addr = store_addr.unwrap_or_else(|| addr.clone());
        let kv_requests = Arc::new(AtomicUsize::new(0));
        let seen = kv_requests.clone();
        let (_keep, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _keep = _keep;
            let mut refused = 0;
            while let Ok((stream, _)) = listener.accept().await {
                if refused < refuse_first {
                    refused += 1;
                    continue; // dropped: closed with no answer
                }
                let (store_addr, seen, kv) = (store_addr.clone(), seen.clone(), kv.clone());
                let limits = InboundLimits::new(MAX_FRAME_LEN);
                let budget = ReadBudget::unlimited();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    serve_connection(stream, &limits, &budget, shutdown, move |frame, tx| {
                        let body = match frame.body {
                            Some(Frame_oneof_body::pd_request(r)) => {
                                Frame_oneof_body::pd_response(pd_answer(r.req, &store_addr))
                            }
                            Some(Frame_oneof_body::kv_request(_)) => {
                                let n = seen.fetch_add(1, Ordering::SeqCst);
                                Frame_oneof_body::kv_response(kv(n))
                            }
                            _ => return Err("unexpected frame".into()),
                        };
                        let mut out = Frame::new();
                        out.set_id(frame.id);
                        out.body = Some(body);
                        let bytes = encode(&out).map_err(|e| e.to_string())?;
                        tx.try_send(bytes).map_err(|e| e.to_string())
                    })
                    .await;
                });
            }
        });
        Node { addr, kv_requests }
    }

    fn kv_requests(&self) -> usize {
        self.kv_requests.load(Ordering::SeqCst)
    }
}

fn store_peer() -> Peer {
    let mut p = Peer::new();
    p.set_id(11);
    p.set_store_id(1);
    p
}

/// PD's answers: one region over the whole key space, led by peer 11 on store 1.
fn pd_answer(req: Option<PdRequest_oneof_req>, store_addr: &str) -> PdResponse {
    let mut resp = PdResponse::new();
    match req {
        Some(PdRequest_oneof_req::get_all_stores(_)) => {
            resp.mut_get_all_stores();
        }
        Some(PdRequest_oneof_req::get_region(_)) => {
            let mut region = Region::new();
            region.set_id(1);
            region.mut_region_epoch().set_version(1);
            region.mut_region_epoch().set_conf_ver(1);
            region.mut_peers().push(store_peer());
            let r = resp.mut_get_region();
            r.set_region(region);
            r.set_leader(store_peer());
        }
        Some(PdRequest_oneof_req::get_store(_)) => {
            let mut store = Store::new();
            store.set_id(1);
            store.set_address(store_addr.to_string());
            resp.mut_get_store().set_store(store);
        }
        _ => resp.mut_error().set_message("not scripted".into()),
    }
    resp
}

fn found(value: &[u8], version: u64) -> KvResponse {
    let mut resp = KvResponse::new();
    let g = resp.mut_response().mut_get();
    g.set_found(true);
    g.set_value(value.to_vec());
    g.set_version(version);
    resp
}

fn failed(set: impl Fn(&mut kvrpcpb::Error)) -> KvResponse {
    let mut resp = KvResponse::new();
    let e = resp.mut_error();
    e.set_message("scripted".into());
    set(e);
    resp
}

fn busy() -> KvResponse {
    failed(|e| e.set_server_is_busy(kvrpcpb::ServerIsBusy::new()))
}

/// Short deadlines and backoffs, so the failing cases end quickly.
fn config(op_timeout: Duration) -> Config {
    Config {
        op_timeout,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(20),
        ..Config::default()
    }
}

/// A loopback address nothing listens on (bound, then released).
fn closed_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().expect("local addr").to_string()
}

#[tokio::test]
async fn a_get_returns_the_value_with_the_version_the_store_sent() {
    let node = Node::start(None, 0, Arc::new(|_| found(b"v", 42))).await;
    let c = Client::connect_with(&[&node.addr], config(Duration::from_secs(10)))
        .await
        .expect("connect");
    let want = Versioned {
        value: b"v".to_vec(),
        version: 42,
    };
    assert_eq!(c.get(b"k").await.expect("get"), Some(want));
}

#[tokio::test]
async fn server_is_busy_is_retried_until_the_store_serves() {
    let node = Node::start(
        None,
        0,
        Arc::new(|n| if n < 3 { busy() } else { found(b"v", 7) }),
    )
    .await;
    let c = Client::connect_with(&[&node.addr], config(Duration::from_secs(10)))
        .await
        .expect("connect");
    let got = c.get(b"k").await.expect("busy is retried");
    assert_eq!(got.map(|v| v.version), Some(7));
    assert_eq!(node.kv_requests(), 4, "three busy answers, then the value");
}

#[tokio::test]
async fn errors_the_docs_call_not_retryable_end_the_operation_after_one_request() {
    let invalid: KvScript = Arc::new(|_| {
        failed(|e| {
            let mut a = kvrpcpb::InvalidArgument::new();
            a.set_reason("key too large".into());
            e.set_invalid_argument(a);
        })
    });
    let stale_sequence: KvScript =
        Arc::new(|_| failed(|e| e.set_stale_sequence(kvrpcpb::StaleSequence::new())));
    let untyped: KvScript = Arc::new(|_| failed(|_| {}));
    let storage: KvScript =
        Arc::new(|_| failed(|e| e.set_storage_error(kvrpcpb::StorageError::new())));
    for (script, is_expected) in [
        (
            invalid,
            (|e: &Error| matches!(e, Error::InvalidArgument(_))) as fn(&Error) -> bool,
        ),
        (stale_sequence, |e| matches!(e, Error::Server(_))),
        (untyped, |e| matches!(e, Error::Server(_))),
        (storage, |e| matches!(e, Error::Storage(_))),
    ] {
        let node = Node::start(None, 0, script).await;
        let c = Client::connect_with(&[&node.addr], config(Duration::from_secs(10)))
            .await
            .expect("connect");
        let err = c.put(b"k", b"v").await.expect_err("not retryable");
        assert!(is_expected(&err), "{err:?}");
        assert!(!err.is_retryable(), "{err:?}");
        assert_eq!(node.kv_requests(), 1, "{err:?} was retried");
    }
}

#[tokio::test]
async fn connect_waits_for_pd_to_answer() {
    // PD closes the first connections unanswered, as one still starting would.
    let node = Node::start(None, 3, Arc::new(|_| found(b"v", 1))).await;
    let c = Client::connect_with(&[&node.addr], config(Duration::from_secs(10)))
        .await
        .expect("connect retries until PD answers");
    assert!(c.get(b"k").await.expect("get").is_some());
}

#[tokio::test]
async fn connect_to_a_pd_that_never_answers_times_out() {
    let err = match Client::connect_with(&[closed_addr()], config(Duration::from_millis(200))).await
    {
        Ok(_) => panic!("connected to an address nothing listens on"),
        Err(e) => e,
    };
    match &err {
        Error::Timeout {
            operation,
            last_error,
            ..
        } => {
            assert_eq!(*operation, "connect");
            assert!(last_error.contains("placement driver"), "{last_error}");
        }
        other => panic!("expected a connect timeout, got {other:?}"),
    }
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_store_that_cannot_be_connected_to_is_a_retryable_connection_error() {
    let store = closed_addr();
    let node = Node::start(Some(store.clone()), 0, Arc::new(|_| found(b"v", 1))).await;
    let c = Client::connect_with(&[&node.addr], config(Duration::from_millis(300)))
        .await
        .expect("connect");
    let err = c.put(b"k", b"v").await.expect_err("the store is down");
    match &err {
        Error::Connection { addr, .. } => assert_eq!(addr, &store),
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(node.kv_requests(), 0);
}

#[tokio::test]
async fn a_follower_bound_under_one_ms_is_refused_before_anything_is_sent() {
    let node = Node::start(None, 0, Arc::new(|_| found(b"v", 1))).await;
    let c = Client::connect_with(&[&node.addr], config(Duration::from_secs(10)))
        .await
        .expect("connect");
    let sub_ms = regatta_client::ReadConsistency::Follower {
        max_staleness: Duration::from_micros(500),
    };
    let err = c.get_with(b"k", sub_ms).await.expect_err("refused");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = c
        .batch_get_with(&[b"k".to_vec()], sub_ms)
        .await
        .expect_err("refused");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(node.kv_requests(), 0);
}
