//! `regatta maelstrom` as a harness drives it: 3 node processes whose node-to-node lines
//! are routed by the test; client requests to any node; a node SIGKILLed and restarted on
//! its data dir keeps every acknowledged write.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Inputs = Arc<Mutex<HashMap<String, ChildStdin>>>;

/// Starts node `name` and routes its output: to other nodes' stdin, or to `replies`.
fn spawn(name: &str, dir: &Path, inputs: &Inputs, replies: Sender<Value>) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_regatta"))
        .args(["maelstrom", "--data-dir"])
        .arg(dir.join(name))
        .env("REGATTA_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node starts");
    let stdout = child.stdout.take().expect("stdout");
    inputs
        .lock()
        .unwrap()
        .insert(name.to_string(), child.stdin.take().expect("stdin"));
    let inputs = inputs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let dest = msg["dest"].as_str().unwrap_or("").to_string();
            let mut ins = inputs.lock().unwrap();
            match ins.get_mut(&dest) {
                Some(stdin) => {
                    let _ = writeln!(stdin, "{line}");
                }
                None => {
                    let _ = replies.send(msg);
                }
            }
        }
    });
    child
}

struct Harness {
    inputs: Inputs,
    replies: Receiver<Value>,
    next: u64,
}

impl Harness {
    fn call(&mut self, node: &str, mut body: Value) -> Value {
        self.next += 1;
        body["msg_id"] = json!(self.next);
        let line = json!({"src": "c1", "dest": node, "body": body}).to_string();
        writeln!(self.inputs.lock().unwrap().get_mut(node).unwrap(), "{line}").unwrap();
        loop {
            let r = self
                .replies
                .recv_timeout(Duration::from_secs(30))
                .expect("a reply");
            if r["body"]["in_reply_to"] == json!(self.next) {
                return r["body"].clone();
            }
        }
    }

    /// Retries `body` on `node` while the answer is "temporarily unavailable" (11) or
    /// "timeout" (0, outcome unknown: only idempotent requests are sent this way).
    fn call_ok(&mut self, node: &str, body: Value) -> Value {
        for _ in 0..100 {
            let r = self.call(node, body.clone());
            if r["type"] != "error" || (r["code"] != 11 && r["code"] != 0) {
                return r;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{node} stayed unavailable for {body}");
    }
}

/// Goal: the JSON-lines node serves linearizable KV through any node, forwards to the
/// leader, answers with the protocol's error codes, and survives SIGKILL + restart.
#[test]
fn maelstrom_nodes_serve_kv_and_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["n1", "n2", "n3"];
    let inputs: Inputs = Arc::default();
    let (tx, rx) = channel();
    let mut children: HashMap<&str, Child> = names
        .iter()
        .map(|n| (*n, spawn(n, dir.path(), &inputs, tx.clone())))
        .collect();
    let mut h = Harness {
        inputs: inputs.clone(),
        replies: rx,
        next: 0,
    };
    let init = |h: &mut Harness, n: &str| {
        let r = h.call(n, json!({"type": "init", "node_id": n, "node_ids": names}));
        assert_eq!(r["type"], "init_ok");
    };
    for n in names {
        init(&mut h, n);
    }
    let w = h.call_ok("n1", json!({"type": "write", "key": 1, "value": "a"}));
    assert_eq!(w["type"], "write_ok", "{w}");
    assert!(w["commit_index"].as_u64().unwrap() > 0);
    assert_eq!(
        h.call_ok("n2", json!({"type": "read", "key": 1}))["value"],
        "a"
    );
    assert_eq!(
        h.call_ok("n3", json!({"type": "read", "key": 9}))["value"],
        Value::Null
    );
    let ok = h.call_ok(
        "n3",
        json!({"type": "cas", "key": 1, "from": "a", "to": "b"}),
    );
    assert_eq!(ok["type"], "cas_ok");
    let miss = h.call_ok(
        "n2",
        json!({"type": "cas", "key": 1, "from": "a", "to": "c"}),
    );
    assert_eq!(miss["code"], 22);
    let absent = h.call_ok("n2", json!({"type": "cas", "key": 2, "from": 0, "to": 1}));
    assert_eq!(absent["code"], 20);
    let created = h.call_ok(
        "n1",
        json!({"type": "cas", "key": 2, "from": 0, "to": 1, "create_if_not_exists": true}),
    );
    assert_eq!(created["type"], "cas_ok");
    assert_eq!(
        h.call_ok("n1", json!({"type": "delete", "key": 2}))["type"],
        "delete_ok"
    );
    assert_eq!(h.call("n1", json!({"type": "nonsense"}))["code"], 10);
    // Retried writes with the same (client_id, seq) answer the same commit index.
    let first = h.call_ok(
        "n2",
        json!({"type": "write", "key": 3, "value": 1, "client_id": "c9", "seq": 1}),
    );
    let again = h.call_ok(
        "n3",
        json!({"type": "write", "key": 3, "value": 1, "client_id": "c9", "seq": 1}),
    );
    assert_eq!(first["commit_index"], again["commit_index"]);

    // SIGKILL n1, keep writing through the others, restart n1 from its data dir.
    let mut n1 = children.remove("n1").unwrap();
    n1.kill().unwrap();
    n1.wait().unwrap();
    inputs.lock().unwrap().remove("n1");
    let w = h.call_ok("n2", json!({"type": "write", "key": 4, "value": "during"}));
    assert_eq!(w["type"], "write_ok", "{w}");
    children.insert("n1", spawn("n1", dir.path(), &inputs, tx.clone()));
    init(&mut h, "n1");
    assert_eq!(
        h.call_ok("n1", json!({"type": "read", "key": 1}))["value"],
        "b"
    );
    assert_eq!(
        h.call_ok("n1", json!({"type": "read", "key": 4}))["value"],
        "during"
    );
    for (_, mut c) in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
