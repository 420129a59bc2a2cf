//! The store's raft threads (`StoreConfig::raft_threads`): each an actix arbiter, a thread
//! with a single-threaded runtime. Region `r`'s actor lives on thread `r % n`, and so do
//! its raft sender tasks (`TcpTransport`'s lane `r % n`); the listener runs on thread 0,
//! which deals the connections it accepts to the threads in turn. A message or request
//! read on one thread for a region on another crosses to it through the actor's mailbox,
//! and its answer crosses back.

use actix::{Arbiter, ArbiterHandle};
use regatta_raftstore::Error;
use tokio::runtime::Handle;

/// The running threads (owned by the store, which stops and joins them).
pub(crate) struct RaftThreads {
    arbiters: Vec<Arbiter>,
    handles: RaftHandles,
}

/// Where to start a region's actor and where to serve a connection.
#[derive(Clone)]
pub(crate) struct RaftHandles {
    arbiters: Vec<ArbiterHandle>,
    runtimes: Vec<Handle>,
}

impl RaftThreads {
    /// Starts `n` (≥ 1) threads and waits until each runs.
    pub(crate) async fn start(n: usize) -> Result<RaftThreads, Error> {
        let mut threads = RaftThreads {
            arbiters: Vec::with_capacity(n),
            handles: RaftHandles {
                arbiters: Vec::with_capacity(n),
                runtimes: Vec::with_capacity(n),
            },
        };
        for _ in 0..n.max(1) {
            let arbiter = Arbiter::new();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let started = arbiter.spawn(async move {
                let _ = tx.send(Handle::current());
            });
            let runtime = match rx.await {
                Ok(rt) if started => rt,
                _ => {
                    arbiter.stop();
                    threads.stop();
                    return Err(Error::io("start the store's raft threads")(
                        std::io::Error::other("an arbiter did not start"),
                    ));
                }
            };
            threads.handles.arbiters.push(arbiter.handle());
            threads.handles.runtimes.push(runtime);
            threads.arbiters.push(arbiter);
        }
        Ok(threads)
    }

    /// Handles to the threads.
    pub(crate) fn handles(&self) -> &RaftHandles {
        &self.handles
    }

    /// Asks every thread to stop (their actors go with them).
    pub(crate) fn stop(&self) {
        for a in &self.arbiters {
            a.stop();
        }
    }

    /// Stops every thread and waits for them (off the async runtime), after a failed
    /// start: whatever their actors held is released when this returns.
    pub(crate) async fn shut(self) {
        self.stop();
        let _ = tokio::task::spawn_blocking(move || self.join()).await;
    }

    /// Waits for every thread to end (blocking); false if one panicked.
    pub(crate) fn join(self) -> bool {
        // Every thread is joined, even after one that panicked.
        let joined: Vec<bool> = self
            .arbiters
            .into_iter()
            .map(|a| a.join().is_ok())
            .collect();
        joined.into_iter().all(|ok| ok)
    }
}

impl RaftHandles {
    /// The thread region `region_id`'s actor lives on.
    pub(crate) fn for_region(&self, region_id: u64) -> &ArbiterHandle {
        &self.arbiters[(region_id % self.arbiters.len() as u64) as usize]
    }

    /// Thread 0's runtime: the listener's.
    pub(crate) fn first(&self) -> &Handle {
        &self.runtimes[0]
    }

    /// Every thread's runtime, in order (connections are dealt over them).
    pub(crate) fn runtimes(&self) -> &[Handle] {
        &self.runtimes
    }
}
