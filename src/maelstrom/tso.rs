//! The node group's timestamp oracle: the one source of transaction timestamps for every
//! node of a `regatta maelstrom` group (each node's own in-memory PD only routes).
//!
//! Timestamps have PD's shape, `physical_ms << 18 | logical`, so lock TTLs keep meaning
//! milliseconds. The allocator runs on the node that leads the region holding
//! [`LIMIT_KEY`]; other nodes forward their requests there through the harness
//! (`gateway`). Its state is in memory except for one raft-replicated record: the
//! **limit**, a timestamp no allocator has handed out (or may hand out) at or above.
//!
//! Invariants, and how they are kept:
//! - *Strictly increasing in real time* (a request that begins after another ended gets a
//!   larger timestamp): every allocation first reads the limit through the leader's lease
//!   (ReadIndex when the lease does not hold), then hands out only below a limit this node
//!   itself wrote and nobody has replaced since (the value read equals the one it wrote;
//!   limits only grow, so each value is written once). Otherwise it first raises the
//!   limit by compare-and-swap from the value read, starting above it: every timestamp
//!   any earlier allocator handed out is below the value read. An allocator that lost the
//!   record mid-request hands out below the new owner's first timestamp, but its request
//!   began before the new owner's CAS ended: the two overlap, so their order is free.
//! - *Cheap*: while this node owns the limit and the lease holds, an allocation is a
//!   local read and a counter; a raft write happens once per [`WINDOW_MS`] of timestamps.
//! - *One clock for the stores too*: the store's PD takes its timestamps from here
//!   ([`store_tso`]), so a new region leader syncs its `max_ts` with the oracle's timestamps.

use super::{request, Node};
use regatta_proto::kvrpcpb::{CasRequest, GetRequest, KvRequest, KvResponse, ReadConsistency};
use regatta_proto::ts::LOGICAL_BITS;
use regatta_server::{PdError, TsoSource};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// The raw key of the limit record (8 bytes, big-endian). It starts with `\0`, which no
/// JSON text does, so no client key meets it.
pub(super) const LIMIT_KEY: &[u8] = b"\0tso\0limit";

/// How far past the clock one raft write of the limit lets the owner hand out. A new
/// owner starts at the limit, so timestamps can run this far ahead of the clock after a
/// takeover (as PD's do after a PD leader change): kept well under the default lock TTL
/// (3 s), so a takeover does not make live locks look expired.
const WINDOW_MS: u64 = 1_000;

/// Compare-and-swap races lost before an allocation gives up (each means another node
/// took the limit meanwhile).
const MAX_RACES: usize = 8;

/// How long one read or swap of the limit may take before the allocation gives up (so a
/// stuck replica never holds the allocator); under the client's hop deadline (2 s).
const STEP_TIMEOUT: Duration = Duration::from_secs(1);

/// Why this node could not allocate.
pub(super) enum TsoError {
    /// This node does not lead the region of the limit; the leader's store id if known.
    NotLeader(Option<u64>),
    /// Anything else (a timeout, a lost race, a storage error); retry later.
    Failed(String),
}

/// This node's allocator.
#[derive(Default)]
pub(super) struct Tso {
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The next timestamp this node may hand out (if it still owns `owned`).
    next: u64,
    /// The limit this node wrote last (0: none).
    owned: u64,
}

/// Now, as the smallest timestamp of the current millisecond.
fn clock_ts() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms << LOGICAL_BITS
}

impl Tso {
    /// `count` consecutive fresh timestamps, allocated here; returns the first.
    pub(super) async fn allocate(&self, node: &Node, count: u32) -> Result<u64, TsoError> {
        let count = u64::from(count.max(1));
        let mut st = self.state.lock().await;
        for _ in 0..MAX_RACES {
            let stored = read_limit(node).await?;
            match st.plan(stored, clock_ts(), count) {
                Step::Hand(first) => {
                    st.next = first + count;
                    return Ok(first);
                }
                Step::Raise { first, limit } => {
                    if swap_limit(node, stored, limit).await? {
                        st.owned = limit;
                        st.next = first + count;
                        return Ok(first);
                    }
                }
            }
        }
        Err(TsoError::Failed(
            "the timestamp limit kept changing under racing allocators".into(),
        ))
    }
}

/// What an allocation does once it has read the stored limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Hand out `[first, first + count)`: below a limit this allocator still owns.
    Hand(u64),
    /// Swap the limit from the value read to `limit`, then hand out from `first`.
    Raise {
        /// The first timestamp to hand out once the swap succeeded.
        first: u64,
        /// The new limit.
        limit: u64,
    },
}

impl State {
    /// The next step of an allocation of `count` after reading `stored` at clock `clock`.
    fn plan(&self, stored: u64, clock: u64, count: u64) -> Step {
        let first = self.next.max(clock);
        if self.owned != 0 && stored == self.owned {
            // Still the owner: the value read is this allocator's own, and `next` is above
            // everything handed out below it.
            if first + count <= stored {
                return Step::Hand(first);
            }
            let limit = first + count + (WINDOW_MS << LOGICAL_BITS);
            return Step::Raise { first, limit };
        }
        // Taking over: start above everything handed out below the value read.
        let first = first.max(stored);
        Step::Raise {
            first,
            limit: first + count + (WINDOW_MS << LOGICAL_BITS),
        }
    }
}

/// The timestamps of the store's PD on a JSON node (`MemPd::with_tso`): the group's
/// oracle, reached through `node` once it is set. So a new region leader raises its
/// `max_ts` (above which it picks 1PC commit timestamps) with the same timestamps the
/// transactions read at, not with this node's clock, which the oracle may run ahead of.
pub(super) fn store_tso(node: Arc<OnceLock<Weak<Node>>>) -> TsoSource {
    Box::new(move || {
        let node = node.get().and_then(Node::live);
        Box::pin(async move {
            let node = node.ok_or_else(|| {
                PdError::Unreachable("the node is not serving timestamps yet".into())
            })?;
            node.timestamps(1).await.map_err(PdError::Unreachable)
        })
    })
}

/// The error of a store answer as a [`TsoError`].
fn failed(resp: &KvResponse) -> TsoError {
    let e = resp.get_error();
    if e.has_not_leader() {
        let store = e.get_not_leader().get_leader().get_store_id();
        TsoError::NotLeader((store != 0).then_some(store))
    } else {
        TsoError::Failed(format!("{e:?}"))
    }
}

/// The stored limit (0: none yet), read on this node through the leader's lease.
async fn read_limit(node: &Node) -> Result<u64, TsoError> {
    let mut kv = request(|r| {
        let mut g = GetRequest::new();
        g.set_key(LIMIT_KEY.to_vec());
        r.set_get(g);
    });
    kv.mut_context().set_consistency(ReadConsistency::LEASE);
    let resp = run(node, kv).await?;
    if resp.has_error() {
        return Err(failed(&resp));
    }
    let g = resp.get_response().get_get();
    if !g.get_found() {
        return Ok(0);
    }
    let bytes: [u8; 8] = g
        .get_value()
        .try_into()
        .map_err(|_| TsoError::Failed("the timestamp limit record is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Swaps the limit from `stored` (0: absent) to `limit` on this node; whether it swapped.
async fn swap_limit(node: &Node, stored: u64, limit: u64) -> Result<bool, TsoError> {
    let kv = request(|r| {
        let mut c = CasRequest::new();
        c.set_key(LIMIT_KEY.to_vec());
        if stored == 0 {
            c.set_expect_absent(true);
        } else {
            c.set_expected(stored.to_be_bytes().to_vec());
        }
        c.set_new_value(limit.to_be_bytes().to_vec());
        r.set_cas(c);
    });
    let resp = run(node, kv).await?;
    if resp.has_error() {
        return Err(failed(&resp));
    }
    Ok(resp.get_response().get_cas().get_succeeded())
}

/// Runs `kv` on this node's replica, within [`STEP_TIMEOUT`].
async fn run(node: &Node, kv: KvRequest) -> Result<KvResponse, TsoError> {
    tokio::time::timeout(STEP_TIMEOUT, node.local(kv))
        .await
        .map_err(|_| {
            TsoError::Failed(format!(
                "the limit record did not answer in {STEP_TIMEOUT:?}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// One allocation in flight in the model.
    struct Request {
        count: u64,
        started: u64,
        /// The limit it read, once it has.
        read: Option<u64>,
    }

    /// Goal: the argument of the module doc, checked on every interleaving a random
    /// scheduler makes. Allocators (each with one request at a time, as its mutex makes
    /// them) read the limit, hand out or swap it by CAS, with the steps of different
    /// allocators interleaved, clocks that disagree and jump back, lost CAS answers (the
    /// swap applied, the allocator told nothing) and restarts that forget an allocator's
    /// memory. No timestamp is handed out twice, and a request that began after another
    /// ended always gets larger timestamps.
    #[test]
    fn model_timestamps_are_unique_and_follow_real_time() {
        for seed in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let allocators = rng.gen_range(1..=4);
            let mut states: Vec<State> = (0..allocators).map(|_| State::default()).collect();
            let mut clocks: Vec<u64> = (0..allocators)
                .map(|_| rng.gen_range(1_000..2_000) << LOGICAL_BITS)
                .collect();
            let mut stored = 0u64;
            let mut active: Vec<Option<Request>> = (0..allocators).map(|_| None).collect();
            // (started, ended, first, count) of every finished request.
            let mut done: Vec<(u64, u64, u64, u64)> = Vec::new();
            for now in 1..3_000u64 {
                let a = rng.gen_range(0..allocators);
                clocks[a] = match rng.gen_range(0..10) {
                    0 => clocks[a].saturating_sub(rng.gen_range(0..5_000) << LOGICAL_BITS),
                    1..=3 => clocks[a] + (rng.gen_range(0..5_000) << LOGICAL_BITS),
                    _ => clocks[a] + rng.gen_range(0..4),
                };
                let Some(req) = active[a].as_mut() else {
                    if rng.gen_bool(0.05) {
                        states[a] = State::default(); // the node restarted
                    }
                    active[a] = Some(Request {
                        count: rng.gen_range(1..=3),
                        started: now,
                        read: None,
                    });
                    continue;
                };
                let Some(read) = req.read else {
                    req.read = Some(stored);
                    continue;
                };
                match states[a].plan(read, clocks[a], req.count) {
                    Step::Hand(first) => {
                        states[a].next = first + req.count;
                        done.push((req.started, now, first, req.count));
                        active[a] = None;
                    }
                    Step::Raise { first, limit } => {
                        assert!(limit >= first + req.count, "seed {seed}");
                        if stored != read {
                            req.read = None; // lost the race: read again
                            continue;
                        }
                        stored = limit;
                        if rng.gen_bool(0.1) {
                            req.read = None; // applied, but the answer was lost
                            continue;
                        }
                        states[a].owned = limit;
                        states[a].next = first + req.count;
                        done.push((req.started, now, first, req.count));
                        active[a] = None;
                    }
                }
            }
            let mut handed: Vec<(u64, u64)> = done.iter().map(|d| (d.2, d.2 + d.3)).collect();
            handed.sort_unstable();
            for w in handed.windows(2) {
                assert!(w[0].1 <= w[1].0, "seed {seed}: {w:?} overlap");
            }
            for x in &done {
                for y in &done {
                    if x.1 < y.0 {
                        assert!(
                            x.2 + x.3 <= y.2,
                            "seed {seed}: {x:?} ended before {y:?} began but is not below it"
                        );
                    }
                }
            }
            assert!(
                done.len() > 100,
                "seed {seed}: only {} allocations",
                done.len()
            );
        }
    }

    #[test]
    fn an_owner_hands_out_below_its_limit_and_raises_it_once_used_up() {
        let st = State {
            next: 100,
            owned: 200,
        };
        assert_eq!(st.plan(200, 50, 10), Step::Hand(100));
        assert_eq!(st.plan(200, 150, 10), Step::Hand(150));
        let Step::Raise { first, limit } = st.plan(200, 195, 10) else {
            panic!("the window is used up");
        };
        assert_eq!(first, 195);
        assert!(limit > 205);
        // Someone else raised it: take over above the value read, whatever the clock says.
        let Step::Raise { first, .. } = st.plan(300, 50, 1) else {
            panic!("not the owner any more");
        };
        assert_eq!(first, 300);
    }

    #[test]
    fn clock_timestamps_carry_milliseconds_above_the_logical_bits() {
        let ts = clock_ts();
        assert_eq!(ts & ((1 << LOGICAL_BITS) - 1), 0);
        // After 2020 and before 2100, in milliseconds.
        let ms = ts >> LOGICAL_BITS;
        assert!(ms > 1_577_836_800_000 && ms < 4_102_444_800_000, "{ms}");
    }
}
