//! Client requests reaching the replica: validation, writes and log reads queued for the
//! turn's proposal, reads routed to the lease, the ReadIndex queue or the follower paths.
//! Commands the layer above claims (see `coprocessor`) pass its observer first: it may
//! refuse them, make a read linearizable or hold it for an index; its writes are proposed
//! through it.

use super::read_index::ReadReq;
use super::{Peer, Responder};
use crate::apply;
use crate::coprocessor::Kind;
use crate::error::Error;
use crate::request::read_from_engine;
use regatta_engine::Engine;
use regatta_proto::kvrpcpb::{
    KvRequest, KvResponse, ReadConsistency, ReadInfo, Request, Request_oneof_cmd,
};
use regatta_proto::raft_serverpb::RaftCmd;
use std::time::Duration;

impl<E: Engine> Peer<E> {
    /// Takes a client request (answered through `tx`).
    pub fn on_kv(&mut self, mut req: KvRequest, tx: Responder) {
        if let Some(reason) = &self.fenced {
            let _ = tx.send(Error::StorePoisoned(reason.clone()).into_response());
            return;
        }
        self.wake();
        if let Err(e) = self.validate(&req) {
            let _ = tx.send(e.into_response());
            return;
        }
        if self.knows_no_leader() {
            if super::leader_wait::needs_leader(&req, &*self.ctx.coprocessor) {
                self.hold_for_leader(req, tx);
                return;
            }
        } else {
            // Requests held for the leader go before this one, in arrival order.
            self.release_leader_waits();
        }
        let request = req.take_request();
        let write = apply::is_write(&request, &*self.ctx.coprocessor);
        if let Some(Request_oneof_cmd::split(sp)) = &request.cmd {
            let key = sp.get_split_key().to_vec();
            self.on_split_request(key, tx);
            return;
        }
        let ctx = req.take_context();
        let mut consistency = ctx.get_consistency();
        let claimed = self.ctx.coprocessor.kind(&request);
        let mut floor = 0;
        if claimed.is_some() {
            // The layer above decides whether and how it is served (see `coprocessor`).
            match self.observe(|o, cx| o.on_request(&request, cx)) {
                Ok(gate) => {
                    if gate.linearizable && consistency != ReadConsistency::LEASE {
                        consistency = ReadConsistency::LINEARIZABLE;
                    }
                    floor = gate.read_floor;
                }
                Err(e) => {
                    let _ = tx.send(e.into_response());
                    return;
                }
            }
        }
        if !self.is_leader() {
            if !write {
                self.follower_read(request, &ctx, tx);
            } else {
                let _ = tx.send(self.not_leader().into_response());
            }
            return;
        }
        if write || consistency == ReadConsistency::LOG_READ {
            if self.proposals.len() + self.batch.len() >= self.ctx.cfg.max_inflight_proposals {
                let _ = tx.send(
                    Error::ServerIsBusy(format!("region {}: too many proposals", self.region_id))
                        .into_response(),
                );
                return;
            }
            let mut cmd = RaftCmd::new();
            cmd.set_client_id(ctx.get_client_id());
            cmd.set_seq(ctx.get_seq());
            cmd.set_region_epoch(self.region().get_region_epoch().clone());
            cmd.set_request(request);
            if claimed == Some(Kind::Write) {
                self.observe(|o, cx| o.on_write(cmd, tx, cx));
            } else {
                self.push_cmd(cmd, tx, None);
            }
            return;
        }
        let now = self.ctx.clock.now();
        let mut read = ReadReq {
            req: request,
            tx,
            deadline: now + Duration::from_millis(self.ctx.cfg.read_timeout_ms),
            started: now,
            info: ReadInfo::new(),
            version: self.region().get_region_epoch().get_version(),
            floor,
            allows_lease: consistency != ReadConsistency::LINEARIZABLE,
        };
        read.info.set_linearizable(true);
        let lease_ok = consistency != ReadConsistency::LINEARIZABLE
            && !self.splits.progress.blocks_lease()
            && self.lease_valid(now)
            && self.raw.raft.commit_to_current_term();
        if lease_ok {
            // No other leader can exist while the lease holds, so the commit index is the
            // newest; serve once it is applied.
            read.info.set_lease_used(true);
            let index = self.raw.raft.raft_log.committed;
            self.reads.push_ready(index, read);
        } else {
            read.info.set_network_round_trips(1);
            self.reads.push(read);
        }
    }

    /// Answers `read` from the applied state; `read_index` is the index it was served at.
    pub(super) fn finish_read(&self, read: ReadReq, read_index: u64) {
        if read.version != self.region().get_region_epoch().get_version() {
            let e = self.with_siblings(Error::EpochNotMatch {
                current_regions: vec![self.region().clone()],
            });
            let _ = read.tx.send(e.into_response());
            return;
        }
        let mut resp = self.read_local(&read.req);
        if !resp.has_error() {
            let mut info = read.info;
            info.set_served_by_store(self.ctx.store_id);
            info.set_read_index(read_index);
            info.set_applied_index(self.raw.store().applied().0);
            let waited = self.ctx.clock.now().saturating_duration_since(read.started);
            info.set_waited_us(waited.as_micros() as u64);
            resp.set_read_info(info);
        }
        let _ = read.tx.send(resp);
    }

    fn read_local(&self, req: &Request) -> KvResponse {
        read_from_engine(
            &self.raw.store().engine().live(),
            self.region(),
            req,
            &*self.ctx.coprocessor,
        )
    }
}
