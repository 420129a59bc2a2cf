//! The `regatta` command line when PD does not answer: it says it is waiting, then gives
//! up with a clear error after `--timeout-ms`.

use crate::common::process::free_port;
use std::process::Command;

/// Goal: a command whose PD is down does not sit silent for its whole timeout; it says on
/// stderr that it waits for PD, then fails (exit 2) naming PD and the cause. Method: `get`
/// against a port nothing listens on, with `--timeout-ms 2500` (the waiting note comes
/// after one second).
#[test]
fn a_command_says_it_waits_for_pd_then_gives_up() {
    let pd = format!("127.0.0.1:{}", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_regatta"))
        .args(["get", "k", "--pd", &pd, "--timeout-ms", "2500"])
        .env("REGATTA_LOG", "error")
        .output()
        .expect("regatta ran");
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
