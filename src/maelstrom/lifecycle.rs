//! The node's process: reading stdin, `init` (starting the store), dispatching each line,
//! and the orderly stop at the end of stdin or on a signal (answers drained, the node's
//! tasks aborted, the store stopped, the stdout writer joined) before a temporary data
//! directory is removed.

use super::*;

/// How long the node, once stdin has ended, waits for the requests it took to be answered.
const DRAIN_ON_EOF: Duration = Duration::from_secs(15);

/// The region every node hosts: the whole key space, a replica (peer id = store id) on
/// each node.
fn group_region(nodes: usize) -> Region {
    regatta_engine::initial_region(1, (1..=nodes as u64).map(|s| (s, s)))
}

async fn init(
    body: &Value,
    data_dir: &std::path::Path,
    out: &Out,
    logger: &Logger,
) -> Result<Arc<Node>, Fail> {
    let (me, names) = membership(body)?;
    let idx = names
        .iter()
        .position(|n| *n == me)
        .ok_or_else(|| Fail(12, "node_id is not in node_ids".into()))?;
    let store_id = idx as u64 + 1;
    let region = group_region(names.len());
    // Every node hands out split ids from its own space: the store id in the top byte and
    // the start time (ms, from 2020) below, so a restarted node does not reuse its ids.
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .saturating_sub(1_577_836_800_000);
    let id_base = (store_id << 56) | ((started_ms & 0xff_ffff_ffff) << 14);
    let serving = Arc::new(std::sync::OnceLock::new());
    let pd: Arc<dyn PdClient> = Arc::new(
        MemPd::with_regions(vec![region.clone()])
            .with_id_base(id_base)
            .with_tso(tso::store_tso(serving.clone())),
    );
    let transport = Arc::new(JsonTransport {
        me: me.clone(),
        names: names.clone(),
        out: out.clone(),
    });
    let opts = StoreOptions {
        store_id,
        listen_addr: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        config: StoreConfig::default(),
        txn: regatta_server::TxnConfig::default(),
        // A node's data lives as long as its test: no WAL prefill, a fast start.
        engine: regatta_server::EngineConfig::short_lived(),
    };
    let store =
        Store::start_with_transport(opts, pd, Box::new(move |_tcp| transport), logger.clone())
            .await
            .map_err(|e| Fail(13, format!("store failed to start: {e}")))?;
    // The peer is created by the first store heartbeat; wait for it (bounded).
    for _ in 0..100 {
        if store.router().get(region.get_id()).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let node = Arc::new(Node {
        me,
        names,
        store,
        region,
        out: out.clone(),
        // Forward ids start from this run's start time, so an answer meant for an earlier
        // run of this node (a restart) matches no waiter of this one; below 2^53, so any
        // harness's JSON numbers carry them exactly.
        next_fwd: AtomicU64::new((started_ms & 0xffff_ffff) << 20),
        forwards: Mutex::new(HashMap::new()),
        tso: tso::Tso::default(),
        client: tokio::sync::OnceCell::new(),
        next_txn_id: AtomicU64::new(1),
        sessions: sessions::Sessions::default(),
        tasks: Mutex::default(),
        stopping: AtomicBool::new(false),
    });
    let _ = serving.set(Arc::downgrade(&node));
    Ok(node)
}

/// `init`'s `node_id` and `node_ids`.
fn membership(body: &Value) -> Result<(String, Vec<String>), Fail> {
    let me = text(body, "node_id")?.to_string();
    let names = fields::strings(field(body, "node_ids")?, "node_ids")?;
    Ok((me, names))
}

/// Runs the node until stdin closes or the process is signalled (SIGTERM, SIGINT); either
/// way the store stops and a temporary data directory is removed.
pub fn run(data_dir: Option<PathBuf>, logger: Logger) -> Result<()> {
    let (dir, _tmp) = crate::data_dir_or_temp(data_dir, "regatta-maelstrom-")?;
    let (out_tx, out_rx) = std::sync::mpsc::channel::<String>();
    let out_log = logger.clone();
    let writer = std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        while let Ok(line) = out_rx.recv() {
            if let Err(e) = writeln!(stdout, "{line}").and_then(|_| stdout.flush()) {
                warn!(out_log, "writing stdout failed; no more output"; "error" => %e);
                return;
            }
        }
    });
    let out = Out {
        tx: out_tx,
        next_msg_id: Arc::new(AtomicU64::new(0)),
    };
    let mut lines = input::spawn_reader(
        std::io::BufReader::with_capacity(64 << 10, std::io::stdin()),
        logger.clone(),
    );
    actix::System::new().block_on(async move {
        let mut node: Option<Arc<Node>> = None;
        // A harness that ends a test by signal (SIGTERM, Ctrl-C) gets the same orderly
        // stop as one that closes stdin, minus the wait for answers: the store stops and
        // a temporary data directory is removed.
        let stop = crate::shutdown_signal();
        tokio::pin!(stop);
        let mut signalled = false;
        loop {
            // Biased, the signal first: its handlers are installed at the first poll,
            // before any line is taken.
            let line = tokio::select! {
                biased;
                _ = &mut stop => {
                    warn!(logger, "stopping: signal received");
                    signalled = true;
                    break;
                }
                line = lines.recv() => match line {
                    Some(line) => line,
                    None => break,
                },
            };
            let msg = match line {
                input::Line::Text(text) => match serde_json::from_str::<Value>(&text) {
                    Ok(v) => v,
                    Err(e) => {
                        if !text.trim().is_empty() {
                            warn!(logger, "line skipped: not JSON"; "error" => %e,
                                "bytes" => text.len());
                        }
                        continue;
                    }
                },
                input::Line::NotUtf8(bytes) => {
                    answer_not_utf8(&bytes, &out, &logger);
                    continue;
                }
                input::Line::TooLong(len) => {
                    warn!(logger, "line skipped: too long"; "bytes" => len,
                        "limit" => input::MAX_LINE_BYTES);
                    continue;
                }
            };
            on_message(msg, &mut node, &dir, &out, &logger).await;
        }
        if let Some(n) = &node {
            // Answer what was taken before stopping (bounded: a request that needs the
            // other nodes, whose lines no longer arrive, gives up by its own deadline); a
            // signal cuts the wait short.
            if !signalled {
                tokio::select! {
                    biased;
                    _ = &mut stop => warn!(logger, "stopping now: signal received"),
                    _ = n.sessions.drain(DRAIN_ON_EOF) => {}
                }
            }
            n.sessions.close();
            n.stopping.store(true, Ordering::Release);
            // Forwards in flight end by their deadline; past a short wait the node's tasks
            // are aborted, so the store can stop either way.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while Arc::strong_count(n) > 1 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n.abort_tasks();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while Arc::strong_count(n) > 1 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if let Some(mut n) = node {
            // A timestamp or wire call that upgraded its weak reference just before the
            // node began stopping lets go within its own timeout.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
            loop {
                match Arc::try_unwrap(n) {
                    Ok(node) => break node.store.stop().await,
                    Err(back) if tokio::time::Instant::now() < deadline => {
                        n = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(back) => {
                        warn!(logger, "store left running: still in use at exit";
                            "holders" => Arc::strong_count(&back) - 1);
                        break;
                    }
                }
            }
        }
    });
    // The runtime and with it every sender of lines are gone: the writer ends once it has
    // written what is queued (bounded, should stdout block).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !writer.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    if writer.is_finished() {
        let _ = writer.join();
    }
    Ok(())
}

/// A line that is not UTF-8: answered with error 12 when, read leniently, it names its
/// sender and `msg_id`; logged either way.
fn answer_not_utf8(bytes: &[u8], out: &Out, logger: &Logger) {
    let lossy = String::from_utf8_lossy(bytes);
    let msg = serde_json::from_str::<Value>(&lossy).unwrap_or(Value::Null);
    let src = msg.get("src").and_then(Value::as_str);
    let msg_id = msg.get("body").and_then(|b| b.get("msg_id"));
    warn!(logger, "line skipped: not UTF-8"; "bytes" => bytes.len(),
        "src" => src.unwrap_or("?"));
    if let (Some(src), Some(msg_id)) = (src, msg_id) {
        let me = msg.get("dest").and_then(Value::as_str).unwrap_or("");
        out.fail(
            me,
            src,
            msg_id,
            Fail(12, "message is not valid UTF-8".into()),
        );
    }
}

/// Handles one message from stdin.
async fn on_message(
    msg: Value,
    node: &mut Option<Arc<Node>>,
    dir: &std::path::Path,
    out: &Out,
    logger: &Logger,
) {
    let Some(src) = msg.get("src").and_then(Value::as_str).map(str::to_string) else {
        warn!(logger, "message skipped: no string src"; "message" => %short(&msg));
        return;
    };
    let body = msg.get("body").cloned().unwrap_or(Value::Null);
    if !body.is_object() {
        warn!(logger, "message skipped: body is not an object"; "src" => &src);
        return;
    }
    // Before `init` the node has no name of its own: it answers as the `dest` it was sent to.
    let dest = msg.get("dest").and_then(Value::as_str).unwrap_or("");
    let kind = body.get("type").and_then(Value::as_str).unwrap_or("");
    let msg_id = body.get("msg_id").cloned().unwrap_or(Value::Null);
    match (kind, &*node) {
        ("init", None) => match init(&body, dir, out, logger).await {
            Ok(n) => {
                n.reply(&src, &msg_id, json!({"type": "init_ok"}));
                *node = Some(n);
            }
            Err(f) => out.fail(dest, &src, &msg_id, f),
        },
        ("init", Some(n)) => match membership(&body) {
            Ok((me, names)) if me == n.me && names == n.names => {
                n.reply(&src, &msg_id, json!({"type": "init_ok"}));
            }
            Ok((me, names)) => n.fail(
                &src,
                &msg_id,
                Fail(
                    22,
                    format!(
                        "already initialized as {} of {:?}; refusing to become {me} of {names:?}",
                        n.me, n.names
                    ),
                ),
            ),
            Err(f) => n.fail(&src, &msg_id, f),
        },
        (_, None) => out.fail(dest, &src, &msg_id, Fail(11, "not initialized".into())),
        ("raft", Some(n)) => {
            let m = body
                .get("data")
                .and_then(Value::as_str)
                .and_then(unhex)
                .and_then(|bytes| RaftMessage::parse_from_bytes(&bytes).ok());
            match m {
                Some(m) => {
                    if let Some(addr) = n.store.router().get(m.get_region_id()) {
                        addr.do_send(RaftMessageIn(m));
                    }
                }
                None => warn!(logger, "raft message skipped: data is not a hex RaftMessage";
                    "src" => &src),
            }
        }
        ("forward", Some(n)) => gateway::on_forward(n, src, &body, logger),
        ("forward_ok", Some(n)) => gateway::on_forward_ok(n, &src, &body, logger),
        (_, Some(n)) => {
            sessions::dispatch(n, src, body);
        }
    }
}

/// A message shortened for a log line.
fn short(msg: &Value) -> String {
    let mut s = msg.to_string();
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}
