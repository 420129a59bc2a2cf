//! Stopping a replica that can no longer write (docs/ARCHITECTURE.md, "Failure model").
//!
//! A failed log write, a failed apply write or a committed entry that does not decode
//! leaves the replica unable to keep its promises: it cannot persist a vote or an append,
//! and applying later entries over a hole would diverge from the other replicas. So it is
//! *fenced* until its store restarts:
//! - a leader first hands leadership to its most caught-up follower (raft's leader
//!   transfer sends `MsgTimeoutNow` at once when that follower has the whole log), so the
//!   healthy majority serves again without waiting out an election timeout;
//! - it then stops its raft clock (no heartbeats, no campaigns) and drops every raft
//!   message (no votes, no acks): the others elect a leader among themselves. (The
//!   acknowledgements of log writes the shell handed to the LogWriter before the fence
//!   still leave once those writes are durable — they are true — unless the store is
//!   poisoned by then; those of writes still in the replica's outbox are dropped.);
//! - every request, pending or new, is answered `StorePoisoned` with the reason, and local
//!   reads stop (the published read state says so);
//! - it says so once, at error level, naming region, peer, term and applied index.
//!
//! Nothing acknowledged is lost: an answer is given only after apply, and a fenced
//! replica neither applies nor answers; a restarted store recovers from its synced log
//! and catches up from the leader.

use super::Peer;
use crate::error::Error;
use regatta_engine::Engine;
use slog::{error, info};

impl<E: Engine> Peer<E> {
    /// Whether this replica is fenced (see the module doc).
    pub(super) fn is_fenced(&self) -> bool {
        self.fenced.is_some()
    }

    /// Stops this replica for good (until its store restarts) because it can no longer
    /// write: `reason` says why.
    pub fn fence(&mut self, reason: String) {
        if self.fenced.is_some() {
            return;
        }
        let (applied, _) = self.raw.store().applied();
        error!(self.logger, "replica stopped: it can no longer write; it serves nothing until its store restarts";
            "reason" => &reason, "term" => self.raw.raft.term, "applied_index" => applied,
            "leader" => self.is_leader());
        self.fenced = Some(reason.clone());
        // The acknowledgements and votes of writes not yet handed to the shell stay
        // unsent (the writes themselves still go).
        for e in &mut self.effects {
            if let super::effects::Effect::Persist { then_send, .. } = e {
                then_send.clear();
            }
        }
        if self.is_leader() {
            if let Some(to) = self.most_caught_up_follower() {
                info!(self.logger, "handing leadership over before stopping"; "to" => to);
                self.raw.transfer_leader(to);
                // Send the transfer now (leader messages go out before persistence).
                let msgs = self.raw.raft.msgs.drain(..).collect();
                self.send_messages(msgs);
            }
        }
        self.lease.clear();
        let e = Error::StorePoisoned(reason);
        let pending = self.batch.take(self.ctx.clock.now());
        let mut tokens = pending.tokens;
        for p in self.proposals.drain(..) {
            for tx in p.responders {
                let _ = tx.send(e.clone().into_response());
            }
            tokens.extend(p.tokens);
        }
        for (_, tx) in pending.cmds {
            let _ = tx.send(e.clone().into_response());
        }
        // The observer forgets what it kept for those commands (they were answered above),
        // then answers what it holds.
        self.abandon_tokens(tokens);
        self.observer.drain(&e);
        // What the observer queued while draining is answered too.
        for (_, tx) in self.batch.take(self.ctx.clock.now()).cmds {
            let _ = tx.send(e.clone().into_response());
        }
        self.drain_leader_waits(&e);
        for r in self.reads.take_all() {
            let _ = r.tx.send(e.clone().into_response());
        }
        for (r, _) in self.ryw_waiting.drain(..) {
            let _ = r.tx.send(e.clone().into_response());
        }
        self.publish_read_state();
    }

    /// The follower with the longest matched log, if any has matched anything.
    fn most_caught_up_follower(&self) -> Option<u64> {
        let me = self.peer_id;
        self.raw
            .raft
            .prs()
            .iter()
            .filter(|(id, p)| **id != me && p.matched > 0)
            .max_by_key(|(_, p)| p.matched)
            .map(|(id, _)| *id)
    }
}
