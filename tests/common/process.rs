//! Real `regatta` processes for process-level tests (crashes by SIGKILL, memory bounds,
//! the CLI): a free loopback port, a child stopped when dropped (SIGTERM, then SIGKILL) or
//! crashed on purpose ([`Proc::sigkill`]), a start that waits for the `ready` line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process stopped when dropped, so a failing test leaves nothing behind: SIGTERM
/// first (a playground then removes its temporary data), SIGKILL if it is still running
/// after a few seconds. Holds a shared claim on the machine while it runs
/// ([`super::machine`]).
pub struct Proc(pub Child, Option<super::machine::Shared>);

impl Drop for Proc {
    fn drop(&mut self) {
        // Only a child not yet reaped still owns its pid.
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: the pid is our unreaped child's.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20)); // polling an exit
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        // The claim ends once the process is gone.
        drop(self.1.take());
    }
}

impl Proc {
    /// Kills the process at once (SIGKILL, as a crash: no orderly stop) and reaps it.
    pub fn sigkill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Starts `command` under a shared claim on the machine.
    pub fn spawn(command: &mut Command) -> Proc {
        let machine = super::machine::shared();
        Proc(command.spawn().expect("regatta runs"), Some(machine))
    }

    /// The process's resident memory, in bytes (`VmRSS` of /proc/<pid>/status).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .expect("the process is alive");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }
}

/// Starts `regatta ARGS` with logs at `log_level` (discarded) and waits (bounded) for its
/// `ready` line on stdout.
pub fn spawn_ready<S: AsRef<str>>(args: &[S], log_level: &str) -> Proc {
    let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
    let mut proc = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_regatta"))
            .args(&args)
            .env("REGATTA_LOG", log_level)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let stdout = proc.0.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("ready") {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("`regatta {}` printed no ready line", args.join(" ")));
    proc
}
