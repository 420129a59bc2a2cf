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

/// Runs `stop` (a command's clean stop, after [`shutdown_signal`]) to its end, unless the
/// process is asked to stop again meanwhile (a second Ctrl-C or SIGTERM): then it says
/// so on stderr, tries to remove `temp_dir` (a temporary data directory nothing will
/// reopen; the stores may still be writing there, so it says where it is if that fails)
/// and exits at once with status 130. Nothing durable is lost by that: every
/// acknowledged write is in a synced log, which the next start on the same data
/// directory replays.
pub async fn stop_unless_asked_again(
    stop: impl std::future::Future<Output = ()>,
    temp_dir: Option<std::path::PathBuf>,
) {
    if until_asked_again(stop, shutdown_signal()).await == Stop::Forced {
        eprintln!("asked to stop again: exiting without a clean stop");
        if let Some(d) = temp_dir {
            let removed = (0..3).any(|_| std::fs::remove_dir_all(&d).is_ok() || !d.exists());
            if !removed {
                eprintln!(
                    "the temporary data directory {} is left behind",
                    d.display()
                );
            }
        }
        std::process::exit(130);
    }
}

/// How a clean stop ended.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// It ran to its end.
    Clean,
    /// `again` came first.
    Forced,
}

/// Runs `stop` until it ends or `again` resolves, whichever comes first.
async fn until_asked_again(
    stop: impl std::future::Future<Output = ()>,
    again: impl std::future::Future<Output = ()>,
) -> Stop {
    tokio::select! {
        biased;
        () = stop => Stop::Clean,
        () = again => Stop::Forced,
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

#[cfg(test)]
mod tests {
    use super::{until_asked_again, Stop};

    #[tokio::test]
    async fn a_stop_that_ends_is_clean_and_a_second_request_forces_one_that_does_not() {
        let never = std::future::pending::<()>;
        assert_eq!(until_asked_again(async {}, never()).await, Stop::Clean);
        assert_eq!(until_asked_again(never(), async {}).await, Stop::Forced);
        // A stop that ends while nobody asks again is clean, however long it took.
        let slow = tokio::time::sleep(std::time::Duration::from_millis(20));
        assert_eq!(until_asked_again(slow, never()).await, Stop::Clean);
    }
}
