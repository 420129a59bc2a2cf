//! [`Config`]: the client's deadlines and retry policy.

use std::time::Duration;

/// How long the client waits and how it retries. `Config::default()` suits a cluster on
/// one LAN.
#[derive(Debug, Clone)]
pub struct Config {
    /// Deadline of one whole operation, retries included (default 20 s). When it passes,
    /// the operation fails with [`crate::Error::Timeout`] (or [`crate::Error::Connection`]
    /// when no request of it could be sent). It also bounds how long
    /// [`crate::Client::connect_with`] waits for PD to answer.
    pub op_timeout: Duration,
    /// Deadline of one request to one node (default 5 s).
    pub rpc_timeout: Duration,
    /// Deadline of one TCP connect (default 2 s).
    pub connect_timeout: Duration,
    /// First retry delay; it doubles per retry up to `backoff_max` (default 5 ms).
    pub backoff_base: Duration,
    /// Largest retry delay (default 500 ms).
    pub backoff_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            op_timeout: Duration::from_secs(20),
            rpc_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(500),
        }
    }
}

impl Config {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: &str| Err(crate::Error::InvalidArgument(m.to_string()));
        if self.op_timeout.is_zero() || self.rpc_timeout.is_zero() || self.connect_timeout.is_zero()
        {
            return bad("timeouts must be positive");
        }
        if self.backoff_base.is_zero() || self.backoff_max < self.backoff_base {
            return bad("backoff_base must be positive and at most backoff_max");
        }
        Ok(())
    }
}
