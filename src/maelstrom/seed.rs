//! `seed_state`: installing a snapshot of a given state on a fresh node's replica.

use super::fields::{field, num};
use super::tso::LIMIT_KEY;
use super::{enc, Fail, Node};
use regatta_server::{Error, Seed};
use serde_json::{json, Value};
use std::time::Duration;

/// A key of `seed_state`'s `state` object as the JSON value clients name it by: JSON object
/// keys are strings, so `"1"` stands for the number 1 that `read {key: 1}` sends.
fn seed_key(k: &str) -> Value {
    match serde_json::from_str::<Value>(k) {
        Ok(v @ Value::Number(_)) => v,
        _ => Value::String(k.to_string()),
    }
}

/// The largest `commit_index` and `term` a seed takes (JSON's largest exact integer).
const MAX_SEED: u64 = (1 << 53) - 1;

/// How long a seed may wait for the replica's work in flight (its start-up entries) to
/// settle, and then for the snapshot to be installed.
const SEED_TIMEOUT: Duration = Duration::from_secs(4);

/// `seed_state {state, commit_index, term}`: installs a snapshot at (commit_index, term)
/// holding `state` on this node's replica, which must hold no client data; answers once
/// the snapshot is installed (persisted and applied).
///
/// What the node wrote itself before (the bootstrap entry, its leader's empty entry, the
/// timestamp oracle's limit) does not stand in the way: the limit is carried into the
/// seeded state (it is the oracle's, not the client's), and a one-node group's replica
/// rewinds its log to the seed (see `Peer::seed`). A node holding client data refuses
/// (code 22).
pub(super) async fn seed_state(node: &Node, body: &Value) -> Result<Value, Fail> {
    let state = field(body, "state")?
        .as_object()
        .ok_or_else(|| Fail(12, "state must be an object".into()))?;
    let (index, term) = (num(body, "commit_index")?, num(body, "term")?);
    if index == 0 || term == 0 {
        return Err(Fail(12, "commit_index and term must be positive".into()));
    }
    // The log and the terms grow past them; JSON numbers are exact up to here.
    if index > MAX_SEED || term > MAX_SEED {
        return Err(Fail(
            12,
            format!("commit_index and term must be at most {MAX_SEED} (2^53 - 1)"),
        ));
    }
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = state
        .iter()
        .map(|(k, v)| (enc(&seed_key(k)), enc(v)))
        .collect();
    let deadline = tokio::time::Instant::now() + SEED_TIMEOUT;
    loop {
        let addr = node.replica()?;
        let seed = Seed {
            pairs: pairs.clone(),
            keep: vec![LIMIT_KEY.to_vec()],
            index,
            term,
        };
        match addr.send(seed).await {
            Ok(Ok(())) => break,
            // Start-up work still in flight (the first election's entry, the oracle's
            // limit): it settles within milliseconds.
            Ok(Err(Error::ServerIsBusy(why))) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(Fail(11, format!("seed not started: {why}")));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(Err(e)) => return Err(Fail(22, e.to_string())),
            Err(e) => return Err(Fail(13, format!("replica unavailable: {e}"))),
        }
    }
    while tokio::time::Instant::now() < deadline {
        let applied = node
            .store
            .region_statuses()
            .await
            .iter()
            .any(|s| s.region.get_id() == node.region.get_id() && s.applied_index >= index);
        if applied {
            return Ok(json!({"type": "seed_state_ok"}));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(Fail(0, "seed snapshot not installed in time".into()))
}
