//! The fake store's commands: each runs one `regatta_txn` action on a snapshot of the
//! engine and writes its batch (discarded on `Err`), and maps the action's error to the
//! wire's `KeyError`.

use super::cluster::{next_ts, State};
use regatta_engine::Engine;
use regatta_proto::metapb::Region;
use regatta_proto::txnpb::{self, TxnRequest_oneof_cmd as Cmd, TxnResponse};
use regatta_txn as txn;

fn lock_info(key: &[u8], lock: &txn::Lock) -> txnpb::LockInfo {
    let mut l = txnpb::LockInfo::new();
    l.set_key(key.to_vec());
    l.set_primary(lock.primary.clone());
    l.set_start_ts(lock.start_ts);
    l.set_ttl_ms(lock.ttl_ms);
    l.set_kind(match lock.kind {
        txn::LockKind::Put => txnpb::LockKind::LOCK_PUT,
        txn::LockKind::Delete => txnpb::LockKind::LOCK_DELETE,
        txn::LockKind::Lock => txnpb::LockKind::LOCK_LOCK,
        txn::LockKind::Pessimistic => txnpb::LockKind::LOCK_PESSIMISTIC,
    });
    l.set_for_update_ts(lock.for_update_ts);
    l.set_min_commit_ts(lock.min_commit_ts);
    l
}

/// The store's one mapping from the action errors to the wire's `KeyError`.
fn key_error(e: txn::Error) -> txnpb::KeyError {
    let mut k = txnpb::KeyError::new();
    match e {
        txn::Error::KeyIsLocked { key, lock } => k.set_locked(lock_info(&key, &lock)),
        txn::Error::WriteConflict {
            key,
            start_ts,
            conflict_start_ts,
            conflict_commit_ts,
        } => {
            let c = k.mut_conflict();
            c.set_key(key);
            c.set_start_ts(start_ts);
            c.set_conflict_start_ts(conflict_start_ts);
            c.set_conflict_commit_ts(conflict_commit_ts);
        }
        txn::Error::TxnLockNotFound { .. } => k.set_txn_lock_not_found(true),
        txn::Error::TxnNotFound { .. } => k.set_txn_not_found(true),
        txn::Error::Committed { commit_ts, .. } => k.set_committed_ts(commit_ts),
        txn::Error::AlreadyRolledBack { .. } => k.set_already_rolled_back(true),
        txn::Error::PessimisticLockNotFound { .. } => k.set_pessimistic_lock_not_found(true),
        txn::Error::CommitTsExpired { min_commit_ts, .. } => {
            k.set_commit_ts_expired_min(min_commit_ts)
        }
        txn::Error::VersionMismatch {
            key,
            expected,
            actual,
        } => {
            let m = k.mut_occ_version_mismatch();
            m.set_key(key);
            m.set_expected(expected);
            m.set_actual(actual);
        }
        other => k.set_invalid(other.to_string()),
    }
    k
}

fn mutation(m: &txnpb::Mutation) -> txn::Mutation {
    let key = m.get_key().to_vec();
    let base = match m.get_op() {
        txnpb::MutationOp::PUT => txn::Mutation::put(key, m.get_value().to_vec()),
        txnpb::MutationOp::DELETE => txn::Mutation::delete(key),
        txnpb::MutationOp::LOCK => txn::Mutation::lock(key),
    };
    if m.get_pessimistic() {
        base.pessimistic()
    } else {
        base
    }
}

/// Runs one command on the engine; returns its name for the counts.
pub(super) fn run(s: &mut State, region: &Region, cmd: Cmd, out: &mut TxnResponse) -> &'static str {
    let engine = s.engine.clone();
    let snap = engine.snapshot();
    let mut wb = engine.write_batch();
    let (name, result): (&'static str, txn::Result<()>) = match cmd {
        Cmd::get(g) => ("get", {
            txn::MvccReader::new(&snap)
                .get_with_version(g.get_key(), g.get_start_ts())
                .map(|(v, version)| {
                    let r = out.mut_get();
                    r.set_found(v.is_some());
                    r.set_value(v.unwrap_or_default());
                    r.set_commit_ts(version);
                })
        }),
        Cmd::batch_get(b) => ("batch_get", {
            let reader = txn::MvccReader::new(&snap);
            let mut pairs = Vec::new();
            let mut result = Ok(());
            for k in b.get_keys() {
                match reader.get(k, b.get_start_ts()) {
                    Ok(Some(v)) => {
                        let mut p = txnpb::TxnKvPair::new();
                        p.set_key(k.clone());
                        p.set_value(v);
                        pairs.push(p);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            out.mut_batch_get().set_pairs(pairs.into());
            result
        }),
        Cmd::scan(sc) => ("scan", {
            let (asked, ends) = (sc.get_end_key(), region.get_end_key());
            let past_region = !ends.is_empty() && (asked.is_empty() || asked > ends);
            let end = if past_region { ends } else { asked }.to_vec();
            let limit = if sc.get_limit() == 0 {
                usize::MAX
            } else {
                sc.get_limit() as usize
            };
            txn::MvccReader::new(&snap)
                .scan(sc.get_start_key(), &end, sc.get_start_ts(), limit)
                .map(|found| {
                    let r = out.mut_scan();
                    let scanned_end = match found.last() {
                        Some((k, _)) if found.len() == limit => {
                            let mut after = k.clone();
                            after.push(0);
                            after
                        }
                        _ => end.clone(),
                    };
                    for (k, v) in found {
                        let mut p = txnpb::TxnKvPair::new();
                        p.set_key(k);
                        p.set_value(v);
                        r.mut_pairs().push(p);
                    }
                    r.set_scanned_end(scanned_end);
                })
        }),
        Cmd::prewrite(p) => {
            let req = txn::PrewriteRequest {
                primary: p.get_primary().to_vec(),
                start_ts: p.get_start_ts(),
                lock_ttl_ms: p.get_lock_ttl_ms(),
                for_update_ts: p.get_for_update_ts(),
                min_commit_ts: p.get_min_commit_ts(),
                async_commit_secondaries: None,
                mutations: p.get_mutations().iter().map(mutation).collect(),
                read_versions: p
                    .get_read_versions()
                    .iter()
                    .map(|r| (r.get_key().to_vec(), r.get_version()))
                    .collect(),
            };
            if p.get_try_one_pc() {
                let commit_ts = next_ts(s, 1);
                let r = txn::one_pc(&snap, &mut wb, &req, commit_ts);
                (
                    "prewrite_1pc",
                    r.map(|outcome| match outcome {
                        txn::OnePcOutcome::Committed(at) => {
                            out.mut_prewrite().set_one_pc_commit_ts(at)
                        }
                        txn::OnePcOutcome::Prewritten { min_commit_ts } => {
                            out.mut_prewrite().set_min_commit_ts(min_commit_ts)
                        }
                    }),
                )
            } else {
                let r = txn::prewrite(&snap, &mut wb, &req);
                (
                    "prewrite",
                    r.map(|o| out.mut_prewrite().set_min_commit_ts(o.min_commit_ts)),
                )
            }
        }
        Cmd::commit(c) => (
            "commit",
            txn::commit(
                &snap,
                &mut wb,
                c.get_keys(),
                c.get_start_ts(),
                c.get_commit_ts(),
            )
            .map(|at| out.mut_commit().set_commit_ts(at)),
        ),
        Cmd::rollback(r) => (
            "rollback",
            txn::rollback(&snap, &mut wb, r.get_keys(), r.get_start_ts()).map(|()| {
                out.mut_rollback();
            }),
        ),
        Cmd::cleanup(c) => (
            "cleanup",
            txn::cleanup(
                &snap,
                &mut wb,
                c.get_key(),
                c.get_start_ts(),
                c.get_current_ts(),
            )
            .map(|()| {
                out.mut_cleanup();
            }),
        ),
        Cmd::check_txn_status(c) => ("check_txn_status", {
            txn::check_txn_status(
                &snap,
                &mut wb,
                c.get_primary(),
                c.get_lock_ts(),
                c.get_caller_start_ts(),
                c.get_current_ts(),
                c.get_rollback_if_not_exist(),
            )
            .map(|status| {
                let r = out.mut_check_txn_status();
                use txnpb::TxnStatusKind as K;
                match status {
                    txn::TxnStatus::Alive {
                        lock,
                        min_commit_ts_pushed,
                    } => {
                        r.set_status(K::ALIVE);
                        r.set_lock(lock_info(c.get_primary(), &lock));
                        r.set_min_commit_ts_pushed(min_commit_ts_pushed);
                    }
                    txn::TxnStatus::Committed { commit_ts } => {
                        r.set_status(K::COMMITTED);
                        r.set_commit_ts(commit_ts);
                    }
                    txn::TxnStatus::AsyncCommitUndecided { lock } => {
                        r.set_status(K::ASYNC_COMMIT_UNDECIDED);
                        r.set_lock(lock_info(c.get_primary(), &lock));
                    }
                    txn::TxnStatus::RolledBack => r.set_status(K::ROLLED_BACK),
                    txn::TxnStatus::TtlExpiredRolledBack => {
                        r.set_status(K::TTL_EXPIRED_ROLLED_BACK)
                    }
                    txn::TxnStatus::NotFoundRolledBack => r.set_status(K::NOT_FOUND_ROLLED_BACK),
                }
            })
        }),
        Cmd::resolve_lock(r) => (
            "resolve_lock",
            txn::resolve_lock(
                &snap,
                &mut wb,
                r.get_keys(),
                r.get_start_ts(),
                r.get_commit_ts(),
            )
            .map(|n| out.mut_resolve_lock().set_resolved(n as u32)),
        ),
        Cmd::heartbeat(h) => (
            "heartbeat",
            txn::txn_heartbeat(
                &snap,
                &mut wb,
                h.get_primary(),
                h.get_start_ts(),
                h.get_advise_ttl_ms(),
            )
            .map(|ttl| out.mut_heartbeat().set_lock_ttl_ms(ttl)),
        ),
        Cmd::pessimistic_lock(l) => ("pessimistic_lock", {
            let req = txn::PessimisticLockRequest {
                primary: l.get_primary().to_vec(),
                start_ts: l.get_start_ts(),
                for_update_ts: l.get_for_update_ts(),
                lock_ttl_ms: l.get_lock_ttl_ms(),
                need_value: l.get_return_values(),
                keys: l.get_keys().to_vec(),
            };
            let locked = if std::mem::take(&mut s.hand_over_next_lock) {
                txn::acquire_pessimistic_lock_with_conflict(&snap, &mut wb, &req)
            } else {
                txn::acquire_pessimistic_lock_at(&snap, &mut wb, &req)
            };
            locked.map(|(values, locked_at)| {
                let r = out.mut_pessimistic_lock();
                if locked_at > req.for_update_ts {
                    r.set_locked_with_conflict_ts(locked_at);
                }
                for v in values {
                    let mut tv = txnpb::TxnValue::new();
                    tv.set_found(v.is_some());
                    tv.set_value(v.unwrap_or_default());
                    r.mut_values().push(tv);
                }
            })
        }),
        Cmd::pessimistic_rollback(r) => (
            "pessimistic_rollback",
            txn::pessimistic_rollback(
                &snap,
                &mut wb,
                r.get_keys(),
                r.get_start_ts(),
                r.get_for_update_ts(),
            )
            .map(|_| {
                out.mut_pessimistic_rollback();
            }),
        ),
        Cmd::scan_lock(sc) => ("scan_lock", {
            // One region per scan is enough for the fake's tests: to the region's end.
            let end = region.get_end_key().to_vec();
            txn::MvccReader::new(&snap)
                .scan_locks(sc.get_start_key(), &end, sc.get_max_ts(), usize::MAX)
                .map(|locks| {
                    let r = out.mut_scan_lock();
                    for (k, l) in locks {
                        r.mut_locks().push(lock_info(&k, &l));
                    }
                    r.set_scanned_end(end.clone());
                })
        }),
        Cmd::check_secondary_locks(c) => (
            "check_secondary_locks",
            txn::check_secondary_locks(&snap, &mut wb, c.get_keys(), c.get_start_ts()).map(|_| {
                out.mut_check_secondary_locks();
            }),
        ),
    };
    drop(snap);
    match result {
        Ok(()) => engine.write(wb, false).expect("the memory engine writes"),
        // On `Err` the batch is discarded (the actions' contract).
        Err(e) => {
            let resp = std::mem::take(out);
            drop(resp);
            out.set_key_error(key_error(e));
        }
    }
    name
}
