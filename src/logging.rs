//! Structured logs (slog) to stderr; level from `REGATTA_LOG` (error, warn, info, debug),
//! default `warn` for raft-rs internals and `info` for ours.

use slog::{o, Drain, Level, Logger};

/// The logging threads of the loggers made so far, joined by [`flush`].
static GUARDS: std::sync::Mutex<Vec<slog_async::AsyncGuard>> = std::sync::Mutex::new(Vec::new());

/// Writes out what the loggers still hold and ends their threads: call once, just before
/// the process exits (threads that outlive `main` would otherwise lose the last lines).
/// Lines logged afterwards are dropped.
pub fn flush() {
    let guards = std::mem::take(&mut *GUARDS.lock().unwrap_or_else(|e| e.into_inner()));
    drop(guards);
}

/// The process logger (its lines go out on a background thread: see [`flush`]).
pub fn logger() -> Logger {
    let level = match std::env::var("REGATTA_LOG").as_deref() {
        Ok("error") => Level::Error,
        Ok("warn") => Level::Warning,
        Ok("debug") => Level::Debug,
        Ok("trace") => Level::Trace,
        _ => Level::Info,
    };
    let decorator = slog_term::TermDecorator::new().stderr().build();
    let drain = slog_term::CompactFormat::new(decorator).build().fuse();
    let (drain, guard) = slog_async::Async::new(drain)
        .chan_size(4096)
        .overflow_strategy(slog_async::OverflowStrategy::Drop)
        .build_with_guard();
    GUARDS.lock().unwrap_or_else(|e| e.into_inner()).push(guard);
    let drain = drain.fuse();
    let drain = drain
        .filter(move |r| {
            // raft-rs logs every election step at info; keep it for warnings unless asked.
            let raft_internal = r.module().starts_with("raft::");
            let min = if raft_internal && level == Level::Info {
                Level::Warning
            } else {
                level
            };
            r.level().is_at_least(min)
        })
        .fuse();
    Logger::root(drain, o!())
}
