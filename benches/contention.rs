//! Criterion bench of hot-key contention on a real 3-store playground: one iteration is 32
//! clients each committing 2 read-modify-write increments, all on one key (group "hot
//! key") or spread over 10 keys (group "10 keys"), per strategy of `regatta::contention`
//! (each checks that no update was lost). Throughput is in commits. The full-scale
//! version with abort rates, latency, fairness and a client sweep:
//! `regatta bench contention`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use regatta::bench::{background_playground, clients_runtime};
use regatta::contention::{self, ContentionConfig, Strategy};
use regatta_client::{Client, TxnClient};
use std::time::Duration;

const CLIENTS: usize = 32;
const OPS_PER_CLIENT: usize = 2;

fn contention(c: &mut Criterion) {
    let playground = background_playground(1);
    let pd = playground.pd_addr();
    let rt = clients_runtime().expect("runtime");
    let (client, txns) = rt.block_on(async {
        (
            Client::connect(&[pd.as_str()])
                .await
                .expect("client connects"),
            TxnClient::connect(&[pd.as_str()])
                .await
                .expect("client connects"),
        )
    });
    let mut run_id = rt.block_on(txns.current_timestamp()).expect("a timestamp");
    for (group_name, keys) in [("hot key", 1), ("10 keys", 10)] {
        let mut group = c.benchmark_group(group_name);
        group.sample_size(10);
        group.throughput(Throughput::Elements((CLIENTS * OPS_PER_CLIENT) as u64));
        for strategy in Strategy::ALL {
            let cfg = ContentionConfig {
                clients: CLIENTS,
                ops_per_client: OPS_PER_CLIENT,
                key: "bench/contention".into(),
                keys,
                op_timeout: Duration::from_secs(60),
            };
            group.bench_function(strategy.name(), |b| {
                b.to_async(&rt).iter(|| {
                    run_id += 1;
                    let (client, txns, cfg, id) =
                        (client.clone(), txns.clone(), cfg.clone(), run_id);
                    async move {
                        let r = contention::run(&client, &txns, strategy, &cfg, id)
                            .await
                            .expect("a contention run loses no update");
                        assert_eq!(r.errors, 0, "{}: increments failed", strategy.name());
                    }
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, contention);
criterion_main!(benches);
