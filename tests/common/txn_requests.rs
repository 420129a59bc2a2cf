//! Raw transactional commands as a client sends them, for tests that drive the stores'
//! `txnpb` commands by hand.

use regatta_proto::txnpb::{
    CheckTxnStatusRequest, CommitRequest, Mutation, MutationOp, PessimisticLockRequest,
    PrewriteRequest, TxnRequest,
};

/// A prewrite of `puts` (as raw commands a client sends).
pub fn prewrite_req(
    primary: &[u8],
    puts: &[(&[u8], &[u8])],
    start_ts: u64,
    ttl_ms: u64,
) -> TxnRequest {
    let mut p = PrewriteRequest::new();
    p.set_primary(primary.to_vec());
    p.set_start_ts(start_ts);
    p.set_lock_ttl_ms(ttl_ms);
    for (k, v) in puts {
        let mut m = Mutation::new();
        m.set_op(MutationOp::PUT);
        m.set_key(k.to_vec());
        m.set_value(v.to_vec());
        p.mut_mutations().push(m);
    }
    let mut r = TxnRequest::new();
    r.set_prewrite(p);
    r
}

/// A commit of `keys`.
pub fn commit_req(keys: &[&[u8]], start_ts: u64, commit_ts: u64) -> TxnRequest {
    let mut c = CommitRequest::new();
    c.set_keys(keys.iter().map(|k| k.to_vec()).collect());
    c.set_start_ts(start_ts);
    c.set_commit_ts(commit_ts);
    let mut r = TxnRequest::new();
    r.set_commit(c);
    r
}

/// A pessimistic lock of `keys` (the first is the primary) for transaction `start_ts`, at
/// `for_update_ts` = `start_ts`, returning values, waiting up to `wait_ms` in a queue.
pub fn lock_req(keys: &[&[u8]], start_ts: u64, ttl_ms: u64, wait_ms: u64) -> TxnRequest {
    let mut l = PessimisticLockRequest::new();
    l.set_keys(keys.iter().map(|k| k.to_vec()).collect());
    l.set_primary(keys[0].to_vec());
    l.set_start_ts(start_ts);
    l.set_for_update_ts(start_ts);
    l.set_lock_ttl_ms(ttl_ms);
    l.set_return_values(true);
    l.set_wait_timeout_ms(wait_ms);
    let mut r = TxnRequest::new();
    r.set_pessimistic_lock(l);
    r
}

/// A resolver's `check_txn_status` of transaction `lock_ts` on `primary` at
/// `current_ts`, rolling it back if no lock is found.
pub fn check_status_req(primary: &[u8], lock_ts: u64, current_ts: u64) -> TxnRequest {
    let mut c = CheckTxnStatusRequest::new();
    c.set_primary(primary.to_vec());
    c.set_lock_ts(lock_ts);
    c.set_current_ts(current_ts);
    c.set_rollback_if_not_exist(true);
    let mut r = TxnRequest::new();
    r.set_check_txn_status(c);
    r
}
