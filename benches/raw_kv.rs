//! Criterion bench of raw KV on a real 3-store playground (TCP on loopback, RocksDB in a
//! temp dir): put and get latency with one client, and 64 concurrent puts per iteration.
//! The same workload at full scale: `regatta bench kv`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use regatta::bench::{background_playground, bench_key};
use regatta_client::Client;

const KEYS: usize = 10_000;

fn raw_kv(c: &mut Criterion) {
    let pd = background_playground(1);
    let rt = regatta::bench::clients_runtime().expect("runtime");
    let client = rt
        .block_on(Client::connect(&[pd]))
        .expect("client connects");
    rt.block_on(regatta::bench::preload(&client, KEYS, 128, 64))
        .expect("preload");
    let value = vec![b'x'; 128];
    let mut group = c.benchmark_group("raw_kv");
    group.sample_size(30);

    let mut i = 0usize;
    group.throughput(Throughput::Elements(1));
    group.bench_function("put/1-client", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 7919) % KEYS;
            let (client, key, value) = (client.clone(), bench_key(i, KEYS), value.clone());
            async move { client.put(&key, &value).await.expect("put") }
        })
    });
    group.bench_function("get/1-client", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 7919) % KEYS;
            let (client, key) = (client.clone(), bench_key(i, KEYS));
            async move { client.get(&key).await.expect("get") }
        })
    });
    let concurrency = 64;
    group.throughput(Throughput::Elements(concurrency as u64));
    group.bench_with_input(
        BenchmarkId::new("put/concurrent", concurrency),
        &concurrency,
        |b, &n| {
            b.to_async(&rt).iter(|| {
                let client = client.clone();
                let value = value.clone();
                i = (i + 7919) % KEYS;
                let base = i;
                async move {
                    let mut tasks = Vec::with_capacity(n);
                    for j in 0..n {
                        let (client, value) = (client.clone(), value.clone());
                        let key = bench_key((base + j * 131) % KEYS, KEYS);
                        tasks.push(tokio::spawn(async move {
                            client.put(&key, &value).await.expect("put")
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

criterion_group!(benches, raw_kv);
criterion_main!(benches);
