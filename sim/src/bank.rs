//! The bank workload: clients move money between accounts in Percolator transactions (the
//! transactional layer's commands, sent to the replicas as a client library would), read
//! every account in audits, and one final read after the faults stop. The history is
//! checked for snapshot isolation ([`crate::check::si`]); every audit must also see the
//! bank's total unchanged.
//!
//! A transfer: a start ts from the TSO; a batch read of its two accounts at it; a prewrite
//! of both (the first is the primary), asking for 1PC half the time; else a commit ts from
//! the TSO, the primary's commit, then the secondary's. A lock met on the way is resolved
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

use crate::check::si::{self, Outcome, SnapshotRead, Txn, SETUP_TXN};
use crate::world::{retryable, World};
use rand::Rng;
use regatta_proto::kvrpcpb::{KvRequest, KvResponse};
use regatta_proto::txnpb::{
    CheckTxnStatusRequest, CommitRequest, KeyError, LockInfo, Mutation, MutationOp,
    PessimisticLockRequest, PessimisticRollbackRequest, PrewriteRequest, ResolveLockRequest,
    RollbackRequest, TxnBatchGetRequest, TxnRequest, TxnResponse, TxnStatusKind,
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

/// A command in flight; retried at another store on a routing error or a lost answer.
struct Call {
    cmd: TxnRequest,
    rx: Option<oneshot::Receiver<KvResponse>>,
    target: usize,
}

fn account(i: usize) -> Vec<u8> {
    format!("acct{i}").into_bytes()
}

fn balance(value: &[u8]) -> u64 {
    si::untag(value).0.parse().unwrap_or(0)
}

impl Bank {
    pub(crate) fn new(clients: usize, accounts: usize) -> Bank {
        Bank {
            accounts: accounts.max(2),
            phase: Phase::Setup,
            clients: (0..clients).map(|_| BankClient::default()).collect(),
            next_id: SETUP_TXN + 1,
            txns: Vec::new(),
            snapshots: Vec::new(),
            setup_commit_ts: 0,
            final_state: Vec::new(),
            errors: Vec::new(),
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

impl World {
    /// Starts the next job of an idle client: the setup, a transfer, an audit, or the
    /// final read.
    pub(crate) fn bank_invoke(&mut self) {
        let ops = self.cfg.ops_per_client;
        let idle = self.bank_mut().idle(ops);
        if idle.is_empty() {
            return;
        }
        let c = idle[self.rng.gen_range(0..idle.len())];
        let phase = self.bank_mut().phase;
        let accounts = self.bank_mut().accounts;
        let kind = match phase {
            Phase::Setup => JobKind::Setup,
            Phase::Final => JobKind::Final,
            _ if self.rng.gen_ratio(1, 5) => JobKind::Audit,
            _ => JobKind::Transfer,
        };
        let keys: Vec<Vec<u8>> = match kind {
            JobKind::Transfer => {
                let a = self.rng.gen_range(0..accounts);
                let b = (a + self.rng.gen_range(1..accounts)) % accounts;
                vec![account(a), account(b)]
            }
            _ => (0..accounts).map(account).collect(),
        };
        let one_pc = kind == JobKind::Transfer && self.rng.gen_bool(0.5);
        let pessimistic = kind == JobKind::Transfer && self.rng.gen_ratio(1, 3);
        let ts = self.tso.next();
        let now = self.clock_now();
        let bank = self.bank_mut();
        let id = match kind {
            JobKind::Setup => SETUP_TXN,
            _ => {
                bank.next_id += 1;
                bank.next_id
            }
        };
        let (stage, writes) = match kind {
            JobKind::Setup => {
                let writes = keys
                    .iter()
                    .map(|k| put(k, &si::tag(&INITIAL.to_string(), SETUP_TXN)))
                    .collect();
                (Stage::Prewrite, writes)
            }
            _ if pessimistic => (Stage::Lock, Vec::new()),
            _ => (Stage::Read, Vec::new()),
        };
        let after_commit_of = bank.clients[c].last_committed;
        let deadline = now
            + match kind {
                JobKind::Final | JobKind::Setup => JOB_TIME * 3,
                _ => JOB_TIME,
            };
        bank.clients[c].job = Some(Job {
            kind,
            id,
            ts,
            keys,
            reads: Vec::new(),
            writes,
            one_pc,
            pessimistic,
            for_update_ts: 0,
            min_commit_ts: 0,
            commit_ts: 0,
            after_commit_of,
            stage: stage.clone(),
            call: None,
            deadline,
        });
        self.note(format!(
            "bank client {c} starts {kind:?} txn {id} at ts {ts}"
        ));
        self.bank_enter(c, stage);
    }

    fn bank_mut(&mut self) -> &mut Bank {
        self.bank.as_mut().expect("the bank workload runs")
    }

    fn job(&mut self, c: usize) -> &mut Job {
        self.bank_mut().clients[c]
            .job
            .as_mut()
            .expect("the client has a job")
    }

    /// Enters `stage` of client `c`'s job: builds its command and sends it.
    fn bank_enter(&mut self, c: usize, stage: Stage) {
        // Each lock attempt reads at a fresh ts (after a conflict: past the newer commit).
        let lock_ts = matches!(stage, Stage::Lock).then(|| self.tso.next());
        let job = self.job(c);
        job.stage = stage.clone();
        let cmd = match &stage {
            Stage::Lock => {
                job.for_update_ts = lock_ts.unwrap_or(job.ts).max(job.ts);
                let mut l = PessimisticLockRequest::new();
                l.set_keys(job.keys.clone().into());
                l.set_primary(job.keys[0].clone());
                l.set_start_ts(job.ts);
                l.set_for_update_ts(job.for_update_ts);
                l.set_lock_ttl_ms(LOCK_TTL_MS);
                l.set_return_values(true);
                l.set_wait_timeout_ms(LOCK_WAIT_MS);
                let mut cmd = TxnRequest::new();
                cmd.set_pessimistic_lock(l);
                cmd
            }
            Stage::PessimisticRollback => {
                let mut r = PessimisticRollbackRequest::new();
                r.set_keys(job.keys.clone().into());
                r.set_start_ts(job.ts);
                r.set_for_update_ts(job.for_update_ts);
                let mut cmd = TxnRequest::new();
                cmd.set_pessimistic_rollback(r);
                cmd
            }
            Stage::Read => {
                let mut g = TxnBatchGetRequest::new();
                g.set_keys(job.keys.clone().into());
                g.set_start_ts(job.ts);
                let mut cmd = TxnRequest::new();
                cmd.set_batch_get(g);
                cmd
            }
            Stage::Prewrite => {
                let mut p = PrewriteRequest::new();
                p.set_mutations(job.writes.clone().into());
                p.set_primary(job.keys[0].clone());
                p.set_start_ts(job.ts);
                p.set_lock_ttl_ms(LOCK_TTL_MS);
                p.set_try_one_pc(job.one_pc);
                if job.pessimistic {
                    p.set_for_update_ts(job.for_update_ts);
                    for m in p.mut_mutations().iter_mut() {
                        m.set_pessimistic(true);
                    }
                }
                let mut cmd = TxnRequest::new();
                cmd.set_prewrite(p);
                cmd
            }
            Stage::Commit | Stage::CommitSecondary => {
                let keys = match stage {
                    Stage::Commit => job.keys[..1].to_vec(),
                    _ => job.keys[1..].to_vec(),
                };
                let mut r = CommitRequest::new();
                r.set_keys(keys.into());
                r.set_start_ts(job.ts);
                r.set_commit_ts(job.commit_ts);
                let mut cmd = TxnRequest::new();
                cmd.set_commit(r);
                cmd
            }
            Stage::Rollback => {
                let mut r = RollbackRequest::new();
                r.set_keys(job.keys.clone().into());
                r.set_start_ts(job.ts);
                let mut cmd = TxnRequest::new();
                cmd.set_rollback(r);
                cmd
            }
            Stage::CheckStatus(lock, _) => {
                let lock = lock.clone();
                let current_ts = self.tso.next();
                let expired = regatta_proto::ts::physical_ms(lock.get_start_ts())
                    .saturating_add(lock.get_ttl_ms())
                    <= regatta_proto::ts::physical_ms(current_ts);
                let mut r = CheckTxnStatusRequest::new();
                r.set_primary(lock.get_primary().to_vec());
                r.set_lock_ts(lock.get_start_ts());
                r.set_current_ts(current_ts);
                r.set_rollback_if_not_exist(expired);
                let mut cmd = TxnRequest::new();
                cmd.set_check_txn_status(r);
                cmd
            }
            Stage::Resolve(lock, commit_ts, _) => {
                let mut r = ResolveLockRequest::new();
                r.mut_keys().push(lock.get_key().to_vec());
                r.set_start_ts(lock.get_start_ts());
                r.set_commit_ts(*commit_ts);
                let mut cmd = TxnRequest::new();
                cmd.set_resolve_lock(r);
                cmd
            }
            Stage::Backoff(..) => {
                self.job(c).call = None;
                return;
            }
        };
        let target = self.rng.gen_range(0..self.nodes.len());
        self.note(format!(
            "bank client {c} {} at s{}",
            show(&stage),
            target + 1
        ));
        self.job(c).call = Some(Call {
            cmd,
            rx: None,
            target,
        });
        self.bank_send(c);
    }

    fn bank_send(&mut self, c: usize) {
        let epoch = crate::world::region(self.cfg.stores)
            .get_region_epoch()
            .clone();
        let Some(call) = self.job(c).call.as_mut() else {
            return;
        };
        let mut req = KvRequest::new();
        req.mut_context().set_region_id(crate::world::REGION);
        req.mut_context().set_region_epoch(epoch);
        req.mut_request().set_txn(call.cmd.clone());
        let (tx, rx) = oneshot::channel();
        call.rx = Some(rx);
        let target = call.target;
        match self.nodes[target].peer.as_mut() {
            Some(peer) => peer.on_kv(req, tx),
            None => drop(tx),
        }
    }

    /// Takes the answers that arrived; retries routing errors and lost answers at another
    /// store; wakes clients whose backoff ended; gives up jobs past their deadline.
    pub(crate) fn bank_poll(&mut self) {
        let now = self.clock_now();
        for c in 0..self.bank_mut().clients.len() {
            let Some(job) = self.bank_mut().clients[c].job.as_mut() else {
                continue;
            };
            if now >= job.deadline {
                self.note(format!("bank client {c} gives up"));
                self.bank_give_up(c);
                continue;
            }
            if let Stage::Backoff(until, then) = &job.stage {
                if now >= *until {
                    let then = (**then).clone();
                    self.bank_enter(c, then);
                }
                continue;
            }
            let Some(call) = job.call.as_mut() else {
                continue;
            };
            let Some(rx) = call.rx.as_mut() else {
                continue;
            };
            let answer = match rx.try_recv() {
                Ok(resp) => Some(resp),
                Err(oneshot::error::TryRecvError::Empty) => continue,
                Err(oneshot::error::TryRecvError::Closed) => None,
            };
            let why = answer.as_ref().map_or("no answer".to_string(), |r| {
                r.get_error().get_message().to_string()
            });
            let retry_at = match answer {
                Some(mut resp) if !resp.has_error() => {
                    let txn = resp.mut_response().take_txn();
                    self.bank_answer(c, txn);
                    continue;
                }
                // An error no correct store gives this client: a finding.
                Some(resp) if !retryable(resp.get_error()) => {
                    self.finding(format!("bank client {c}: {:?}", resp.get_error()));
                    self.bank_give_up(c);
                    continue;
                }
                other => self.retry_target(other.as_ref()),
            };
            self.note(format!(
                "bank client {c} retries at s{} ({why})",
                retry_at + 1
            ));
            if let Some(call) = self.job(c).call.as_mut() {
                call.target = retry_at;
            }
            self.bank_send(c);
        }
        let ops = self.cfg.ops_per_client;
        let bank = self.bank_mut();
        if bank.phase == Phase::Run
            && bank
                .clients
                .iter()
                .all(|cl| cl.job.is_none() && cl.done >= ops)
        {
            bank.phase = Phase::Final;
            self.note("bank: final read".into());
        }
    }

    /// Client `c`'s command answered.
    fn bank_answer(&mut self, c: usize, mut resp: TxnResponse) {
        let stage = self.job(c).stage.clone();
        if resp.has_key_error() {
            let e = resp.take_key_error();
            return self.bank_key_error(c, stage, e);
        }
        match stage {
            Stage::Read => {
                let pairs = resp.take_batch_get().take_pairs();
                let job = self.job(c);
                job.reads = job
                    .keys
                    .iter()
                    .map(|k| {
                        let writer = pairs
                            .iter()
                            .find(|p| p.get_key() == k.as_slice())
                            .map_or(u64::MAX, |p| si::untag(p.get_value()).1);
                        (k.clone(), writer)
                    })
                    .collect();
                let values: Vec<u64> = job
                    .keys
                    .iter()
                    .map(|k| {
                        pairs
                            .iter()
                            .find(|p| p.get_key() == k.as_slice())
                            .map_or(0, |p| balance(p.get_value()))
                    })
                    .collect();
                match job.kind {
                    JobKind::Transfer => self.bank_transfer(c, values),
                    _ => self.bank_audited(c, values),
                }
            }
            Stage::Lock => {
                let mut locked = resp.take_pessimistic_lock();
                let values = locked.take_values();
                // A lock handed over by the leader's wait queue was taken at a newer
                // commit ts: a client goes on from there. Half the clients miss it, and
                // the store must still commit them above what they read.
                let at = locked.get_locked_with_conflict_ts();
                let heeds = self.rng.gen_bool(0.5);
                let job = self.job(c);
                if heeds {
                    job.for_update_ts = job.for_update_ts.max(at);
                }
                if values.len() != job.keys.len() {
                    let finding = format!(
                        "txn {}: a pessimistic lock of {} keys returned {} values",
                        job.id,
                        job.keys.len(),
                        values.len()
                    );
                    self.finding(finding);
                    return self.bank_give_up(c);
                }
                let mut balances = Vec::new();
                job.reads = job
                    .keys
                    .iter()
                    .zip(values.iter())
                    .map(|(k, v)| {
                        balances.push(if v.get_found() {
                            balance(v.get_value())
                        } else {
                            0
                        });
                        let writer = match v.get_found() {
                            true => si::untag(v.get_value()).1,
                            false => u64::MAX,
                        };
                        (k.clone(), writer)
                    })
                    .collect();
                self.bank_transfer(c, balances)
            }
            Stage::PessimisticRollback => self.bank_finish(c, Outcome::Aborted),
            Stage::Prewrite => {
                let p = resp.take_prewrite();
                if p.get_one_pc_commit_ts() != 0 {
                    return self.bank_finish(c, Outcome::Committed(p.get_one_pc_commit_ts()));
                }
                // A client that dies between its phases leaves its locks to others'
                // lock resolution (after their TTL). It sent no commit, so it did not
                // commit — unless it asked for 1PC: an earlier attempt whose answer was
                // lost may have committed (a retry then answers as a plain prewrite).
                if self.job(c).kind == JobKind::Transfer && self.rng.gen_ratio(1, 10) {
                    self.note(format!("bank client {c} dies after its prewrite"));
                    let outcome = match self.job(c).one_pc {
                        true => Outcome::Unknown,
                        false => Outcome::Aborted,
                    };
                    return self.bank_finish(c, outcome);
                }
                let floor = p.get_min_commit_ts();
                let mut commit_ts = self.tso.next();
                while commit_ts < floor {
                    commit_ts = self.tso.next();
                }
                let job = self.job(c);
                job.min_commit_ts = floor;
                job.commit_ts = commit_ts;
                self.bank_enter(c, Stage::Commit);
            }
            Stage::Commit => {
                let at = resp.get_commit().get_commit_ts();
                let job = self.job(c);
                if at != 0 {
                    job.commit_ts = at;
                }
                let ts = job.commit_ts;
                self.bank_record(c, Outcome::Committed(ts));
                // One that dies after its primary's commit leaves its secondary's lock
                // to resolvers, who find the primary committed.
                let dies = self.job(c).kind == JobKind::Transfer && self.rng.gen_ratio(1, 6);
                if dies {
                    self.note(format!("bank client {c} dies after its commit"));
                }
                if self.job(c).keys.len() > 1 && !dies {
                    self.bank_enter(c, Stage::CommitSecondary);
                } else {
                    self.bank_done(c);
                }
            }
            Stage::CommitSecondary => self.bank_done(c),
            Stage::Rollback => self.bank_finish(c, Outcome::Aborted),
            Stage::CheckStatus(lock, then) => {
                let s = resp.take_check_txn_status();
                let decided = match s.get_status() {
                    TxnStatusKind::COMMITTED => Some(s.get_commit_ts()),
                    TxnStatusKind::ROLLED_BACK
                    | TxnStatusKind::TTL_EXPIRED_ROLLED_BACK
                    | TxnStatusKind::NOT_FOUND_ROLLED_BACK => Some(0),
                    TxnStatusKind::ALIVE | TxnStatusKind::ASYNC_COMMIT_UNDECIDED => None,
                };
                match decided {
                    Some(ts) => self.bank_enter(c, Stage::Resolve(lock, ts, then)),
                    None => {
                        let until = self.clock_now() + LOCK_BACKOFF;
                        self.bank_enter(c, Stage::Backoff(until, then));
                    }
                }
            }
            Stage::Resolve(_, _, then) => self.bank_enter(c, *then),
            Stage::Backoff(..) => {}
        }
    }

    /// The transfer read `values` (its two balances): it moves a small amount from the
    /// first account to the second, then prewrites.
    fn bank_transfer(&mut self, c: usize, values: Vec<u64>) {
        let job = self.job(c);
        let amount = (job.id % 7 + 1).min(values[0]);
        let id = job.id;
        job.writes = vec![
            put(
                &job.keys[0],
                &si::tag(&(values[0] - amount).to_string(), id),
            ),
            put(
                &job.keys[1],
                &si::tag(&(values[1] + amount).to_string(), id),
            ),
        ];
        self.bank_enter(c, Stage::Prewrite);
    }

    fn bank_key_error(&mut self, c: usize, stage: Stage, e: KeyError) {
        // A lock in the way: resolve it, then try again.
        if e.has_locked() && !matches!(stage, Stage::CheckStatus(..) | Stage::Resolve(..)) {
            let lock = e.get_locked().clone();
            return self.bank_enter(c, Stage::CheckStatus(lock, Box::new(stage)));
        }
        match stage {
            // A newer commit on a key: lock again past it (what pessimistic mode is for).
            Stage::Lock if e.has_conflict() => self.bank_enter(c, Stage::Lock),
            // The leader found a cycle, or the wait ran out with no lock to resolve.
            Stage::Lock if e.has_deadlock() || e.get_already_rolled_back() => {
                self.bank_enter(c, Stage::PessimisticRollback)
            }
            Stage::Lock if e.get_lock_wait_timeout() => {
                let until = self.clock_now() + LOCK_BACKOFF;
                self.bank_enter(c, Stage::Backoff(until, Box::new(Stage::Lock)))
            }
            // Its pessimistic locks were resolved away (their TTL ran out): it aborts.
            Stage::Prewrite if e.get_pessimistic_lock_not_found() => {
                self.bank_enter(c, Stage::Rollback)
            }
            // A first committer won: this transfer rolls back.
            Stage::Prewrite if e.has_conflict() && self.job(c).kind == JobKind::Transfer => {
                self.bank_enter(c, Stage::Rollback)
            }
            // A resolver rolled it back (its locks outlived their TTL while this client's
            // prewrite was retried): it can never commit.
            Stage::Prewrite if e.get_already_rolled_back() => self.bank_finish(c, Outcome::Aborted),
            Stage::Commit if e.get_commit_ts_expired_min() != 0 => {
                let floor = e.get_commit_ts_expired_min();
                let mut ts = self.tso.next();
                while ts < floor {
                    ts = self.tso.next();
                }
                self.job(c).commit_ts = ts;
                self.bank_enter(c, Stage::Commit)
            }
            // Resolvers rolled the transaction back while this client was slow.
            Stage::Commit if e.get_txn_lock_not_found() || e.get_already_rolled_back() => {
                self.bank_finish(c, Outcome::Aborted)
            }
            Stage::Rollback if e.get_committed_ts() != 0 => {
                self.bank_finish(c, Outcome::Committed(e.get_committed_ts()))
            }
            // The primary's prewrite has not arrived yet: the lock is alive until its TTL.
            Stage::CheckStatus(_, then) if e.get_txn_not_found() => {
                let until = self.clock_now() + LOCK_BACKOFF;
                self.bank_enter(c, Stage::Backoff(until, then))
            }
            // A secondary left to resolvers.
            Stage::CommitSecondary => self.bank_done(c),
            stage => {
                let id = self.job(c).id;
                let finding = format!("txn {id}: {stage:?} refused: {e:?}");
                self.note(finding.clone());
                self.bank_mut().errors.push(finding);
                self.bank_give_up(c);
            }
        }
    }

    /// The job's deadline passed (or it cannot go on): what it did may or may not have
    /// taken effect.
    fn bank_give_up(&mut self, c: usize) {
        let job = self.job(c);
        let (kind, stage) = (job.kind, job.stage.clone());
        let mut stage = &stage;
        while let Stage::CheckStatus(_, then)
        | Stage::Resolve(_, _, then)
        | Stage::Backoff(_, then) = stage
        {
            stage = then;
        }
        match (kind, stage) {
            // The setup committed: its secondaries are left to resolvers.
            (JobKind::Setup, Stage::CommitSecondary) => self.bank_done(c),
            (JobKind::Setup | JobKind::Final, _) => {
                let finding = format!("the cluster did not answer the {kind:?} job in time");
                self.bank_mut().errors.push(finding);
                self.bank_mut().phase = Phase::Done;
                self.bank_done(c);
            }
            // Nothing written (a pessimistic lock left behind expires and is resolved).
            (_, Stage::Read | Stage::Lock) => self.bank_done(c),
            (_, Stage::PessimisticRollback) => self.bank_finish(c, Outcome::Aborted),
            (_, Stage::Prewrite | Stage::Commit) => self.bank_finish(c, Outcome::Unknown),
            (_, Stage::Rollback) => self.bank_finish(c, Outcome::Aborted),
            (_, _) => self.bank_done(c),
        }
    }

    fn bank_finish(&mut self, c: usize, outcome: Outcome) {
        self.bank_record(c, outcome);
        self.bank_done(c);
    }

    /// Records the transaction's outcome (once).
    fn bank_record(&mut self, c: usize, outcome: Outcome) {
        let job = self.job(c);
        let (kind, id, commit_ts) = (job.kind, job.id, job.commit_ts);
        let txn = Txn {
            id: job.id,
            start_ts: job.ts,
            reads_at_start: !job.pessimistic,
            reads: job.reads.clone(),
            writes: job.keys.clone(),
            outcome,
        };
        self.note(format!("bank txn {id}: {outcome:?}"));
        let bank = self.bank_mut();
        match kind {
            JobKind::Setup => match outcome {
                Outcome::Committed(ts) => {
                    bank.setup_commit_ts = ts;
                    bank.phase = Phase::Run;
                }
                _ => bank
                    .errors
                    .push(format!("the setup did not commit: {outcome:?}")),
            },
            _ => {
                if let Outcome::Committed(_) = outcome {
                    bank.clients[c].last_committed = Some(id);
                }
                let _ = commit_ts;
                bank.txns.push(txn);
            }
        }
    }

    /// An audit or the final read returned: the bank's total must be whole.
    fn bank_audited(&mut self, c: usize, values: Vec<u64>) {
        let job = self.job(c);
        let (kind, ts, reads, after) = (job.kind, job.ts, job.reads.clone(), job.after_commit_of);
        let total: u64 = values.iter().sum();
        let bank = self.bank_mut();
        let expected = INITIAL * bank.accounts as u64;
        if total != expected {
            bank.errors.push(format!(
                "a read at ts {ts} saw a bank total of {total}, not {expected}: {values:?}"
            ));
        }
        if kind == JobKind::Final {
            bank.final_state = reads.clone();
            bank.phase = Phase::Done;
        }
        bank.snapshots.push(SnapshotRead {
            ts,
            reads,
            after_commit_of: after,
        });
        self.bank_done(c);
    }

    fn bank_done(&mut self, c: usize) {
        let bank = self.bank_mut();
        if let Some(job) = bank.clients[c].job.take() {
            if matches!(job.kind, JobKind::Transfer | JobKind::Audit) {
                bank.clients[c].done += 1;
            }
        }
    }
}

/// A stage's name for the trace.
fn show(stage: &Stage) -> String {
    match stage {
        Stage::CheckStatus(lock, _) => format!("check_txn_status of {}", lock.get_start_ts()),
        Stage::Resolve(lock, ts, _) => format!("resolve {} at {ts}", lock.get_start_ts()),
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
