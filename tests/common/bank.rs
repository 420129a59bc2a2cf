//! The bank workload of the transactional fault tests (in-process cluster and real
//! processes): accounts whose values name their writer (`si::tag`), transfers recorded
//! whatever their end, an auditor reading every account in one snapshot, and the history
//! handed to the snapshot-isolation checker (`si.rs`). Include it with `si.rs`:
//! `#[path = "common/si.rs"] mod si; #[path = "common/bank.rs"] mod bank;`.

use super::si::{self, Outcome, SnapshotRead, Txn};
use rand::rngs::StdRng;
use rand::Rng;
use regatta_client::{Error, Transaction, TxnClient, TxnMode, TxnOptions};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Accounts in the bank.
pub const ACCOUNTS: usize = 12;
/// Each account's opening balance.
pub const INITIAL: i64 = 100;

/// The key of account `i`.
pub fn account(i: usize) -> Vec<u8> {
    format!("bank/{i:03}").into_bytes()
}

/// Every account's key.
pub fn accounts() -> Vec<Vec<u8>> {
    (0..ACCOUNTS).map(account).collect()
}

/// The writer and balance of a tagged account value.
fn read_account(value: Option<Vec<u8>>) -> (i64, u64) {
    let v = value.expect("an account is never deleted");
    let (payload, writer) = si::untag(&v);
    (payload.parse().expect("a balance"), writer)
}

/// How a transfer client reads the accounts it then writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Optimistic, `get` at the start ts.
    Optimistic,
    /// Pessimistic, `get_for_update` (locks at a fresh `for_update_ts` and reads there).
    ForUpdate,
    /// Pessimistic, a plain `get` at the start ts, then `put` (the key is locked at
    /// commit, checked from the start ts).
    PessimisticGet,
}

impl Style {
    /// The style of client `c` of a bank: the three in turn.
    pub fn of_client(c: usize) -> Style {
        [Style::Optimistic, Style::ForUpdate, Style::PessimisticGet][c % 3]
    }

    fn mode(self) -> TxnMode {
        match self {
            Style::Optimistic => TxnMode::Optimistic,
            Style::ForUpdate | Style::PessimisticGet => TxnMode::Pessimistic,
        }
    }
}

/// One transfer attempt, recorded whatever its end. Reads both accounts, moves `amount`
/// if the source has it (writing both, tagged with `id`), commits. After a commit that
/// returned, reads what it wrote in a snapshot at a fresh TSO ts (the checker's rule 5),
/// when that read succeeds.
pub async fn transfer(
    txns: &TxnClient,
    style: Style,
    id: u64,
    from: usize,
    to: usize,
) -> (Txn, Option<SnapshotRead>) {
    let mode = style.mode();
    let opts = TxnOptions {
        mode,
        ..TxnOptions::default()
    };
    let mut rec = Txn {
        id,
        start_ts: 0,
        reads_at_start: style != Style::ForUpdate,
        reads: Vec::new(),
        writes: Vec::new(),
        outcome: Outcome::Aborted,
    };
    let mut t = match txns.begin_with(opts).await {
        Ok(t) => t,
        Err(_) => return (rec, None),
    };
    rec.start_ts = t.start_ts();
    async fn read(t: &mut Transaction, style: Style, key: &[u8]) -> Result<(i64, u64), Error> {
        let v = match style {
            Style::Optimistic | Style::PessimisticGet => t.get(key).await?,
            Style::ForUpdate => t.get_for_update(key).await?,
        };
        Ok(read_account(v))
    }
    let (a, b) = (account(from), account(to));
    let reads = async {
        let ra = read(&mut t, style, &a).await?;
        let rb = read(&mut t, style, &b).await?;
        Ok::<_, Error>((ra, rb))
    }
    .await;
    let ((bal_a, wa), (bal_b, wb)) = match reads {
        Ok(r) => r,
        Err(_) => {
            let _ = t.rollback().await;
            return (rec, None);
        }
    };
    rec.reads = vec![(a.clone(), wa), (b.clone(), wb)];
    let amount = 1 + (id % 7) as i64;
    if bal_a >= amount {
        t.put(&a, &si::tag(&(bal_a - amount).to_string(), id));
        t.put(&b, &si::tag(&(bal_b + amount).to_string(), id));
        rec.writes = vec![a, b];
    }
    rec.outcome = match t.commit().await {
        Ok(ts) => Outcome::Committed(ts),
        Err(Error::CommitUndetermined { .. }) => Outcome::Unknown,
        Err(_) => Outcome::Aborted,
    };
    let mine = match rec.outcome {
        Outcome::Committed(_) if !rec.writes.is_empty() => {
            read_own_writes(txns, id, &rec.writes).await
        }
        _ => None,
    };
    (rec, mine)
}

/// Reads `keys` in a snapshot at a TSO ts fetched now, after transaction `id`'s commit
/// returned; `None` if the read failed (a fault window).
async fn read_own_writes(txns: &TxnClient, id: u64, keys: &[Vec<u8>]) -> Option<SnapshotRead> {
    let ts = txns.current_timestamp().await.ok()?;
    let values = txns.snapshot(ts).await.ok()?.batch_get(keys).await.ok()?;
    let reads = keys
        .iter()
        .zip(values)
        .map(|(k, v)| (k.clone(), read_account(v).1))
        .collect();
    Some(SnapshotRead {
        ts,
        reads,
        after_commit_of: Some(id),
    })
}

/// Reads every account in one snapshot at a fresh ts; `None` if the read failed (a fault
/// window). Asserts the total.
pub async fn audit(txns: &TxnClient) -> Option<SnapshotRead> {
    let ts = txns.current_timestamp().await.ok()?;
    let values = txns
        .snapshot(ts)
        .await
        .ok()?
        .batch_get(&accounts())
        .await
        .ok()?;
    let mut total = 0;
    let mut reads = Vec::new();
    for (key, v) in accounts().into_iter().zip(values) {
        let (bal, writer) = read_account(v);
        total += bal;
        reads.push((key, writer));
    }
    assert_eq!(
        total,
        INITIAL * ACCOUNTS as i64,
        "a snapshot at {ts} does not sum to the total"
    );
    Some(SnapshotRead {
        ts,
        reads,
        after_commit_of: None,
    })
}

/// Opens every account with [`INITIAL`] in one transaction; returns its commit ts.
pub async fn open(txns: &TxnClient) -> u64 {
    let mut open = txns.begin_optimistic().await.expect("a transaction begins");
    for key in accounts() {
        open.put(&key, &si::tag(&INITIAL.to_string(), si::SETUP_TXN));
    }
    open.commit().await.expect("accounts open")
}

/// Transfer clients and an auditor running until [`Bank::finish`].
pub struct Bank {
    history: Arc<Mutex<Vec<Txn>>>,
    snapshots: Arc<Mutex<Vec<SnapshotRead>>>,
    commits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    setup_ts: u64,
}

impl Bank {
    /// Starts one transfer client per RNG (in turn optimistic, pessimistic with
    /// `get_for_update`, pessimistic with plain `get`; see [`Style`]) and an auditor,
    /// over accounts opened at `setup_ts`.
    pub fn start(txns: &TxnClient, rngs: Vec<StdRng>, setup_ts: u64) -> Bank {
        let history = Arc::new(Mutex::new(Vec::<Txn>::new()));
        let snapshots = Arc::new(Mutex::new(Vec::<SnapshotRead>::new()));
        let commits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let next_id = Arc::new(AtomicU64::new(1));
        let mut tasks = Vec::new();
        for (c, mut rng) in rngs.into_iter().enumerate() {
            let (txns, history, commits, stop, next_id) = (
                txns.clone(),
                history.clone(),
                commits.clone(),
                stop.clone(),
                next_id.clone(),
            );
            let style = Style::of_client(c);
            let snapshots = snapshots.clone();
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let from = rng.gen_range(0..ACCOUNTS);
                    let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let (rec, mine) = transfer(&txns, style, id, from, to).await;
                    if matches!(rec.outcome, Outcome::Committed(_)) {
                        commits.fetch_add(1, Ordering::Relaxed);
                    }
                    history.lock().unwrap().push(rec);
                    if let Some(read) = mine {
                        snapshots.lock().unwrap().push(read);
                    }
                }
            }));
        }
        let (t, s, st) = (txns.clone(), snapshots.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                if let Some(snap) = audit(&t).await {
                    s.lock().unwrap().push(snap);
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
        Bank {
            history,
            snapshots,
            commits,
            stop,
            tasks,
            setup_ts,
        }
    }

    /// Waits (bounded) until `n` more transfers committed and the auditor read one more
    /// snapshot: the pace of a nemesis.
    pub async fn progress(&self, n: u64) {
        let target = self.commits.load(Ordering::Relaxed) + n;
        let audits = || {
            let s = self.snapshots.lock().unwrap();
            s.iter().filter(|r| r.after_commit_of.is_none()).count()
        };
        let audited = audits() + 1;
        crate::common::wait_until(
            &format!("{target} commits and {audited} snapshots"),
            Duration::from_secs(90),
            || async { self.commits.load(Ordering::Relaxed) >= target && audits() >= audited },
        )
        .await
    }

    /// Stops every client, reads the final state and checks the whole history; panics
    /// with the violations found (naming `seed`). Returns how many transfers committed.
    pub async fn finish(self, txns: &TxnClient, seed: u64) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a bank task");
        }
        let last = audit(txns).await.expect("the final read");
        let history = self.history.lock().unwrap().clone();
        let snapshots = self.snapshots.lock().unwrap().clone();
        let count = |o: fn(&Outcome) -> bool| history.iter().filter(|t| o(&t.outcome)).count();
        let committed = count(|o| matches!(o, Outcome::Committed(_)));
        eprintln!(
            "bank: {} attempts, {committed} committed, {} aborted, {} undetermined, {} snapshots",
            history.len(),
            count(|o| *o == Outcome::Aborted),
            count(|o| *o == Outcome::Unknown),
            snapshots.len()
        );
        let errors = si::check(&history, &snapshots, self.setup_ts, &last.reads);
        assert!(
            errors.is_empty(),
            "{} violations of snapshot isolation in {} transactions (seed {seed}), first: {:#?}",
            errors.len(),
            history.len(),
            &errors[..errors.len().min(10)]
        );
        committed
    }
}
