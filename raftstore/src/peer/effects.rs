//! What a replica asks of its shell. The peer does no I/O: a call (a message, a tick, a
//! persistence notice, a request) changes its state and leaves [`Effect`]s in its outbox;
//! the shell — the actor (`actor.rs`), a unit test or a simulator — takes them
//! ([`Peer::take_effects`]) and carries them out in order. What comes back (a write made
//! durable, PD's ids, a split check's result) comes back as another call.
//!
//! Order matters and is kept: messages are sent in the order raft produced them, a Ready's
//! write is submitted after the messages that may precede it (a leader's appends go out
//! before its own fsync, Raft thesis 10.2.1), and the ones that must follow it travel with
//! it (`then_send`), sent by whoever makes it durable, right after it and only if it
//! succeeded.

use super::{NewRegion, Peer, Responder};
use crate::coprocessor::KeySpace;
use regatta_engine::Engine;
use regatta_engine::{LogWrite, RocksEngine};
use regatta_proto::metapb::{Region, RegionEpoch};
use regatta_proto::pdpb::RegionHeartbeatRequest;
use regatta_proto::raft_serverpb::RaftMessage;

/// One thing a replica asks its shell to do.
pub enum Effect<E: Engine = RocksEngine> {
    /// Send a raft message to the store of `to_peer` (best effort; raft retransmits).
    Send(RaftMessage),
    /// Write to the raft log through the store's LogWriter (synced when
    /// [`LogWrite::needs_sync`]); the outcome comes back as [`Peer::on_persisted`] with
    /// `ready_number` (0: a write of no Ready, such as a compaction) and `last_index`.
    Persist {
        /// The write.
        write: LogWrite<E::WriteBatch>,
        /// The Ready it persists (0: none).
        ready_number: u64,
        /// The last log index it appends (0: none).
        last_index: u64,
        /// Messages to send once the write is durable, in order, before reporting it
        /// (acknowledgements and votes: raft's rule, acknowledge only what survives a
        /// crash); dropped if the write fails or the store crashes first.
        then_send: Vec<RaftMessage>,
    },
    /// A write to the store's engine failed: poison the store (it refuses writes and
    /// never retries; see `log_writer.rs`).
    PoisonStore(String),
    /// Send this region heartbeat to PD.
    ReportRegion(RegionHeartbeatRequest),
    /// A split created a region with a replica on this store: start it.
    StartRegion(NewRegion),
    /// Ask PD for `count` consecutive ids for a split at `key`; the answer comes back as
    /// [`super::SplitStep::Ids`] (with `key`, `epoch`, `tx`) or [`super::SplitStep::Failed`].
    AllocSplitIds {
        /// Ids wanted: the new region's and one per peer.
        count: u32,
        /// The split key.
        key: Vec<u8>,
        /// The region's epoch when asked.
        epoch: RegionEpoch,
        /// Who asked (none for an automatic split).
        tx: Option<Responder>,
    },
    /// Scan the region off the replica's turn (see `apply::split_check`); the result comes
    /// back as [`super::SplitStep::Checked`], or [`super::SplitStep::CheckRefused`] when the
    /// store's split-check pool is full.
    CheckSplit(SplitCheckTask<E>),
}

/// A split check to run off the replica's turn (on the store's split-check pool).
pub struct SplitCheckTask<E: Engine = RocksEngine> {
    /// Bytes the replica wrote since the check before (handed back if the pool refuses).
    pub written: u64,
    /// The store's engine.
    pub engine: E,
    /// The region as of the check.
    pub region: Region,
    /// Split above this many bytes.
    pub max_size: u64,
    /// Split above this many records.
    pub max_keys: u64,
    /// The key spaces of the layer above (see [`crate::coprocessor::Coprocessor::key_spaces`]).
    pub others: Vec<KeySpace>,
    /// Where a failed check is reported.
    pub logger: slog::Logger,
}

impl<E: Engine> SplitCheckTask<E> {
    /// The step that tells the replica the pool refused this check.
    pub fn refused(&self) -> super::SplitStep {
        super::SplitStep::CheckRefused {
            written: self.written,
        }
    }

    /// Runs the check (blocking: scans the region) and builds the step that reports it.
    pub fn run(self) -> super::SplitStep {
        let version = self.region.get_region_epoch().get_version();
        let check = crate::apply::split_check(
            &self.engine,
            &self.region,
            self.max_size,
            self.max_keys,
            &self.others,
        )
        .unwrap_or_else(|e| {
            slog::warn!(self.logger, "split check failed"; "error" => %e);
            crate::apply::SplitCheck::default()
        });
        super::SplitStep::Checked {
            key: check.split_key,
            stats: (check.keys, check.size),
            version,
        }
    }
}

impl std::fmt::Debug for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::Send(m) => write!(f, "Send(to peer {})", m.get_to_peer().get_id()),
            Effect::Persist {
                ready_number,
                last_index,
                ..
            } => write!(f, "Persist(ready {ready_number}, last index {last_index})"),
            Effect::PoisonStore(r) => write!(f, "PoisonStore({r})"),
            Effect::ReportRegion(hb) => write!(f, "ReportRegion({})", hb.get_region().get_id()),
            Effect::StartRegion(r) => write!(f, "StartRegion({r:?})"),
            Effect::AllocSplitIds { count, .. } => write!(f, "AllocSplitIds({count})"),
            Effect::CheckSplit(t) => write!(f, "CheckSplit(region {})", t.region.get_id()),
        }
    }
}

impl<E: Engine> Peer<E> {
    /// The effects left since the last call, in order (see the module doc).
    pub fn take_effects(&mut self) -> Vec<Effect<E>> {
        std::mem::take(&mut self.effects)
    }

    /// Moves the effects left since the last call into `out`, in order, keeping both
    /// buffers' capacity (a shell that calls this every turn allocates nothing for them
    /// once warm).
    pub fn drain_effects_into(&mut self, out: &mut Vec<Effect<E>>) {
        out.append(&mut self.effects);
    }

    /// Whether any effect is waiting.
    pub fn has_effects(&self) -> bool {
        !self.effects.is_empty()
    }
}
