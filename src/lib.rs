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
    StopSignals::new().next().await;
}

/// The signals that ask a command to stop (SIGINT, i.e. Ctrl-C, and SIGTERM), listened
/// to from [`StopSignals::new`] on: one that arrives while nobody awaits
/// [`StopSignals::next`] is kept for the next call, so a second Ctrl-C during a stop is
/// not lost. Create it inside the async runtime.
pub struct StopSignals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Default for StopSignals {
    fn default() -> Self {
        Self::new()
    }
}

impl StopSignals {
    /// Starts listening (a signal whose handler cannot be installed is never reported).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with its I/O driver enabled (as tokio's `signal` does).
    pub fn new() -> StopSignals {
        use tokio::signal::unix::{signal, SignalKind};
        StopSignals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Resolves at the next stop signal, with the exit status a process killed by it
    /// reports: 130 for SIGINT, 143 for SIGTERM.
    pub async fn next(&mut self) -> i32 {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            // A stream that cannot listen, or has ended, never reports again.
            let got = match s {
                Some(s) => s.recv().await.is_some(),
                None => false,
            };
            if !got {
                std::future::pending::<()>().await;
            }
        }
        tokio::select! {
            () = recv(&mut self.int) => 128 + libc::SIGINT,
            () = recv(&mut self.term) => 128 + libc::SIGTERM,
        }
    }
}

/// Runs `stop` (a command's clean stop, after the first of `signals`) to its end, unless
/// the process is asked to stop again meanwhile (a second Ctrl-C or SIGTERM): then it
/// says so on stderr, tries to remove `temp_dir` (a temporary data directory nothing will
/// reopen; the stores may still be writing there, so it says where it is if that fails)
/// and exits at once (without running exit-time destructors, which would wait for
/// RocksDB's background work), with 130 after SIGINT or 143 after SIGTERM. Nothing
/// durable is lost by that: every acknowledged write is in a synced log, which the next
/// start on the same data directory replays.
pub async fn stop_unless_asked_again(
    stop: impl std::future::Future<Output = ()>,
    temp_dir: Option<std::path::PathBuf>,
    signals: &mut StopSignals,
) {
    if let Stop::Forced(status) = until_asked_again(stop, signals.next()).await {
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
        use std::io::Write as _;
        let _ = std::io::stderr().flush();
        // SAFETY: `_exit` ends the process at once; nothing runs after it.
        unsafe { libc::_exit(status) };
    }
}

/// How a clean stop ended.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// It ran to its end.
    Clean,
    /// `again` came first, with this exit status.
    Forced(i32),
}

/// Runs `stop` until it ends or `again` resolves, whichever comes first.
async fn until_asked_again(
    stop: impl std::future::Future<Output = ()>,
    again: impl std::future::Future<Output = i32>,
) -> Stop {
    tokio::select! {
        biased;
        () = stop => Stop::Clean,
        status = again => Stop::Forced(status),
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
        let (never, never_asked) = (std::future::pending::<()>, std::future::pending::<i32>);
        assert_eq!(
            until_asked_again(async {}, never_asked()).await,
            Stop::Clean
        );
        assert_eq!(
            until_asked_again(never(), async { 143 }).await,
            Stop::Forced(143)
        );
        // Both ready at once: the stop ended, so nothing is forced.
        assert_eq!(
            until_asked_again(async {}, async { 130 }).await,
            Stop::Clean
        );
    }
}
