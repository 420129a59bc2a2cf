//! Region snapshots: generated from a RocksDB snapshot of the region's data range, its
//! apply state and its dedup sessions; applied by replacing the range.
//!
//! Invariant: a snapshot's metadata `(index, term)` is exactly the apply state read at the
//! same RocksDB snapshot as the data, because apply writes data and apply state in one
//! batch. So a snapshot is the state machine after applying entry `index`, no more, no less.

use crate::error::{Error, Result};
use crate::keys;
use crate::raw::encode_raw_value;
use crate::traits::{decode_msg, Cf, Engine, Snapshot as _};
use protobuf::Message;
use raft::eraftpb::{ConfState, Snapshot};
use regatta_proto::metapb::Region;
use regatta_proto::raft_serverpb::{
    CfData, DedupEntry, KeyValue, RaftApplyState, RegionLocalState, RegionSnapshotData,
};

/// Data-key ranges (every mode prefix) of the user-key range of `region`.
pub fn region_data_ranges(region: &Region) -> Vec<(Vec<u8>, Vec<u8>)> {
    // Raw ('r') and transactional ('x', memcomparable user keys with their versions).
    let (start, end) = (region.get_start_key(), region.get_end_key());
    vec![
        keys::raw_data_range(start, end),
        keys::txn_data_range(start, end),
    ]
}

/// The user key of the first data record (in any data column family, raw or
/// transactional) of `region` that is not the raw record of one of `skip` (raw user
/// keys), or `None` when the region holds nothing else: how a seed checks that a replica
/// holds no client data besides what its node wrote itself.
pub fn first_data_key<S: crate::traits::Snapshot>(
    snap: &S,
    region: &Region,
    skip: &[Vec<u8>],
) -> Result<Option<Vec<u8>>> {
    let skip: Vec<Vec<u8>> = skip.iter().map(|k| keys::raw_data_key(k)).collect();
    for cf in Cf::DATA {
        for (lo, hi) in region_data_ranges(region) {
            let mut found = None;
            snap.scan(cf, &lo, &hi, |k, _| {
                if skip.iter().any(|s| s.as_slice() == k) {
                    return Ok(true);
                }
                found = Some(k.to_vec());
                Ok(false)
            })?;
            if let Some(k) = found {
                let user = match keys::raw_user_key(&k) {
                    Some(u) => u.to_vec(),
                    None => keys::txn_user_key(&k).map_or(k.clone(), |(u, _)| u),
                };
                return Ok(Some(user));
            }
        }
    }
    Ok(None)
}

fn in_ranges(ranges: &[(Vec<u8>, Vec<u8>)], key: &[u8]) -> bool {
    ranges
        .iter()
        .any(|(lo, hi)| lo.as_slice() <= key && key < hi.as_slice())
}

/// Builds the snapshot of `region_id` as of its current apply state.
pub fn generate<E: Engine>(engine: &E, region_id: u64) -> Result<Snapshot> {
    let snap = engine.snapshot();
    let state: RegionLocalState = match snap.get(Cf::Raft, &keys::region_state_key(region_id))? {
        Some(b) => decode_msg(&b, "region state", region_id)?,
        None => {
            return Err(Error::Corrupt {
                what: "region state",
                region_id,
                detail: "missing while generating a snapshot".into(),
            })
        }
    };
    let apply: RaftApplyState = match snap.get(Cf::Raft, &keys::apply_state_key(region_id))? {
        Some(b) => decode_msg(&b, "apply state", region_id)?,
        None => {
            return Err(Error::Corrupt {
                what: "apply state",
                region_id,
                detail: "missing while generating a snapshot".into(),
            })
        }
    };
    let mut data = RegionSnapshotData::new();
    data.set_region(state.get_region().clone());
    data.set_apply_state(apply.clone());
    data.set_gc_safe_point(crate::storage::read_gc_safe_point(&snap, region_id)?);
    for cf in Cf::DATA {
        let mut cf_data = CfData::new();
        cf_data.set_cf(cf.name().to_string());
        for (lo, hi) in region_data_ranges(state.get_region()) {
            snap.scan(cf, &lo, &hi, |k, v| {
                let mut kv = KeyValue::new();
                kv.set_key(k.to_vec());
                kv.set_value(v.to_vec());
                cf_data.mut_kvs().push(kv);
                Ok(true)
            })?;
        }
        data.mut_cfs().push(cf_data);
    }
    let (lo, hi) = keys::dedup_range(region_id);
    snap.scan(Cf::Raft, &lo, &hi, |_, v| {
        data.mut_sessions()
            .push(decode_msg(v, "dedup session", region_id)?);
        Ok(true)
    })?;

    let (index, term) = (apply.get_applied_index(), apply.get_applied_term());
    assemble(region_id, index, term, state.get_voters(), &data)
}

/// A raft snapshot at `(index, term)` with voters `voters`, carrying `data`.
fn assemble(
    region_id: u64,
    index: u64,
    term: u64,
    voters: &[u64],
    data: &RegionSnapshotData,
) -> Result<Snapshot> {
    let mut s = Snapshot::default();
    let meta = s.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(ConfState {
        voters: voters.to_vec(),
        ..Default::default()
    });
    s.data = data
        .write_to_bytes()
        .map_err(|e| Error::Corrupt {
            what: "snapshot encoding",
            region_id,
            detail: e.to_string(),
        })?
        .into();
    Ok(s)
}

/// Builds a snapshot of `region` at `(index, term)` that holds exactly `pairs` (raw user
/// key, value), each at version `index`, and no dedup sessions: how a harness seeds a fresh
/// replica with a known state (`seed_state` of the JSON-lines node). Keys outside the
/// region are refused.
pub fn build_seed(
    region: &Region,
    voters: &[u64],
    index: u64,
    term: u64,
    pairs: &[(Vec<u8>, Vec<u8>)],
) -> Result<Snapshot> {
    let region_id = region.get_id();
    let mut cf_data = CfData::new();
    cf_data.set_cf(Cf::Default.name().to_string());
    let mut sorted: Vec<&(Vec<u8>, Vec<u8>)> = pairs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in sorted {
        if !regatta_proto::region::key_in_range(region, k) {
            return Err(Error::BadSnapshot {
                region_id,
                detail: format!("seed key {k:?} is outside the region"),
            });
        }
        let mut kv = KeyValue::new();
        kv.set_key(keys::raw_data_key(k));
        kv.set_value(encode_raw_value(index, v));
        cf_data.mut_kvs().push(kv);
    }
    let mut apply = RaftApplyState::new();
    apply.set_applied_index(index);
    apply.set_applied_term(term);
    let mut data = RegionSnapshotData::new();
    data.set_region(region.clone());
    data.set_apply_state(apply);
    data.mut_cfs().push(cf_data);
    assemble(region_id, index, term, voters, &data)
}

/// A decoded snapshot, checked against the region it is for.
pub struct DecodedSnapshot {
    /// The region as the snapshot's sender knew it.
    pub region: Region,
    /// The apply state it carries.
    pub apply_state: RaftApplyState,
    /// The data, per column family.
    pub cfs: Vec<(Cf, Vec<KeyValue>)>,
    /// The dedup sessions.
    pub sessions: Vec<DedupEntry>,
    /// The region's GC safe point (0: none).
    pub gc_safe_point: u64,
}

/// The region a snapshot carries, read without validating the data.
pub fn decode_region(snap: &Snapshot) -> Result<Region> {
    let mut data =
        RegionSnapshotData::parse_from_bytes(&snap.data).map_err(|e| Error::BadSnapshot {
            region_id: 0,
            detail: format!("undecodable: {e}"),
        })?;
    Ok(data.take_region())
}

/// Decodes the data of a snapshot for `region_id` and validates it: right region, known
/// column families, every key inside the region's range, apply state equal to the metadata.
pub fn decode(region_id: u64, snap: &Snapshot) -> Result<DecodedSnapshot> {
    let bad = |detail: String| Error::BadSnapshot { region_id, detail };
    let mut data = RegionSnapshotData::parse_from_bytes(&snap.data)
        .map_err(|e| bad(format!("undecodable: {e}")))?;
    if data.get_region().get_id() != region_id {
        return Err(bad(format!(
            "snapshot is of region {}",
            data.get_region().get_id()
        )));
    }
    let meta = snap.get_metadata();
    let apply = data.take_apply_state();
    if apply.get_applied_index() != meta.index || apply.get_applied_term() != meta.term {
        return Err(bad(format!(
            "apply state ({}, {}) differs from metadata ({}, {})",
            apply.get_applied_index(),
            apply.get_applied_term(),
            meta.index,
            meta.term
        )));
    }
    let region = data.take_region();
    let ranges = region_data_ranges(&region);
    let mut cfs = Vec::new();
    for mut cf_data in data.take_cfs().into_iter() {
        let cf = Cf::from_name(cf_data.get_cf())
            .filter(|c| *c != Cf::Raft)
            .ok_or_else(|| bad(format!("unknown column family {:?}", cf_data.get_cf())))?;
        let kvs = cf_data.take_kvs().into_vec();
        if let Some(kv) = kvs.iter().find(|kv| !in_ranges(&ranges, kv.get_key())) {
            return Err(bad(format!("key {:?} outside the region", kv.get_key())));
        }
        cfs.push((cf, kvs));
    }
    Ok(DecodedSnapshot {
        region,
        apply_state: apply,
        cfs,
        sessions: data.take_sessions().into_vec(),
        gc_safe_point: data.get_gc_safe_point(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_data_ranges_cover_the_raw_and_txn_keys_of_the_region_only() {
        let mut region = Region::new();
        region.set_start_key(b"b".to_vec());
        region.set_end_key(b"d".to_vec());
        let ranges = region_data_ranges(&region);
        let mut version = keys::txn_data_key(b"c\xff");
        version.extend_from_slice(&[0xFF; 8]);
        for inside in [
            keys::raw_data_key(b"b"),
            keys::raw_data_key(b"c"),
            keys::txn_data_key(b"b"),
            version,
        ] {
            assert!(in_ranges(&ranges, &inside), "{inside:?}");
        }
        for outside in [
            keys::raw_data_key(b"d"),
            keys::raw_data_key(b"a"),
            keys::txn_data_key(b"d"),
            keys::txn_data_key(b"a\xff"),
        ] {
            assert!(!in_ranges(&ranges, &outside), "{outside:?}");
        }
    }
}
