//! Transactional commands run straight on an engine: the store's one mapping of `txnpb` to
//! the Percolator actions and back — the validation, apply and read code a store runs —
//! without Raft, leader checks, `max_ts` or lock waits. For fakes and tools: the client's tests run
//! their fake store on it, so the fake answers exactly as a store does.

use crate::cmd;
use regatta_engine::{read_gc_safe_point, Engine, Overlay};
use regatta_proto::metapb::Region;
use regatta_proto::txnpb::{TxnRequest, TxnResponse};
use regatta_raftstore::{Error, StoreConfig};

/// Runs `req` on `engine` as the applied state of `region`: validated as a store validates
/// it (with the default [`StoreConfig`]'s size limits), then a read on a snapshot, or a
/// write through apply's path, its batch written (not synced) when the command succeeds. A
/// prewrite with `try_one_pc` commits at `leader_ts` (0: it stays a plain prewrite, as a
/// leader whose `max_ts` is not synced proposes it); one with `use_async_commit` writes
/// locks whose `min_commit_ts` is at least `leader_ts` (0: refused with `ServerIsBusy`).
///
/// `Ok` carries the answer, which may hold a `key_error` (a lock met, a conflict, ...);
/// `Err` is the store error a store would answer instead (a malformed command, a key
/// outside the region, an engine failure): [`Error::into_response`] is that answer.
pub fn execute<E: Engine>(
    engine: &E,
    region: &Region,
    req: &TxnRequest,
    leader_ts: u64,
) -> Result<TxnResponse, Error> {
    regatta_raftstore::with_checks(region, &StoreConfig::default(), |c| {
        cmd::validate_txn(req, c)
    })?;
    let snap = engine.snapshot();
    let gc_safe_point = read_gc_safe_point(&snap, region.get_id())?;
    if cmd::is_txn_read(req) {
        cmd::check_read_keys(req, region)?;
        return cmd::read_txn(&snap, region, req, gc_safe_point);
    }
    let mut wb = engine.write_batch();
    let answer = {
        let mut overlay = Overlay::new(&snap);
        let at = cmd::TxnWrite {
            region,
            one_pc_commit_ts: leader_ts,
            async_commit_ts: leader_ts,
            gc_safe_point,
            index: 0,
        };
        let mut released = Vec::new();
        cmd::apply_txn(&mut overlay, &mut wb, &at, req, &mut released)??
    };
    drop(snap);
    engine.write(wb, false)?;
    Ok(answer)
}
