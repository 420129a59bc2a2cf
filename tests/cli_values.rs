//! The `regatta` command line against a playground process: values too large for an
//! argument come from stdin (`-`) or a file and come back whole (`get --raw`), and a
//! reversed scan range is refused.

use crate::common::process::{free_port, spawn_ready, Proc};
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Starts a one-store playground and waits (bounded) for its `ready` line.
fn playground(pd: &str) -> Proc {
    spawn_ready(
        &[
            "playground",
            "--stores",
            "1",
            "--store-port",
            "0",
            "--pd-addr",
            pd,
        ],
        "error",
    )
}

/// Runs `regatta ARGS --pd PD` with `stdin` on its standard input.
fn regatta(pd: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_regatta"))
        .args(args)
        .args(["--pd", pd])
        .env("REGATTA_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("regatta starts");
    let mut input = child.stdin.take().expect("piped stdin");
    let bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes); // the command may not read it all
    });
    let out = child.wait_with_output().expect("regatta ran");
    let _ = writer.join();
    out
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Goal: values past the 128 KiB an argument can hold go in through stdin or a file, for
/// `put` and both sides of `cas`, and come back byte for byte. Method: a 1 MiB value by
/// `put KEY -`, read back whole (with a newline); a short binary value ending in a
/// newline by `--value-file`, read back exactly with `get --raw`; then a CAS whose
/// expected value comes from a file and new value from stdin.
#[test]
fn put_and_cas_read_large_values_from_stdin_and_files() {
    let pd = format!("127.0.0.1:{}", free_port());
    let _pg = playground(&pd);
    let big: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    ok(&regatta(&pd, &["put", "big", "-"], &big));
    let got = regatta(&pd, &["get", "big"], b"");
    ok(&got);
    assert_eq!(
        got.stdout.len(),
        big.len() + 1,
        "the whole value and a newline"
    );
    assert!(got.stdout.starts_with(&big));
    // Bytes that are no UTF-8 and end in a newline, in from a file, out with `--raw`.
    let dir = tempfile::tempdir().unwrap();
    let blob: Vec<u8> = vec![0xff, 0x00, b'\n', 0xfe, b'x', b'\n'];
    let blob_file = dir.path().join("blob.bin");
    std::fs::write(&blob_file, &blob).unwrap();
    let blob_path = blob_file.display().to_string();
    ok(&regatta(
        &pd,
        &["put", "blob", "--value-file", &blob_path],
        b"",
    ));
    let raw = regatta(&pd, &["get", "blob", "--raw"], b"");
    ok(&raw);
    assert_eq!(raw.stdout.len(), blob.len(), "--raw adds no newline");
    assert_eq!(raw.stdout, blob, "--raw gives back exactly the bytes put");
    let plain = regatta(&pd, &["get", "blob"], b"");
    ok(&plain);
    assert_eq!(
        plain.stdout,
        [&blob[..], b"\n"].concat(),
        "without it, one newline"
    );

    let file = dir.path().join("expected");
    std::fs::write(&file, &big).unwrap();
    let newer = vec![b'z'; 300 << 10];
    let path = file.display().to_string();
    ok(&regatta(
        &pd,
        &["cas", "big", "--expected-file", &path, "-"],
        &newer,
    ));
    let got = regatta(&pd, &["get", "big"], b"");
    ok(&got);
    assert_eq!(&got.stdout[..got.stdout.len() - 1], &newer[..]);

    ok(&regatta(&pd, &["put", "small", "--value-file", &path], b""));
    let got = regatta(&pd, &["get", "small"], b"");
    assert_eq!(got.stdout.len(), big.len() + 1);
}

/// Goal: `scan z a` is an error, not an empty success. Method: write a key inside neither
/// range order can miss, then scan with START after END.
#[test]
fn a_reversed_scan_range_is_refused() {
    let pd = format!("127.0.0.1:{}", free_port());
    let _pg = playground(&pd);
    ok(&regatta(&pd, &["put", "m", "1"], b""));
    let out = regatta(&pd, &["scan", "z", "a"], b"");
    assert_eq!(out.status.code(), Some(2), "a reversed range fails");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reversed range"), "{err}");
    let out = regatta(&pd, &["scan", "a", "z"], b"");
    ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "m\t1\n");
}
