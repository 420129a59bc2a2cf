//! What a bank client does with an answer: the next stage of its job, lock resolution,
//! giving up, and recording the outcome.

use super::*;

impl World {
    /// Client `c`'s command answered.
    pub(super) fn bank_answer(&mut self, c: usize, mut resp: TxnResponse) {
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
                // commit ts: a client goes on from there, once the TSO is past it (a
                // 1PC may have chosen that ts above anything the TSO handed out, and
                // for_update_ts must be a TSO timestamp; the real client's
                // `wait_for_tso_past`). Half the clients miss it, and the store must
                // still commit them above what they read.
                let at = locked.get_locked_with_conflict_ts();
                let heeds = self.rng.gen_bool(0.5);
                if heeds && at > self.job(c).for_update_ts {
                    while self.tso.next() <= at {}
                }
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
                // An async-commit prewrite answered 0 found its keys committed already
                // (a resolver decided it while the answer was lost): it goes on by 2PC,
                // whose commit answers the ts they were committed at.
                if self.job(c).async_commit && p.get_min_commit_ts() != 0 {
                    // Committed now, at the floor the leader chose; the keys are
                    // committed next (or, by one that dies, by resolvers from the locks).
                    let ts = p.get_min_commit_ts();
                    if ts <= self.job(c).ts {
                        let finding = format!(
                            "txn {}: an async-commit prewrite answered min_commit_ts {ts}",
                            self.job(c).id
                        );
                        self.finding(finding);
                        return self.bank_give_up(c);
                    }
                    if self.rng.gen_ratio(1, 5) {
                        self.note(format!("bank client {c} dies after its async commit"));
                        return self.bank_finish(c, Outcome::Committed(ts));
                    }
                    let job = self.job(c);
                    job.min_commit_ts = ts;
                    job.commit_ts = ts;
                    return self.bank_enter(c, Stage::Commit);
                }
                // A client that dies between its phases leaves its locks to others'
                // lock resolution (after their TTL). It sent no commit, so it did not
                // commit — unless it asked for 1PC: an earlier attempt whose answer was
                // lost may have committed (a retry then answers as a plain prewrite).
                if self.job(c).kind == JobKind::Transfer && self.rng.gen_ratio(1, 10) {
                    self.note(format!("bank client {c} dies after its prewrite"));
                    // (An async commit here found its keys committed by resolvers.)
                    let outcome = match self.job(c).one_pc || self.job(c).async_commit {
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
                    TxnStatusKind::ASYNC_COMMIT_UNDECIDED => {
                        let mut primary = s.get_lock().clone();
                        primary.set_key(primary.get_primary().to_vec());
                        return self.bank_enter(c, Stage::CheckSecondaries(primary, lock, then));
                    }
                    TxnStatusKind::ALIVE => None,
                };
                match decided {
                    Some(ts) => self.bank_enter(c, Stage::Resolve(lock, ts, then)),
                    None => {
                        let until = self.clock_now() + LOCK_BACKOFF;
                        self.bank_enter(c, Stage::Backoff(until, then));
                    }
                }
            }
            Stage::CheckSecondaries(primary, met, then) => {
                let home = self.region_of(primary.get_key());
                if primary
                    .get_secondaries()
                    .iter()
                    .any(|k| self.region_of(k) != home)
                {
                    self.bank_mut().cross_region_secondary_checks += 1;
                }
                let r = resp.take_check_secondary_locks();
                let ts = if r.get_rolled_back() {
                    0
                } else if r.get_commit_ts() != 0 {
                    r.get_commit_ts()
                } else {
                    r.get_locks()
                        .iter()
                        .map(|l| l.get_min_commit_ts())
                        .fold(primary.get_min_commit_ts(), u64::max)
                };
                // The primary first, so the decision is on it for every later check.
                let after = Stage::Resolve(met, ts, then);
                self.bank_enter(c, Stage::Resolve(primary, ts, Box::new(after)))
            }
            Stage::Resolve(_, _, then) => self.bank_enter(c, *then),
            Stage::Backoff(..) => {}
        }
    }

    /// The transfer read `values` (its two balances): it moves a small amount from the
    /// first account to the second, then prewrites.
    pub(super) fn bank_transfer(&mut self, c: usize, values: Vec<u64>) {
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

    pub(super) fn bank_key_error(&mut self, c: usize, stage: Stage, e: KeyError) {
        // A lock in the way: resolve it, then try again.
        if e.has_locked()
            && !matches!(
                stage,
                Stage::CheckStatus(..) | Stage::CheckSecondaries(..) | Stage::Resolve(..)
            )
        {
            let lock = e.get_locked().clone();
            return self.bank_enter(c, Stage::CheckStatus(lock, Box::new(stage)));
        }
        match stage {
            // A newer commit on a key: lock again past it (what pessimistic mode is for).
            Stage::Lock if e.has_conflict() => self.bank_enter(c, Stage::Lock),
            // The leader found a cycle, or the wait ran out with no lock to resolve.
            Stage::Lock if e.has_deadlock() || e.get_already_rolled_back() => {
                if e.has_deadlock() {
                    self.bank_mut().deadlocks += 1;
                }
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
            // An async commit over a lock handed over at a newer commit ts than this client
            // knew (it ignored `locked_with_conflict_ts`): refused, nothing written in
            // that region (another region's part may have landed, and is prewritten
            // again); it goes on from there once the TSO is past it, as the real client
            // does.
            Stage::Prewrite if e.get_commit_ts_expired_min() != 0 && self.job(c).async_commit => {
                let floor = e.get_commit_ts_expired_min();
                while self.tso.next() < floor {}
                let job = self.job(c);
                job.for_update_ts = job.for_update_ts.max(floor - 1);
                self.bank_enter(c, Stage::Prewrite)
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
    pub(super) fn bank_give_up(&mut self, c: usize) {
        let job = self.job(c);
        let (kind, stage) = (job.kind, job.stage.clone());
        let mut stage = &stage;
        while let Stage::CheckStatus(_, then)
        | Stage::CheckSecondaries(_, _, then)
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

    pub(super) fn bank_finish(&mut self, c: usize, outcome: Outcome) {
        self.bank_record(c, outcome);
        self.bank_done(c);
    }

    /// Records the transaction's outcome (once).
    pub(super) fn bank_record(&mut self, c: usize, outcome: Outcome) {
        let job = self.job(c);
        let (kind, id, commit_ts) = (job.kind, job.id, job.commit_ts);
        let (job_keys, async_commit) = (job.keys.clone(), job.async_commit);
        let txn = Txn {
            id: job.id,
            start_ts: job.ts,
            reads_at_start: !job.pessimistic,
            reads: job.reads.clone(),
            writes: job.keys.clone(),
            outcome,
        };
        self.note(format!("bank txn {id}: {outcome:?}"));
        let regions: Vec<usize> = job_keys.iter().map(|k| self.region_of(k)).collect();
        let bank = self.bank_mut();
        if kind == JobKind::Transfer
            && async_commit
            && matches!(outcome, Outcome::Committed(_))
            && regions.windows(2).any(|w| w[0] != w[1])
        {
            bank.cross_region_async_commits += 1;
        }
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
    pub(super) fn bank_audited(&mut self, c: usize, values: Vec<u64>) {
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

    pub(super) fn bank_done(&mut self, c: usize) {
        let bank = self.bank_mut();
        if let Some(job) = bank.clients[c].job.take() {
            if matches!(job.kind, JobKind::Transfer | JobKind::Audit) {
                bank.clients[c].done += 1;
            }
        }
    }
}
