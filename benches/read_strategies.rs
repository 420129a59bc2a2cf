//! Criterion bench of the read strategies on a real 3-store playground: each iteration is
//! a burst of 32 concurrent operations, 80% gets with the strategy under test and 20%
//! puts. The same workload at full scale, with read and write latencies reported apart:
//! `regatta bench reads`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use regatta::bench::{background_playground, bench_key, ReadStrategy};
use regatta_client::Client;

const KEYS: usize = 10_000;
const BURST: usize = 32;

fn read_strategies(c: &mut Criterion) {
    let pd = background_playground(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // One client per concurrent operation: read-your-writes tracks each client's writes.
    let clients: Vec<Client> = (0..BURST)
        .map(|_| {
            rt.block_on(Client::connect(&[pd.as_str()]))
                .expect("client connects")
        })
        .collect();
    rt.block_on(regatta::bench::preload(&clients[0], KEYS, 128, 64))
        .expect("preload");
    let value = vec![b'x'; 128];
    let mut group = c.benchmark_group("read_strategies_80r_20w");
    group.sample_size(20);
    group.throughput(Throughput::Elements(BURST as u64));
    let mut i = 0usize;
    for strategy in ReadStrategy::ALL {
        let consistency = strategy.consistency();
        group.bench_function(strategy.name(), |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 7919) % KEYS;
                let base = i;
                let (clients, value) = (clients.clone(), value.clone());
                async move {
                    let mut tasks = Vec::with_capacity(BURST);
                    for (j, client) in clients.into_iter().enumerate() {
                        let value = value.clone();
                        let key = bench_key((base + j * 131) % KEYS, KEYS);
                        tasks.push(tokio::spawn(async move {
                            if j % 5 == 0 {
                                client.put(&key, &value).await.map(|_| ())
                            } else {
                                client.get_with(&key, consistency).await.map(|_| ())
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.expect("task").expect("operation");
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, read_strategies);
criterion_main!(benches);
