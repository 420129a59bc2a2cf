//! The store's TCP server: raft batches from other stores and client requests, on the
//! same port, as length-prefixed [`Frame`]s.
//!
//! Bad input never takes the store down: an undecodable or oversized frame closes that
//! one connection; a request for an unknown region gets `RegionNotFound`. What a connection
//! may buffer, and how long it may stay idle or stall mid-frame, is bounded by
//! [`InboundLimits`] (one read budget for all the store's connections).

use regatta_proto::framepb::{Frame, Frame_oneof_body};
use regatta_proto::raft_serverpb::RaftMessage;
use regatta_proto::rpc::{accept_until, serve_connection, InboundLimits, ReadBudget};
use regatta_raftstore::Error;
use regatta_raftstore::Router;
use slog::{debug, warn, Logger};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// Accepts connections until `shutdown` turns true; then every connection closes too.
/// Connections are dealt over `runtimes` in turn (the store's raft threads; the first is
/// the one this runs on), each served where it was dealt.
pub async fn serve(
    listener: TcpListener,
    runtimes: Vec<tokio::runtime::Handle>,
    router: Router,
    unknown: mpsc::Sender<RaftMessage>,
    limits: InboundLimits,
    shutdown: watch::Receiver<bool>,
    logger: Logger,
) {
    let budget = ReadBudget::new(limits.max_buffered);
    let mut stop = shutdown.clone();
    let mut next = 0usize;
    accept_until(
        &listener,
        &mut stop,
        |stream, peer| {
            let logger = logger.new(slog::o!("conn" => peer.to_string()));
            let conn = (
                router.clone(),
                unknown.clone(),
                limits.clone(),
                budget.clone(),
                shutdown.clone(),
            );
            next = (next + 1) % runtimes.len().max(1);
            if next == 0 {
                let (router, unknown, limits, budget, shutdown) = conn;
                tokio::spawn(handle_conn(
                    stream, router, unknown, limits, budget, shutdown, logger,
                ));
                return;
            }
            // A socket belongs to the reactor of the runtime that registered it: move it
            // to the other thread's.
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    warn!(logger, "handing a connection to a raft thread failed"; "error" => %e);
                    return;
                }
            };
            runtimes[next].spawn(async move {
                match TcpStream::from_std(stream) {
                    Ok(stream) => {
                        let (router, unknown, limits, budget, shutdown) = conn;
                        handle_conn(stream, router, unknown, limits, budget, shutdown, logger).await
                    }
                    Err(e) => {
                        warn!(logger, "taking a connection on a raft thread failed"; "error" => %e)
                    }
                }
            });
        },
        |e| warn!(logger, "accept failed"; "error" => %e),
    )
    .await;
}

async fn handle_conn(
    stream: TcpStream,
    router: Router,
    unknown: mpsc::Sender<RaftMessage>,
    limits: InboundLimits,
    budget: ReadBudget,
    shutdown: watch::Receiver<bool>,
    logger: Logger,
) {
    let closed = serve_connection(stream, &limits, &budget, shutdown, |frame, tx| {
        on_frame(frame, tx, &router, &unknown, &logger)
    })
    .await;
    // Bad input loudly, ordinary ends quietly.
    if closed.is_bad_input() {
        warn!(logger, "connection closed"; "reason" => %closed);
    } else {
        debug!(logger, "connection closed"; "reason" => %closed);
    }
}

fn on_frame(
    frame: Frame,
    tx: &mpsc::Sender<Vec<u8>>,
    router: &Router,
    unknown: &mpsc::Sender<RaftMessage>,
    logger: &Logger,
) -> Result<(), String> {
    let id = frame.id;
    match frame.body {
        Some(Frame_oneof_body::raft(mut batch)) => {
            for m in batch.take_msgs().into_iter() {
                let rid = m.get_region_id();
                match router.inbox(rid) {
                    Some(inbox) => {
                        if inbox.try_send_raft(m).is_err() {
                            // Raft retransmits; a flood must not grow the mailbox.
                            debug!(logger, "raft message dropped: the region's inbox is full"; "region_id" => rid);
                        }
                    }
                    None => {
                        debug!(logger, "raft message for unknown region"; "region_id" => rid);
                        // The store decides whether to start a replica for it; a full
                        // queue drops it (raft retransmits).
                        let _ = unknown.try_send(m);
                    }
                }
            }
        }
        Some(Frame_oneof_body::kv_request(req)) => {
            // Lease, follower and read-your-writes reads the replica's published state
            // proves safe are answered right here (see `local_reader`).
            let local = router
                .delegate(req.get_context().get_region_id())
                .and_then(|d| d.try_read(&req));
            if let Some(resp) = local {
                let mut out = Frame::new();
                out.id = id;
                out.set_kv_response(resp);
                if let Ok(bytes) = regatta_proto::frame::encode(&out) {
                    if let Err(mpsc::error::TrySendError::Full(bytes)) = tx.try_send(bytes) {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let _ = tx.send(bytes).await;
                        });
                    }
                }
                return Ok(());
            }
            let router = router.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let rid = req.get_context().get_region_id();
                let resp = match router.inbox(rid) {
                    Some(inbox) => {
                        let (otx, orx) = oneshot::channel();
                        match inbox.try_send_kv(req, otx) {
                            Ok(()) => orx.await.unwrap_or_else(|_| {
                                Error::Timeout(format!("region {rid} dropped the request"))
                                    .into_response()
                            }),
                            Err(_) => Error::ServerIsBusy(format!(
                                "region {rid}: {} requests and messages queued",
                                inbox.queued()
                            ))
                            .into_response(),
                        }
                    }
                    None => Error::RegionNotFound(rid).into_response(),
                };
                let mut out = Frame::new();
                out.id = id;
                out.set_kv_response(resp);
                if let Ok(bytes) = regatta_proto::frame::encode(&out) {
                    let _ = tx.send(bytes).await;
                }
            });
        }
        _ => return Err("unexpected frame kind".into()),
    }
    Ok(())
}
