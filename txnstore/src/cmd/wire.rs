//! Wire <-> transaction layer: `txnpb` requests to `regatta-txn` arguments, and
//! `regatta_txn::Error` to `txnpb.KeyError` (the one mapping of transactional failures).
//!
//! Which errors go where: a failure the transaction decides (locked, conflict, not found,
//! committed, rolled back, expired commit ts, malformed command) is an *answer*:
//! `TxnResponse.key_error`, with no `kvrpcpb.Error`. A corrupt record or an engine
//! failure is the store's: `kvrpcpb.Error` (`StorageError`), and at apply it stops the
//! replica (it would be the same on every replica, and skipping it could diverge).

use regatta_proto::txnpb;
use regatta_raftstore::Error;
use regatta_txn::{Lock, LockKind, Mutation, Op, PrewriteRequest};
use std::sync::Arc;

/// A response carrying the transactional `key_error` `ke`.
pub(crate) fn key_error_response(ke: txnpb::KeyError) -> regatta_proto::kvrpcpb::KvResponse {
    let mut t = txnpb::TxnResponse::new();
    t.set_key_error(ke);
    let mut resp = regatta_proto::kvrpcpb::KvResponse::new();
    resp.mut_response().set_txn(t);
    resp
}

/// A command malformed as a transaction (ts 0, a key twice, no keys, a commit not after
/// its start): answered in `TxnResponse.key_error.invalid`, as `txnpb.KeyError` says, not
/// in `kvrpcpb.Error`.
pub(crate) fn txn_invalid(reason: String) -> Error {
    let mut ke = txnpb::KeyError::new();
    ke.set_invalid(reason.clone());
    Error::Refused {
        reason: format!("invalid transactional command: {reason}"),
        response: Box::new(key_error_response(ke)),
    }
}

/// A command carrying a timestamp beyond the store's limit (see `ts_limit.rs`): answered
/// in `TxnResponse.key_error.ts_too_far_ahead`.
pub(crate) fn ts_too_far_ahead(region_id: u64, ts: u64, limit: u64) -> Error {
    let mut ke = txnpb::KeyError::new();
    ke.mut_ts_too_far_ahead().set_ts(ts);
    ke.mut_ts_too_far_ahead().set_limit(limit);
    Error::Refused {
        reason: format!(
            "region {region_id}: timestamp {ts} is beyond the limit {limit} (PD's TSO plus \
             the drift allowance)"
        ),
        response: Box::new(key_error_response(ke)),
    }
}

/// A `regatta_txn` failure: an answer for the client, or a store failure.
pub(crate) enum Failure {
    /// The transaction's answer (`TxnResponse.key_error`).
    Key(txnpb::KeyError),
    /// Corruption or an engine failure (`kvrpcpb.Error`; fatal at apply).
    Store(Error),
}

/// Splits a `regatta_txn::Error` into an answer or a store failure. `primary` names the
/// transaction's primary in a write conflict, when the command knows it.
pub(crate) fn failure(e: regatta_txn::Error, region_id: u64, primary: &[u8]) -> Failure {
    use regatta_txn::Error as E;
    let mut ke = txnpb::KeyError::new();
    match e {
        E::KeyIsLocked { key, lock } => ke.set_locked(lock_info(&key, &lock)),
        E::WriteConflict {
            key,
            start_ts,
            conflict_start_ts,
            conflict_commit_ts,
        } => {
            let mut c = txnpb::WriteConflict::new();
            c.set_key(key);
            c.set_primary(primary.to_vec());
            c.set_start_ts(start_ts);
            c.set_conflict_start_ts(conflict_start_ts);
            c.set_conflict_commit_ts(conflict_commit_ts);
            ke.set_conflict(c);
        }
        E::TxnLockNotFound { .. } => ke.set_txn_lock_not_found(true),
        E::TxnNotFound { .. } => ke.set_txn_not_found(true),
        E::Committed { commit_ts, .. } => ke.set_committed_ts(commit_ts),
        E::AlreadyRolledBack { .. } => ke.set_already_rolled_back(true),
        E::PessimisticLockNotFound { .. } => ke.set_pessimistic_lock_not_found(true),
        E::CommitTsExpired { min_commit_ts, .. } => ke.set_commit_ts_expired_min(min_commit_ts),
        E::VersionMismatch {
            key,
            expected,
            actual,
        } => {
            let m = ke.mut_occ_version_mismatch();
            m.set_key(key);
            m.set_expected(expected);
            m.set_actual(actual);
        }
        E::InvalidRequest(reason) => ke.set_invalid(reason),
        E::Corrupt { what, key, detail } => {
            return Failure::Store(Error::Engine(Arc::new(regatta_engine::Error::Corrupt {
                what,
                region_id,
                detail: format!("at {key:?}: {detail}"),
            })))
        }
        E::Engine(inner) => return Failure::Store(Error::Engine(Arc::new(inner))),
    }
    Failure::Key(ke)
}

/// The wire form of a lock met on `key`.
pub(crate) fn lock_info(key: &[u8], lock: &Lock) -> txnpb::LockInfo {
    let mut li = txnpb::LockInfo::new();
    li.set_key(key.to_vec());
    li.set_primary(lock.primary.clone());
    li.set_start_ts(lock.start_ts);
    li.set_ttl_ms(lock.ttl_ms);
    li.set_kind(match lock.kind {
        LockKind::Put => txnpb::LockKind::LOCK_PUT,
        LockKind::Delete => txnpb::LockKind::LOCK_DELETE,
        LockKind::Lock => txnpb::LockKind::LOCK_LOCK,
        LockKind::Pessimistic => txnpb::LockKind::LOCK_PESSIMISTIC,
    });
    li.set_for_update_ts(lock.for_update_ts);
    li.set_min_commit_ts(lock.min_commit_ts);
    li.set_use_async_commit(lock.use_async_commit);
    li.set_secondaries(lock.secondaries.clone().into());
    li
}

/// The transaction layer's prewrite of a wire prewrite.
pub(crate) fn prewrite_request(p: &txnpb::PrewriteRequest) -> PrewriteRequest {
    let mutations = p
        .get_mutations()
        .iter()
        .map(|m| Mutation {
            key: m.get_key().to_vec(),
            op: match m.get_op() {
                txnpb::MutationOp::PUT => Op::Put(m.get_value().to_vec()),
                txnpb::MutationOp::DELETE => Op::Delete,
                txnpb::MutationOp::LOCK => Op::Lock,
            },
            pessimistic: m.get_pessimistic(),
        })
        .collect();
    PrewriteRequest {
        primary: p.get_primary().to_vec(),
        start_ts: p.get_start_ts(),
        lock_ttl_ms: p.get_lock_ttl_ms(),
        for_update_ts: p.get_for_update_ts(),
        min_commit_ts: p.get_min_commit_ts(),
        async_commit_secondaries: p
            .get_use_async_commit()
            .then(|| p.get_secondaries().to_vec()),
        mutations,
        read_versions: p
            .get_read_versions()
            .iter()
            .map(|r| (r.get_key().to_vec(), r.get_version()))
            .collect(),
    }
}
