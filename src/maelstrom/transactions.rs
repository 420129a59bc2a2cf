//! The transactional messages of the JSON-lines node (`docs/PROTOCOL.md`,
//! "Transactions"): `txn_execute` (an atomic batch), `occ_begin` / `occ_read` /
//! `occ_commit` (OCC with read versions) and `contention_benchmark`.
//!
//! Each is a thin handler over the client library's transactions (`TxnClient::atomic`,
//! `OccTxn`, `regatta::contention`), run by this node's client over the harness
//! (`gateway`) with timestamps from the group's oracle (`tso`). They work on the
//! **transactional** key space (MVCC records in the `default` / `write` / `lock` column
//! families), which is not the raw key space of `read` / `write` / `cas`: a key written by
//! one is not seen by the other, as in TiKV's TxnKV and RawKV.

use super::fields::{field, key, kind, opt_num, opt_strings, text};
use super::{dec, enc, Fail, Node};
use crate::contention::{self, ContentionConfig, Strategy};
use regatta_client::{AtomicOp, Error};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Most increments one `contention_benchmark` may ask for (clients x ops per client), so
/// that it answers within minutes.
const MAX_BENCH_OPS: usize = 20_000;

/// How long one benchmark increment may keep retrying before it counts as an error.
const BENCH_OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Handles one transactional message.
pub(super) async fn handle(node: &Arc<Node>, kind: &str, body: &Value) -> Result<Value, Fail> {
    match kind {
        "occ_begin" => {
            // The id names the transaction for the harness only: the read set travels with
            // the commit, so the node keeps nothing under it. Store id in the top bits
            // keeps ids of different nodes apart.
            let n = node.next_txn_id.fetch_add(1, Ordering::Relaxed);
            let store = node.names.iter().position(|m| *m == node.me).unwrap_or(0) as u64 + 1;
            Ok(json!({"type": "occ_begin_ok", "txn_id": (store << 40) | n}))
        }
        "occ_read" => {
            let id = txn_id(body)?;
            let key = key(body, "key")?;
            let txns = node.txns().await?;
            let (value, version) = txns
                .occ_begin()
                .read(&key)
                .await
                .map_err(|e| fail(e, false))?;
            let reply = json!({
                "type": "occ_read_ok",
                "value": value.map_or(Value::Null, |v| dec(&v)),
                "version": version,
            });
            Ok(with_txn_id(reply, id))
        }
        "occ_commit" => occ_commit(node, body).await,
        "txn_execute" => txn_execute(node, body).await,
        "contention_benchmark" => contention_benchmark(node, body).await,
        other => Err(Fail(10, format!("message type {other:?} is not supported"))),
    }
}

/// `txn_id` is opaque and optional: any string or non-negative integer, returned as
/// given; an unknown one is accepted (the read set travels with the commit, so the node
/// keeps nothing under it). Other JSON types are malformed (12).
fn txn_id(body: &Value) -> Result<Option<Value>, Fail> {
    match body.get("txn_id") {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::String(_)) => Ok(Some(v.clone())),
        Some(v) if v.is_u64() => Ok(Some(v.clone())),
        Some(v) => Err(Fail(
            12,
            format!(
                "txn_id must be a string or a non-negative integer, got {}",
                kind(v)
            ),
        )),
    }
}

/// Adds `txn_id` (when the request named one) to a reply body.
fn with_txn_id(mut reply: Value, id: Option<Value>) -> Value {
    if let (Some(id), Some(obj)) = (id, reply.as_object_mut()) {
        obj.insert("txn_id".into(), id);
    }
    reply
}

/// The array field `name` (absent or `null`: empty).
fn list<'a>(body: &'a Value, name: &str) -> Result<&'a [Value], Fail> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(Fail(12, format!("{name:?} must be an array"))),
    }
}

async fn occ_commit(node: &Arc<Node>, body: &Value) -> Result<Value, Fail> {
    let id = txn_id(body)?;
    let mut reads = Vec::new();
    for r in list(body, "read_versions")? {
        let version = r
            .get("version")
            .and_then(Value::as_u64)
            .ok_or_else(|| Fail(12, "each read version needs a number \"version\"".into()))?;
        reads.push((key(r, "key")?, version));
    }
    let mut writes = Vec::new();
    for w in list(body, "writes")? {
        writes.push((key(w, "key")?, enc(field(w, "value")?)));
    }
    let txns = node.txns().await?;
    let mut t = txns.occ_from_reads(reads);
    for (k, v) in &writes {
        t.write(k, v);
    }
    let out = t.commit().await.map_err(|e| fail(e, true))?;
    let reply = if out.committed {
        json!({
            "type": "occ_commit_ok",
            "committed": true,
            "new_version": out.commit_ts,
            "log_index": out.log_index,
        })
    } else {
        json!({
            "type": "occ_commit_ok",
            "committed": false,
            "new_version": Value::Null,
            "changed_key": out.changed_key.map_or(Value::Null, |k| dec(&k)),
        })
    };
    Ok(with_txn_id(reply, id))
}

async fn txn_execute(node: &Arc<Node>, body: &Value) -> Result<Value, Fail> {
    let items = match field(body, "operations")? {
        Value::Array(items) => items,
        _ => return Err(Fail(12, "\"operations\" must be an array".into())),
    };
    let mut ops = Vec::with_capacity(items.len());
    for item in items {
        let k = key(item, "key")?;
        ops.push(match text(item, "op")? {
            "get" => AtomicOp::Get(k),
            "put" => AtomicOp::Put(k, enc(field(item, "value")?)),
            "delete" => AtomicOp::Delete(k),
            other => {
                return Err(Fail(
                    12,
                    format!("unknown op {other:?} (get, put or delete)"),
                ))
            }
        });
    }
    let txns = node.txns().await?;
    let out = txns.atomic(&ops).await.map_err(|e| fail(e, true))?;
    let mut gets = out.results.into_iter();
    let results: Vec<Value> = items
        .iter()
        .zip(&ops)
        .map(|(item, op)| {
            let value = match op {
                AtomicOp::Get(_) => gets.next().flatten().map_or(Value::Null, |v| dec(&v)),
                AtomicOp::Put(_, v) => dec(v),
                AtomicOp::Delete(_) => Value::Null,
            };
            json!({"op": item["op"], "key": item["key"], "value": value})
        })
        .collect();
    Ok(json!({
        "type": "txn_execute_ok",
        "committed": true,
        "log_index": out.log_index,
        "commit_ts": out.commit_ts,
        "ops_applied": ops.len(),
        "results": results,
    }))
}

async fn contention_benchmark(node: &Arc<Node>, body: &Value) -> Result<Value, Fail> {
    let cfg = ContentionConfig {
        clients: opt_num(body, "clients")?.unwrap_or(10) as usize,
        ops_per_client: opt_num(body, "ops_per_client")?.unwrap_or(10) as usize,
        key: match body.get("key") {
            None | Some(Value::Null) => "hot".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        },
        keys: opt_num(body, "keys")?.unwrap_or(1) as usize,
        op_timeout: BENCH_OP_TIMEOUT,
    };
    cfg.validate().map_err(|e| Fail(12, e.to_string()))?;
    if cfg.clients.saturating_mul(cfg.ops_per_client) > MAX_BENCH_OPS {
        return Err(Fail(
            12,
            format!("clients x ops_per_client must be at most {MAX_BENCH_OPS}"),
        ));
    }
    let names = opt_strings(body, "strategies")?
        .unwrap_or_else(|| Strategy::ALL.iter().map(|s| s.name().to_string()).collect());
    let strategies = names
        .iter()
        .map(|s| Strategy::parse(s).map_err(|e| Fail(12, e.to_string())))
        .collect::<Result<Vec<_>, Fail>>()?;
    let (client, txns) = node.txn_client().await.map_err(|e| Fail(11, e))?;
    // Fresh keys per request: runs never share a counter.
    let base = txns.current_timestamp().await.map_err(|e| fail(e, false))?;
    let mut results = Vec::with_capacity(strategies.len());
    for (i, s) in strategies.into_iter().enumerate() {
        let r = contention::run(&client, &txns, s, &cfg, base + i as u64)
            .await
            .map_err(|e| Fail(13, format!("{}: {e:#}", s.name())))?;
        results.push(serde_json::to_value(&r).map_err(|e| Fail(13, e.to_string()))?);
    }
    Ok(json!({"type": "contention_benchmark_ok", "results": results}))
}

impl Node {
    /// The node's transaction client, or error 11 when it cannot be made yet.
    async fn txns(self: &Arc<Self>) -> Result<regatta_client::TxnClient, Fail> {
        self.txn_client()
            .await
            .map(|(_, txns)| txns)
            .map_err(|e| Fail(11, e))
    }
}

/// A client error as the protocol's code: definite failures (nothing applied) against
/// unknown outcomes (0). `writes`: the request may have written (a commit), so an error
/// met after something was sent is not proof that nothing was applied.
fn fail(e: Error, writes: bool) -> Fail {
    let code = match &e {
        Error::InvalidArgument(_) => 12,
        // Not reached (a read: retrying is harmless), or not reached this time (a write:
        // an earlier attempt of it may have been).
        Error::Connection { .. } | Error::Pd(_) => {
            if writes {
                0
            } else {
                11
            }
        }
        Error::BelowGcSafePoint { .. } => 14,
        // Timeouts, an undetermined commit, a server error: the outcome is unknown.
        Error::Timeout { .. }
        | Error::CommitUndetermined { .. }
        | Error::Storage(_)
        | Error::Server(_) => 0,
        // Conflicts, locks, lock waits, deadlocks, a rollback by another client: the
        // transaction did not commit (a 1PC whose earlier attempt went unanswered is
        // `CommitUndetermined` instead), and another try may.
        e if e.is_retryable() => 30,
        _ => 0,
    };
    Fail(code, e.to_string())
}
