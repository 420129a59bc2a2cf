//! Snapshot isolation against a model, on generated interleavings of transactions.
//!
//! Goal: the crate's first invariant — a read at `ts` sees exactly the writes committed at
//! or below `ts`, or `KeyIsLocked` — across optimistic, pessimistic and 1PC transactions,
//! rollbacks, check_txn_status and resolve_lock, interleaved the way concurrent clients
//! and lock resolvers would. Method: transactions on four keys advance one step at a time
//! in a seeded random order (take the next pessimistic lock, retrying at a newer
//! for_update_ts on a conflict; prewrite the next key, primary first; commit the primary
//! and maybe the secondaries; or 1PC in one step; abort on a conflict); a resolver checks
//! a random lock's primary, sometimes as if its TTL ran out, and resolves it. The model
//! records a transaction's writes when its primary commits, and checks then that no
//! other transaction committed on its keys after it read (first committer wins: no lost
//! update). After every step each read at every handed-out timestamp must equal the model
//! or be `KeyIsLocked`; after all locks are resolved, every read must succeed and equal
//! the model.

use super::*;
use std::collections::BTreeMap;

const KEYS: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Optimistic,
    Pessimistic,
    OnePc,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Active,
    Committed,
    Aborted,
}

struct Txn {
    kind: Kind,
    start_ts: u64,
    for_update_ts: u64,
    muts: Vec<Mutation>,
    /// Keys pessimistically locked so far (pessimistic transactions).
    locked: usize,
    /// Keys prewritten so far.
    prewritten: usize,
    state: State,
}

impl Txn {
    fn keys(&self) -> Vec<Vec<u8>> {
        self.muts.iter().map(|m| m.key.clone()).collect()
    }
}

struct Sim<E: Fresh> {
    env: Env<E>,
    rng: Rng,
    clock_ms: u64,
    txns: Vec<Txn>,
    /// key -> commit_ts -> value (None: deleted).
    committed: BTreeMap<Vec<u8>, BTreeMap<u64, Option<Vec<u8>>>>,
    /// Every timestamp handed out, and the ones just below.
    probes: Vec<u64>,
    seed: u64,
    step: usize,
}

impl<E: Fresh> Sim<E> {
    fn tick(&mut self) -> u64 {
        self.clock_ms += 1;
        let ts = at_ms(self.clock_ms);
        self.probes.extend([ts - 1, ts]);
        ts
    }

    fn model_value(&self, key: &[u8], ts: u64) -> Option<Vec<u8>> {
        self.committed
            .get(key)
            .and_then(|versions| versions.range(..=ts).next_back())
            .and_then(|(_, v)| v.clone())
    }

    fn check(&self, locked_ok: bool) {
        let (seed, step) = (self.seed, self.step);
        for key in KEYS {
            for &ts in &self.probes {
                match self.env.get(key, ts) {
                    Ok(v) => assert!(
                        v == self.model_value(key, ts),
                        "seed {seed} step {step}: {key:?} at {ts}: {:?} != model {:?}",
                        v.map(|v| v.len()),
                        self.model_value(key, ts).map(|v| v.len())
                    ),
                    Err(Error::KeyIsLocked { .. }) if locked_ok => {}
                    Err(e) => panic!("seed {seed} step {step}: {key:?} at {ts}: {e}"),
                }
            }
        }
    }

    fn begin(&mut self) {
        let start_ts = self.tick();
        let kind = match self.rng.below(3) {
            0 => Kind::Optimistic,
            1 => Kind::Pessimistic,
            _ => Kind::OnePc,
        };
        let first = self.rng.below(4) as usize;
        let n = 1 + self.rng.below(3) as usize;
        let muts = (0..n)
            .map(|j| {
                let k = KEYS[(first + j) % 4].to_vec();
                match self.rng.below(4) {
                    0 => Mutation::delete(k),
                    1 => Mutation::put(k, vec![self.step as u8; 300]),
                    _ => Mutation::put(k, format!("{}/{}", self.seed, self.step).into_bytes()),
                }
            })
            .collect();
        self.txns.push(Txn {
            kind,
            start_ts,
            for_update_ts: start_ts,
            muts,
            locked: 0,
            prewritten: 0,
            state: State::Active,
        });
    }

    fn abort(&mut self, i: usize) {
        let t = &self.txns[i];
        let (ks, start_ts) = (t.keys(), t.start_ts);
        self.env
            .run(|s, wb| rollback(s, wb, &ks, start_ts))
            .expect("an uncommitted txn rolls back");
        self.txns[i].state = State::Aborted;
    }

    /// Records transaction `i` as committed at `commit_ts`, after checking first-committer-
    /// wins: no other commit on its keys after it read (start_ts; a pessimistic
    /// transaction reads at its final for_update_ts; a commit at exactly that ts is in its
    /// snapshot), else an update was lost.
    fn record_commit(&mut self, i: usize, commit_ts: u64) {
        self.txns[i].state = State::Committed;
        let t = &self.txns[i];
        let read_ts = match t.kind {
            Kind::Pessimistic => t.for_update_ts,
            Kind::Optimistic | Kind::OnePc => t.start_ts,
        };
        for m in &t.muts {
            if let Some((&last, _)) = self.committed.get(&m.key).and_then(|v| v.last_key_value()) {
                assert!(
                    last <= read_ts,
                    "seed {} step {}: lost update on {:?}: {:?} txn read at {read_ts}, another committed at {last}",
                    self.seed,
                    self.step,
                    m.key,
                    t.kind
                );
            }
        }
        for m in &self.txns[i].muts {
            let v = match &m.op {
                Op::Put(v) => Some(v.clone()),
                Op::Delete | Op::Lock => None,
            };
            self.committed
                .entry(m.key.clone())
                .or_default()
                .insert(commit_ts, v);
        }
    }

    fn request(&self, i: usize, mutations: Vec<Mutation>) -> PrewriteRequest {
        let t = &self.txns[i];
        let mut req = self.env.request(&t.muts[0].key, t.start_ts, mutations);
        if t.kind == Kind::Pessimistic {
            req.for_update_ts = t.for_update_ts;
        }
        req
    }

    /// One step of transaction `i`'s first phase: a pessimistic lock, a prewrite, or 1PC.
    fn advance(&mut self, i: usize) {
        let (seed, step) = (self.seed, self.step);
        let t = &self.txns[i];
        if t.kind == Kind::OnePc {
            let req = self.request(i, t.muts.clone());
            let commit_ts = self.tick();
            match self.env.run(|s, wb| one_pc(s, wb, &req, commit_ts)) {
                Ok(at) => {
                    assert_eq!(
                        at,
                        OnePcOutcome::Committed(commit_ts),
                        "seed {seed} step {step}: a first 1PC commits at its ts"
                    );
                    self.record_commit(i, commit_ts)
                }
                Err(Error::KeyIsLocked { .. } | Error::WriteConflict { .. }) => {
                    self.txns[i].state = State::Aborted // nothing was written
                }
                Err(e) => panic!("seed {seed} step {step}: 1PC: {e}"),
            }
            return;
        }
        if t.kind == Kind::Pessimistic && t.locked < t.muts.len() {
            let req = PessimisticLockRequest {
                primary: t.muts[0].key.clone(),
                start_ts: t.start_ts,
                for_update_ts: t.for_update_ts,
                lock_ttl_ms: TTL_MS,
                need_value: false,
                keys: vec![t.muts[t.locked].key.clone()],
            };
            match self.env.run(|s, wb| acquire_pessimistic_lock(s, wb, &req)) {
                Ok(_) => self.txns[i].locked += 1,
                // The statement retries at a newer for_update_ts, keeping its locks.
                Err(Error::WriteConflict { .. }) => self.txns[i].for_update_ts = self.tick(),
                Err(Error::KeyIsLocked { .. } | Error::AlreadyRolledBack { .. }) => self.abort(i),
                Err(e) => panic!("seed {seed} step {step}: lock: {e}"),
            }
            return;
        }
        if t.prewritten < t.muts.len() {
            let mut m = t.muts[t.prewritten].clone();
            if t.kind == Kind::Pessimistic {
                m = m.pessimistic();
            }
            let req = self.request(i, vec![m]);
            match self.env.run(|s, wb| prewrite(s, wb, &req)) {
                Ok(_) => self.txns[i].prewritten += 1,
                Err(
                    Error::KeyIsLocked { .. }
                    | Error::WriteConflict { .. }
                    | Error::AlreadyRolledBack { .. }
                    | Error::PessimisticLockNotFound { .. },
                ) => self.abort(i),
                Err(e) => panic!("seed {seed} step {step}: prewrite: {e}"),
            }
        }
    }

    /// Commits transaction `i`'s primary (the commit point), then maybe its secondaries.
    fn commit(&mut self, i: usize) {
        let (seed, step) = (self.seed, self.step);
        let t = &self.txns[i];
        if t.kind == Kind::OnePc || t.prewritten < t.muts.len() {
            return;
        }
        let (start_ts, ks) = (t.start_ts, t.keys());
        let commit_ts = self.tick();
        match self
            .env
            .run(|s, wb| commit(s, wb, &ks[..1], start_ts, commit_ts))
        {
            Ok(at) => {
                assert_eq!(
                    at, commit_ts,
                    "seed {seed} step {step}: a first commit is at its ts"
                );
                self.record_commit(i, commit_ts);
                if self.rng.below(2) == 0 {
                    self.env
                        .run(|s, wb| commit(s, wb, &ks[1..], start_ts, commit_ts))
                        .expect("secondaries commit after the primary");
                }
            }
            Err(Error::AlreadyRolledBack { .. }) => self.txns[i].state = State::Aborted,
            Err(e) => panic!("seed {seed} step {step}: commit: {e}"),
        }
    }

    /// Resolves the lock on `key` the way a reader would: ask the primary, then commit or
    /// roll back. `expire`: act as if the lock's TTL had run out.
    fn resolve(&mut self, key: &[u8], lock: &Lock, expire: bool) {
        let now = if expire { u64::MAX } else { lock.start_ts };
        let status = self
            .env
            .run(|s, wb| check_txn_status(s, wb, &lock.primary, lock.start_ts, 0, now, true))
            .expect("check_txn_status");
        let commit_ts = match status {
            TxnStatus::Alive { .. } => return,
            TxnStatus::Committed { commit_ts } => commit_ts,
            TxnStatus::RolledBack
            | TxnStatus::TtlExpiredRolledBack
            | TxnStatus::NotFoundRolledBack => {
                if let Some(t) = self.txns.iter_mut().find(|t| t.start_ts == lock.start_ts) {
                    if t.state == State::Active {
                        t.state = State::Aborted;
                    }
                }
                0
            }
            TxnStatus::AsyncCommitUndecided { .. } => panic!("no async commit here"),
        };
        let ks = vec![key.to_vec()];
        self.env
            .run(|s, wb| resolve_lock(s, wb, &ks, lock.start_ts, commit_ts))
            .expect("resolve_lock");
    }

    fn locks(&self) -> Vec<(Vec<u8>, Lock)> {
        let snap = self.env.engine.snapshot();
        MvccReader::new(&snap)
            .scan_locks(b"", b"", u64::MAX, 100)
            .expect("scan locks")
    }
}

fn reads_match_the_model_under_generated_interleavings<E: Fresh>() {
    let mut outcomes = BTreeMap::new();
    for seed in 1..=40u64 {
        let mut sim = Sim {
            env: Env::<E>::new(),
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            clock_ms: 1_000,
            txns: Vec::new(),
            committed: BTreeMap::new(),
            probes: vec![0],
            seed,
            step: 0,
        };
        for step in 0..150 {
            sim.step = step;
            let active: Vec<usize> = (0..sim.txns.len())
                .filter(|&i| sim.txns[i].state == State::Active)
                .collect();
            let pick = |sim: &mut Sim<E>| active[sim.rng.below(active.len() as u64) as usize];
            match sim.rng.below(7) {
                0 if active.len() < 4 => sim.begin(),
                1..=3 if !active.is_empty() => {
                    let i = pick(&mut sim);
                    sim.advance(i);
                }
                4 | 5 if !active.is_empty() => {
                    let i = pick(&mut sim);
                    sim.commit(i);
                }
                _ => {
                    let locks = sim.locks();
                    if !locks.is_empty() {
                        let (key, lock) = &locks[sim.rng.below(locks.len() as u64) as usize];
                        let expire = sim.rng.below(4) == 0;
                        sim.resolve(key, lock, expire);
                    }
                }
            }
            sim.check(true);
        }
        // Every transaction still running gives up; a resolver clears every lock.
        for (key, lock) in sim.locks() {
            sim.resolve(&key, &lock, true);
        }
        assert_eq!(sim.env.count(Cf::Lock), 0, "seed {seed}");
        sim.step = usize::MAX;
        sim.check(false);
        for t in &sim.txns {
            *outcomes.entry((t.kind as u8, t.state as u8)).or_insert(0) += 1;
        }
    }
    // The generator must keep producing every kind of transaction, committed and aborted,
    // or the check proves little.
    for kind in [Kind::Optimistic, Kind::Pessimistic, Kind::OnePc] {
        for state in [State::Committed, State::Aborted] {
            let n = outcomes
                .get(&(kind as u8, state as u8))
                .copied()
                .unwrap_or(0);
            assert!(n >= 20, "{kind:?} {state:?}: only {n} of {outcomes:?}");
        }
    }
}

on_both!(reads_match_the_model_under_generated_interleavings);
