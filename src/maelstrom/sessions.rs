//! Client sessions: the requests of one client (one `src`) are served one after another,
//! in the order they arrived, each after the previous one was answered; different clients
//! are served concurrently.
//!
//! A harness may write a client's lines at once without waiting for answers (the
//! published tests do: `write` then `read`, `seed_state` then `take_snapshot`). Served
//! concurrently, the read could be ordered before the write it follows — linearizable,
//! since the two overlap, but not what the client meant. In order, a pipelined client
//! sees its requests take effect as it wrote them (as a Redis or TCP pipeline does), and
//! a client that waits for each answer, as Maelstrom's do, sees no difference.
//!
//! Each client with requests queued has a task of its own; it ends once the client's
//! queue has been idle for [`IDLE`]. A queue holds at most [`QUEUE`] requests: beyond it a
//! request is answered at once with error 11 (never executed: definite), and so is a
//! request from one client more than [`MAX_SESSIONS`] with a task. When stdin ends
//! the node answers what it has taken before it stops ([`Sessions::drain`]), so lines
//! piped in (`cat test | regatta maelstrom`) get their answers.

use super::{serve_client, Fail, Node};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Requests one client may have queued.
const QUEUE: usize = 1024;

/// Clients with requests queued or running at once; a request from one more is answered
/// with error 11.
const MAX_SESSIONS: usize = 10_000;

/// How long a client's task waits for its next request before it ends.
const IDLE: Duration = Duration::from_secs(5);

/// The queues of the clients with a running task, by client id (`src`).
#[derive(Default)]
pub(super) struct Sessions {
    queues: Mutex<HashMap<String, mpsc::Sender<Value>>>,
    /// Requests taken and not answered yet.
    unanswered: AtomicUsize,
}

impl Sessions {
    /// Waits until every request taken has been answered, or `limit` has passed; then
    /// ends every client's task (each one ends once its queue is empty).
    pub(super) async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.unanswered.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.close();
    }

    /// Ends every client's task once its queue is empty (takes no more requests).
    pub(super) fn close(&self) {
        self.queues.lock().expect("sessions lock").clear();
    }
}

/// Queues a client request (`body`, from `src`) behind the client's earlier ones.
pub(super) fn dispatch(node: &Arc<Node>, src: String, body: Value) {
    let mut queues = node.sessions.queues.lock().expect("sessions lock");
    node.sessions.unanswered.fetch_add(1, Ordering::AcqRel);
    let body = match queues.get(&src) {
        Some(tx) => match tx.try_send(body) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(body)) => {
                drop(queues);
                node.sessions.unanswered.fetch_sub(1, Ordering::AcqRel);
                let msg_id = body.get("msg_id").cloned().unwrap_or(Value::Null);
                node.fail(
                    &src,
                    &msg_id,
                    Fail(11, format!("{QUEUE} requests of {src} queued already")),
                );
                return;
            }
            // The task ended (it removes its entry first, so this is not expected).
            Err(mpsc::error::TrySendError::Closed(body)) => body,
        },
        None => body,
    };
    if queues.len() >= MAX_SESSIONS {
        drop(queues);
        node.sessions.unanswered.fetch_sub(1, Ordering::AcqRel);
        let msg_id = body.get("msg_id").cloned().unwrap_or(Value::Null);
        let busy = Fail(11, format!("{MAX_SESSIONS} clients have requests queued"));
        node.fail(&src, &msg_id, busy);
        return;
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    tx.try_send(body).expect("a new queue has room");
    queues.insert(src.clone(), tx);
    node.spawn(serve_session(node.clone(), src, rx));
}

/// Serves `src`'s requests in order until its queue stays idle for [`IDLE`].
async fn serve_session(node: Arc<Node>, src: String, mut rx: mpsc::Receiver<Value>) {
    loop {
        let body = match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(body)) => body,
            Ok(None) => return,
            Err(_) => {
                // Requests are queued under the lock, so once the queue is found empty
                // under it and the entry removed, none can arrive for this task.
                let mut queues = node.sessions.queues.lock().expect("sessions lock");
                match rx.try_recv() {
                    Ok(body) => body,
                    Err(_) => {
                        queues.remove(&src);
                        return;
                    }
                }
            }
        };
        serve_client(node.clone(), src.clone(), body).await;
        node.sessions.unanswered.fetch_sub(1, Ordering::AcqRel);
    }
}
