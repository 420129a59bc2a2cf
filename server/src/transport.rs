//! [`TcpTransport`]: raft messages to other stores over TCP (the raftstore's
//! [`Transport`]).
//!
//! Contract: `send` never blocks and may drop (raft tolerates loss: it retries appends and
//! heartbeats); one region's messages to one store are delivered in send order or not at
//! all. With several raft threads (`StoreConfig::raft_threads`) each thread has its own
//! lane (sender tasks and connections) and a message takes its region's thread's lane, so
//! a thread's regions send without a hop to another thread; messages of regions on
//! different threads may then overtake each other.

use regatta_proto::framepb::Frame;
use regatta_proto::raft_serverpb::{RaftMessage, RaftMessageBatch};
use regatta_raftstore::pd::PdClient;
use regatta_raftstore::Transport;
use slog::{debug, Logger};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Messages queued per destination store before new ones are dropped.
const QUEUE_PER_STORE: usize = 8192;
/// Bytes per frame the sender batches at most.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Raft messages over TCP: per lane, one connection and one sender task per destination
/// store, addresses resolved through PD, reconnect with exponential backoff.
#[derive(Clone)]
pub struct TcpTransport {
    lanes: Arc<[Arc<Inner>]>,
}

struct Inner {
    pd: Arc<dyn PdClient>,
    rt: tokio::runtime::Handle,
    senders: Mutex<HashMap<u64, mpsc::Sender<RaftMessage>>>,
    logger: Logger,
}

impl TcpTransport {
    /// A transport whose sender tasks run on `rt`.
    pub fn new(pd: Arc<dyn PdClient>, rt: tokio::runtime::Handle, logger: Logger) -> Self {
        Self::with_lanes(pd, &[rt], logger)
    }

    /// A transport with one lane per runtime in `rts`: region `r`'s messages go through
    /// lane `r % rts.len()`, whose sender tasks run on that runtime.
    ///
    /// # Panics
    ///
    /// If `rts` is empty (a transport needs somewhere to run its senders).
    pub fn with_lanes(
        pd: Arc<dyn PdClient>,
        rts: &[tokio::runtime::Handle],
        logger: Logger,
    ) -> Self {
        assert!(!rts.is_empty(), "a transport needs a runtime");
        let lanes = rts
            .iter()
            .map(|rt| {
                Arc::new(Inner {
                    pd: pd.clone(),
                    rt: rt.clone(),
                    senders: Mutex::default(),
                    logger: logger.clone(),
                })
            })
            .collect();
        TcpTransport { lanes }
    }

    fn lane(&self, region_id: u64) -> &Arc<Inner> {
        &self.lanes[(region_id % self.lanes.len() as u64) as usize]
    }
}

impl Inner {
    fn sender(self: &Arc<Self>, store_id: u64) -> mpsc::Sender<RaftMessage> {
        let mut senders = self
            .senders
            .lock()
            .expect("sender map lock is never poisoned");
        if let Some(s) = senders.get(&store_id) {
            return s.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE_PER_STORE);
        senders.insert(store_id, tx.clone());
        self.rt.spawn(run_sender(self.clone(), store_id, rx));
        tx
    }
}

impl Transport for TcpTransport {
    fn send(&self, msg: RaftMessage) {
        let store_id = msg.get_to_peer().get_store_id();
        let lane = self.lane(msg.get_region_id());
        if lane.sender(store_id).try_send(msg).is_err() {
            debug!(lane.logger, "raft message dropped: queue full"; "to_store" => store_id);
        }
    }
}

async fn run_sender(inner: Arc<Inner>, store_id: u64, mut rx: mpsc::Receiver<RaftMessage>) {
    let mut backoff = Duration::from_millis(20);
    let mut addr: Option<String> = None;
    loop {
        let target = match &addr {
            Some(a) => a.clone(),
            None => match inner.pd.get_store(store_id).await {
                Ok(store) => {
                    addr = Some(store.get_address().to_string());
                    store.get_address().to_string()
                }
                Err(e) => {
                    debug!(inner.logger, "cannot resolve store"; "store_id" => store_id, "error" => %e);
                    drain(&mut rx);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let stream = match TcpStream::connect(&target).await {
            Ok(s) => s,
            Err(e) => {
                debug!(inner.logger, "connect to store failed"; "store_id" => store_id, "addr" => &target, "error" => %e);
                // Messages queued while a store is down are stale by the time it is back.
                drain(&mut rx);
                addr = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        backoff = Duration::from_millis(20);
        let mut stream = stream;
        let mut buf = Vec::new();
        loop {
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut batch = RaftMessageBatch::new();
            let mut bytes = first.get_message().len();
            batch.mut_msgs().push(first);
            while bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(m) => {
                        bytes += m.get_message().len();
                        batch.mut_msgs().push(m);
                    }
                    Err(_) => break,
                }
            }
            let mut frame = Frame::new();
            frame.set_raft(batch);
            buf.clear();
            if regatta_proto::frame::encode_into(&frame, &mut buf).is_err() {
                continue;
            }
            if stream.write_all(&buf).await.is_err() {
                break;
            }
        }
    }
}

fn drain(rx: &mut mpsc::Receiver<RaftMessage>) {
    while rx.try_recv().is_ok() {}
}
