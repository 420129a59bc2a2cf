//! [`Wire`]: how the client reaches stores and PD — one request frame to an address, its
//! answer. [`TcpWire`] (the default) keeps one multiplexed TCP [`Connection`] per address.
//!
//! The seam exists so a host that carries the cluster's traffic itself can run the whole
//! client (routing, retries, TSO batching, transactions) over its own channel. The
//! JSON-lines node (`regatta maelstrom`) is one: its nodes talk only through the test
//! harness's lines, so its client sends each frame as a line to the node that should
//! serve it, and partitions the harness makes cut the client's traffic too.

use regatta_proto::framepb::{Frame, Frame_oneof_body};
use regatta_proto::rpc::Connection;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a call over a [`Wire`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Nothing was sent: the address could not be reached (the client may try another
    /// replica, and a deadline with only these is [`crate::Error::Connection`]).
    Unreachable(String),
    /// The request may have been delivered, but no answer came (lost, timed out, the
    /// connection broke): its outcome is unknown.
    NoAnswer(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Unreachable(r) => write!(f, "unreachable: {r}"),
            WireError::NoAnswer(r) => write!(f, "no answer: {r}"),
        }
    }
}

/// The future of one [`Wire::call`].
pub type WireFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Frame_oneof_body, WireError>> + Send + 'a>>;

/// Carries the client's requests. `addr` is a store's address as PD lists it, or one of
/// the PD addresses the client was given; `body` is a `kv_request` or a `pd_request`, and
/// the answer the matching `kv_response` / `pd_response`. Once the request is sent, an
/// implementation waits at most `timeout` for the answer (then fails with
/// [`WireError::NoAnswer`]); getting it sent (connecting) has bounds of its own. It may be
/// called from many tasks at once.
pub trait Wire: Send + Sync + 'static {
    /// Sends `body` to `addr` and waits up to `timeout` for its answer.
    fn call<'a>(
        &'a self,
        addr: &'a str,
        body: Frame_oneof_body,
        timeout: Duration,
    ) -> WireFuture<'a>;
}

/// The default [`Wire`]: one multiplexed TCP connection per address, opened on first use
/// and opened again once it breaks.
pub struct TcpWire {
    connect_timeout: Duration,
    /// Open connections by address (a plain lock: it is never held across an await).
    conns: Mutex<HashMap<String, Connection>>,
    /// Per address, held while connecting to it, so that concurrent callers make one
    /// connection, not many (and a slow address holds up no other).
    connecting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl TcpWire {
    /// A wire whose connects give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> TcpWire {
        TcpWire {
            connect_timeout,
            conns: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashMap::new()),
        }
    }

    fn open_connection(&self, addr: &str) -> Option<Connection> {
        self.conns
            .lock()
            .expect("connection map lock")
            .get(addr)
            .filter(|c| !c.is_broken())
            .cloned()
    }

    async fn connection(&self, addr: &str) -> Result<Connection, WireError> {
        if let Some(c) = self.open_connection(addr) {
            return Ok(c);
        }
        let gate = self
            .connecting
            .lock()
            .expect("connecting map lock")
            .entry(addr.to_string())
            .or_default()
            .clone();
        let _connecting = gate.lock().await;
        // Another caller may have connected while this one waited.
        if let Some(c) = self.open_connection(addr) {
            return Ok(c);
        }
        let c = Connection::connect(addr, self.connect_timeout)
            .await
            .map_err(|e| WireError::Unreachable(e.to_string()))?;
        self.conns
            .lock()
            .expect("connection map lock")
            .insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

impl Wire for TcpWire {
    fn call<'a>(
        &'a self,
        addr: &'a str,
        body: Frame_oneof_body,
        timeout: Duration,
    ) -> WireFuture<'a> {
        Box::pin(async move {
            let conn = self.connection(addr).await?;
            let frame: Frame = conn
                .call(body, timeout)
                .await
                .map_err(|e| WireError::NoAnswer(e.to_string()))?;
            frame
                .body
                .ok_or_else(|| WireError::NoAnswer(format!("{addr} sent an empty frame")))
        })
    }
}
