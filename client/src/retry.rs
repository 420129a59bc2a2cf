//! What the client does with a store's typed error (`kvrpcpb::Error`): retry, with or
//! without backoff, after which change to its region cache, or give up. A pure function,
//! tested as data; the client applies the cache change and runs the backoff.
//!
//! The rule, per `kvrpcpb::Error` field and `crate::Error`'s docs:
//! - routing errors are retried at once where the error says exactly where to go
//!   (`NotLeader` with a new leader, `EpochNotMatch` with the current regions), else after
//!   a backoff (`NotLeader` without a hint, `KeyNotInRegion`, `RegionNotFound`);
//! - load and transient errors are retried after a backoff (`ServerIsBusy`, `Timeout`,
//!   `StaleCommand`), and so is `StorePoisoned`, on another replica: it is one store's
//!   failure, and a write keeps its session, so a retry is never applied twice;
//! - `InvalidArgument` fails as [`Error::InvalidArgument`]; `StorageError` (this request
//!   failed on the store's storage: not retried, says the proto) as [`Error::Storage`];
//!   `StaleSequence` and an error with no typed field (`message` only: not retryable) fail
//!   as [`Error::Server`].

use crate::error::Error;
use regatta_proto::kvrpcpb::{self, KvResponse};
use regatta_proto::metapb::{Peer, Region};
use std::time::Duration;

/// What one operation adds to the generic retry loop (`Client::execute_keys`), which knows
/// no kind of request itself. The raw operations pass [`Plain`]; the transaction client
/// passes its own (`txn::rpc`), which knows which commands may wait on the store and which
/// commit a transaction.
pub(crate) trait RetryHook: Send + Sync {
    /// Time the store may hold the request before answering (a lock wait), added to each
    /// attempt's RPC deadline.
    fn store_wait(&self) -> Duration {
        Duration::ZERO
    }

    /// How the operation ends once an earlier attempt of it went unanswered (it may have
    /// been applied, or may yet be) and a later one ended as `ending`: `None` to end as the
    /// loop would (return the answer, hand the keys back to be cut again, fail with the
    /// error), `Some(e)` to end with `e` instead.
    fn after_lost_attempt(&self, ending: Ending<'_>) -> Option<Error>;
}

/// How an attempt ended, as a [`RetryHook`] sees it.
#[derive(Debug)]
pub(crate) enum Ending<'a> {
    /// The store answered (perhaps with a transactional refusal inside the answer).
    Answered(&'a KvResponse),
    /// The keys no longer lie in one region: the loop would hand them back to be cut again.
    Regrouped,
    /// The attempt failed with an error retrying does not fix.
    Failed(&'a Error),
}

/// The hook of the raw operations: nothing to add. Their writes carry a session, so a
/// retry after a lost attempt applies once, and a read may simply be repeated.
pub(crate) struct Plain;

impl RetryHook for Plain {
    fn after_lost_attempt(&self, _: Ending<'_>) -> Option<Error> {
        None
    }
}

/// The next step after a store's error.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Try again; `backoff` false when the error said exactly where to go next.
    Retry {
        /// Whether to wait (exponential, jittered) before the next attempt.
        backoff: bool,
        /// What the region cache learns from the error.
        update: CacheUpdate,
    },
    /// Give up with this error.
    Fail(Error),
}

/// What the region cache learns from an error about one region.
#[derive(Debug, PartialEq)]
pub(crate) enum CacheUpdate {
    /// Nothing.
    Keep,
    /// The region's leader is this peer (`None`: unknown; try the peers in turn).
    SetLeader(Option<Peer>),
    /// The cached region is wrong: drop it, and ask PD again.
    Evict,
    /// The cached region is stale: drop it and cache these current regions instead.
    Replace(Vec<Region>),
}

/// The next step after `e` from the replica `target` (`any_replica`: the read may be
/// served by a replica other than the leader, so a follower's `NotLeader` without a better
/// hint keeps the believed leader).
pub(crate) fn classify(mut e: kvrpcpb::Error, target: &Peer, any_replica: bool) -> Step {
    let retry = |backoff, update| Step::Retry { backoff, update };
    if e.has_not_leader() {
        let hint = e.mut_not_leader().take_leader();
        let useful = hint.get_id() != 0 && hint.get_id() != target.get_id();
        let update = if useful || !any_replica {
            CacheUpdate::SetLeader(useful.then_some(hint))
        } else {
            CacheUpdate::Keep
        };
        return retry(!useful, update);
    }
    if e.has_epoch_not_match() {
        let current = e.mut_epoch_not_match().take_current_regions().into_vec();
        return retry(false, CacheUpdate::Replace(current));
    }
    if e.has_key_not_in_region() || e.has_region_not_found() {
        return retry(true, CacheUpdate::Evict);
    }
    if e.has_store_poisoned() {
        return retry(true, CacheUpdate::SetLeader(None));
    }
    if e.has_server_is_busy() || e.has_timeout() || e.has_stale_command() {
        return retry(true, CacheUpdate::Keep);
    }
    if e.has_invalid_argument() {
        return Step::Fail(Error::InvalidArgument(
            e.get_invalid_argument().get_reason().to_string(),
        ));
    }
    if e.has_storage_error() {
        return Step::Fail(Error::Storage(describe(&e)));
    }
    // StaleSequence, and anything untyped or unknown to this client.
    Step::Fail(Error::Server(describe(&e)))
}

/// A store error's text for the application: its message, or its fields when it has none.
pub(crate) fn describe(e: &kvrpcpb::Error) -> String {
    if e.get_message().is_empty() {
        format!("{e:?}")
    } else {
        e.get_message().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64) -> Peer {
        let mut p = Peer::new();
        p.set_id(id);
        p.set_store_id(id);
        p
    }

    fn error(set: impl FnOnce(&mut kvrpcpb::Error)) -> kvrpcpb::Error {
        let mut e = kvrpcpb::Error::new();
        e.set_message("from the store".into());
        set(&mut e);
        e
    }

    fn not_leader(hint: Option<u64>) -> kvrpcpb::Error {
        error(|e| {
            let mut nl = kvrpcpb::NotLeader::new();
            nl.set_region_id(1);
            if let Some(id) = hint {
                nl.set_leader(peer(id));
            }
            e.set_not_leader(nl);
        })
    }

    fn backs_off(step: &Step) -> bool {
        matches!(step, Step::Retry { backoff: true, .. })
    }

    #[test]
    fn transient_and_load_errors_are_retried_with_backoff() {
        let busy = error(|e| e.set_server_is_busy(kvrpcpb::ServerIsBusy::new()));
        let timeout = error(|e| e.set_timeout(kvrpcpb::Timeout::new()));
        let stale = error(|e| e.set_stale_command(kvrpcpb::StaleCommand::new()));
        for e in [busy, timeout, stale] {
            let step = classify(e.clone(), &peer(1), false);
            assert_eq!(
                step,
                Step::Retry {
                    backoff: true,
                    update: CacheUpdate::Keep
                },
                "{e:?}"
            );
        }
    }

    #[test]
    fn a_poisoned_store_is_retried_on_another_replica() {
        let e = error(|e| e.set_store_poisoned(kvrpcpb::StorePoisoned::new()));
        assert_eq!(
            classify(e, &peer(1), false),
            Step::Retry {
                backoff: true,
                update: CacheUpdate::SetLeader(None)
            }
        );
    }

    #[test]
    fn a_leader_hint_is_followed_at_once_and_no_hint_backs_off() {
        assert_eq!(
            classify(not_leader(Some(2)), &peer(1), false),
            Step::Retry {
                backoff: false,
                update: CacheUpdate::SetLeader(Some(peer(2)))
            }
        );
        // No hint, or a hint naming the peer that refused: the leader is unknown.
        for hint in [None, Some(1)] {
            assert_eq!(
                classify(not_leader(hint), &peer(1), false),
                Step::Retry {
                    backoff: true,
                    update: CacheUpdate::SetLeader(None)
                }
            );
        }
        // A follower read refused by a follower that knows no better keeps the leader.
        assert_eq!(
            classify(not_leader(None), &peer(1), true),
            Step::Retry {
                backoff: true,
                update: CacheUpdate::Keep
            }
        );
    }

    #[test]
    fn routing_errors_refresh_the_cache() {
        let mut current = Region::new();
        current.set_id(7);
        let epoch = error(|e| {
            let mut m = kvrpcpb::EpochNotMatch::new();
            m.mut_current_regions().push(current.clone());
            e.set_epoch_not_match(m);
        });
        assert_eq!(
            classify(epoch, &peer(1), false),
            Step::Retry {
                backoff: false,
                update: CacheUpdate::Replace(vec![current])
            }
        );
        let outside = error(|e| e.set_key_not_in_region(kvrpcpb::KeyNotInRegion::new()));
        let missing = error(|e| e.set_region_not_found(kvrpcpb::RegionNotFound::new()));
        for e in [outside, missing] {
            assert_eq!(
                classify(e, &peer(1), false),
                Step::Retry {
                    backoff: true,
                    update: CacheUpdate::Evict
                }
            );
        }
    }

    #[test]
    fn what_the_docs_call_not_retryable_is_not_retried() {
        let bad = error(|e| {
            let mut a = kvrpcpb::InvalidArgument::new();
            a.set_reason("key too large".into());
            e.set_invalid_argument(a);
        });
        match classify(bad, &peer(1), false) {
            Step::Fail(Error::InvalidArgument(reason)) => assert_eq!(reason, "key too large"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        let storage = error(|e| e.set_storage_error(kvrpcpb::StorageError::new()));
        let step = classify(storage, &peer(1), false);
        assert!(matches!(step, Step::Fail(Error::Storage(_))), "{step:?}");
        let stale_seq = error(|e| e.set_stale_sequence(kvrpcpb::StaleSequence::new()));
        let untyped = error(|_| {});
        for e in [stale_seq, untyped] {
            let step = classify(e.clone(), &peer(1), false);
            assert!(
                matches!(step, Step::Fail(Error::Server(_))),
                "{e:?}: {step:?}"
            );
            assert!(!backs_off(&step));
        }
    }

    #[test]
    fn an_error_without_a_message_is_described_by_its_fields() {
        let mut e = kvrpcpb::Error::new();
        e.set_stale_sequence(kvrpcpb::StaleSequence::new());
        assert!(describe(&e).contains("stale_sequence"));
        let e = error(|_| {});
        assert_eq!(describe(&e), "from the store");
    }
}
