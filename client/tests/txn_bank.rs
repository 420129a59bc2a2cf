//! A bank of accounts over two regions, against the fake transactional store. Goal: under
//! concurrent transfers by optimistic and pessimistic transactions run with
//! `TxnClient::run` — which meet each other's locks and write conflicts and retry — no
//! money is created or lost: one snapshot of every account sums to the opening total,
//! and no lock is left behind. Method: tasks transfer between random accounts; then one
//! snapshot scan over both regions.

use crate::support::FakeCluster;
use rand::Rng;
use regatta_client::{Config, Error, Transaction, TxnClient, TxnMode, TxnOptions};
use std::time::Duration;

const ACCOUNTS: usize = 6;
const OPENING: i64 = 100;

fn account(i: usize) -> Vec<u8> {
    format!("acct/{i}").into_bytes()
}

fn balance(v: Option<Vec<u8>>) -> Result<i64, Error> {
    let v = v.ok_or_else(|| Error::InvalidArgument("an account is missing".into()))?;
    String::from_utf8_lossy(&v)
        .parse()
        .map_err(|e| Error::InvalidArgument(format!("not a balance: {e}")))
}

/// Moves `amount` from `from` to `to`. Pessimistic transactions lock in key order, as an
/// application does to avoid deadlocks (the fake store has no deadlock detector).
async fn transfer(t: &mut Transaction, from: usize, to: usize, amount: i64) -> Result<(), Error> {
    let (a, b) = (account(from.min(to)), account(from.max(to)));
    let first = balance(t.get_for_update(&a).await?)?;
    let second = balance(t.get_for_update(&b).await?)?;
    let (have, other) = if from < to {
        (first, second)
    } else {
        (second, first)
    };
    t.put(&account(from), (have - amount).to_string().as_bytes());
    t.put(&account(to), (other + amount).to_string().as_bytes());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_across_two_regions_never_change_the_total() {
    let fake = FakeCluster::start(&[b"acct/3"]).await;
    let cfg = Config {
        op_timeout: Duration::from_secs(10),
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(20),
        ..Config::default()
    };
    let txns = TxnClient::connect_with(&[&fake.addr], cfg)
        .await
        .expect("connect");
    let mut open = txns.begin_optimistic().await.expect("begin");
    for i in 0..ACCOUNTS {
        open.put(&account(i), OPENING.to_string().as_bytes());
    }
    open.commit().await.expect("open the accounts");

    let mut tasks = Vec::new();
    for c in 0..4 {
        let txns = txns.clone();
        let opts = TxnOptions {
            mode: if c % 2 == 0 {
                TxnMode::Optimistic
            } else {
                TxnMode::Pessimistic
            },
            // Short TTLs: a transaction stuck behind another's lock waits less.
            lock_ttl_ms: 300,
            heartbeat_interval: Duration::from_millis(50),
            ..TxnOptions::default()
        };
        tasks.push(tokio::spawn(async move {
            for _ in 0..8 {
                let (from, to, amount) = {
                    let mut rng = rand::thread_rng();
                    let from = rng.gen_range(0..ACCOUNTS);
                    let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
                    (from, to, rng.gen_range(1..=10))
                };
                txns.run(opts.clone(), |t| {
                    Box::pin(async move { transfer(t, from, to, amount).await })
                })
                .await?;
            }
            Ok::<(), Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("every transfer commits");
    }

    let snap = txns
        .snapshot(txns.current_timestamp().await.expect("ts"))
        .await
        .expect("snapshot");
    let all = snap.scan(b"acct/", b"acct0", 0).await.expect("scan");
    assert_eq!(all.len(), ACCOUNTS);
    let total: i64 = all
        .into_iter()
        .map(|(_, v)| balance(Some(v)).expect("a balance"))
        .sum();
    assert_eq!(total, OPENING * ACCOUNTS as i64);
}
