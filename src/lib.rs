//! The `regatta` package: the pieces the `regatta` binary, the benches and the integration
//! tests share — the embedded [`playground::Playground`] cluster, the store's TCP PD client
//! ([`pd_seam::TcpPd`]) and logging.
//!
//! Layering: this is the top; it depends on every crate of the workspace and nothing
//! depends on it.
#![deny(missing_docs)]

pub mod bench;
pub mod contention;
pub mod gc_resolver;
pub mod logging;
pub mod maelstrom;
pub mod pd_seam;
pub mod playground;

/// Default PD address of the playground and of the client commands.
pub const DEFAULT_PD: &str = "127.0.0.1:2379";
