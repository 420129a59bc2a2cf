//! `seed_state`: installing a snapshot of a given state on a fresh node's replica.

use super::fields::{field, num};
use super::{enc, Fail, Node};
use regatta_regions::Seed;
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

/// `seed_state {state, commit_index, term}`: installs a snapshot at (commit_index, term)
/// holding `state` on this node's replica, which must hold no data yet; answers once the
/// snapshot is applied.
pub(super) async fn seed_state(node: &Node, body: &Value) -> Result<Value, Fail> {
    let state = field(body, "state")?
        .as_object()
        .ok_or_else(|| Fail(12, "state must be an object".into()))?;
    let (index, term) = (num(body, "commit_index")?, num(body, "term")?);
    if index == 0 || term == 0 {
        return Err(Fail(12, "commit_index and term must be positive".into()));
    }
    let pairs = state
        .iter()
        .map(|(k, v)| (enc(&seed_key(k)), enc(v)))
        .collect();
    let addr = node.replica()?;
    match addr.send(Seed { pairs, index, term }).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Fail(22, e.to_string())),
        Err(e) => return Err(Fail(13, format!("replica unavailable: {e}"))),
    }
    for _ in 0..200 {
        let applied = node
            .store
            .region_statuses()
            .await
            .iter()
            .any(|s| s.region.get_id() == node.region.get_id() && s.applied_index >= index);
        if applied {
            return Ok(json!({"type": "seed_state_ok"}));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(Fail(0, "seed snapshot not applied in time".into()))
}
