//! PD's TCP service: `pd_request` frames in, `pd_response` frames out (same framing as
//! store traffic). A bad frame closes only its connection; so does one that stays idle or
//! stalls mid-frame past [`PdConfig::inbound`]'s deadlines. All connections buffer their
//! frames in one read budget, so clients that declare large frames and never send them
//! cannot pin PD's memory. A connection has at most [`MAX_INFLIGHT_PER_CONN`] requests in
//! PD at once; beyond it requests are answered "busy", and a client that does not even
//! read those answers is disconnected.

use crate::actor::{AllRegions, PdActor, PdCall};
use crate::error::Error;
use crate::state::{PdConfig, PdState};
use actix::{Actor, Addr, Arbiter};
use regatta_proto::frame;
use regatta_proto::framepb::{Frame, Frame_oneof_body};
use regatta_proto::pdpb::{PdError, PdResponse, RegionWithLeader};
use regatta_proto::rpc::{accept_until, serve_connection, InboundLimits, ReadBudget};
use slog::{debug, info, warn, Logger};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// A running PD.
pub struct PdHandle {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The actor (for in-process callers).
    pub actor: Addr<PdActor>,
    shutdown: watch::Sender<bool>,
    arbiter: Arbiter,
}

impl PdHandle {
    /// The region map as PD knows it now.
    pub async fn regions(&self) -> Result<Vec<RegionWithLeader>, Error> {
        self.actor
            .send(AllRegions)
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Stops serving and stops the actor; returns once the actor is gone and its state
    /// (the lazily written region map included) is on disk, so the same data directory
    /// can be opened again at once.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        self.arbiter.stop();
        let arbiter = self.arbiter;
        let _ = tokio::task::spawn_blocking(move || arbiter.join()).await;
    }
}

/// Opens PD's state in `config.data_dir` and serves it on `addr`. Must run inside an actix
/// system; the actor gets its own arbiter.
pub async fn start(config: PdConfig, addr: &str, logger: Logger) -> Result<PdHandle, Error> {
    let state = PdState::open(config.clone())?;
    let bootstrapped = state.is_bootstrapped();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let arbiter = Arbiter::new();
    let actor = PdActor::start_in_arbiter(&arbiter.handle(), move |_| PdActor::new(state));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let logger = logger.new(slog::o!("component" => "pd"));
    info!(logger, "PD started"; "addr" => %local, "bootstrapped" => bootstrapped,
        "initial_stores" => config.initial_stores, "initial_regions" => config.initial_regions);
    tokio::spawn(serve(
        listener,
        actor.clone(),
        config.inbound.clone(),
        shutdown_rx,
        logger,
    ));
    Ok(PdHandle {
        addr: local,
        actor,
        shutdown,
        arbiter,
    })
}

async fn serve(
    listener: TcpListener,
    actor: Addr<PdActor>,
    limits: InboundLimits,
    shutdown: watch::Receiver<bool>,
    logger: Logger,
) {
    let budget = ReadBudget::new(limits.max_buffered);
    let mut stop = shutdown.clone();
    accept_until(
        &listener,
        &mut stop,
        |stream, peer| {
            let logger = logger.new(slog::o!("conn" => peer.to_string()));
            tokio::spawn(handle_conn(
                stream,
                actor.clone(),
                limits.clone(),
                budget.clone(),
                shutdown.clone(),
                logger,
            ));
        },
        |e| warn!(logger, "accept failed"; "error" => %e),
    )
    .await;
}

/// Requests one connection may have in PD at once (sent to the actor, or answered but
/// waiting for room in the connection's writer queue); beyond it a request is answered
/// "busy" at once.
const MAX_INFLIGHT_PER_CONN: usize = 4096;

/// The response frame `id` carrying `resp`.
fn answer(id: u64, resp: PdResponse) -> Frame {
    let mut out = Frame::new();
    out.id = id;
    out.set_pd_response(resp);
    out
}

/// A response that carries only the error `message`.
fn pd_error(message: &str) -> PdResponse {
    let mut e = PdError::new();
    e.set_message(message.into());
    let mut r = PdResponse::new();
    r.set_error(e);
    r
}

async fn handle_conn(
    stream: TcpStream,
    actor: Addr<PdActor>,
    limits: InboundLimits,
    budget: ReadBudget,
    shutdown: watch::Receiver<bool>,
    logger: Logger,
) {
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_PER_CONN));
    let closed = serve_connection(stream, &limits, &budget, shutdown, |frame, tx| {
        let id = frame.id;
        let Some(Frame_oneof_body::pd_request(req)) = frame.body else {
            return Err("not a PD request".into());
        };
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            // Over the bound: answer at once, queuing no work. A client whose answers
            // cannot even be queued is not reading them: close its connection.
            return match frame::encode(&answer(
                id,
                pd_error("PD is busy: too many requests in flight on this connection"),
            )) {
                Ok(bytes) => tx.try_send(bytes).map_err(|_| {
                    format!(
                        "{MAX_INFLIGHT_PER_CONN} requests in flight and the answer queue is \
                         full: the client does not read its answers"
                    )
                }),
                Err(e) => Err(e.to_string()),
            };
        };
        let (actor, tx) = (actor.clone(), tx.clone());
        tokio::spawn(async move {
            let resp = actor
                .send(PdCall(req))
                .await
                .unwrap_or_else(|_| pd_error("PD is shutting down"));
            if let Ok(bytes) = frame::encode(&answer(id, resp)) {
                let _ = tx.send(bytes).await;
            }
            drop(permit); // the answer is queued (or the connection is gone)
        });
        Ok(())
    })
    .await;
    if closed.is_bad_input() {
        warn!(logger, "connection closed"; "reason" => %closed);
    } else {
        debug!(logger, "connection closed"; "reason" => %closed);
    }
}
