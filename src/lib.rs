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

/// Every allocation of the `regatta` binary, its benches and its tests goes through
/// jemalloc, as in TiKV; on Linux RocksDB's C++ too (the
/// `unprefixed_malloc_on_supported_platforms` feature makes jemalloc the process's
/// `malloc`). Anything that links this library gets it. A write allocates and frees
/// many small buffers on several threads (protobuf messages, write batches, memtable
/// keys); glibc's malloc took ~12% of the CPU of puts over 64 regions, jemalloc ~3.5%
/// (`docs/BENCHMARKS.md`, "jemalloc"). The `client` crate sets no allocator: an
/// application that links it keeps its own.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Default PD address of the playground and of the client commands.
pub const DEFAULT_PD: &str = "127.0.0.1:2379";

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C / SIGINT), so a
/// command can stop its stores and remove its temporary data before it exits.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// `dir` if given, else a fresh temporary directory named `prefix…`, removed when the
/// returned guard is dropped (keep it until everything using the directory has stopped).
pub fn data_dir_or_temp(
    dir: Option<std::path::PathBuf>,
    prefix: &str,
) -> anyhow::Result<(std::path::PathBuf, Option<tempfile::TempDir>)> {
    use anyhow::Context as _;
    Ok(match dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .context("creating a temporary data directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    })
}
