//! Client requests checked and served against a region, with no replica state: request
//! validation (epoch, key range, sizes; the layer above's commands by it, with the same
//! checks) and reads from the engine's applied state (raw, and the layer's reads).
//!
//! A leaf module: both the peer and the local reader use it, and it uses neither, so
//! there is no import circle between them.

use crate::apply;
use crate::config::StoreConfig;
use crate::coprocessor::{Checks, Coprocessor};
use crate::error::Error;
use regatta_proto::kvrpcpb::{KvRequest, KvResponse, Request, Request_oneof_cmd};
use regatta_proto::metapb::Region;
use regatta_proto::MAX_BATCH_KEYS;

/// Checks a request against the replica's region (epoch, key range) and the size limits.
pub(crate) fn validate_request(
    req: &KvRequest,
    region: &Region,
    cfg: &StoreConfig,
    cop: &dyn Coprocessor,
) -> Result<(), Error> {
    if region.get_peers().is_empty() {
        // An uninitialized replica: it does not know its range yet.
        return Err(Error::RegionNotFound(region.get_id()));
    }
    let ctx = req.get_context();
    let epoch = region.get_region_epoch();
    if ctx.get_region_epoch().get_version() != epoch.get_version()
        || ctx.get_region_epoch().get_conf_ver() != epoch.get_conf_ver()
    {
        return Err(Error::EpochNotMatch {
            current_regions: vec![region.clone()],
        });
    }
    with_checks(region, cfg, |c| validate_cmd(req, region, cop, c))
}

/// Runs `f` with the store's checks of keys, values and scan ranges against `region` and
/// the size limits of `cfg` (what a layer's `validate` gets).
pub fn with_checks<R>(region: &Region, cfg: &StoreConfig, f: impl FnOnce(&Checks) -> R) -> R {
    let check_key = |key: &[u8]| -> Result<(), Error> {
        if key.is_empty() || key.len() > cfg.max_key_size {
            return Err(Error::InvalidArgument(format!(
                "key of {} bytes (must be 1..={})",
                key.len(),
                cfg.max_key_size
            )));
        }
        if !regatta_proto::region::key_in_range(region, key) {
            return Err(Error::key_not_in_region(region, key));
        }
        Ok(())
    };
    let check_value = |v: &[u8]| -> Result<(), Error> {
        if v.len() > cfg.max_value_size {
            return Err(Error::InvalidArgument(format!(
                "value of {} bytes exceeds {}",
                v.len(),
                cfg.max_value_size
            )));
        }
        Ok(())
    };
    let range = |start: &[u8], end: &[u8]| check_scan_range(region, start, end);
    f(&Checks {
        key: &check_key,
        value: &check_value,
        range: &range,
    })
}

/// The checks of one request's command (see [`validate_request`]).
fn validate_cmd(
    req: &KvRequest,
    region: &Region,
    cop: &dyn Coprocessor,
    c: &Checks,
) -> Result<(), Error> {
    let (check_key, check_value) = (c.key, c.value);
    match &req.get_request().cmd {
        Some(Request_oneof_cmd::get(g)) => check_key(g.get_key()),
        Some(Request_oneof_cmd::put(p)) => {
            check_key(p.get_key())?;
            check_value(p.get_value())
        }
        Some(Request_oneof_cmd::delete(d)) => check_key(d.get_key()),
        Some(Request_oneof_cmd::batch_get(b)) => {
            check_batch_len(b.get_keys().len())?;
            b.get_keys().iter().try_for_each(|k| check_key(k))
        }
        Some(Request_oneof_cmd::batch_put(b)) => {
            check_batch_len(b.get_pairs().len())?;
            b.get_pairs().iter().try_for_each(|p| {
                check_key(p.get_key())?;
                check_value(p.get_value())
            })
        }
        Some(Request_oneof_cmd::batch_delete(b)) => {
            check_batch_len(b.get_keys().len())?;
            b.get_keys().iter().try_for_each(|k| check_key(k))
        }
        Some(Request_oneof_cmd::cas(c)) => {
            check_key(c.get_key())?;
            check_value(c.get_expected())?;
            check_value(c.get_new_value())
        }
        Some(Request_oneof_cmd::scan(s)) => {
            check_scan_range(region, s.get_start_key(), s.get_end_key())
        }
        Some(Request_oneof_cmd::split(sp)) => {
            check_key(sp.get_split_key())?;
            if sp.get_split_key() == region.get_start_key() {
                return Err(Error::InvalidArgument(
                    "the split key is the region's start: nothing to split".into(),
                ));
            }
            Ok(())
        }
        None => Err(Error::InvalidArgument("request has no command".into())),
        Some(_) if cop.kind(req.get_request()).is_some() => {
            cop.validate(req.get_request(), region, c)
        }
        Some(_) => Err(Error::InvalidArgument(
            "no layer above the raftstore serves this command".into(),
        )),
    }
}

/// A scan's `[start, end)` (empty end: unbounded) must overlap the region.
fn check_scan_range(r: &Region, start: &[u8], end: &[u8]) -> Result<(), Error> {
    let start_ok = r.get_end_key().is_empty() || start < r.get_end_key();
    let end_ok = end.is_empty() || end > r.get_start_key();
    if start_ok && end_ok {
        Ok(())
    } else {
        Err(Error::key_not_in_region(r, start))
    }
}

/// A batch holds at least one key and at most [`MAX_BATCH_KEYS`].
fn check_batch_len(n: usize) -> Result<(), Error> {
    if n == 0 || n > MAX_BATCH_KEYS {
        return Err(Error::InvalidArgument(format!(
            "a batch of {n} keys (must be 1..={MAX_BATCH_KEYS})"
        )));
    }
    Ok(())
}

/// Serves a get, batch get or scan from the replica's applied state in `snap`.
pub(crate) fn read_from_engine<S: regatta_engine::Snapshot>(
    snap: &S,
    region: &Region,
    req: &Request,
    cop: &dyn Coprocessor,
) -> KvResponse {
    let mut resp = regatta_proto::kvrpcpb::Response::new();
    let result = match &req.cmd {
        Some(Request_oneof_cmd::get(g)) => snap
            .get_raw(g.get_key())
            .map(|v| resp.set_get(apply::get_response(v)))
            .map_err(Error::from),
        Some(Request_oneof_cmd::batch_get(b)) => b
            .get_keys()
            .iter()
            .map(|k| Ok((k.clone(), snap.get_raw(k)?)))
            .collect::<Result<Vec<_>, Error>>()
            .map(|reads| resp.set_batch_get(apply::batch_get_response(reads))),
        Some(Request_oneof_cmd::scan(s)) => apply::scan_region(
            snap,
            region,
            s.get_start_key(),
            s.get_end_key(),
            s.get_limit() as usize,
            None,
        )
        .map(|r| resp.set_scan(r)),
        Some(_) if cop.kind(req) == Some(crate::coprocessor::Kind::Read) => {
            cop.read(snap, region, req).map(|r| resp = r)
        }
        _ => Err(Error::InvalidArgument("not a read".into())),
    };
    match result {
        Ok(()) => {
            let mut out = KvResponse::new();
            out.set_response(resp);
            out
        }
        Err(e) => e.into_response(),
    }
}
