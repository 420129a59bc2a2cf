//! Raw transactional commands as a client sends them, for tests that drive the stores'
//! `txnpb` commands by hand.

use regatta_proto::txnpb::{CommitRequest, Mutation, MutationOp, PrewriteRequest, TxnRequest};

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
