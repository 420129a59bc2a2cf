//! Criterion bench of transactions on a real 3-store playground with 4 regions (TCP on
//! loopback, RocksDB in a temp dir): one transfer (read two accounts, write both) with
//! both accounts in one region (1PC) or in two (2PC), optimistic and pessimistic, with one
//! client; and 64 concurrent 2PC transfers per iteration. The same workload at full scale,
//! with abort rates and raft entries per commit: `regatta bench txn`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::SeedableRng;
use regatta::bench::{background_playground, bench_key, transfer, transfer_pair};
use regatta_client::{TxnClient, TxnOptions};

const ACCOUNTS: usize = 10_000;
const REGIONS: usize = 4;

fn txn(c: &mut Criterion) {
    let playground = background_playground(REGIONS);
    let pd = playground.pd_addr();
    let rt = regatta::bench::clients_runtime().expect("runtime");
    let txns = rt
        .block_on(TxnClient::connect(&[pd]))
        .expect("client connects");
    let value = vec![b'x'; 128];
    rt.block_on(async {
        for chunk in (0..ACCOUNTS).collect::<Vec<_>>().chunks(500) {
            let mut t = txns.begin_optimistic().await.expect("begin");
            for &i in chunk {
                t.put(&bench_key(i, ACCOUNTS), &value);
            }
            t.commit().await.expect("accounts open");
        }
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut group = c.benchmark_group("txn");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    for (name, opts, cross) in [
        ("transfer/1pc-optimistic", TxnOptions::optimistic(), false),
        ("transfer/2pc-optimistic", TxnOptions::optimistic(), true),
        ("transfer/1pc-pessimistic", TxnOptions::pessimistic(), false),
        ("transfer/2pc-pessimistic", TxnOptions::pessimistic(), true),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let (x, y) = transfer_pair(ACCOUNTS, REGIONS, cross, &mut rng);
                let (txns, opts, value) = (txns.clone(), opts.clone(), value.clone());
                async move {
                    let (a, b) = (bench_key(x, ACCOUNTS), bench_key(y, ACCOUNTS));
                    // One client, so no conflicts: every transfer commits.
                    transfer(&txns, &opts, &a, &b, &value)
                        .await
                        .expect("an uncontended transfer commits")
                }
            })
        });
    }
    let concurrency = 64;
    group.throughput(Throughput::Elements(concurrency as u64));
    group.bench_with_input(
        BenchmarkId::new("transfer/2pc-concurrent", concurrency),
        &concurrency,
        |b, &n| {
            b.to_async(&rt).iter(|| {
                let pairs: Vec<(usize, usize)> = (0..n)
                    .map(|_| transfer_pair(ACCOUNTS, REGIONS, true, &mut rng))
                    .collect();
                let (txns, value) = (txns.clone(), value.clone());
                async move {
                    let mut tasks = Vec::with_capacity(n);
                    for (x, y) in pairs {
                        let (txns, value) = (txns.clone(), value.clone());
                        tasks.push(tokio::spawn(async move {
                            let (a, b) = (bench_key(x, ACCOUNTS), bench_key(y, ACCOUNTS));
                            // Two transfers of one iteration may share an account: a
                            // conflict is retried, as an application would.
                            txns.run(TxnOptions::optimistic(), |t| {
                                let (a, b, value) = (a.clone(), b.clone(), value.clone());
                                Box::pin(async move {
                                    t.get(&a).await?;
                                    t.get(&b).await?;
                                    t.put(&a, &value);
                                    t.put(&b, &value);
                                    Ok(())
                                })
                            })
                            .await
                            .expect("a transfer commits")
                        }));
                    }
                    for t in tasks {
                        t.await.expect("task");
                    }
                }
            })
        },
    );
    group.finish();
}

criterion_group!(benches, txn);
criterion_main!(benches);
