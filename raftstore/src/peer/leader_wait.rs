//! Requests that reach a replica while it knows no leader (an election is under way, or a
//! fresh group has not held its first one): held until a leader is known, then handled
//! again — proposed here when this replica won, or redirected with the leader's address —
//! or answered `NotLeader` without a hint once they waited `leader_wait_ms`. Without this
//! a client gets a hint-less `NotLeader`, backs off and tries again blind; a request held
//! here moves the moment the election ends, and the client's backoff is left for real
//! failures.
//!
//! Only requests that need the leader wait (writes, transactional commands, splits and
//! linearizable, lease and log reads); follower and read-your-writes reads never do. The
//! queue is bounded (`max_inflight_proposals`): beyond it a request is answered at once.
//! A held request was never proposed, so the `NotLeader` it may end with is definite.

use super::{Peer, Responder};
use crate::apply;
use crate::coprocessor::Coprocessor;
use regatta_engine::Engine;
use regatta_proto::kvrpcpb::{KvRequest, ReadConsistency, Request_oneof_cmd};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A request held for a leader, with the time it gives up.
struct Held {
    req: KvRequest,
    tx: Responder,
    deadline: Instant,
}

/// The requests held for a leader, in arrival order (as data: no clock, no raft).
#[derive(Default)]
pub(super) struct LeaderWait {
    held: VecDeque<Held>,
}

impl LeaderWait {
    /// Holds `req` until `deadline`; gives it back when `capacity` requests wait already.
    pub(super) fn hold(
        &mut self,
        req: KvRequest,
        tx: Responder,
        deadline: Instant,
        capacity: usize,
    ) -> Result<(), (KvRequest, Responder)> {
        if self.held.len() >= capacity {
            return Err((req, tx));
        }
        self.held.push_back(Held { req, tx, deadline });
        Ok(())
    }

    /// Every held request, oldest first (a leader is known: handle them again).
    pub(super) fn take_all(&mut self) -> Vec<(KvRequest, Responder)> {
        self.held.drain(..).map(|h| (h.req, h.tx)).collect()
    }

    /// The held requests whose deadline is at or before `now`.
    pub(super) fn take_expired(&mut self, now: Instant) -> Vec<Responder> {
        let mut expired = Vec::new();
        let mut kept = VecDeque::with_capacity(self.held.len());
        for h in self.held.drain(..) {
            if h.deadline <= now {
                expired.push(h.tx);
            } else {
                kept.push_back(h);
            }
        }
        self.held = kept;
        expired
    }

    /// Whether no request is held.
    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Whether `req` can be served only by the leader (so a replica that knows none holds
/// it): anything but a follower or read-your-writes read. Commands the layer above claims
/// are served by the leader only (see `coprocessor`).
pub(super) fn needs_leader(req: &KvRequest, cop: &dyn Coprocessor) -> bool {
    let request = req.get_request();
    let local_read = matches!(
        req.get_context().get_consistency(),
        ReadConsistency::FOLLOWER | ReadConsistency::READ_YOUR_WRITES
    );
    let split = matches!(request.cmd, Some(Request_oneof_cmd::split(_)));
    !local_read || apply::is_write(request, cop) || split || cop.kind(request).is_some()
}

impl<E: Engine> Peer<E> {
    /// Whether this replica neither leads nor knows who does.
    pub(super) fn knows_no_leader(&self) -> bool {
        !self.is_leader() && self.leader_meta().is_none()
    }

    /// Holds `req` until a leader is known (see the module doc); answered `NotLeader` at
    /// once when the queue is full.
    pub(super) fn hold_for_leader(&mut self, req: KvRequest, tx: Responder) {
        let wait = Duration::from_millis(self.ctx.cfg.leader_wait_ms);
        let deadline = self.ctx.clock.now() + wait;
        // No wait configured: the queue holds nothing.
        let capacity = if wait.is_zero() {
            0
        } else {
            self.ctx.cfg.max_inflight_proposals
        };
        if let Err((_, tx)) = self.leader_wait.hold(req, tx, deadline, capacity) {
            let _ = tx.send(self.not_leader().into_response());
        }
    }

    /// Once a leader is known, handles every held request again; whether there were any.
    pub(super) fn release_leader_waits(&mut self) -> bool {
        if self.leader_wait.is_empty() || self.knows_no_leader() || self.is_fenced() {
            return false;
        }
        for (req, tx) in self.leader_wait.take_all() {
            self.on_kv(req, tx);
        }
        true
    }

    /// Answers `NotLeader` (no hint: none is known) to the held requests past their wait.
    pub(super) fn expire_leader_waits(&mut self, now: Instant) {
        for tx in self.leader_wait.take_expired(now) {
            let _ = tx.send(self.not_leader().into_response());
        }
    }

    /// Answers every held request with `e` (the replica stops serving).
    pub(super) fn drain_leader_waits(&mut self, e: &crate::error::Error) {
        for (_, tx) in self.leader_wait.take_all() {
            let _ = tx.send(e.clone().into_response());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coprocessor::NoCoprocessor;
    use regatta_proto::kvrpcpb::{GetRequest, KvResponse, PutRequest, Request};
    use tokio::sync::oneshot;

    fn put() -> KvRequest {
        let mut r = Request::new();
        r.set_put(PutRequest::new());
        let mut kv = KvRequest::new();
        kv.set_request(r);
        kv
    }

    fn get(consistency: ReadConsistency) -> KvRequest {
        let mut r = Request::new();
        r.set_get(GetRequest::new());
        let mut kv = KvRequest::new();
        kv.set_request(r);
        kv.mut_context().set_consistency(consistency);
        kv
    }

    fn responder() -> (Responder, oneshot::Receiver<KvResponse>) {
        oneshot::channel()
    }

    #[test]
    fn only_requests_a_follower_cannot_serve_wait_for_a_leader() {
        assert!(needs_leader(&put(), &NoCoprocessor));
        assert!(needs_leader(
            &get(ReadConsistency::LINEARIZABLE),
            &NoCoprocessor
        ));
        assert!(needs_leader(&get(ReadConsistency::LEASE), &NoCoprocessor));
        assert!(needs_leader(
            &get(ReadConsistency::LOG_READ),
            &NoCoprocessor
        ));
        assert!(!needs_leader(
            &get(ReadConsistency::FOLLOWER),
            &NoCoprocessor
        ));
        assert!(!needs_leader(
            &get(ReadConsistency::READ_YOUR_WRITES),
            &NoCoprocessor
        ));
        let mut follower_put = put();
        follower_put
            .mut_context()
            .set_consistency(ReadConsistency::FOLLOWER);
        assert!(
            needs_leader(&follower_put, &NoCoprocessor),
            "a write always needs the leader"
        );
    }

    #[test]
    fn held_requests_leave_in_order_or_at_their_deadline_and_the_queue_is_bounded() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = LeaderWait::default();
        let mut rxs = Vec::new();
        for (i, wait) in [30, 10, 20].into_iter().enumerate() {
            let (tx, rx) = responder();
            let mut req = put();
            req.mut_context().set_seq(i as u64);
            assert!(w.hold(req, tx, t0 + ms(wait), 3).is_ok());
            rxs.push(rx);
        }
        let (tx, _rx) = responder();
        assert!(w.hold(put(), tx, t0 + ms(50), 3).is_err(), "full");
        assert!(w.take_expired(t0 + ms(5)).is_empty());
        assert_eq!(
            w.take_expired(t0 + ms(20)).len(),
            2,
            "the 10 ms and 20 ms ones"
        );
        let left = w.take_all();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0.get_context().get_seq(), 0);
        assert!(w.is_empty());
    }
}
