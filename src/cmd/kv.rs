//! Client subcommands: get, put, delete, cas, scan.
//!
//! Exit codes: 0 success; 1 the answer is "no" (missing key, CAS mismatch); 2 failure.
//!
//! A value argument of `-` is read from stdin, and `--value-file` (`--expected-file`,
//! `--new-file`) reads one from a file: an argument holds at most 128 KiB on Linux.

use anyhow::{Context, Result};
use clap::Args;
use regatta_client::{Client, Config, ReadConsistency};
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Where the cluster is.
#[derive(Args, Clone)]
pub struct Target {
    /// PD address(es), comma-separated.
    #[arg(long, default_value = regatta::DEFAULT_PD, value_delimiter = ',')]
    pub pd: Vec<String>,
    /// How long, in ms, each step of the command (connecting to PD, then each operation)
    /// keeps trying, retries included (while PD or a store does not answer, or a region
    /// is between leaders), before the command gives up (exit 2); no single request waits
    /// longer. After a second without an answer from PD it says on stderr that it is
    /// waiting.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
}

impl Target {
    /// The client configuration these flags ask for.
    pub fn config(&self) -> Config {
        let timeout = Duration::from_millis(self.timeout_ms);
        let d = Config::default();
        // No single attempt outlasts the whole command.
        Config {
            op_timeout: timeout,
            rpc_timeout: d.rpc_timeout.min(timeout),
            connect_timeout: d.connect_timeout.min(timeout),
            ..d
        }
    }

    /// Awaits `connecting` (a client connecting to PD); if it takes longer than a second,
    /// says so on stderr once, with how long it will keep trying.
    pub async fn connecting<T>(&self, connecting: impl Future<Output = T>) -> T {
        let mut connecting = std::pin::pin!(connecting);
        match tokio::time::timeout(Duration::from_secs(1), &mut connecting).await {
            Ok(done) => done,
            Err(_) => {
                eprintln!(
                    "waiting for PD at {} (trying for up to {:.1} s in all; --timeout-ms)",
                    self.pd.join(","),
                    self.timeout_ms as f64 / 1e3
                );
                connecting.await
            }
        }
    }
}

/// How `regatta get` reads.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Consistency {
    /// ReadIndex on the leader (linearizable).
    Linearizable,
    /// The leader's lease, ReadIndex when it does not hold (linearizable, docs/CLOCKS.md).
    Lease,
    /// Through the raft log (linearizable, slowest).
    Log,
    /// Any replica at most --max-staleness-ms behind.
    Follower,
    /// Any replica that applied this client's writes (a fresh CLI process has none).
    Ryw,
}

/// `regatta get`.
#[derive(Args)]
pub struct GetArgs {
    /// The key.
    key: String,
    /// How the read is served.
    #[arg(long, value_enum, default_value = "linearizable")]
    consistency: Consistency,
    /// The staleness bound of `--consistency follower`, in ms (0: the leader serves it).
    #[arg(long, default_value_t = 1000)]
    max_staleness_ms: u64,
    /// Also say on stderr how the read was served (replica, lease, staleness).
    #[arg(long, short)]
    verbose: bool,
    /// Print the value's bytes exactly, without the newline that otherwise follows it
    /// (for binary values and files: `regatta get blob --raw > blob.bin` gives back what
    /// `regatta put blob --value-file blob.bin` stored).
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    target: Target,
}

/// `regatta put`.
#[derive(Args)]
pub struct PutArgs {
    /// The key.
    key: String,
    /// The value; `-` reads it from stdin.
    #[arg(required_unless_present = "value_file", conflicts_with = "value_file")]
    value: Option<String>,
    /// Read the value from this file instead (`-`: stdin).
    #[arg(long)]
    value_file: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
}

/// `regatta delete`.
#[derive(Args)]
pub struct DeleteArgs {
    /// The key.
    key: String,
    #[command(flatten)]
    target: Target,
}

/// `regatta cas`.
#[derive(Args)]
pub struct CasArgs {
    /// The key.
    key: String,
    /// The expected current value (omit with --absent or --expected-file), then the new
    /// value (omit with --new-file); `-` reads one of them from stdin.
    #[arg(num_args = 0..=2)]
    values: Vec<String>,
    /// Succeed only if the key has no value.
    #[arg(long, conflicts_with = "expected_file")]
    absent: bool,
    /// Read the expected value from this file (`-`: stdin).
    #[arg(long)]
    expected_file: Option<PathBuf>,
    /// Read the new value from this file (`-`: stdin).
    #[arg(long)]
    new_file: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
}

/// `regatta scan`.
#[derive(Args)]
pub struct ScanArgs {
    /// First key (inclusive).
    start: String,
    /// End key (exclusive); empty = to the end of the key space.
    #[arg(default_value = "")]
    end: String,
    /// At most this many pairs.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    #[command(flatten)]
    target: Target,
}

/// The most bytes a value read from stdin or a file may have (the store refuses values
/// above its `max_value_size`, 8 MiB by default, with a clear error of its own).
const MAX_VALUE_INPUT: u64 = 256 << 20;

/// Where one value comes from.
enum ValueFrom {
    Arg(String),
    Stdin,
    File(PathBuf),
}

impl ValueFrom {
    /// A positional value: `-` is stdin.
    fn arg(v: &str) -> ValueFrom {
        if v == "-" {
            ValueFrom::Stdin
        } else {
            ValueFrom::Arg(v.to_string())
        }
    }

    /// A `--*-file` path: `-` is stdin.
    fn file(p: &Path) -> ValueFrom {
        if p == Path::new("-") {
            ValueFrom::Stdin
        } else {
            ValueFrom::File(p.to_path_buf())
        }
    }
}

/// Reads the values in order; at most one may come from stdin.
fn read_values(from: Vec<ValueFrom>) -> Result<Vec<Vec<u8>>> {
    let stdin_uses = from
        .iter()
        .filter(|f| matches!(f, ValueFrom::Stdin))
        .count();
    anyhow::ensure!(stdin_uses <= 1, "only one value can be read from stdin (-)");
    from.into_iter()
        .map(|f| match f {
            ValueFrom::Arg(s) => Ok(s.into_bytes()),
            ValueFrom::Stdin => read_all(std::io::stdin().lock(), "stdin"),
            ValueFrom::File(p) => {
                let file = std::fs::File::open(&p)
                    .with_context(|| format!("opening value file {}", p.display()))?;
                read_all(file, &p.display().to_string())
            }
        })
        .collect()
}

/// All of `r`, refusing more than [`MAX_VALUE_INPUT`] bytes.
fn read_all(r: impl Read, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(MAX_VALUE_INPUT + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading the value from {what}"))?;
    anyhow::ensure!(
        buf.len() as u64 <= MAX_VALUE_INPUT,
        "the value in {what} is larger than {MAX_VALUE_INPUT} bytes"
    );
    Ok(buf)
}

/// A current-thread runtime for one CLI command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A client of the cluster at `t`.
pub async fn connect(t: &Target) -> Result<Client> {
    t.connecting(Client::connect_with(&t.pd, t.config()))
        .await
        .with_context(|| format!("connecting to PD at {}", t.pd.join(",")))
}

fn print_bytes(mut out: impl Write, b: &[u8]) -> Result<()> {
    out.write_all(b)?;
    Ok(())
}

/// Runs `regatta get`.
pub fn get(a: GetArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let c = connect(&a.target).await?;
        let consistency = match a.consistency {
            Consistency::Linearizable => ReadConsistency::Linearizable,
            Consistency::Lease => ReadConsistency::Lease,
            Consistency::Log => ReadConsistency::LogRead,
            Consistency::Follower => ReadConsistency::Follower {
                max_staleness: Duration::from_millis(a.max_staleness_ms),
            },
            Consistency::Ryw => ReadConsistency::ReadYourWrites,
        };
        let read = c.get_detailed(a.key.as_bytes(), consistency).await?;
        if a.verbose {
            let mut how = format!(
                "served by store {} at index {} (linearizable: {}, lease: {}, round trips: {}",
                read.served_by_store,
                read.read_index,
                read.linearizable,
                read.lease_used,
                read.network_round_trips
            );
            if !read.linearizable && matches!(a.consistency, Consistency::Follower) {
                how += &format!(
                    ", staleness <= {:.1} ms",
                    read.staleness.as_secs_f64() * 1e3
                );
            }
            if let Some(v) = &read.value {
                how += &format!(", version {}", v.version);
            }
            eprintln!("{how}, waited {:.2} ms)", read.waited.as_secs_f64() * 1e3);
        }
        match read.value {
            Some(v) => {
                let mut out = std::io::stdout().lock();
                print_bytes(&mut out, &v.value)?;
                if !a.raw {
                    writeln!(out)?;
                }
                out.flush()?;
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("not found");
                Ok(ExitCode::from(1))
            }
        }
    })
}

/// Runs `regatta put`.
pub fn put(a: PutArgs) -> Result<ExitCode> {
    let from = match (&a.value, &a.value_file) {
        (Some(v), None) => ValueFrom::arg(v),
        (None, Some(p)) => ValueFrom::file(p),
        _ => anyhow::bail!("give the value as VALUE, - (stdin) or --value-file PATH"),
    };
    let value = read_values(vec![from])?.remove(0);
    runtime()?.block_on(async {
        let c = connect(&a.target).await?;
        let index = c.put(a.key.as_bytes(), &value).await?;
        eprintln!("ok (log index {index})");
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `regatta delete`.
pub fn delete(a: DeleteArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let c = connect(&a.target).await?;
        let existed = c.delete(a.key.as_bytes()).await?;
        eprintln!(
            "{}",
            if existed {
                "deleted"
            } else {
                "ok (key was absent)"
            }
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `regatta cas`.
pub fn cas(a: CasArgs) -> Result<ExitCode> {
    // The positional values fill whichever of EXPECTED and NEW no flag gave.
    let wants_expected = !a.absent && a.expected_file.is_none();
    let wants_new = a.new_file.is_none();
    let needed = usize::from(wants_expected) + usize::from(wants_new);
    anyhow::ensure!(
        a.values.len() == needed,
        "give KEY EXPECTED NEW (or KEY --absent NEW); --expected-file and --new-file replace \
         EXPECTED and NEW, and - reads one of them from stdin"
    );
    let mut positional = a.values.iter().map(|v| ValueFrom::arg(v));
    let expected = match (&a.expected_file, wants_expected) {
        (Some(p), _) => Some(ValueFrom::file(p)),
        (None, true) => positional.next(),
        (None, false) => None,
    };
    let new = match &a.new_file {
        Some(p) => Some(ValueFrom::file(p)),
        None => positional.next(),
    };
    let has_expected = expected.is_some();
    let mut values = read_values(expected.into_iter().chain(new).collect())?.into_iter();
    let expected = if has_expected { values.next() } else { None };
    let new = values
        .next()
        .context("the new value is missing (give NEW or --new-file)")?;
    runtime()?.block_on(async {
        let c = connect(&a.target).await?;
        let out = c.cas(a.key.as_bytes(), expected.as_deref(), &new).await?;
        if out.succeeded {
            eprintln!("ok");
            return Ok(ExitCode::SUCCESS);
        }
        match out.previous {
            Some(v) => eprintln!("mismatch: current value {}", String::from_utf8_lossy(&v)),
            None => eprintln!("mismatch: key is absent"),
        }
        Ok(ExitCode::from(1))
    })
}

/// Runs `regatta scan`.
pub fn scan(a: ScanArgs) -> Result<ExitCode> {
    // An empty END is the end of the key space; any other END must not precede START.
    anyhow::ensure!(
        a.end.is_empty() || a.start.as_bytes() <= a.end.as_bytes(),
        "reversed range: START {:?} comes after END {:?} (keys compare as bytes; an empty END \
         means to the end of the key space)",
        a.start,
        a.end
    );
    runtime()?.block_on(async {
        let c = connect(&a.target).await?;
        let pairs = c
            .scan(a.start.as_bytes(), a.end.as_bytes(), a.limit)
            .await?;
        let mut out = std::io::stdout().lock();
        for p in pairs {
            print_bytes(&mut out, &p.key)?;
            write!(out, "\t")?;
            print_bytes(&mut out, &p.value)?;
            writeln!(out)?;
        }
        Ok(ExitCode::SUCCESS)
    })
}
