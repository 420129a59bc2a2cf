//! [`TsoBatcher`]: timestamps from PD's oracle, with concurrent requests sharing one PD
//! call (TiKV client-go's `tsoDispatcher`, without its long-lived stream).
//!
//! Invariant: every caller gets a distinct timestamp that PD handed out, so each is greater
//! than any timestamp handed out before the call began (PD's TSO is strictly increasing,
//! across its restarts too). How: a caller queues a one-shot slot; one flusher task at a
//! time takes every queued slot (at most [`MAX_TSO_BATCH`]), asks PD for that many
//! consecutive timestamps and hands them out in queue order, then looks for slots queued
//! meanwhile. The flusher is a task of its own, so a caller that gives up (its future
//! dropped) never strands the others.

use crate::client::Client;
use crate::error::{Error, PdError, Result};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Most timestamps asked of PD in one call (PD's own bound).
pub(crate) const MAX_TSO_BATCH: usize = 65_536;

type Slot = oneshot::Sender<Result<u64>>;

/// The queue of timestamp requests: one per raw client, shared by every batcher over it.
pub(crate) type TsoQueue = Arc<Mutex<Queue>>;

#[derive(Default)]
pub(crate) struct Queue {
    waiting: Vec<Slot>,
    /// Whether a flusher task is running (it will see every slot queued before it exits).
    flushing: bool,
}

/// Batches timestamp requests of one client.
#[derive(Clone)]
pub(crate) struct TsoBatcher {
    client: Client,
    queue: TsoQueue,
}

impl TsoBatcher {
    /// A batcher asking the PD of `client`, on the client's shared queue.
    pub(crate) fn new(client: Client) -> TsoBatcher {
        TsoBatcher {
            queue: client.tso_queue(),
            client,
        }
    }

    /// One fresh timestamp (one attempt: a PD failure is [`Error::Pd`]).
    pub(crate) async fn get(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        let start_flusher = {
            let mut q = self.queue.lock().expect("tso queue lock");
            q.waiting.push(tx);
            !std::mem::replace(&mut q.flushing, true)
        };
        if start_flusher {
            let me = self.clone();
            tokio::spawn(async move { me.flush().await });
        }
        rx.await.map_err(|_| {
            Error::Pd(PdError::Unreachable(
                "the timestamp request was dropped".into(),
            ))
        })?
    }

    /// Serves queued slots until the queue is empty.
    async fn flush(self) {
        loop {
            let batch: Vec<Slot> = {
                let mut q = self.queue.lock().expect("tso queue lock");
                if q.waiting.is_empty() {
                    q.flushing = false;
                    return;
                }
                let n = q.waiting.len().min(MAX_TSO_BATCH);
                q.waiting.drain(..n).collect()
            };
            let count = u32::try_from(batch.len()).expect("a batch is at most 65,536 slots");
            match self.client.pd().get_ts_batch(count).await {
                Ok(first) => {
                    for (i, slot) in batch.into_iter().enumerate() {
                        // A caller that gave up dropped its receiver: nothing to do.
                        let _ = slot.send(Ok(first + i as u64));
                    }
                }
                Err(e) => {
                    for slot in batch {
                        let _ = slot.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}
