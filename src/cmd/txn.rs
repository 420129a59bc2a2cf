//! `regatta txn OP...`: a small script run as one transaction.
//!
//! OPs are `get K`, `put K V` and `delete K`, run in order; the transaction is optimistic
//! unless `--pessimistic` (then each `get` locks its key as it reads, and commit does not
//! abort on write conflicts). Each `get` prints its value on its own line (a missing key:
//! an empty line, and `not found: K` on stderr); the commit's timestamp goes to stderr.
//! `--read-ts TS` makes a read-only snapshot at TS instead; a TS beyond every timestamp
//! PD's TSO has handed out is refused (exit 2): it would not be a snapshot.
//!
//! Exit codes: 0 committed (or read); 1 the transaction did not commit (a conflict, a
//! lock, a deadlock: the reason on stderr, and whether retrying may help); 2 failure (bad
//! arguments, the cluster unreachable).

use super::kv::{runtime, Target};
use anyhow::{bail, Context, Result};
use clap::Args;
use regatta_client::{TxnClient, TxnOptions};
use std::io::Write;
use std::process::ExitCode;

/// `regatta txn`.
#[derive(Args)]
pub struct TxnArgs {
    /// Take pessimistic locks: each `get` locks its key as it reads.
    #[arg(long)]
    pessimistic: bool,
    /// Read-only: read at this timestamp (a snapshot) instead of a new transaction.
    #[arg(long)]
    read_ts: Option<u64>,
    /// The script: `get K`, `put K V`, `delete K`, ... (run in order; put a script whose
    /// keys or values start with `-` after `--`).
    #[arg(required = true, num_args = 1..)]
    ops: Vec<String>,
    #[command(flatten)]
    target: Target,
}

/// One step of the script.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Get(String),
    Put(String, String),
    Delete(String),
}

/// Parses `get K`, `put K V`, `delete K` words into steps.
fn parse_ops(words: &[String]) -> Result<Vec<Op>> {
    let mut ops = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let mut arg = |what: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("`{w}` needs {what}"))
        };
        let op = match w.as_str() {
            "get" => Op::Get(arg("a key")?),
            "put" => {
                let k = arg("a key and a value")?;
                Op::Put(k, arg("a value after its key")?)
            }
            "delete" => Op::Delete(arg("a key")?),
            other => bail!("unknown operation `{other}` (expected get, put or delete)"),
        };
        let (Op::Get(k) | Op::Put(k, _) | Op::Delete(k)) = &op;
        if k.is_empty() {
            bail!("empty key in `{w}`");
        }
        ops.push(op);
    }
    Ok(ops)
}

/// Runs `regatta txn`.
pub fn txn(a: TxnArgs) -> Result<ExitCode> {
    let ops = parse_ops(&a.ops)?;
    if a.read_ts.is_some() && ops.iter().any(|o| !matches!(o, Op::Get(_))) {
        bail!("--read-ts makes a read-only snapshot: only `get` is allowed");
    }
    if a.read_ts == Some(0) {
        bail!("--read-ts must be a timestamp above 0");
    }
    runtime()?.block_on(async {
        let client = a
            .target
            .connecting(TxnClient::connect_with(&a.target.pd, a.target.config()))
            .await
            .with_context(|| format!("connecting to PD at {}", a.target.pd.join(",")))?;
        let mut out = std::io::stdout().lock();
        if let Some(ts) = a.read_ts {
            let snap = client
                .snapshot(ts)
                .await
                .with_context(|| format!("--read-ts {ts}"))?;
            for op in &ops {
                if let Op::Get(k) = op {
                    let v = match snap.get(k.as_bytes()).await {
                        Ok(v) => v,
                        Err(e @ regatta_client::Error::BelowGcSafePoint { .. }) => {
                            // An answer about the data, like a conflict: exit 1.
                            eprintln!("get {k} at {ts}: {e}");
                            return Ok(ExitCode::from(1));
                        }
                        Err(e) => bail!("get {k} at {ts}: {e}"),
                    };
                    print_value(&mut out, k, v)?;
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        let opts = if a.pessimistic {
            TxnOptions::pessimistic()
        } else {
            TxnOptions::optimistic()
        };
        let mut t = client.begin_with(opts).await?;
        let mut results = Vec::new();
        for op in &ops {
            let outcome = match op {
                Op::Get(k) if a.pessimistic => t.get_for_update(k.as_bytes()).await,
                Op::Get(k) => t.get(k.as_bytes()).await,
                Op::Put(k, v) => {
                    t.put(k.as_bytes(), v.as_bytes());
                    continue;
                }
                Op::Delete(k) => {
                    t.delete(k.as_bytes());
                    continue;
                }
            };
            match outcome {
                Ok(v) => results.push((op.clone(), v)),
                Err(e) => return aborted(&mut t, &e.to_string(), e.is_retryable()).await,
            }
        }
        match t.commit().await {
            Ok(commit_ts) => {
                for (op, v) in results {
                    if let Op::Get(k) = op {
                        print_value(&mut out, &k, v)?;
                    }
                }
                eprintln!(
                    "committed at {commit_ts} (start {}{})",
                    t.start_ts(),
                    if t.committed_by_one_pc() { ", 1PC" } else { "" }
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!(
                    "not committed: {e}{}",
                    if e.is_retryable() {
                        " (retryable: run it again)"
                    } else {
                        ""
                    }
                );
                Ok(ExitCode::from(1))
            }
        }
    })
}

/// A read failed before commit: roll back and say why.
async fn aborted(
    t: &mut regatta_client::Transaction,
    reason: &str,
    retryable: bool,
) -> Result<ExitCode> {
    let _ = t.rollback().await;
    eprintln!(
        "not committed: {reason}{}",
        if retryable {
            " (retryable: run it again)"
        } else {
            ""
        }
    );
    Ok(ExitCode::from(1))
}

fn print_value(out: &mut impl Write, key: &str, v: Option<Vec<u8>>) -> Result<()> {
    match v {
        Some(v) => out.write_all(&v)?,
        None => eprintln!("not found: {key}"),
    }
    out.write_all(b"\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn a_script_parses_into_its_steps_in_order() {
        let ops = parse_ops(&words("put apple 1 get apple delete zebra get zebra")).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::Put("apple".into(), "1".into()),
                Op::Get("apple".into()),
                Op::Delete("zebra".into()),
                Op::Get("zebra".into()),
            ]
        );
    }

    #[test]
    fn a_bad_script_is_refused_with_what_is_wrong() {
        for (script, says) in [
            ("put apple", "needs a value"),
            ("get", "needs a key"),
            ("frob x", "unknown operation `frob`"),
            ("delete", "needs a key"),
        ] {
            let err = parse_ops(&words(script)).unwrap_err().to_string();
            assert!(err.contains(says), "{script}: {err}");
        }
        assert!(parse_ops(&["get".to_string(), String::new()]).is_err());
    }
}
