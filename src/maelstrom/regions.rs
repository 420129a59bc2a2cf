//! The region messages of the JSON-lines node (`docs/PROTOCOL.md`, "Regions"):
//! writes and reads that say which region served them, the region map, and manual splits.
//! Keys are stored as their JSON text, so region boundaries are JSON values too; an
//! unbounded end is `""`.

use super::fields::{field, key, opt_num};
use super::{dec, enc, error_code, request, Fail, Node};
use regatta_engine::{Cf, Engine as _, Snapshot as _};
use regatta_proto::kvrpcpb::SplitRegionRequest;
use regatta_proto::metapb::Region;
use serde_json::{json, Value};
use std::sync::Arc;

fn bound(b: &[u8]) -> Value {
    if b.is_empty() {
        json!("")
    } else {
        dec(b)
    }
}

fn range(r: &Region) -> Value {
    json!([bound(r.get_start_key()), bound(r.get_end_key())])
}

/// Handles one region message.
pub(super) async fn handle(node: &Arc<Node>, kind: &str, body: &Value) -> Result<Value, Fail> {
    match kind {
        "region_put" => {
            let (key, value) = (key(body, "key")?, enc(field(body, "value")?));
            let index = node.raw_put(key.clone(), value).await?;
            let region = node.region_of(&key);
            Ok(json!({
                "type": "region_put_ok",
                "region_id": region.get_id(),
                "key_range": range(&region),
                "commit_index": index,
            }))
        }
        "region_get" => {
            let key = key(body, "key")?;
            let value = node.get_value(key.clone()).await?;
            Ok(json!({
                "type": "region_get_ok",
                "value": value,
                "region_id": node.region_of(&key).get_id(),
            }))
        }
        "region_info" => {
            let mut regions = Vec::new();
            for s in node.store.region_statuses().await {
                let r = &s.region;
                let (lo, hi) =
                    regatta_engine::keys::raw_data_range(r.get_start_key(), r.get_end_key());
                let mut size = 0u64;
                let _ = node
                    .store
                    .engine()
                    .snapshot()
                    .scan(Cf::Default, &lo, &hi, |k, v| {
                        size += (k.len() + v.len()) as u64;
                        Ok(true)
                    });
                let leader = if s.leader_store_id == 0 {
                    Value::Null
                } else {
                    json!(node.name_of(s.leader_store_id))
                };
                regions.push(json!({
                    "id": r.get_id(),
                    "range": range(r),
                    "leader": leader,
                    "size_bytes": size,
                    "epoch": [r.get_region_epoch().get_conf_ver(), r.get_region_epoch().get_version()],
                }));
            }
            Ok(json!({"type": "region_info_ok", "regions": regions}))
        }
        "region_split" => {
            let key = key(body, "split_key")?;
            if let Some(want) = opt_num(body, "region_id")? {
                let holder = node.region_of(&key).get_id();
                if holder != want {
                    return Err(Fail(
                        12,
                        format!("split key is in region {holder}, not region {want}"),
                    ));
                }
            }
            let mut resp = node
                .execute(request(|r| {
                    let mut s = SplitRegionRequest::new();
                    s.set_split_key(key);
                    r.set_split(s);
                }))
                .await?;
            if resp.has_error() {
                return Err(error_code(&resp));
            }
            let s = resp.mut_response().take_split();
            Ok(json!({
                "type": "region_split_ok",
                "new_regions": [
                    {"id": s.get_left().get_id(), "range": range(s.get_left())},
                    {"id": s.get_right().get_id(), "range": range(s.get_right())},
                ],
            }))
        }
        other => Err(Fail(10, format!("message type {other:?} is not supported"))),
    }
}
