//! The task that runs GC's resolve-locks phase beside PD (TiKV leaves it to TiDB's GC
//! worker; here it runs with PD, the one place that owns the safe point): every
//! `interval` it takes a fresh TSO timestamp, computes the candidate safe point one
//! `gc_life_time` behind it, and resolves every lock of a transaction that started at or
//! below the candidate ([`TxnClient::resolve_locks_below`]). So a client that died
//! holding locks holds PD's safe point back for at most its locks' TTL plus one interval
//! (plus the life time every lock waits anyway), instead of until some reader meets them.

use regatta_client::TxnClient;
use regatta_proto::ts::LOGICAL_BITS;
use slog::{info, warn, Logger};
use std::time::Duration;

/// The running resolver; stops when dropped.
pub struct LockResolver {
    task: tokio::task::JoinHandle<()>,
}

impl LockResolver {
    /// Starts resolving, against the cluster whose PD listens at `pd_addr`, every
    /// `interval`, the locks older than `gc_life_time`. Must run inside a tokio runtime.
    pub fn start(
        pd_addr: String,
        gc_life_time: Duration,
        interval: Duration,
        logger: Logger,
    ) -> LockResolver {
        let task = tokio::spawn(async move {
            let txns = loop {
                match TxnClient::connect(&[pd_addr.as_str()]).await {
                    Ok(t) => break t,
                    Err(e) => {
                        warn!(logger, "GC lock resolver cannot reach PD"; "error" => %e);
                        tokio::time::sleep(interval).await;
                    }
                }
            };
            let life = u64::try_from(gc_life_time.as_millis()).unwrap_or(u64::MAX);
            loop {
                tokio::time::sleep(interval).await;
                let now = match txns.current_timestamp().await {
                    Ok(ts) => ts,
                    Err(e) => {
                        warn!(logger, "GC lock resolver: no timestamp"; "error" => %e);
                        continue;
                    }
                };
                let candidate = now.saturating_sub(life.saturating_mul(1 << LOGICAL_BITS));
                match txns.resolve_locks_below(candidate).await {
                    Ok(r) if r.found > 0 => info!(logger, "GC resolved old locks";
                        "below" => candidate, "found" => r.found, "alive" => r.alive),
                    Ok(_) => {}
                    Err(e) => warn!(logger, "GC lock resolution failed"; "error" => %e),
                }
            }
        });
        LockResolver { task }
    }
}

impl Drop for LockResolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
