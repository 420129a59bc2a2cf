//! Criterion bench of the read strategies on a real 3-store playground: each iteration is
//! one closed-loop client's 80:20 cycle, four gets with the strategy under test and one
//! put, so the strategies' read latencies add up where the write's is shared. The same
//! workload at full scale (64 clients, read and write latencies reported apart):
//! `regatta bench reads`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use regatta::bench::{background_playground, bench_key, ReadStrategy};
use regatta_client::Client;

const KEYS: usize = 10_000;

fn read_strategies(c: &mut Criterion) {
    let playground = background_playground(1);
    let pd = playground.pd_addr();
    let rt = regatta::bench::clients_runtime().expect("runtime");
    let client = rt
        .block_on(Client::connect(&[pd.as_str()]))
        .expect("client connects");
    rt.block_on(regatta::bench::preload(&client, KEYS, 128, 64))
        .expect("preload");
    let value = vec![b'x'; 128];
    let mut group = c.benchmark_group("read_strategies_80r_20w");
    group.sample_size(30);
    group.throughput(Throughput::Elements(5));
    let mut i = 0usize;
    for strategy in ReadStrategy::ALL {
        let consistency = strategy.consistency();
        group.bench_function(strategy.name(), |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 7919) % KEYS;
                let (client, value, base) = (client.clone(), value.clone(), i);
                async move {
                    for j in 0..4 {
                        let key = bench_key((base + j * 131) % KEYS, KEYS);
                        client.get_with(&key, consistency).await.expect("get");
                    }
                    client
                        .put(&bench_key(base, KEYS), &value)
                        .await
                        .expect("put");
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, read_strategies);
criterion_main!(benches);
