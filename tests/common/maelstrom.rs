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
    /// Held while the nodes run (released after `drop` kills them).
    _machine: super::machine::Shared,
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
            _machine: super::machine::shared(),
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

/// How long a published test reads the node's answers: its whole budget.
pub const PUBLISHED_BUDGET: Duration = Duration::from_secs(5);

/// What node `n1` answered to the clients in a published test, as raw lines in arrival
/// order.
pub struct Published {
    /// The reply lines (`dest` a client), as written.
    pub lines: Vec<String>,
}

impl Published {
    /// The parsed replies.
    pub fn replies(&self) -> Vec<Value> {
        self.lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("a reply line is JSON"))
            .collect()
    }

    /// The body of the reply to `msg_id` (panics, with every line, when there is none).
    pub fn reply_to(&self, msg_id: u64) -> Value {
        self.replies()
            .into_iter()
            .find(|r| r["body"]["in_reply_to"] == msg_id)
            .map(|r| r["body"].clone())
            .unwrap_or_else(|| {
                panic!(
                    "no reply to msg {msg_id} within {PUBLISHED_BUDGET:?}; got:\n{}",
                    self.lines.join("\n")
                )
            })
    }
}

/// Runs a published test exactly as published: `nodes` fresh `regatta maelstrom`
/// processes (no `--data-dir`: each makes its own temporary one), node-to-node lines
/// routed between them; `n1` gets its `init` line and then every line of `lines`, all
/// written at once (no waiting for `init_ok` or an election, no retries); the other nodes
/// get their `init` line. Reads `n1`'s replies to clients until every line written to it
/// has one or [`PUBLISHED_BUDGET`] has passed since the write.
pub fn run_as_published(nodes: usize, lines: &[&str]) -> Published {
    let names: Vec<String> = (1..=nodes).map(|i| format!("n{i}")).collect();
    let inputs: Arc<Mutex<HashMap<String, ChildStdin>>> = Arc::default();
    let (tx, rx) = channel::<String>();
    let mut children = Vec::new();
    for name in &names {
        let mut child = Command::new(env!("CARGO_BIN_EXE_regatta"))
            .arg("maelstrom")
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
            .insert(name.clone(), child.stdin.take().expect("stdin"));
        let (inputs, tx) = (inputs.clone(), tx.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let dest = msg["dest"].as_str().unwrap_or("").to_string();
                let mut inputs = inputs.lock().unwrap();
                if let Some(stdin) = inputs.get_mut(&dest) {
                    let _ = writeln!(stdin, "{line}");
                } else if msg["src"] == "n1" {
                    let _ = tx.send(line);
                }
            }
        });
        children.push(ChildGuard(child));
    }
    let init = |name: &str| {
        json!({"src": "c0", "dest": name,
               "body": {"type": "init", "msg_id": 1, "node_id": name, "node_ids": names}})
        .to_string()
    };
    let mut n1_input = init("n1");
    for l in lines {
        n1_input.push('\n');
        n1_input.push_str(l);
    }
    n1_input.push('\n');
    {
        let mut inputs = inputs.lock().unwrap();
        for name in &names[1..] {
            let stdin = inputs.get_mut(name).expect("running");
            writeln!(stdin, "{}", init(name)).unwrap();
        }
        let stdin = inputs.get_mut("n1").expect("running");
        stdin.write_all(n1_input.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
    let deadline = std::time::Instant::now() + PUBLISHED_BUDGET;
    let mut out = Vec::new();
    while out.len() < lines.len() + 1 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => out.push(line),
            Err(_) => break,
        }
    }
    // Closing their stdin stops the nodes. Give them their orderly stop, which removes
    // their temporary data directories (a kill would leave them behind); the guards kill
    // whoever is still running after it.
    inputs.lock().unwrap().clear();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for ChildGuard(child) in &mut children {
        while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(children);
    Published { lines: out }
}

/// A child process killed when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
