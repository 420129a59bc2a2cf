//! A bank on transactions: concurrent transfers between accounts with `TxnClient::run`
//! (retried on conflicts), then the total checked in one snapshot — always the same.
//!
//! Start a playground first (`cargo run --release -- playground`), then:
//! `cargo run --release -p regatta-client --example bank [PD_ADDR] [ACCOUNTS] [TRANSFERS] [CLIENTS]`
//! (defaults: 127.0.0.1:2379, 20 accounts, 400 transfers, 8 clients). Half the clients
//! run optimistic transactions, half pessimistic ones.

use rand::Rng;
use regatta_client::{Error, Transaction, TxnClient, TxnOptions};

const INITIAL_BALANCE: i64 = 1_000;

fn account(i: usize) -> Vec<u8> {
    format!("bank/acct/{i:05}").into_bytes()
}

fn balance(value: Option<Vec<u8>>) -> Result<i64, Error> {
    let Some(v) = value else { return Ok(0) };
    String::from_utf8_lossy(&v)
        .parse()
        .map_err(|e| Error::InvalidArgument(format!("a balance that is not a number: {e}")))
}

/// Moves `amount` from `from` to `to` if `from` has it; returns whether it moved.
async fn transfer(t: &mut Transaction, from: &[u8], to: &[u8], amount: i64) -> Result<bool, Error> {
    let have = balance(t.get_for_update(from).await?)?;
    if have < amount {
        return Ok(false);
    }
    let other = balance(t.get_for_update(to).await?)?;
    t.put(from, (have - amount).to_string().as_bytes());
    t.put(to, (other + amount).to_string().as_bytes());
    Ok(true)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let pd = args.next().unwrap_or_else(|| "127.0.0.1:2379".into());
    let accounts: usize = args.next().map_or(Ok(20), |a| a.parse())?;
    let transfers: usize = args.next().map_or(Ok(400), |a| a.parse())?;
    let clients: usize = args.next().map_or(Ok(8), |a| a.parse())?.max(1);
    if accounts < 2 {
        return Err("need at least two accounts".into());
    }
    let txns = TxnClient::connect(&[pd]).await?;

    // Open every account in one transaction (it spans regions: 2PC).
    let mut open = txns.begin_optimistic().await?;
    for i in 0..accounts {
        open.put(&account(i), INITIAL_BALANCE.to_string().as_bytes());
    }
    let opened_at = open.commit().await?;
    println!("opened {accounts} accounts with {INITIAL_BALANCE} each at ts {opened_at}");

    let mut tasks = Vec::new();
    for c in 0..clients {
        let txns = txns.clone();
        let opts = if c % 2 == 0 {
            TxnOptions::optimistic()
        } else {
            TxnOptions::pessimistic()
        };
        let share = transfers / clients + usize::from(c < transfers % clients);
        tasks.push(tokio::spawn(async move {
            let mut moved = 0usize;
            for _ in 0..share {
                let (from, to, amount) = {
                    let mut rng = rand::thread_rng();
                    let from = rng.gen_range(0..accounts);
                    let to = (from + rng.gen_range(1..accounts)) % accounts;
                    (account(from), account(to), rng.gen_range(1..=100))
                };
                let done = txns
                    .run(opts.clone(), |t| {
                        let (from, to) = (from.clone(), to.clone());
                        Box::pin(async move { transfer(t, &from, &to, amount).await })
                    })
                    .await?;
                moved += usize::from(done);
            }
            Ok::<usize, Error>(moved)
        }));
    }
    let mut moved = 0;
    for t in tasks {
        moved += t.await??;
    }
    println!("{moved} of {transfers} transfers moved money (the rest lacked funds)");

    // Every balance in one snapshot: the total never changes.
    let snap = txns.snapshot(txns.current_timestamp().await?).await?;
    let all = snap.scan(b"bank/acct/", b"bank/acct0", 0).await?;
    let mut total = 0;
    for (_, v) in &all {
        total += balance(Some(v.clone()))?;
    }
    let expected = INITIAL_BALANCE * accounts as i64;
    println!(
        "{} accounts, total {total} at ts {} (expected {expected})",
        all.len(),
        snap.ts()
    );
    if total != expected || all.len() != accounts {
        return Err(format!("the bank lost money: {total} != {expected}").into());
    }
    Ok(())
}
