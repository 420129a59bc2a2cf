//! The bank's clients as the scheduler drives them: starting jobs, sending their
//! commands, and taking the answers that arrived.

use super::*;

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
        // 1PC only within one region (a client library asks it only then).
        let one_region = keys
            .iter()
            .all(|k| self.region_of(k) == self.region_of(&keys[0]));
        let one_pc = kind == JobKind::Transfer && self.rng.gen_bool(0.5) && one_region;
        let pessimistic = kind == JobKind::Transfer && self.rng.gen_ratio(1, 3);
        let async_commit = kind == JobKind::Transfer && !one_pc && self.rng.gen_bool(0.5);
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
            async_commit,
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

    pub(super) fn bank_mut(&mut self) -> &mut Bank {
        self.bank.as_mut().expect("the bank workload runs")
    }

    pub(super) fn job(&mut self, c: usize) -> &mut Job {
        self.bank_mut().clients[c]
            .job
            .as_mut()
            .expect("the client has a job")
    }

    /// Enters `stage` of client `c`'s job: builds its command and sends it.
    pub(super) fn bank_enter(&mut self, c: usize, stage: Stage) {
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
                if job.async_commit {
                    p.set_use_async_commit(true);
                    p.set_secondaries(job.keys[1..].to_vec().into());
                }
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
            Stage::CheckSecondaries(primary, ..) => {
                let mut r = CheckSecondaryLocksRequest::new();
                r.set_keys(primary.get_secondaries().to_vec().into());
                r.set_start_ts(primary.get_start_ts());
                let mut cmd = TxnRequest::new();
                cmd.set_check_secondary_locks(r);
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
        let mut parts = Vec::new();
        for (region, keys, cmd) in self.split(cmd) {
            let target = self.rng.gen_range(0..self.nodes.len());
            parts.push(Part {
                region,
                keys,
                cmd,
                rx: None,
                target,
                answer: None,
            });
        }
        let at: Vec<String> = parts
            .iter()
            .map(|p| match self.regions.len() {
                1 => format!("s{}", p.target + 1),
                _ => format!("s{} r{}", p.target + 1, p.region + 1),
            })
            .collect();
        self.note(format!(
            "bank client {c} {} at {}",
            show(&stage),
            at.join(", ")
        ));
        let n = parts.len();
        if n == 0 {
            // No keys: an async primary listing no secondaries is decided by its own
            // floor (no part answers; `merge` has nothing to merge). Anything else with
            // no keys is a bug of this client.
            if let Stage::CheckSecondaries(..) = stage {
                let mut resp = TxnResponse::new();
                resp.set_check_secondary_locks(Default::default());
                return self.bank_answer(c, resp);
            }
            let id = self.job(c).id;
            self.finding(format!("txn {id}: {} with no keys", show(&stage)));
            return self.bank_give_up(c);
        }
        self.job(c).call = Some(Call { parts });
        for part in 0..n {
            self.bank_send(c, part);
        }
    }

    /// Part `part` of client `c`'s command in flight.
    fn part(&mut self, c: usize, part: usize) -> Option<&mut Part> {
        self.job(c).call.as_mut()?.parts.get_mut(part)
    }

    /// Sends part `part` of client `c`'s command to its target store.
    pub(super) fn bank_send(&mut self, c: usize, part: usize) {
        let Some(p) = self.part(c, part) else {
            return;
        };
        let (r, target, cmd) = (p.region, p.target, p.cmd.clone());
        let mut req = KvRequest::new();
        req.mut_context().set_region_id(self.regions[r].get_id());
        req.mut_context()
            .set_region_epoch(self.regions[r].get_region_epoch().clone());
        req.mut_request().set_txn(cmd);
        let (tx, rx) = oneshot::channel();
        if let Some(p) = self.part(c, part) {
            p.rx = Some(rx);
        }
        match self.peer(target, r) {
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
            let parts = call.parts.len();
            for part in 0..parts {
                if !self.bank_poll_part(c, part) {
                    break;
                }
            }
            let answered = self.bank_mut().clients[c]
                .job
                .as_ref()
                .and_then(|j| j.call.as_ref())
                .is_some_and(|call| call.parts.iter().all(|p| p.answer.is_some()));
            if answered {
                let job = self.job(c);
                let keys = job.keys.clone();
                let Some(mut call) = job.call.take() else {
                    continue;
                };
                match parts::merge(&mut call.parts, &keys) {
                    Ok(txn) => self.bank_answer(c, txn),
                    Err(finding) => {
                        let id = self.job(c).id;
                        self.finding(format!("txn {id}: {finding}"));
                        self.bank_give_up(c);
                    }
                }
            }
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

    /// Takes part `part`'s answer of client `c`'s command if it arrived; retries a
    /// routing error or a lost answer at another store. False when the job ended (an
    /// error no correct store gives).
    fn bank_poll_part(&mut self, c: usize, part: usize) -> bool {
        let Some(p) = self.part(c, part) else {
            return true;
        };
        let Some(rx) = p.rx.as_mut() else {
            return true;
        };
        let answer = match rx.try_recv() {
            Ok(resp) => Some(resp),
            Err(oneshot::error::TryRecvError::Empty) => return true,
            Err(oneshot::error::TryRecvError::Closed) => None,
        };
        p.rx = None;
        let why = answer.as_ref().map_or("no answer".to_string(), |r| {
            r.get_error().get_message().to_string()
        });
        let retry_at = match answer {
            Some(mut resp) if !resp.has_error() => {
                p.answer = Some(resp.mut_response().take_txn());
                return true;
            }
            // An error no correct store gives this client: a finding.
            Some(resp) if !retryable(resp.get_error()) => {
                self.finding(format!("bank client {c}: {:?}", resp.get_error()));
                self.bank_give_up(c);
                return false;
            }
            other => self.retry_target(other.as_ref()),
        };
        let region = self.part(c, part).map_or(0, |p| p.region);
        self.note(match self.regions.len() {
            1 => format!("bank client {c} retries at s{} ({why})", retry_at + 1),
            _ => format!(
                "bank client {c} retries at s{} r{} ({why})",
                retry_at + 1,
                region + 1
            ),
        });
        if let Some(p) = self.part(c, part) {
            p.target = retry_at;
        }
        self.bank_send(c, part);
        true
    }
}
