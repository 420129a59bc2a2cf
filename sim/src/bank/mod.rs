//! The bank workload: clients move money between accounts in Percolator transactions (the
//! transactional layer's commands, sent to the replicas as a client library would), read
//! every account in audits, and one final read after the faults stop. The history is
//! checked for snapshot isolation ([`crate::check::si`]); every audit must also see the
//! bank's total unchanged.
//!
//! A transfer: a start ts from the TSO; a batch read of its two accounts at it; a prewrite
//! of both (the first is the primary), asking for 1PC half the time when both accounts
//! are in one region; else, half the rest, async commit (committed once every prewrite
//! landed, at the highest `min_commit_ts` answered; within one region too, which the
//! real client leaves to 1PC), or a commit ts from the TSO; then the primary's commit,
//! then the secondary's. A command whose keys span regions goes as one part per region
//! (`parts.rs`), as a client library sends it, and its answers are merged. A lock met on the way is resolved
//! as client libraries do: the fate of its transaction asked at its primary
//! (`check_txn_status`, which rolls back an expired one), then the lock committed or
//! rolled back. An answer lost for good makes the outcome unknown: the checker counts such
//! a transaction as committed exactly when one of its versions was seen. Now and then a
//! client dies between its prewrite and its commit, or before committing its secondary:
//! others meet its locks and resolve them.
//!
//! One transfer in three is pessimistic: it locks both accounts first (reading them at its
//! `for_update_ts`, waiting in the leader's queue), locks again past a newer commit, rolls
//! back on a deadlock, then prewrites its pessimistic locks.

mod answers;
mod client;
mod parts;

use crate::check::si::{self, Outcome, SnapshotRead, Txn, SETUP_TXN};
use crate::world::{retryable, World};
use rand::Rng;
use regatta_proto::kvrpcpb::{KvRequest, KvResponse};
use regatta_proto::txnpb::{
    CheckSecondaryLocksRequest, CheckTxnStatusRequest, CommitRequest, KeyError, LockInfo, Mutation,
    MutationOp, PessimisticLockRequest, PessimisticRollbackRequest, PrewriteRequest,
    ResolveLockRequest, RollbackRequest, TxnBatchGetRequest, TxnRequest, TxnResponse,
    TxnStatusKind,
};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Every account's balance before the first transfer.
const INITIAL: u64 = 100;
/// A transfer's lock TTL: a client that gave up leaves locks that expire after it.
const LOCK_TTL_MS: u64 = 2_000;
/// How long a job may take before its client gives up (its outcome may be unknown).
const JOB_TIME: Duration = Duration::from_secs(20);
/// How long a pessimistic lock request waits in the leader's queue at most.
const LOCK_WAIT_MS: u64 = 300;
/// How long a client waits before it looks at a live lock again.
const LOCK_BACKOFF: Duration = Duration::from_millis(300);

/// The workload's state: its clients' jobs and the history they record.
pub(crate) struct Bank {
    accounts: usize,
    phase: Phase,
    clients: Vec<BankClient>,
    next_id: u64,
    txns: Vec<Txn>,
    snapshots: Vec<SnapshotRead>,
    setup_commit_ts: u64,
    final_state: Vec<(Vec<u8>, u64)>,
    /// Findings beyond the SI checker's (a bank total that changed, a command refused
    /// for a reason a correct client never meets).
    errors: Vec<String>,
    /// Async-commit transfers committed across two regions.
    pub(crate) cross_region_async_commits: usize,
    /// Async-commit locks decided by secondaries in another region than the primary.
    pub(crate) cross_region_secondary_checks: usize,
    /// Lock requests answered `deadlock`.
    pub(crate) deadlocks: usize,
}

/// Where the run is: setup and the final read run with the faults off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Setup,
    Run,
    Final,
    Done,
}

#[derive(Default)]
struct BankClient {
    job: Option<Job>,
    done: usize,
    /// The last transaction of this client whose commit returned.
    last_committed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobKind {
    Setup,
    Transfer,
    Audit,
    Final,
}

#[derive(Debug, Clone)]
enum Stage {
    Read,
    /// A pessimistic transfer locks both accounts at a fresh `for_update_ts`, reading them.
    Lock,
    /// A pessimistic transfer that gives up releases its locks.
    PessimisticRollback,
    Prewrite,
    Commit,
    CommitSecondary,
    Rollback,
    /// A lock was met: its transaction's fate is asked at its primary, then `then` again.
    CheckStatus(LockInfo, Box<Stage>),
    /// The met lock's (second) transaction is an async commit whose primary (first) is
    /// undecided: its secondaries decide it, then the primary and the met lock are
    /// resolved, then `then` again.
    CheckSecondaries(LockInfo, LockInfo, Box<Stage>),
    /// The met lock is committed (ts > 0) or rolled back (0), then `then` again.
    Resolve(LockInfo, u64, Box<Stage>),
    /// A live lock: wait, then `then` again.
    Backoff(Instant, Box<Stage>),
}

struct Job {
    kind: JobKind,
    id: u64,
    /// Start ts (the read ts of an audit).
    ts: u64,
    keys: Vec<Vec<u8>>,
    reads: Vec<(Vec<u8>, u64)>,
    writes: Vec<Mutation>,
    one_pc: bool,
    /// An async-commit transfer: committed once every part of its prewrite landed, at
    /// the highest `min_commit_ts` answered.
    async_commit: bool,
    /// A pessimistic transfer (locks first, reads at `for_update_ts`).
    pessimistic: bool,
    /// A pessimistic transfer's latest lock ts.
    for_update_ts: u64,
    /// The floor of the commit ts (prewrite's answers).
    min_commit_ts: u64,
    commit_ts: u64,
    after_commit_of: Option<u64>,
    stage: Stage,
    call: Option<Call>,
    deadline: Instant,
}

/// A command in flight: one part per region its keys fall in (as a client library
/// groups keys by region), each retried at another store on a routing error or a lost
/// answer. The stage goes on once every part answered.
struct Call {
    parts: Vec<Part>,
}

/// A command's part for one region.
struct Part {
    /// The region's index.
    region: usize,
    /// The command's keys in this region, in the job's order.
    keys: Vec<Vec<u8>>,
    cmd: TxnRequest,
    rx: Option<oneshot::Receiver<KvResponse>>,
    target: usize,
    answer: Option<TxnResponse>,
}

/// The bank's account `i`.
pub(crate) fn account(i: usize) -> Vec<u8> {
    format!("acct{i}").into_bytes()
}

fn balance(value: &[u8]) -> u64 {
    si::untag(value).0.parse().unwrap_or(0)
}

impl Bank {
    /// How many accounts a run asking for `keys` has.
    pub(crate) fn accounts(keys: usize) -> usize {
        keys.max(2)
    }

    pub(crate) fn new(clients: usize, accounts: usize) -> Bank {
        Bank {
            accounts: Bank::accounts(accounts),
            phase: Phase::Setup,
            clients: (0..clients).map(|_| BankClient::default()).collect(),
            next_id: SETUP_TXN + 1,
            txns: Vec::new(),
            snapshots: Vec::new(),
            setup_commit_ts: 0,
            final_state: Vec::new(),
            errors: Vec::new(),
            cross_region_async_commits: 0,
            cross_region_secondary_checks: 0,
            deadlocks: 0,
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Clients that may start a job now.
    pub(crate) fn idle(&self, ops_per_client: usize) -> Vec<usize> {
        match self.phase {
            Phase::Setup | Phase::Final => {
                let c = &self.clients[0];
                if c.job.is_none() {
                    vec![0]
                } else {
                    vec![]
                }
            }
            Phase::Run => (0..self.clients.len())
                .filter(|c| {
                    self.clients[*c].job.is_none() && self.clients[*c].done < ops_per_client
                })
                .collect(),
            Phase::Done => vec![],
        }
    }

    /// Operations recorded, how many ended with a definite outcome, and how many
    /// transfers committed.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let definite = self
            .txns
            .iter()
            .filter(|t| t.outcome != Outcome::Unknown)
            .count();
        let committed = self
            .txns
            .iter()
            .filter(|t| matches!(t.outcome, Outcome::Committed(_)))
            .count();
        (
            self.txns.len() + self.snapshots.len(),
            definite + self.snapshots.len(),
            committed,
        )
    }

    /// The findings: the SI checker's and the bank's own.
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut errors = self.errors.clone();
        if self.phase != Phase::Done {
            errors.push(format!("the run ended in phase {:?}", self.phase));
        } else {
            errors.extend(si::check(
                &self.txns,
                &self.snapshots,
                self.setup_commit_ts,
                &self.final_state,
            ));
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(errors.join("; ")),
        }
    }
}

/// A stage's name for the trace.
fn show(stage: &Stage) -> String {
    match stage {
        Stage::CheckStatus(lock, _) => format!("check_txn_status of {}", lock.get_start_ts()),
        Stage::Resolve(lock, ts, _) => format!("resolve {} at {ts}", lock.get_start_ts()),
        Stage::CheckSecondaries(primary, ..) => {
            format!("check_secondary_locks of {}", primary.get_start_ts())
        }
        Stage::Backoff(..) => "backs off".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn put(key: &[u8], value: &[u8]) -> Mutation {
    let mut m = Mutation::new();
    m.set_op(MutationOp::PUT);
    m.set_key(key.to_vec());
    m.set_value(value.to_vec());
    m
}
