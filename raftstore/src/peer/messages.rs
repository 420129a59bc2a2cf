//! Raft traffic in and out of the replica: stepping received messages (with the
//! hibernation, freshness and post-start vote guards), and wrapping outgoing ones in the
//! store's envelope (region, peers, epoch, freshness numbers, leader stamps).

use super::effects::Effect;
use super::Peer;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use regatta_engine::Engine;
use regatta_proto::metapb::Peer as PeerMeta;
use regatta_proto::raft_serverpb::RaftMessage;
use slog::{debug, info, warn};
use std::sync::atomic::Ordering;

impl<E: Engine> Peer<E> {
    /// Steps a raft message from another replica.
    pub fn on_raft_message(&mut self, msg: RaftMessage) {
        if self.is_fenced() {
            return; // no votes, no acks: the others elect a leader among themselves
        }
        if msg.get_wake() {
            self.wake();
            if msg.get_message().is_empty() {
                return;
            }
        }
        let m = match Message::parse_from_bytes(msg.get_message()) {
            Ok(m) => m,
            Err(e) => {
                warn!(self.logger, "undecodable raft message dropped"; "error" => %e);
                return;
            }
        };
        if m.to != self.peer_id {
            debug!(self.logger, "raft message for another peer dropped"; "to" => m.to);
            return;
        }
        let from = msg.get_from_peer().get_id();
        if !self.raw.store().is_initialized() && !self.accept_while_uninitialized(&msg, &m) {
            return;
        }
        if msg.get_hibernate() {
            // The leader hibernates: follow it (its heartbeats keep coming, slowly).
            if !self.is_leader() && m.term >= self.raw.raft.term {
                self.hibernation.set(true);
            }
        } else if !(self.is_leader() && m.get_msg_type() == MessageType::MsgHeartbeatResponse) {
            self.wake();
        }
        // A leader stamp says: every write acknowledged before we sent `echo_seq` is at or
        // below `leader_commit` (see `freshness`).
        self.freshness.on_receive(
            from,
            msg.get_seq(),
            msg.get_leader_commit(),
            msg.get_echo_seq(),
        );
        let vote = matches!(
            m.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        );
        if vote
            && self.ctx.lease_ms() > 0
            && &m.context[..] != raft::CAMPAIGN_TRANSFER
            && self
                .vote_guard_until
                .is_some_and(|t| self.ctx.clock.now() < t)
        {
            // Just (re)started, this replica may have acknowledged a leader whose lease still
            // runs and forgot it: it must not help elect another one yet (docs/CLOCKS.md).
            debug!(self.logger, "vote request ignored during the post-start lease guard"; "from" => m.from);
            return;
        }
        if m.get_msg_type() == MessageType::MsgTimeoutNow && self.pending_snapshot.is_some() {
            // Installing a snapshot: the log below it is gone from storage while raft's
            // applied index still trails it, and a campaign now would read those entries
            // (raft-rs panics). The leader's transfer times out; TiKV drops it likewise.
            debug!(self.logger, "leader transfer ignored while a snapshot installs"; "from" => m.from);
            return;
        }
        if m.get_msg_type() == MessageType::MsgTransferLeader && self.is_leader() {
            // A follower asks for leadership: what the observer holds only in the
            // leader's memory goes into the log first (raft drops proposals once the
            // transfer starts).
            self.before_hand_over();
        }
        if let Err(e) = self.raw.step(m) {
            debug!(self.logger, "raft step failed"; "error" => %e);
        }
    }

    /// Whether an uninitialized replica takes `m`. It learns its peers' stores from their
    /// messages; it never votes (it has no log, and a restart would forget the vote); it
    /// installs a snapshot only if no region hosted here overlaps the snapshot's range (a
    /// replica of the parent region that has not caught up yet must first give the range
    /// up — the leader retries the snapshot).
    fn accept_while_uninitialized(&mut self, msg: &RaftMessage, m: &Message) -> bool {
        let from = msg.get_from_peer();
        if from.get_id() != 0 && from.get_store_id() != 0 {
            self.peer_cache.insert(from.get_id(), from.clone());
        }
        match m.get_msg_type() {
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => false,
            MessageType::MsgSnapshot => {
                let region = match regatta_engine::snapshot::decode_region(m.get_snapshot()) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(self.logger, "undecodable snapshot dropped"; "error" => %e);
                        return false;
                    }
                };
                match self.ctx.reads.overlapping(&region, self.region_id) {
                    Some(other) => {
                        info!(self.logger, "snapshot deferred: a hosted region overlaps it";
                            "overlapping_region" => other.get_id());
                        false
                    }
                    None => true,
                }
            }
            _ => true,
        }
    }

    /// A message from this replica to `to`, with no raft content yet.
    pub(super) fn envelope(&self, to: PeerMeta) -> RaftMessage {
        let mut rm = RaftMessage::new();
        rm.set_region_id(self.region_id);
        let mut from = PeerMeta::new();
        from.set_id(self.peer_id);
        from.set_store_id(self.ctx.store_id);
        rm.set_from_peer(from);
        rm.set_to_peer(to);
        rm.set_region_epoch(self.region().get_region_epoch().clone());
        rm
    }

    /// Sends raft-rs's messages through the transport, after publishing the read state
    /// (a leader transfer withdraws the lease before `MsgTimeoutNow` leaves).
    pub(super) fn send_messages(&mut self, msgs: Vec<Message>) {
        for rm in self.envelopes(msgs) {
            self.effects.push(Effect::Send(rm));
        }
    }

    /// raft-rs's messages as the transport carries them, stamped now (numbered for
    /// freshness, with the lease's commit stamp), to be sent now or once a write is
    /// durable (which only makes the stamps older than the send: see `freshness.rs`).
    pub(super) fn envelopes(&mut self, msgs: Vec<Message>) -> Vec<RaftMessage> {
        if msgs.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(msgs.len());
        self.publish_read_state();
        let now = self.ctx.clock.now();
        let stamp = if self.lease_valid(now) && self.raw.raft.commit_to_current_term() {
            self.raw.raft.raft_log.committed
        } else {
            0
        };
        for m in msgs {
            let Some(to) = self
                .region()
                .get_peers()
                .iter()
                .find(|p| p.get_id() == m.to)
                .or_else(|| self.peer_cache.get(&m.to))
                .cloned()
            else {
                continue;
            };
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshot_reports.push(m.to);
            }
            let mut rm = self.envelope(to);
            if m.get_msg_type() == MessageType::MsgHeartbeat {
                // Lets a store that missed the split making this region start a replica.
                rm.set_start_key(self.region().get_start_key().to_vec());
                rm.set_end_key(self.region().get_end_key().to_vec());
            }
            let (seq, echo) = self.freshness.on_send(m.to, now);
            rm.set_seq(seq);
            rm.set_echo_seq(echo);
            rm.set_leader_commit(stamp);
            rm.set_hibernate(self.hibernation.is_hibernating() && self.is_leader());
            rm.set_message(
                m.write_to_bytes()
                    .expect("encoding an in-memory raft message cannot fail"),
            );
            out.push(rm);
            self.ctx
                .metrics
                .raft_messages_sent
                .fetch_add(1, Ordering::Relaxed);
        }
        out
    }
}
