//! Validation of transactional commands before they are read or proposed: every key
//! non-empty, within the size limit and inside the region; values within the limit;
//! timestamps nonzero (and a commit after its start); batches of 1..=`MAX_BATCH_KEYS`
//! keys; no key twice in one command (`regatta-txn`'s "each key at most once").
//!
//! Routing and size failures are the store's (`KeyNotInRegion`, `InvalidArgument` in
//! `kvrpcpb.Error`, as for raw commands); a command that is malformed as a transaction
//! (ts 0, duplicate keys, no mutations, a commit not after its start) is answered
//! `TxnResponse.key_error.invalid` (`wire::txn_invalid`), as `txnpb.KeyError` says.

use regatta_proto::txnpb::{TxnRequest, TxnRequest_oneof_cmd as Cmd};
use regatta_proto::MAX_BATCH_KEYS;
use regatta_raftstore::coprocessor::Checks;
use regatta_raftstore::Error;
use std::collections::HashSet;

fn invalid(what: impl Into<String>) -> Error {
    super::wire::txn_invalid(what.into())
}

fn ts(name: &str, ts: u64) -> Result<(), Error> {
    if ts == 0 {
        return Err(invalid(format!("{name} is 0")));
    }
    Ok(())
}

/// Keys: 1..=MAX_BATCH_KEYS of them, each valid, none twice.
fn keys<'k>(c: &Checks<'_>, keys: impl ExactSizeIterator<Item = &'k [u8]>) -> Result<(), Error> {
    let n = keys.len();
    if n == 0 {
        return Err(invalid("a command on no keys"));
    }
    if n > MAX_BATCH_KEYS {
        return Err(Error::InvalidArgument(format!(
            "a transactional command on {n} keys (at most {MAX_BATCH_KEYS})"
        )));
    }
    let mut seen = HashSet::with_capacity(n);
    for k in keys {
        (c.key)(k)?;
        if !seen.insert(k) {
            return Err(invalid(format!("key {k:?} appears twice in one command")));
        }
    }
    Ok(())
}

/// A key that need not be in this region (a primary named by a secondary's command) is
/// still bounded in size.
fn foreign_key(k: &[u8], c: &Checks<'_>) -> Result<(), Error> {
    match (c.key)(k) {
        Err(Error::KeyNotInRegion { .. }) | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Validates `req` (see the module doc).
pub(crate) fn validate_txn(req: &TxnRequest, c: &Checks<'_>) -> Result<(), Error> {
    match &req.cmd {
        None => Err(Error::InvalidArgument(
            "transactional request has no command".into(),
        )),
        Some(Cmd::get(g)) => {
            ts("start_ts", g.get_start_ts())?;
            (c.key)(g.get_key())
        }
        Some(Cmd::batch_get(b)) => {
            ts("start_ts", b.get_start_ts())?;
            keys(c, slices(b.get_keys()).into_iter())
        }
        Some(Cmd::scan(s)) => {
            ts("start_ts", s.get_start_ts())?;
            (c.range)(s.get_start_key(), s.get_end_key())
        }
        Some(Cmd::scan_lock(s)) => {
            ts("max_ts", s.get_max_ts())?;
            (c.range)(s.get_start_key(), s.get_end_key())
        }
        Some(Cmd::prewrite(p)) => {
            ts("start_ts", p.get_start_ts())?;
            if p.get_use_async_commit() && p.get_try_one_pc() {
                return Err(invalid("a prewrite cannot be both 1PC and async commit"));
            }
            if !p.get_secondaries().is_empty() {
                // The primary's lock lists the secondaries: only its request carries them.
                if !p.get_use_async_commit() {
                    return Err(invalid("secondaries without use_async_commit"));
                }
                if !p
                    .get_mutations()
                    .iter()
                    .any(|m| m.get_key() == p.get_primary())
                {
                    return Err(invalid("secondaries in a request without the primary"));
                }
                if p.get_secondaries().len() > MAX_BATCH_KEYS {
                    return Err(invalid(format!(
                        "{} secondaries (at most {MAX_BATCH_KEYS})",
                        p.get_secondaries().len()
                    )));
                }
                // A resolver checks them all in one command per region: each once.
                let mut seen = std::collections::HashSet::new();
                for s in p.get_secondaries() {
                    if s.as_slice() == p.get_primary() || !seen.insert(s.as_slice()) {
                        return Err(invalid("secondaries repeat a key or name the primary"));
                    }
                }
            }
            if p.get_lock_ttl_ms() == 0 {
                return Err(invalid("lock_ttl_ms is 0"));
            }
            if p.get_for_update_ts() != 0 && p.get_for_update_ts() < p.get_start_ts() {
                return Err(invalid("for_update_ts below start_ts"));
            }
            foreign_key(p.get_primary(), c)?;
            if p.get_primary().is_empty() {
                return Err(invalid("prewrite without a primary"));
            }
            for m in p.get_mutations() {
                (c.value)(m.get_value())?;
            }
            for s in p.get_secondaries() {
                foreign_key(s, c)?;
            }
            // Each read version names one of the mutations (checked by the action).
            if p.get_read_versions().len() > p.get_mutations().len() {
                return Err(invalid("more read versions than mutations"));
            }
            keys(c, p.get_mutations().iter().map(|m| m.get_key()))
        }
        Some(Cmd::commit(cm)) => {
            ts("start_ts", cm.get_start_ts())?;
            if cm.get_commit_ts() <= cm.get_start_ts() {
                return Err(invalid("commit_ts not after start_ts"));
            }
            keys(c, slices(cm.get_keys()).into_iter())
        }
        Some(Cmd::rollback(r)) => {
            ts("start_ts", r.get_start_ts())?;
            keys(c, slices(r.get_keys()).into_iter())
        }
        Some(Cmd::cleanup(cl)) => {
            ts("start_ts", cl.get_start_ts())?;
            ts("current_ts", cl.get_current_ts())?;
            (c.key)(cl.get_key())
        }
        Some(Cmd::check_txn_status(s)) => {
            ts("lock_ts", s.get_lock_ts())?;
            ts("current_ts", s.get_current_ts())?;
            (c.key)(s.get_primary())
        }
        Some(Cmd::resolve_lock(r)) => {
            ts("start_ts", r.get_start_ts())?;
            if r.get_commit_ts() != 0 && r.get_commit_ts() <= r.get_start_ts() {
                return Err(invalid("commit_ts not after start_ts"));
            }
            keys(c, slices(r.get_keys()).into_iter())
        }
        Some(Cmd::heartbeat(h)) => {
            ts("start_ts", h.get_start_ts())?;
            (c.key)(h.get_primary())
        }
        Some(Cmd::pessimistic_lock(p)) => {
            ts("start_ts", p.get_start_ts())?;
            ts("for_update_ts", p.get_for_update_ts())?;
            if p.get_for_update_ts() < p.get_start_ts() {
                return Err(invalid("for_update_ts below start_ts"));
            }
            if p.get_lock_ttl_ms() == 0 {
                return Err(invalid("lock_ttl_ms is 0"));
            }
            if p.get_primary().is_empty() {
                return Err(invalid("pessimistic lock without a primary"));
            }
            foreign_key(p.get_primary(), c)?;
            keys(c, slices(p.get_keys()).into_iter())
        }
        Some(Cmd::pessimistic_rollback(p)) => {
            ts("start_ts", p.get_start_ts())?;
            ts("for_update_ts", p.get_for_update_ts())?;
            keys(c, slices(p.get_keys()).into_iter())
        }
        Some(Cmd::check_secondary_locks(s)) => {
            ts("start_ts", s.get_start_ts())?;
            keys(c, slices(s.get_keys()).into_iter())
        }
    }
}

fn slices(ks: &[Vec<u8>]) -> Vec<&[u8]> {
    ks.iter().map(Vec::as_slice).collect()
}
