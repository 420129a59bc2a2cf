//! What a read asks for ([`ReadConsistency`]) and what it returns ([`Versioned`],
//! [`ReadOutcome`], [`KvPair`]).

use crate::error::{Error, Result};
use std::time::Duration;

/// How a read is served. See `docs/ARCHITECTURE.md` ("Reads") and `docs/CLOCKS.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadConsistency {
    /// Linearizable, by ReadIndex on the leader (one heartbeat round, no log write).
    #[default]
    Linearizable,
    /// Linearizable under the clock assumption of `docs/CLOCKS.md`: served by the leader
    /// from its lease with no network round trip; ReadIndex when the lease does not hold.
    Lease,
    /// Linearizable, by putting the read through the raft log (slowest; for comparison).
    LogRead,
    /// Bounded staleness: any replica (spread across stores) whose state is at most
    /// `max_staleness` old; the leader serves it when none is fresh enough or the bound is
    /// [`Duration::ZERO`].
    ///
    /// The bound travels in whole milliseconds, rounded down, so a read is never staler
    /// than asked. A non-zero bound under 1 ms is refused with
    /// [`Error::InvalidArgument`] rather than quietly turned into a leader read: ask for
    /// [`ReadConsistency::Linearizable`] (or a zero bound) to read from the leader.
    Follower {
        /// The oldest state the reader accepts: zero, or at least 1 ms.
        max_staleness: Duration,
    },
    /// The state includes every write this client has had acknowledged in the key's
    /// region: any replica that has applied the client's last write there; one that is
    /// behind waits briefly, then the leader serves it.
    ReadYourWrites,
}

impl ReadConsistency {
    /// Whether a replica other than the leader may serve the read.
    pub(crate) fn any_replica(self) -> bool {
        matches!(
            self,
            ReadConsistency::Follower { .. } | ReadConsistency::ReadYourWrites
        )
    }

    /// Rejects what the wire cannot carry faithfully: a follower bound in (0, 1 ms).
    pub(crate) fn validate(self) -> Result<()> {
        match self {
            ReadConsistency::Follower { max_staleness }
                if !max_staleness.is_zero() && max_staleness < Duration::from_millis(1) =>
            {
                Err(Error::InvalidArgument(format!(
                    "follower read bound {max_staleness:?} is under 1 ms, the finest the \
                     store takes; use at least 1 ms, or zero (or Linearizable) for a leader read"
                )))
            }
            _ => Ok(()),
        }
    }

    /// A follower read's bound as the wire carries it: whole ms, rounded down (so never
    /// staler than asked), saturating.
    pub(crate) fn max_staleness_ms(max_staleness: Duration) -> u64 {
        u64::try_from(max_staleness.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A key's value and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Vec<u8>,
    /// The log index, in the key's region, of the last write to the key. While the key
    /// stays in one region, every write to it gives it a new, higher version. Not across a
    /// split: the new region's log starts again from a low index, and the key keeps the
    /// version it had, so a version read before a split and one read after it cannot be
    /// compared (see `docs/ARCHITECTURE.md`, "Client").
    pub version: u64,
}

/// A read's value and how it was served (measured by the serving replica).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The value and its version (`None`: the key has no value).
    pub value: Option<Versioned>,
    /// The store whose replica answered.
    pub served_by_store: u64,
    /// Whether the answer is linearizable (served by the leader).
    pub linearizable: bool,
    /// Whether the leader served it from its lease, with no network round trip.
    pub lease_used: bool,
    /// Heartbeat round trips the read waited for.
    pub network_round_trips: u32,
    /// The log index the read was served at.
    pub read_index: u64,
    /// The serving replica's applied index.
    pub applied_index: u64,
    /// Follower reads: the most the served state may lag behind acknowledged writes.
    pub staleness: Duration,
    /// How long the read waited on the replica.
    pub waited: Duration,
}

/// A key-value pair from [`crate::Client::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPair {
    /// The key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
    /// Log index of the last write to this key.
    pub version: u64,
}

/// One region's part of a scan came back with `out` gathered so far and the store's
/// resume point (`scanned_end`; empty: the end of the key space). `Ok(None)`: the scan is
/// done (`out` cut to `limit`, 0 meaning none); `Ok(Some(next))`: go on from `next`. A
/// resume point that does not move past `cursor` is a store bug, refused rather than
/// looped on (`what` names the operation).
pub(crate) fn scan_resume<T>(
    out: &mut Vec<T>,
    limit: usize,
    end: &[u8],
    cursor: &[u8],
    resume: Vec<u8>,
    what: &str,
) -> Result<Option<Vec<u8>>> {
    let finished = resume.is_empty() || (!end.is_empty() && resume.as_slice() >= end);
    if (limit > 0 && out.len() >= limit) || finished {
        out.truncate(if limit > 0 { limit } else { out.len() });
        return Ok(None);
    }
    if resume.as_slice() <= cursor {
        return Err(Error::Server(format!(
            "{what} made no progress at {cursor:?} (the store answered resume point {resume:?})"
        )));
    }
    Ok(Some(resume))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(max_staleness: Duration) -> ReadConsistency {
        ReadConsistency::Follower { max_staleness }
    }

    #[test]
    fn a_follower_bound_under_one_ms_is_refused_not_turned_into_a_leader_read() {
        for bound in [Duration::from_nanos(1), Duration::from_micros(999)] {
            assert!(
                matches!(follower(bound).validate(), Err(Error::InvalidArgument(_))),
                "{bound:?}"
            );
        }
    }

    #[test]
    fn zero_and_whole_or_longer_follower_bounds_are_taken() {
        for bound in [
            Duration::ZERO,
            Duration::from_millis(1),
            Duration::from_micros(1500),
            Duration::MAX,
        ] {
            assert!(follower(bound).validate().is_ok(), "{bound:?}");
        }
        for c in [
            ReadConsistency::Linearizable,
            ReadConsistency::Lease,
            ReadConsistency::LogRead,
            ReadConsistency::ReadYourWrites,
        ] {
            assert!(c.validate().is_ok(), "{c:?}");
        }
    }

    #[test]
    fn the_wire_bound_rounds_down_and_saturates() {
        let ms = ReadConsistency::max_staleness_ms;
        assert_eq!(ms(Duration::from_micros(1999)), 1);
        assert_eq!(ms(Duration::from_millis(250)), 250);
        assert_eq!(ms(Duration::MAX), u64::MAX);
    }

    #[test]
    fn a_scan_resumes_until_its_end_or_limit_and_refuses_a_resume_point_that_does_not_move() {
        let mut out = vec![1, 2];
        let next = super::scan_resume(&mut out, 0, b"z", b"a", b"m".to_vec(), "scan");
        assert_eq!(next.unwrap(), Some(b"m".to_vec()));
        let done = super::scan_resume(&mut out, 0, b"z", b"m", b"z".to_vec(), "scan");
        assert_eq!(done.unwrap(), None, "the resume point reached the end");
        let done = super::scan_resume(&mut out, 0, b"", b"m", Vec::new(), "scan");
        assert_eq!(done.unwrap(), None, "the end of the key space");
        let mut many = vec![1, 2, 3];
        let cut = super::scan_resume(&mut many, 2, b"", b"a", b"b".to_vec(), "scan");
        assert_eq!(cut.unwrap(), None);
        assert_eq!(many, vec![1, 2], "cut to the limit");
        let stuck = super::scan_resume(&mut out, 0, b"", b"m", b"m".to_vec(), "txn_scan");
        assert!(stuck
            .unwrap_err()
            .to_string()
            .contains("txn_scan made no progress"));
    }
}
