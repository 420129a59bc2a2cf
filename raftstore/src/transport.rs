//! [`Transport`]: how raft messages leave a store (the server's `TcpTransport` is the TCP
//! one; tests wrap it with fault filters).
//!
//! Contract: `send` never blocks and may drop (raft tolerates loss: it retries appends and
//! heartbeats); one region's messages to one store are delivered in send order or not at
//! all (messages of different regions may overtake each other).

use regatta_proto::raft_serverpb::RaftMessage;

/// Sends raft messages to other stores.
pub trait Transport: Send + Sync + 'static {
    /// Queues `msg` for `msg.to_peer.store_id`; best effort, never blocks.
    fn send(&self, msg: RaftMessage);
}
