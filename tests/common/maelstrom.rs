//! The harness of the `regatta maelstrom` tests: node processes whose node-to-node lines
//! are routed by the test (which can cut links: partitions), and clients that send
//! requests to any node and wait for the answer with a deadline.

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The node ids of a full group.
pub const NAMES: [&str; 3] = ["n1", "n2", "n3"];

/// The command that runs one node on `data_dir`: stdin and stdout piped, logs (errors
/// only) dropped.
pub fn node_command(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_regatta"));
    command
        .args(["maelstrom", "--data-dir"])
        .arg(data_dir)
        .env("REGATTA_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

/// Runs `test` on a fresh one-node group, then on a fresh group of all of `NAMES`.
pub fn on_one_and_three_nodes(mut test: impl FnMut(&Cluster)) {
    for names in [&NAMES[..1], &NAMES[..]] {
        eprintln!("on a group of {}", names.len());
        let dir = tempfile::tempdir().expect("a temp dir");
        test(&Cluster::start_nodes(dir.path(), names));
    }
}

/// Routes lines between node processes and back to waiting clients; drops node-to-node
/// lines over cut links.
#[derive(Default)]
struct Routes {
    inputs: HashMap<String, ChildStdin>,
    cut: HashSet<(String, String)>,
    waiting: HashMap<(String, u64), Sender<Value>>,
}

/// A group of `regatta maelstrom` processes whose node-to-node lines pass through the
/// harness ([`Routes`]); killed when dropped.
pub struct Cluster {
    /// The nodes of the group: `NAMES`, or its first one alone.
    names: &'static [&'static str],
    dir: PathBuf,
    routes: Arc<Mutex<Routes>>,
    children: HashMap<String, Child>,
    next_msg: AtomicU64,
}

impl Cluster {
    /// A group of all of `NAMES` (all running, initialized).
    pub fn start(dir: &Path) -> Cluster {
        Cluster::start_nodes(dir, &NAMES)
    }

    /// A group of the nodes `names` (all running, initialized).
    pub fn start_nodes(dir: &Path, names: &'static [&'static str]) -> Cluster {
        let mut c = Cluster {
            names,
            dir: dir.to_path_buf(),
            routes: Arc::default(),
            children: HashMap::new(),
            next_msg: AtomicU64::new(1),
        };
        for n in names {
            c.spawn(n);
        }
        for n in names {
            c.init(n);
        }
        c
    }

    /// The nodes of the group.
    pub fn names(&self) -> &'static [&'static str] {
        self.names
    }

    /// The group's node `i` (counting round the group: any `i` names a node).
    pub fn node(&self, i: usize) -> &'static str {
        self.names[i % self.names.len()]
    }

    /// Starts node `name` on its data dir and routes its output.
    pub fn spawn(&mut self, name: &str) {
        let mut child = node_command(&self.dir.join(name))
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().expect("stdout");
        self.routes
            .lock()
            .unwrap()
            .inputs
            .insert(name.to_string(), child.stdin.take().expect("stdin"));
        self.children.insert(name.to_string(), child);
        let routes = self.routes.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let src = msg["src"].as_str().unwrap_or("").to_string();
                let dest = msg["dest"].as_str().unwrap_or("").to_string();
                let mut r = routes.lock().unwrap();
                if r.cut.contains(&(src, dest.clone())) {
                    continue;
                }
                if let Some(stdin) = r.inputs.get_mut(&dest) {
                    let _ = writeln!(stdin, "{line}");
                } else if let Some(id) = msg["body"]["in_reply_to"].as_u64() {
                    if let Some(tx) = r.waiting.remove(&(dest, id)) {
                        let _ = tx.send(msg["body"].clone());
                    }
                }
            }
        });
    }

    /// Sends `init` to `name` (the group is `self.names`) and waits for `init_ok`.
    pub fn init(&self, name: &str) {
        let r = self.call(
            "c0",
            name,
            json!({"type": "init", "node_id": name, "node_ids": self.names}),
            Duration::from_secs(30),
        );
        assert_eq!(r.expect("init answered")["type"], "init_ok");
    }

    /// Kills `name` by SIGKILL; its data dir stays for a restart (`spawn` + `init`).
    pub fn kill(&mut self, name: &str) {
        let mut child = self.children.remove(name).expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        self.routes.lock().unwrap().inputs.remove(name);
    }

    /// Cuts every link between `node` and the other nodes, both ways.
    pub fn isolate(&self, node: &str) {
        let mut r = self.routes.lock().unwrap();
        for other in self.names.iter().filter(|o| **o != node) {
            r.cut.insert((node.to_string(), other.to_string()));
            r.cut.insert((other.to_string(), node.to_string()));
        }
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        self.routes.lock().unwrap().cut.clear();
    }

    /// Sends `body` from client `client` to `node`; `None` when no answer came in `wait`.
    pub fn call(&self, client: &str, node: &str, mut body: Value, wait: Duration) -> Option<Value> {
        let id = self.next_msg.fetch_add(1, Ordering::Relaxed);
        body["msg_id"] = json!(id);
        let (tx, rx) = channel();
        {
            let mut r = self.routes.lock().unwrap();
            r.waiting.insert((client.to_string(), id), tx);
            let line = json!({"src": client, "dest": node, "body": body}).to_string();
            let stdin = r.inputs.get_mut(node).expect("node running");
            writeln!(stdin, "{line}").unwrap();
        }
        let answer = rx.recv_timeout(wait).ok();
        self.routes
            .lock()
            .unwrap()
            .waiting
            .remove(&(client.to_string(), id));
        answer
    }

    /// Retries `body` on `node` while the answer is "temporarily unavailable" (11) or
    /// "timeout" (0, outcome unknown: only idempotent requests are sent this way).
    pub fn call_ok(&self, node: &str, body: Value) -> Value {
        for _ in 0..100 {
            if let Some(r) = self.call("c1", node, body.clone(), Duration::from_secs(30)) {
                if r["type"] != "error" || (r["code"] != 11 && r["code"] != 0) {
                    return r;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{node} stayed unavailable for {body}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
