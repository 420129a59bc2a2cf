//! Registering a store with PD at start-up.

use regatta_proto::metapb;
use regatta_raftstore::{Error, PdClient, PdError};
use slog::{warn, Logger};
use std::time::{Duration, Instant};

/// Registers the store with PD, retrying until `timeout`: PD may start after the store,
/// but a store that cannot reach PD at all (a wrong address, PD down) fails with an error
/// that says so rather than waiting for ever.
pub(crate) async fn register(
    pd: &dyn PdClient,
    me: metapb::Store,
    timeout: Duration,
    logger: &Logger,
) -> Result<(), Error> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let operation = || format!("registering store {} ({})", me.get_id(), me.get_address());
        let last_error = match tokio::time::timeout(left, pd.put_store(me.clone())).await {
            Ok(Ok(())) => return Ok(()),
            // PD will refuse it again: say so now rather than at the deadline.
            Ok(Err(PdError::Refused(reason))) => {
                return Err(Error::PdRefused {
                    operation: operation(),
                    reason,
                })
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        let now = Instant::now();
        if now + PD_REGISTER_RETRY >= deadline {
            return Err(Error::PdUnavailable {
                operation: operation(),
                waited_ms: now.duration_since(started).as_millis() as u64,
                attempts,
                last_error,
            });
        }
        if attempts == 1 || attempts.is_multiple_of(25) {
            warn!(logger, "registering with PD failed; retrying";
                "error" => &last_error, "attempts" => attempts,
                "gives_up_in_ms" => deadline.duration_since(now).as_millis() as u64);
        }
        tokio::time::sleep(PD_REGISTER_RETRY).await;
    }
}

/// Pause between two attempts to register with PD.
const PD_REGISTER_RETRY: Duration = Duration::from_millis(200);
