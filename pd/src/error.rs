//! PD's error type.

/// What can go wrong inside PD.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error("invalid PD configuration: {0}")]
    InvalidConfig(String),
    /// Reading or writing PD's state file failed.
    #[error("PD state file {path}: {source}")]
    Persist {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// PD's state file exists but cannot be decoded.
    #[error("PD state file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// Another PD holds this data directory (two oracles resuming from one persisted
    /// high water would hand out the same timestamps).
    #[error("PD data directory {path} is in use by another PD (its lock file is held); stop it first or use another --data-dir")]
    DataDirLocked {
        /// The lock file.
        path: String,
    },
    /// Binding the listen address failed.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The PD actor is gone (the system is shutting down).
    #[error("PD actor stopped")]
    Stopped,
}
