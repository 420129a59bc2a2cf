//! The replica's observer — the layer above the raftstore (see [`crate::coprocessor`]) —
//! called with a view of the replica; what a hook asks for (commands, admin commands, a
//! PD report) is taken once it returns.

use super::{Peer, Responder};
use crate::coprocessor::{NoObserver, ObserverCx, Outbox, RegionObserver};
use raft::StateRole;
use regatta_engine::Engine;
use regatta_proto::raft_serverpb::RaftCmd;

impl<E: Engine> Peer<E> {
    /// A view of this replica for a hook, whose requests go to `out`.
    pub(super) fn view<'a>(&'a self, out: &'a mut Outbox) -> ObserverCx<'a> {
        let store = self.raw.store();
        ObserverCx {
            region: store.region(),
            engine: store.engine(),
            leader: self.raw.raft.state == StateRole::Leader,
            leader_meta: self.leader_meta(),
            term: self.raw.raft.term,
            applied: store.applied(),
            fenced: self.fenced.is_some(),
            handing_over: self.splits.progress.blocks_lease()
                || self.raw.raft.lead_transferee.is_some(),
            now: self.ctx.clock.now(),
            wall_ms: self.ctx.clock.wall_ms(),
            mailbox: self.mailbox.as_ref(),
            logger: &self.logger,
            out,
        }
    }

    /// Runs `hook` on the observer with a view of this replica, then carries out what it
    /// asked for.
    pub(super) fn observe<R>(
        &mut self,
        hook: impl FnOnce(&mut dyn RegionObserver, &mut ObserverCx) -> R,
    ) -> R {
        // Taken out for the call, so the view can borrow the rest of the replica.
        let mut observer = std::mem::replace(&mut self.observer, Box::new(NoObserver));
        let mut out = Outbox::default();
        let r = hook(observer.as_mut(), &mut self.view(&mut out));
        self.observer = observer;
        self.take_outbox(out);
        r
    }

    fn take_outbox(&mut self, out: Outbox) {
        // Admin commands first (ahead of the turn's entry), each told to the observer
        // with its index.
        for admin in out.admin {
            if self.is_leader() && self.propose_admin(admin.clone()).is_ok() {
                let index = self.raw.raft.raft_log.last_index();
                self.observer.post_propose_admin(&admin, index);
            }
        }
        for (cmd, tx, token) in out.cmds {
            self.push_cmd(cmd, tx, token);
        }
        if out.report && self.is_leader() {
            self.report_to_pd();
        }
    }

    /// Adds a command to the turn's proposal (with the observer's token, if any); a full
    /// entry is proposed at once.
    pub(super) fn push_cmd(&mut self, cmd: RaftCmd, tx: Responder, token: Option<u64>) {
        if self.batch.push(cmd, tx, token, self.ctx.clock.now()) {
            self.propose_pending();
        }
    }

    /// Leadership is about to move (a transfer) or the region to be cut (a split): the
    /// observer proposes what it holds only in this leader's memory, ahead of it.
    pub(super) fn before_hand_over(&mut self) {
        if self.is_leader() {
            self.observe(|o, cx| o.before_hand_over(cx));
        }
    }

    /// Tells the observer these tokens' commands will never apply.
    pub(super) fn abandon_tokens(&mut self, tokens: Vec<(usize, u64)>) {
        if tokens.is_empty() {
            return;
        }
        let tokens = tokens.into_iter().map(|(_, t)| t).collect();
        self.observe(|o, cx| o.on_abandoned(tokens, cx));
    }

    /// A message for the observer arrived through the mailbox.
    pub fn on_observer_message(&mut self, msg: crate::coprocessor::Note) {
        self.observe(|o, cx| o.on_message(msg, cx));
    }
}
