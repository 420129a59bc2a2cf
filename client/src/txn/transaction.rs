//! [`Transaction`]: reads at `start_ts` over the transaction's own buffered writes,
//! pessimistic locks, client-side write buffering, commit and rollback.

use super::commit::{self, CommitPlan};
use super::read;
use super::resolve::run_resolving;
use super::rpc::{call, call_grouped, failure};
use super::{check_key, Shared, TxnMode, TxnOptions};
use crate::error::{Error, Result};
use regatta_proto::txnpb::{
    Mutation, MutationOp, PessimisticLockRequest, RollbackRequest, TxnHeartbeatRequest, TxnRequest,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A buffered write.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Buffered {
    Put(Vec<u8>),
    Delete,
    /// Lock the key at commit without changing it (optimistic `lock_keys`).
    Lock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    /// `commit` is running (or its future was dropped while it ran): the primary's commit
    /// may have been sent, so nothing may be rolled back from here — a rollback of a
    /// secondary of a committed transaction would lose its write. Locks left behind
    /// expire with their TTL and are resolved through the primary.
    Committing,
    Committed,
    RolledBack,
    /// The primary's commit went unanswered: leave everything as it is.
    Undetermined,
}

/// One transaction: snapshot reads at its start ts, writes buffered in the client until
/// [`Transaction::commit`]. Dropped without commit or rollback, it rolls back in the
/// background (best effort; its locks also expire with their TTL).
///
/// ```no_run
/// # async fn demo() -> Result<(), regatta_client::Error> {
/// use regatta_client::TxnClient;
/// let txns = TxnClient::connect(&["127.0.0.1:2379"]).await?;
/// let mut t = txns.begin_optimistic().await?;
/// let alice: u64 = match t.get(b"acct/alice").await? {
///     Some(v) => String::from_utf8_lossy(&v).parse().unwrap_or(0),
///     None => 0,
/// };
/// t.put(b"acct/alice", (alice + 10).to_string().as_bytes());
/// t.delete(b"acct/mallory");
/// assert_eq!(t.get(b"acct/mallory").await?, None, "reads see the buffered writes");
/// let commit_ts = t.commit().await?; // Err(WriteConflict {..}) is retryable
/// # let _ = commit_ts; Ok(()) }
/// ```
pub struct Transaction {
    shared: Arc<Shared>,
    opts: TxnOptions,
    start_ts: u64,
    began: Instant,
    buffer: BTreeMap<Vec<u8>, Buffered>,
    /// Pessimistic: keys this transaction asked to lock.
    locked: BTreeSet<Vec<u8>>,
    /// The largest `for_update_ts` of its pessimistic locks.
    for_update_ts: u64,
    /// Pessimistic: what this transaction read at `start_ts` from the stores, before
    /// locking it (see [`ReadSet`]).
    read: Mutex<ReadSet>,
    primary: Option<Vec<u8>>,
    /// Keys that may hold a lock of this transaction on a store (rolled back on abort).
    touched: BTreeSet<Vec<u8>>,
    state: State,
    heartbeat: Option<JoinHandle<()>>,
    /// Whether the last commit went by 1PC (for tests and metrics).
    committed_by_one_pc: bool,
    /// Why a pessimistic lock round failed, if one did: the store may hold the lock
    /// (taken over a write this transaction did not read, or at a `for_update_ts` it
    /// never learned), so the transaction may no longer commit; see `commit`.
    lock_failed: Option<String>,
}

impl Transaction {
    pub(crate) fn new(shared: Arc<Shared>, opts: TxnOptions, start_ts: u64) -> Transaction {
        Transaction {
            shared,
            opts,
            start_ts,
            began: Instant::now(),
            buffer: BTreeMap::new(),
            locked: BTreeSet::new(),
            for_update_ts: 0,
            read: Mutex::default(),
            primary: None,
            touched: BTreeSet::new(),
            state: State::Active,
            heartbeat: None,
            committed_by_one_pc: false,
            lock_failed: None,
        }
    }

    /// The transaction's start ts: its reads see what committed at or below it.
    pub fn start_ts(&self) -> u64 {
        self.start_ts
    }

    /// Whether the commit went by 1PC (one prewrite that committed; every key in one
    /// region). `false` before commit.
    pub fn committed_by_one_pc(&self) -> bool {
        self.committed_by_one_pc
    }

    fn ensure_active(&self, op: &str) -> Result<()> {
        match self.state {
            State::Active => Ok(()),
            s => Err(Error::InvalidArgument(format!(
                "{op}: the transaction is no longer active ({s:?})"
            ))),
        }
    }

    /// The value of `key`: this transaction's own buffered write if it has one, else the
    /// value committed at or below `start_ts` (`None`: no value). Pessimistic: a key read
    /// here and written later is locked checked from `start_ts` (see
    /// [`TxnMode::Pessimistic`]); a key this transaction already locked is read at its
    /// `for_update_ts` (the value [`Transaction::get_for_update`] returned), by `get`,
    /// `batch_get` and `scan` alike.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.ensure_active("get")?;
        match self.buffer.get(key) {
            Some(Buffered::Put(v)) => Ok(Some(v.clone())),
            Some(Buffered::Delete) => Ok(None),
            Some(Buffered::Lock) | None if self.pessimistically_locked(key) => {
                read::get(&self.shared, self.locked_read_ts(), key).await
            }
            Some(Buffered::Lock) | None => {
                self.note_read(|r| {
                    r.keys.insert(key.to_vec());
                });
                read::get(&self.shared, self.start_ts, key).await
            }
        }
    }

    /// Whether `key` holds (or was asked to hold) this pessimistic transaction's lock.
    fn pessimistically_locked(&self, key: &[u8]) -> bool {
        self.opts.mode == TxnMode::Pessimistic && self.locked.contains(key)
    }

    /// Where a pessimistic transaction reads a key it locked: at its `for_update_ts`, the
    /// value its lock was taken over (the newest; nobody else can commit there while the
    /// lock holds). Reading it at `start_ts` instead would return a value older than the
    /// one `get_for_update` returned, and writing from it would lose the writes between.
    fn locked_read_ts(&self) -> u64 {
        self.for_update_ts.max(self.start_ts)
    }

    /// Pessimistic: records a read at `start_ts` (see [`ReadSet`]).
    fn note_read(&self, f: impl FnOnce(&mut ReadSet)) {
        if self.opts.mode == TxnMode::Pessimistic {
            f(&mut self.read.lock().expect("read set lock"));
        }
    }

    /// The values of `keys` in their order, as [`Transaction::get`] would return them;
    /// the keys not buffered are read in one request per region, the regions in parallel.
    pub async fn batch_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.ensure_active("batch_get")?;
        let unbuffered: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| matches!(self.buffer.get(*k), None | Some(Buffered::Lock)))
            .cloned()
            .collect();
        let (locked, at_start): (Vec<Vec<u8>>, Vec<Vec<u8>>) = unbuffered
            .into_iter()
            .partition(|k| self.pessimistically_locked(k));
        self.note_read(|r| r.keys.extend(at_start.iter().cloned()));
        let mut stored: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        for (part, ts) in [(at_start, self.start_ts), (locked, self.locked_read_ts())] {
            if !part.is_empty() {
                let read = read::batch_get(&self.shared, ts, &part).await?;
                stored.extend(part.into_iter().zip(read));
            }
        }
        Ok(keys
            .iter()
            .map(|k| match self.buffer.get(k) {
                Some(Buffered::Put(v)) => Some(v.clone()),
                Some(Buffered::Delete) => None,
                _ => stored.get(k).cloned().flatten(),
            })
            .collect())
    }

    /// The pairs with `start <= key < end` (empty `end`: no upper bound) as of
    /// `start_ts`, with this transaction's buffered writes applied, in key order, at most
    /// `limit` (0: no limit).
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.ensure_active("scan")?;
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let own: Vec<(&Vec<u8>, &Buffered)> = self
            .buffer
            .range::<[u8], _>((Bound::Included(start), upper))
            .filter(|(_, b)| **b != Buffered::Lock)
            .collect();
        // Keys this pessimistic transaction locked are read at its for_update_ts (as
        // `get` reads them), over what the scan at start_ts saw.
        let locked: Vec<Vec<u8>> = self
            .locked
            .range::<[u8], _>((Bound::Included(start), upper))
            .filter(|k| self.pessimistically_locked(k))
            .cloned()
            .collect();
        // Each buffered delete, and each locked key deleted since start_ts, hides at most
        // one stored pair: read that many more.
        let want = if limit == 0 {
            0
        } else {
            limit + own.len() + locked.len()
        };
        self.note_read(|r| r.ranges.push((start.to_vec(), end.to_vec())));
        let stored = read::scan(&self.shared, self.start_ts, start, end, want).await?;
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        if !locked.is_empty() {
            let now = read::batch_get(&self.shared, self.locked_read_ts(), &locked).await?;
            for (k, v) in locked.into_iter().zip(now) {
                match v {
                    Some(v) => merged.insert(k, v),
                    None => merged.remove(&k),
                };
            }
        }
        for (k, b) in own {
            match b {
                Buffered::Put(v) => {
                    merged.insert(k.clone(), v.clone());
                }
                Buffered::Delete => {
                    merged.remove(k);
                }
                Buffered::Lock => {}
            }
        }
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = merged.into_iter().collect();
        if limit > 0 {
            out.truncate(limit);
        }
        Ok(out)
    }

    /// Reads `key` for update. Pessimistic: locks it (waiting in the key's queue while
    /// another transaction holds it) at a fresh `for_update_ts` and returns its newest
    /// committed value (or this transaction's buffered write); the commit cannot then fail
    /// on a write conflict on it. Optimistic: reads at `start_ts` and locks the key at
    /// commit, so a write to it committed meanwhile fails the commit.
    pub async fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.ensure_active("get_for_update")?;
        check_key("get_for_update", key)?;
        if self.opts.mode == TxnMode::Optimistic {
            let value = self.get(key).await?;
            self.buffer.entry(key.to_vec()).or_insert(Buffered::Lock);
            return Ok(value);
        }
        let locked = self.acquire(&[key.to_vec()], true).await?;
        Ok(match self.buffer.get(key) {
            Some(Buffered::Put(v)) => Some(v.clone()),
            Some(Buffered::Delete) => None,
            _ => locked.into_iter().next().flatten(),
        })
    }

    /// Locks `keys` without reading them. Pessimistic: a `pessimistic_lock` per region at
    /// a fresh `for_update_ts`, as [`Transaction::get_for_update`]. Optimistic: adds a
    /// LOCK mutation for each key this transaction does not write, checked at commit.
    pub async fn lock_keys(&mut self, keys: &[Vec<u8>]) -> Result<()> {
        self.ensure_active("lock_keys")?;
        for k in keys {
            check_key("lock_keys", k)?;
        }
        if self.opts.mode == TxnMode::Optimistic {
            for k in keys {
                self.buffer.entry(k.clone()).or_insert(Buffered::Lock);
            }
            return Ok(());
        }
        self.acquire(keys, false).await.map(|_| ())
    }

    /// Buffers a write of `value` under `key` (sent at commit).
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.buffer
            .insert(key.to_vec(), Buffered::Put(value.to_vec()));
    }

    /// Buffers a delete of `key` (sent at commit).
    pub fn delete(&mut self, key: &[u8]) {
        self.buffer.insert(key.to_vec(), Buffered::Delete);
    }

    /// Takes pessimistic locks on `keys` (the primary first, if this is the transaction's
    /// first lock), each attempt at a fresh `for_update_ts`; a write committed after it
    /// is retried with a newer one. Returns each key's newest value when `need_value`.
    async fn acquire(
        &mut self,
        keys: &[Vec<u8>],
        need_value: bool,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut unique: Vec<Vec<u8>> = keys.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let mut values: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        if self.primary.is_none() {
            let primary = keys[0].clone();
            self.primary = Some(primary.clone());
            let since_start = self.read_since_start(&primary);
            values.extend(
                self.lock_round(vec![primary.clone()], need_value, since_start)
                    .await?,
            );
            unique.retain(|k| *k != primary);
            // Keep the primary alive from its first lock on: the next round may wait
            // in a queue longer than its TTL, and a resolver that then found it expired
            // would roll back a live transaction.
            self.start_heartbeat();
        }
        // Keys read at start_ts are checked from start_ts (see `ReadSet`); the others
        // lock at a fresh for_update_ts.
        let (since_start, fresh): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
            unique.into_iter().partition(|k| self.read_since_start(k));
        for (part, from_start) in [(since_start, true), (fresh, false)] {
            if !part.is_empty() {
                values.extend(self.lock_round(part, need_value, from_start).await?);
            }
        }
        self.start_heartbeat();
        Ok(keys
            .iter()
            .map(|k| values.get(k).cloned().flatten())
            .collect())
    }

    /// Whether `key` was read at `start_ts` and is not locked yet: its lock must then
    /// find no write committed after `start_ts` (see [`ReadSet`]).
    fn read_since_start(&self, key: &[u8]) -> bool {
        !self.locked.contains(key) && self.read.lock().expect("read set lock").covers(key)
    }

    /// Locks `keys` (one request per region). `from_start`: at `start_ts`, so that a
    /// write committed after it fails with [`Error::WriteConflict`] (including one the
    /// store's queue hands the key over after); else at a fresh `for_update_ts`, retried
    /// at a newer one on a write conflict.
    async fn lock_round(
        &mut self,
        keys: Vec<Vec<u8>>,
        need_value: bool,
        from_start: bool,
    ) -> Result<Vec<(Vec<u8>, Option<Vec<u8>>)>> {
        let result = self.try_lock_round(keys, need_value, from_start).await;
        if let Err(e) = &result {
            self.lock_failed.get_or_insert_with(|| e.to_string());
        }
        result
    }

    /// [`lock_round`](Self::lock_round), without recording its failure.
    async fn try_lock_round(
        &mut self,
        keys: Vec<Vec<u8>>,
        need_value: bool,
        from_start: bool,
    ) -> Result<Vec<(Vec<u8>, Option<Vec<u8>>)>> {
        let primary = self.primary.clone().unwrap_or_else(|| keys[0].clone());
        self.touched.extend(keys.iter().cloned());
        self.locked.extend(keys.iter().cloned());
        let deadline = Instant::now() + self.shared.client.config().op_timeout;
        loop {
            let for_update_ts = if from_start {
                self.start_ts
            } else {
                self.shared.timestamp().await?
            };
            let (p, start_ts) = (primary.clone(), self.start_ts);
            let (ttl, wait_ms) = (self.lock_ttl_ms(), self.opts.lock_wait_timeout_ms);
            let build = Arc::new(move |part: &[Vec<u8>]| {
                let mut l = PessimisticLockRequest::new();
                l.set_keys(part.to_vec().into());
                l.set_primary(p.clone());
                l.set_start_ts(start_ts);
                l.set_for_update_ts(for_update_ts);
                l.set_lock_ttl_ms(ttl);
                l.set_return_values(need_value);
                l.set_wait_timeout_ms(wait_ms);
                let mut cmd = TxnRequest::new();
                cmd.set_pessimistic_lock(l);
                cmd
            });
            let mut got = Vec::new();
            let mut locked_at = for_update_ts;
            let mut raised_on = None;
            let outcome = run_resolving(
                &self.shared,
                "pessimistic_lock",
                keys.clone(),
                start_ts,
                &primary,
                build,
                |part, mut resp| {
                    // Handed a key after its holder committed: locked at that commit's ts.
                    let conflict_ts = resp.get_pessimistic_lock().get_locked_with_conflict_ts();
                    if conflict_ts > locked_at {
                        locked_at = conflict_ts;
                        raised_on = part.first().cloned();
                    }
                    let values = resp.mut_pessimistic_lock().take_values().into_vec();
                    for (k, mut v) in part.iter().zip(values) {
                        got.push((k.clone(), v.get_found().then(|| v.take_value())));
                    }
                },
            )
            .await;
            match outcome {
                Ok(()) if from_start && locked_at > self.start_ts => {
                    // Handed the key after a write committed since start_ts: this
                    // transaction read the value before it. (Its lock goes with the
                    // rollback of the transaction.)
                    return Err(Error::WriteConflict {
                        key: raised_on.unwrap_or_else(|| keys[0].clone()),
                        primary,
                        start_ts,
                        conflict_start_ts: 0,
                        conflict_commit_ts: locked_at,
                    });
                }
                Ok(()) => {
                    if locked_at > for_update_ts {
                        // Locked at another transaction's commit ts, which a 1PC may
                        // have chosen above anything the TSO handed out: commit only
                        // once the TSO is past it (so the commit ts is above it, and a
                        // transaction that starts after the commit sees it).
                        self.wait_for_tso_past(locked_at, deadline).await?;
                    }
                    self.for_update_ts = self.for_update_ts.max(locked_at);
                    return Ok(got);
                }
                // Written after this for_update_ts: lock again at a newer one (what
                // makes a pessimistic commit immune to write conflicts).
                Err(Error::WriteConflict { .. }) if !from_start && Instant::now() < deadline => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Returns once PD's TSO has handed out a timestamp at or above `ts` (asking it, with
    /// a short backoff, until `deadline`).
    async fn wait_for_tso_past(&self, ts: u64, deadline: Instant) -> Result<()> {
        let mut backoff = Duration::from_millis(1);
        loop {
            let now = self.shared.timestamp().await?;
            if now >= ts {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::TimestampTooFarAhead { ts, limit: now });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// The TTL to ask for: the configured one, counted from now rather than from the
    /// start (a lock's TTL runs from the physical part of `start_ts`).
    fn lock_ttl_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.opts.lock_ttl_ms.saturating_add(elapsed)
    }

    /// Keeps the primary's lock alive while the transaction runs (TiKV's TTL manager):
    /// every `heartbeat_interval`, `txn_heartbeat` raises its TTL to the time elapsed since
    /// the start plus `lock_ttl_ms`. Stops when the transaction ends or the lock is gone.
    fn start_heartbeat(&mut self) {
        let Some(primary) = self.primary.clone() else {
            return;
        };
        if self.heartbeat.is_some() {
            return;
        }
        let (shared, start_ts) = (self.shared.clone(), self.start_ts);
        let (interval, ttl, began) = (
            self.opts.heartbeat_interval,
            self.opts.lock_ttl_ms,
            self.began,
        );
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let elapsed = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
                let mut h = TxnHeartbeatRequest::new();
                h.set_primary(primary.clone());
                h.set_start_ts(start_ts);
                h.set_advise_ttl_ms(ttl.saturating_add(elapsed));
                let mut cmd = TxnRequest::new();
                cmd.set_heartbeat(h);
                match call(&shared.client, "heartbeat", &primary, cmd).await {
                    // The lock is gone (committed or rolled back): nothing to keep alive.
                    Ok(resp) if failure(&resp).is_some() => return,
                    // A transient failure: try again at the next beat.
                    Ok(_) | Err(_) => {}
                }
            }
        }));
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    /// Commits the buffered writes; returns the commit ts (a read-only transaction
    /// returns its start ts and sends nothing). 1PC when every key lies in one region,
    /// else 2PC (see the `txn` module doc). On [`Error::CommitUndetermined`] the outcome
    /// is unknown; on any other error the transaction did not commit and its locks are
    /// rolled back in the background.
    pub async fn commit(&mut self) -> Result<u64> {
        self.ensure_active("commit")?;
        if let Some(why) = self.lock_failed.clone() {
            // Committing now would turn a lock taken past this transaction's reads into
            // its write (a lost update), at a commit ts maybe not above that lock's.
            let _ = self.rollback().await;
            return Err(Error::InvalidArgument(format!(
                "commit refused: a pessimistic lock of this transaction failed ({why}); \
                 it was rolled back, run it again"
            )));
        }
        if let Some(k) = self.buffer.keys().find(|k| k.is_empty()) {
            return Err(Error::InvalidArgument(format!(
                "commit: an empty key ({k:?})"
            )));
        }
        self.state = State::Committing;
        let result = self.commit_buffered().await;
        self.stop_heartbeat();
        self.state = match &result {
            Ok(_) => State::Committed,
            Err(Error::CommitUndetermined { .. }) | Err(Error::AlreadyCommitted { .. }) => {
                State::Undetermined
            }
            // Not committed, and the primary's commit will never be sent: rolling the
            // locks back is safe (and spares readers the wait for their TTL).
            Err(_) => {
                self.rollback_in_background();
                State::RolledBack
            }
        };
        result
    }

    async fn commit_buffered(&mut self) -> Result<u64> {
        let pessimistic = self.opts.mode == TxnMode::Pessimistic;
        if pessimistic {
            // Lock the written keys not locked yet, so the prewrite meets no conflict.
            let unlocked: Vec<Vec<u8>> = self
                .buffer
                .keys()
                .filter(|k| !self.locked.contains(*k))
                .cloned()
                .collect();
            if !unlocked.is_empty() {
                self.acquire(&unlocked, false).await?;
            }
        }
        let mut mutations: BTreeMap<Vec<u8>, Mutation> = BTreeMap::new();
        for (k, b) in &self.buffer {
            let mut m = Mutation::new();
            m.set_key(k.clone());
            match b {
                Buffered::Put(v) => {
                    m.set_op(MutationOp::PUT);
                    m.set_value(v.clone());
                }
                Buffered::Delete => m.set_op(MutationOp::DELETE),
                Buffered::Lock => m.set_op(MutationOp::LOCK),
            }
            mutations.insert(k.clone(), m);
        }
        // Keys locked for update but not written are prewritten as LOCK (TiKV).
        for k in &self.locked {
            mutations.entry(k.clone()).or_insert_with(|| {
                let mut m = Mutation::new();
                m.set_key(k.clone());
                m.set_op(MutationOp::LOCK);
                m
            });
        }
        let Some(first) = mutations.keys().next().cloned() else {
            return Ok(self.start_ts);
        };
        for m in mutations.values_mut() {
            m.set_pessimistic(self.locked.contains(m.get_key()));
        }
        let primary = self.primary.clone().unwrap_or(first);
        self.primary = Some(primary.clone());
        self.touched.extend(mutations.keys().cloned());
        // No heartbeat for an optimistic commit (client-go's small transactions): its
        // locks live from prewrite to the primary's commit, one TSO call and one request
        // later, under a TTL counted from now. Were it kept alive while its prewrite waits
        // on another's lock, two commits waiting on each other would wait out their
        // deadlines; with the TTL, the first to expire is rolled back and the other goes on.
        let plan = CommitPlan {
            primary,
            mutations: mutations.into_values().collect(),
            start_ts: self.start_ts,
            for_update_ts: self.for_update_ts,
            lock_ttl_ms: self.lock_ttl_ms(),
            try_one_pc: self.opts.try_one_pc,
            async_commit: self.opts.async_commit,
            read_versions: HashMap::new(),
        };
        let done = commit::commit(&self.shared, plan, &mut false).await?;
        self.committed_by_one_pc = done.one_pc;
        Ok(done.commit_ts)
    }

    /// Rolls the transaction back: its locks (pessimistic or prewritten) go, leaving
    /// rollback records so a late request of it cannot land. Its buffered writes are
    /// dropped.
    pub async fn rollback(&mut self) -> Result<()> {
        self.ensure_active("rollback")?;
        self.stop_heartbeat();
        self.state = State::RolledBack;
        let keys: Vec<Vec<u8>> = std::mem::take(&mut self.touched).into_iter().collect();
        rollback_keys(&self.shared, keys, self.start_ts).await
    }

    fn rollback_in_background(&mut self) {
        let keys: Vec<Vec<u8>> = std::mem::take(&mut self.touched).into_iter().collect();
        if keys.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (shared, start_ts) = (self.shared.clone(), self.start_ts);
            rt.spawn(async move {
                let _ = rollback_keys(&shared, keys, start_ts).await;
            });
        }
    }
}

/// What a pessimistic transaction read at `start_ts` from the stores before locking it:
/// keys it got, and ranges it scanned. A key it then writes (or locks) is locked at
/// `start_ts`, so a write committed since is a [`Error::WriteConflict`] that
/// [`crate::TxnClient::run`] retries: without it, a `get` then `put` would lock at a fresh
/// `for_update_ts` with no check since the read, and two increments could both commit
/// with one lost (snapshot isolation's first-committer-wins).
#[derive(Debug, Default)]
struct ReadSet {
    keys: BTreeSet<Vec<u8>>,
    /// `(start, end)`, an empty `end` unbounded.
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ReadSet {
    fn covers(&self, key: &[u8]) -> bool {
        self.keys.contains(key)
            || self
                .ranges
                .iter()
                .any(|(s, e)| key >= s.as_slice() && (e.is_empty() || key < e.as_slice()))
    }
}

/// Rolls transaction `start_ts` back on `keys` (one request per region, in parallel).
pub(crate) async fn rollback_keys(
    shared: &Shared,
    keys: Vec<Vec<u8>>,
    start_ts: u64,
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let build = Arc::new(move |part: &[Vec<u8>]| {
        let mut r = RollbackRequest::new();
        r.set_keys(part.to_vec().into());
        r.set_start_ts(start_ts);
        let mut cmd = TxnRequest::new();
        cmd.set_rollback(r);
        cmd
    });
    for (part, resp) in call_grouped(&shared.client, "rollback", keys, build).await? {
        if let Some(e) = failure(&resp) {
            return Err(super::rpc::key_error(e, start_ts, &part[0]));
        }
    }
    Ok(())
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.stop_heartbeat();
        if self.state == State::Active {
            self.rollback_in_background();
        }
    }
}
