//! Async frame I/O and a multiplexed request/response connection over TCP.
//!
//! One [`Connection`] carries many concurrent calls: each request frame gets a fresh id,
//! the response frame echoes it. A writer task batches queued frames into few `write`s; a
//! reader task routes responses. When the connection dies every pending call fails with
//! [`RpcError::Disconnected`] and the connection reports itself broken, so callers reconnect.

mod inbound;

pub use inbound::{InboundLimits, ReadBudget};

/// Accepts connections on `listener` and hands each to `on_conn` (with its peer address)
/// until `shutdown` changes; an accept error goes to `on_error` and is retried after a
/// short pause (a full fd table must not spin the loop). The store's and PD's servers.
pub async fn accept_until(
    listener: &tokio::net::TcpListener,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    mut on_conn: impl FnMut(TcpStream, std::net::SocketAddr),
    mut on_error: impl FnMut(std::io::Error),
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => on_conn(stream, peer),
            Err(e) => {
                on_error(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

use crate::frame::{self, FrameError, MAX_FRAME_LEN};
use crate::framepb::{Frame, Frame_oneof_body};
use inbound::{FrameReader, ReadError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

/// Errors of a call.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Could not connect to the address.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke before the answer came.
    #[error("connection to {addr} lost")]
    Disconnected {
        /// The address.
        addr: String,
    },
    /// No answer within the deadline.
    #[error("call to {addr} timed out after {after:?}")]
    Timeout {
        /// The address.
        addr: String,
        /// The deadline.
        after: Duration,
    },
    /// The peer sent something that is not a frame.
    #[error("bad frame from {addr}: {source}")]
    Frame {
        /// The address.
        addr: String,
        /// What was wrong.
        #[source]
        source: FrameError,
    },
}

/// Bytes one writer turn gathers from its queue before it writes (bounds the buffer).
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// Spawns the task that writes encoded frames from `rx` to `wr`, joining whatever is queued
/// (up to 1 MiB) into one `write`; it yields once before gathering, so frames that other
/// ready tasks are about to queue go in the same `write`. It ends when every sender is gone or a write fails.
pub fn spawn_frame_writer<W>(
    mut wr: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> tokio::task::JoinHandle<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(first) = rx.recv().await {
            buf.clear();
            buf.extend_from_slice(&first);
            // Let the tasks that are ready to send queue their frames first: one `write`
            // for a whole turn's frames instead of one per frame (a closed loop of many
            // callers otherwise writes each request alone, and the syscalls dominate).
            tokio::task::yield_now().await;
            while buf.len() < WRITE_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(more) => buf.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
    })
}

/// Why [`serve_connection`] returned.
#[derive(Debug)]
pub enum Closed {
    /// The peer closed the connection.
    Eof,
    /// The server is shutting down.
    Shutdown,
    /// Reading failed (an end of stream in the middle of a frame included).
    Io(std::io::Error),
    /// No frame started within the idle deadline.
    Idle(Duration),
    /// The peer stopped sending in the middle of a frame, or the server's read budget
    /// stayed exhausted, for the stall deadline.
    Stalled {
        /// Bytes of the frame that arrived.
        got: usize,
        /// Bytes the frame declared (0 when its length prefix was incomplete).
        declared: usize,
        /// The deadline.
        after: Duration,
    },
    /// The peer sent something that is not a frame (or an oversized one).
    BadFrame(FrameError),
    /// The handler refused a frame.
    Refused(String),
}

impl Closed {
    /// Whether the peer sent bad input (worth a warning), as opposed to an ordinary end.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Closed::BadFrame(_) | Closed::Refused(_) | Closed::Stalled { .. }
        )
    }
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Eof => write!(f, "closed by peer"),
            Closed::Shutdown => write!(f, "server shutting down"),
            Closed::Io(e) => write!(f, "read failed: {e}"),
            Closed::Idle(after) => write!(f, "idle for {after:?}"),
            Closed::Stalled {
                got,
                declared,
                after,
            } => write!(
                f,
                "stalled for {after:?} mid-frame ({got} of {declared} bytes arrived)"
            ),
            Closed::BadFrame(e) => write!(f, "bad frame: {e}"),
            Closed::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

/// Serves one accepted connection: reads frames within `limits` (buffering them in
/// `budget`, shared by the server's connections) and hands each to `on_frame` with the
/// sender of the connection's writer task, until the peer closes, goes idle or stalls, a
/// frame is bad, `on_frame` refuses one, or `shutdown` turns true.
pub async fn serve_connection<F>(
    stream: TcpStream,
    limits: &InboundLimits,
    budget: &ReadBudget,
    mut shutdown: watch::Receiver<bool>,
    mut on_frame: F,
) -> Closed
where
    F: FnMut(Frame, &mpsc::Sender<Vec<u8>>) -> Result<(), String>,
{
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(QUEUE_FRAMES);
    spawn_frame_writer(wr, rx);
    let mut reader = FrameReader::bounded(BufReader::new(rd), limits, budget.clone());
    loop {
        let read = tokio::select! {
            r = reader.next() => r,
            _ = shutdown.changed() => return Closed::Shutdown,
        };
        let frame = match read {
            Ok(Some(f)) => f,
            Ok(None) => return Closed::Eof,
            Err(ReadError::Frame(e)) => return Closed::BadFrame(e),
            Err(ReadError::Io(e)) => return Closed::Io(e),
            Err(ReadError::Idle(after)) => return Closed::Idle(after),
            Err(ReadError::Stalled {
                got,
                declared,
                after,
            }) => {
                return Closed::Stalled {
                    got,
                    declared,
                    after,
                }
            }
        };
        if let Err(reason) = on_frame(frame, &tx) {
            return Closed::Refused(reason);
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Frame>>>>;

/// A multiplexed client connection. Cheap to clone; all clones share the socket.
#[derive(Clone)]
pub struct Connection {
    addr: String,
    next_id: Arc<AtomicU64>,
    pending: Pending,
    tx: mpsc::Sender<Vec<u8>>,
    broken: Arc<AtomicBool>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Bound of frames queued for the writer task of one connection.
pub const QUEUE_FRAMES: usize = 4096;

impl Connection {
    /// Connects to `addr` within `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Connection, RpcError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(RpcError::Connect {
                    addr: addr.to_string(),
                    source,
                })
            }
            Err(_) => {
                return Err(RpcError::Timeout {
                    addr: addr.to_string(),
                    after: timeout,
                })
            }
        };
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel::<Vec<u8>>(QUEUE_FRAMES);
        let pending: Pending = Arc::default();
        let broken = Arc::new(AtomicBool::new(false));
        let conn = Connection {
            addr: addr.to_string(),
            next_id: Arc::new(AtomicU64::new(1)),
            pending: pending.clone(),
            tx,
            broken: broken.clone(),
        };
        let wbroken = broken.clone();
        let writer = spawn_frame_writer(wr, rx);
        tokio::spawn(async move {
            let _ = writer.await;
            wbroken.store(true, Ordering::SeqCst);
        });
        tokio::spawn(async move {
            // The answers of a server we chose to call: the frame limit, no deadlines (each
            // call has its own).
            let mut reader = FrameReader::unbounded(BufReader::new(rd), MAX_FRAME_LEN);
            while let Ok(Some(frame)) = reader.next().await {
                let waiter = pending
                    .lock()
                    .expect("pending map lock is never poisoned")
                    .remove(&frame.id);
                if let Some(w) = waiter {
                    let _ = w.send(frame);
                }
            }
            broken.store(true, Ordering::SeqCst);
            // Dropping the senders fails every pending call with Disconnected.
            pending
                .lock()
                .expect("pending map lock is never poisoned")
                .clear();
        });
        Ok(conn)
    }

    /// The remote address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection is known dead (reconnect instead of calling).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst) || self.tx.is_closed()
    }

    /// Sends a request with body `body` and waits up to `timeout` for its response frame.
    pub async fn call(&self, body: Frame_oneof_body, timeout: Duration) -> Result<Frame, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Frame::new();
        frame.id = id;
        frame.body = Some(body);
        let bytes = frame::encode(&frame).map_err(|source| RpcError::Frame {
            addr: self.addr.clone(),
            source,
        })?;
        let (otx, orx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending map lock is never poisoned")
            .insert(id, otx);
        let disconnected = || RpcError::Disconnected {
            addr: self.addr.clone(),
        };
        if self.is_broken() || self.tx.send(bytes).await.is_err() {
            self.forget(id);
            return Err(disconnected());
        }
        match tokio::time::timeout(timeout, orx).await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(_)) => Err(disconnected()),
            Err(_) => {
                self.forget(id);
                Err(RpcError::Timeout {
                    addr: self.addr.clone(),
                    after: timeout,
                })
            }
        }
    }

    fn forget(&self, id: u64) {
        self.pending
            .lock()
            .expect("pending map lock is never poisoned")
            .remove(&id);
    }
}
