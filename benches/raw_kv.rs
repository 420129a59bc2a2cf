//! Criterion bench of raw KV on a real 3-store playground (TCP on loopback, RocksDB in a
//! temp dir): put and get latency with one client, and 64 concurrent puts per iteration,
//! on one region and on a second playground whose 64 regions the puts spread over (what
//! many regions cost per write). The same workload at full scale: `regatta bench kv`.

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use regatta::bench::{background_playground, bench_key};
use regatta_client::Client;
use tokio::runtime::Runtime;

const KEYS: usize = 10_000;
const CONCURRENCY: usize = 64;

fn raw_kv(c: &mut Criterion) {
    let one_region = background_playground(1);
    let pd = one_region.pd_addr();
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
    concurrent_puts(&mut group, &rt, &client, "put/concurrent", &mut i);

    // The same puts over 64 regions: the keys' 2-byte prefixes cut them evenly over the
    // playground's static regions, so 64 puts at stride 131 land in ~54 of them. The
    // first cluster stops first, so that it takes none of the CPU.
    drop(client);
    drop(one_region);
    let playground = background_playground(64);
    let pd = playground.pd_addr();
    let client = rt
        .block_on(Client::connect(&[pd]))
        .expect("client connects");
    rt.block_on(regatta::bench::preload(&client, KEYS, 128, 64))
        .expect("preload");
    concurrent_puts(
        &mut group,
        &rt,
        &client,
        "put/concurrent-64-regions",
        &mut i,
    );
    group.finish();
}

/// [`CONCURRENCY`] puts at once per iteration, spread over the key space.
fn concurrent_puts(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    client: &Client,
    name: &str,
    i: &mut usize,
) {
    let value = vec![b'x'; 128];
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    group.bench_with_input(
        BenchmarkId::new(name, CONCURRENCY),
        &CONCURRENCY,
        |b, &n| {
            b.to_async(rt).iter(|| {
                let client = client.clone();
                let value = value.clone();
                *i = (*i + 7919) % KEYS;
                let base = *i;
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
}

criterion_group!(benches, raw_kv);
criterion_main!(benches);
