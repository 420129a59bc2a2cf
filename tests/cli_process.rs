//! The `regatta` command line as a process: a command whose PD does not answer says it
//! is waiting, then gives up with a clear error after `--timeout-ms`; a playground asked
//! to stop a second time during its stop exits at once.

use crate::common::process::{free_port, Proc};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Goal: a command whose PD is down does not sit silent for its whole timeout; it says on
/// stderr that it waits for PD, then fails (exit 2) naming PD and the cause. Method: `get`
/// against a port nothing listens on, with `--timeout-ms 2500` (the waiting note comes
/// after one second).
#[test]
fn a_command_says_it_waits_for_pd_then_gives_up() {
    let pd = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_regatta"))
        .args(["get", "k", "--pd", &pd, "--timeout-ms", "2500"])
        .env("REGATTA_LOG", "error")
        .output()
        .expect("regatta ran");
    // Against the default of 20 s: the flag was heeded (a wide margin, not a timing).
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "gave up only after {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains(&format!("waiting for PD at {pd}")),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains(&format!("connecting to PD at {pd}")) && stderr.contains("refused"),
        "stderr: {stderr}"
    );
}

/// Goal: a zero timeout is refused before anything is tried. Method: `--timeout-ms 0`.
#[test]
fn a_zero_timeout_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_regatta"))
        .args(["get", "k", "--timeout-ms", "0"])
        .output()
        .expect("regatta ran");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--timeout-ms"));
}

/// Goal: a second stop signal during a clean stop ends the process at once, with the
/// status of the signal (130 for SIGINT, 143 for SIGTERM), and still removes a
/// playground's temporary data directory (or says it is left). Method: a three-store
/// playground on a temporary directory; SIGINT and SIGTERM sent back to back. They are
/// two different signals, so the kernel cannot merge them, and the clean stop of three
/// stores (about a second) outlasts the gap between two `kill` calls by far.
#[test]
fn a_second_stop_signal_during_the_stop_exits_at_once() {
    let pd = format!("127.0.0.1:{}", free_port());
    let mut proc = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_regatta"))
            .args(["playground", "--store-port", "0", "--pd-addr", &pd])
            .env("REGATTA_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stdout = proc.0.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = String::new();
        let _ = BufReader::new(stdout).read_line(&mut ready);
        let _ = tx.send(ready);
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a ready line within 60 s");
    assert!(ready.starts_with("ready"), "{ready}");
    let data_dir = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("data_dir="))
        .expect("the ready line names the data directory")
        .to_string();
    assert!(std::path::Path::new(&data_dir).exists());
    let pid = proc.0.id() as libc::pid_t;
    // SAFETY: the pid is our running child's.
    unsafe {
        libc::kill(pid, libc::SIGINT);
        libc::kill(pid, libc::SIGTERM);
    }
    // Bounded: a playground that hung would fail the test, not the suite.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = proc.0.try_wait().expect("waiting for the playground") {
            break status;
        }
        assert!(Instant::now() < deadline, "the playground did not exit");
        std::thread::sleep(Duration::from_millis(20)); // polling an exit
    };
    let mut stderr = String::new();
    proc.0
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        matches!(status.code(), Some(130) | Some(143)),
        "{status:?}; stderr: {stderr}"
    );
    assert!(stderr.contains("asked to stop again"), "stderr: {stderr}");
    assert!(
        !std::path::Path::new(&data_dir).exists() || stderr.contains("is left behind"),
        "the temporary data directory {data_dir} is neither removed nor reported"
    );
}
