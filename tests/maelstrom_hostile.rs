//! Hostile input to one `regatta maelstrom` node: lines that are not UTF-8 or not JSON,
//! replies before `init`, a second `init` that disagrees, fields of the wrong type, and
//! a stop by signal (no temporary data left behind).
//! Each scenario drives a real node process through its stdin and reads its stdout.

use crate::common::maelstrom::node_command;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// One node process; killed when dropped.
struct Node {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<Value>,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let command = node_command(dir.path());
        Node::spawn(command, dir)
    }

    /// Runs `command`; `dir` is removed when the node is dropped.
    fn spawn(mut command: std::process::Command, dir: tempfile::TempDir) -> Node {
        let mut child = command.spawn().expect("node starts");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        let (tx, replies) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(msg) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(msg);
                }
            }
        });
        Node {
            child,
            stdin,
            replies,
            _dir: dir,
        }
    }

    /// Writes raw bytes (a line, newline included) to the node's stdin.
    fn send_raw(&mut self, line: &[u8]) {
        self.stdin.write_all(line).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Sends `body` (with `msg_id` set) from `c1` to `n1`.
    fn send(&mut self, msg_id: u64, mut body: Value) {
        body["msg_id"] = json!(msg_id);
        let line = json!({"src": "c1", "dest": "n1", "body": body}).to_string() + "\n";
        self.send_raw(line.as_bytes());
    }

    /// The whole message that answers `msg_id`, waiting at most 30 s.
    fn reply_to(&self, msg_id: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self
                .replies
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no reply to msg_id {msg_id} within 30 s"));
            if msg["body"]["in_reply_to"] == json!(msg_id) {
                return msg;
            }
        }
    }

    /// Sends `body` as `msg_id` and returns the reply's body.
    fn call(&mut self, msg_id: u64, body: Value) -> Value {
        self.send(msg_id, body);
        self.reply_to(msg_id)["body"].clone()
    }

    fn init(&mut self, msg_id: u64) {
        let r = self.call(
            msg_id,
            json!({"type": "init", "node_id": "n1", "node_ids": ["n1"]}),
        );
        assert_eq!(r["type"], "init_ok", "{r}");
    }

    /// Writes `key` = `value`, retrying (ids from `first_id` on) while no leader is elected.
    fn write(&mut self, first_id: u64, key: Value, value: Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for id in first_id.. {
            let r = self.call(
                id,
                json!({"type": "write", "key": key.clone(), "value": value.clone()}),
            );
            if r["type"] == "write_ok" {
                return;
            }
            assert!(Instant::now() < deadline, "write never succeeded: {r}");
            std::thread::sleep(Duration::from_millis(100)); // retry pacing, not a condition
        }
    }
}

/// Goal: one line of invalid UTF-8 neither stops the node nor goes unanswered. Method: a
/// request whose bytes are not UTF-8 but whose envelope is readable must get error 12; a
/// line of pure garbage is skipped; requests after both are still served.
#[test]
fn a_line_of_invalid_utf8_is_answered_and_the_node_keeps_serving() {
    let mut node = Node::start();
    node.init(1);
    node.send_raw(b"{\"src\":\"c1\",\"dest\":\"n1\",\"body\":{\"type\":\"write\",\"msg_id\":2,\"key\":1,\"value\":\"\xff\xfe\"}}\n");
    let r = node.reply_to(2);
    assert_eq!(r["body"]["type"], "error", "{r}");
    assert_eq!(r["body"]["code"], 12, "{r}");
    node.send_raw(b"\xc3\x28 not even json \xff\n");
    node.send_raw(b"{\"half\": \n");
    node.write(10, json!(1), json!(5));
    let r = node.call(100, json!({"type": "read", "key": 1}));
    assert_eq!(
        (&r["type"], &r["value"]),
        (&json!("read_ok"), &json!(5)),
        "{r}"
    );
}

/// Goal: replies sent before `init` are proper replies. Method: a read before `init` must
/// be refused (11) from the node it was sent to, with a `msg_id` of its own.
#[test]
fn replies_before_init_carry_src_and_msg_id() {
    let mut node = Node::start();
    node.send(1, json!({"type": "read", "key": 1}));
    let r = node.reply_to(1);
    assert_eq!(r["src"], "n1", "{r}");
    assert_eq!(r["body"]["code"], 11, "{r}");
    assert!(r["body"]["msg_id"].is_u64(), "{r}");
    node.init(2);
    let r = node.call(3, json!({"type": "read", "key": 1}));
    assert!(
        r["msg_id"].as_u64() > Some(0),
        "msg_ids count on after init: {r}"
    );
}

/// Goal: a second `init` that disagrees with the first is refused, one that agrees is
/// answered again. Method: init as n1 of [n1], then as n2 of [n1, n2], then as n1 again.
#[test]
fn a_second_init_that_disagrees_is_refused() {
    let mut node = Node::start();
    node.init(1);
    let r = node.call(
        2,
        json!({"type": "init", "node_id": "n2", "node_ids": ["n1", "n2"]}),
    );
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["code"], 22, "{r}");
    assert!(
        r["text"]
            .as_str()
            .unwrap_or("")
            .contains("already initialized"),
        "{r}"
    );
    node.init(3);
}

/// Goal: fields of the wrong type are malformed requests (12), never guessed at. Method:
/// a key that is an object or a list, a `region_id` that is a string, a flag that is a
/// string, and an `init` whose `node_ids` hold a number.
#[test]
fn fields_of_the_wrong_type_get_error_12() {
    let mut node = Node::start();
    let r = node.call(
        1,
        json!({"type": "init", "node_id": "n1", "node_ids": ["n1", 2]}),
    );
    assert_eq!(r["code"], 12, "{r}");
    node.init(2);
    node.write(10, json!("k"), json!(1));
    for (id, body) in [
        (100, json!({"type": "read", "key": {"a": 1}})),
        (101, json!({"type": "write", "key": [1], "value": 2})),
        (
            102,
            json!({"type": "region_split", "region_id": "1", "split_key": "m"}),
        ),
        (
            103,
            json!({"type": "cas", "key": "k", "from": 1, "to": 2, "create_if_not_exists": "yes"}),
        ),
        (
            104,
            json!({"type": "write", "key": "k", "value": 3, "client_id": 1, "seq": "7"}),
        ),
    ] {
        let r = node.call(id, body.clone());
        assert_eq!(r["type"], "error", "{body} -> {r}");
        assert_eq!(r["code"], 12, "{body} -> {r}");
    }
    // None of them took effect: the region was not split and k still holds 1.
    let r = node.call(200, json!({"type": "region_info"}));
    assert_eq!(r["regions"].as_array().map(Vec::len), Some(1), "{r}");
    let r = node.call(201, json!({"type": "read", "key": "k"}));
    assert_eq!(r["value"], 1, "{r}");
}

/// Goal: a seed whose index or term raft could not grow past, or a transaction id of the
/// wrong type, is malformed (12) and harms nothing. Method: a fresh one-node group; seeds
/// at index or term 2^64 - 1 (before the fix, raft overflowed: a panic, or a term that
/// wraps to 0), an `occ_commit` whose `txn_id` is an object; then the node still seeds
/// at a sane index and serves.
#[test]
fn seeds_beyond_what_raft_can_grow_and_odd_txn_ids_get_error_12() {
    let mut node = Node::start();
    node.init(1);
    let max = u64::MAX;
    for (id, (index, term)) in [(2, (max, 2)), (3, (5, max)), (4, (1u64 << 53, 2))] {
        let r = node.call(
            id,
            json!({"type": "seed_state", "state": {"x": 1}, "commit_index": index, "term": term}),
        );
        assert_eq!(r["code"], 12, "({index}, {term}) -> {r}");
    }
    let r = node.call(
        5,
        json!({"type": "occ_commit", "txn_id": {"a": 1}, "writes": [], "read_versions": []}),
    );
    assert_eq!(r["code"], 12, "{r}");
    let r = node.call(
        6,
        json!({"type": "seed_state", "state": {"x": 1}, "commit_index": 5, "term": 2}),
    );
    assert_eq!(r["type"], "seed_state_ok", "{r}");
    node.write(7, json!("x"), json!(2));
    let r = node.call(100, json!({"type": "read", "key": "x"}));
    assert_eq!(r["value"], 2, "{r}");
}

/// Goal: a node ended by a signal, as harnesses end theirs, leaves no temporary data behind.
/// Method: a node run without `--data-dir`, its temporary directory under an empty `TMPDIR`,
/// takes a write (so the directory holds a store and the client's session task is still
/// running); after SIGTERM the process must stop its store (its log says so), exit 0 and
/// leave `TMPDIR` empty again. The same for Ctrl-C (SIGINT), and for a node whose write is
/// still waiting for a leader (its task must be aborted for the store to stop).
#[test]
fn a_node_stopped_by_a_signal_removes_its_temporary_data() {
    for (signal, waiting) in [
        (libc::SIGTERM, false),
        (libc::SIGINT, false),
        (libc::SIGTERM, true),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let log_path = logs.path().join("stderr");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_regatta"));
        command
            .arg("maelstrom")
            .env("TMPDIR", tmp.path())
            .env("REGATTA_LOG", "info")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap());
        let mut node = Node::spawn(command, logs);
        if waiting {
            // One node of three whose peers never answer: its write waits for a leader
            // that cannot be elected, holding the node until the stop aborts it.
            let r = node.call(
                1,
                json!({"type": "init", "node_id": "n1", "node_ids": ["n1", "n2", "n3"]}),
            );
            assert_eq!(r["type"], "init_ok", "{r}");
            node.send(2, json!({"type": "write", "key": "k", "value": 1}));
        } else {
            node.init(1);
            node.write(2, json!("k"), json!(1));
        }
        let made = std::fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(made, 1, "the node made one temporary data directory");
        let pid = node.child.id() as libc::pid_t;
        // SAFETY: `pid` is our own child, not yet waited for.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "signal {signal}: node still running"
            );
            std::thread::sleep(Duration::from_millis(20)); // polling an exit, not a timing assert
        };
        assert!(status.success(), "signal {signal}: exited {status}");
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(
            log.contains("store stopped") && !log.contains("store left running"),
            "signal {signal}: the store did not stop in order: {log}"
        );
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "signal {signal}: left behind {left:?}");
    }
}
