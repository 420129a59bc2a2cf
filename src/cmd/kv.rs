//! Client subcommands: get, put, delete, cas, scan.
//!
//! Exit codes: 0 success; 1 the answer is "no" (missing key, CAS mismatch); 2 failure.

use anyhow::{Context, Result};
use clap::Args;
use regatta_client::{Client, ReadConsistency};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// Where the cluster is.
#[derive(Args, Clone)]
pub struct Target {
    /// PD address(es), comma-separated.
    #[arg(long, default_value = regatta::DEFAULT_PD, value_delimiter = ',')]
    pub pd: Vec<String>,
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
    #[command(flatten)]
    target: Target,
}

/// `regatta put`.
#[derive(Args)]
pub struct PutArgs {
    /// The key.
    key: String,
    /// The value.
    value: String,
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
    /// The expected current value (omit with --absent), then the new value.
    #[arg(num_args = 1..=2, required = true)]
    values: Vec<String>,
    /// Succeed only if the key has no value.
    #[arg(long)]
    absent: bool,
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

/// A current-thread runtime for one CLI command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A client of the cluster at `t`.
pub async fn connect(t: &Target) -> Result<Client> {
    Client::connect(&t.pd)
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
                writeln!(out)?;
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
    runtime()?.block_on(async {
        let c = connect(&a.target).await?;
        let index = c.put(a.key.as_bytes(), a.value.as_bytes()).await?;
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
    let (expected, new) = match (a.absent, a.values.as_slice()) {
        (true, [new]) => (None, new.clone()),
        (false, [exp, new]) => (Some(exp.clone()), new.clone()),
        (true, _) => anyhow::bail!("with --absent give only KEY NEW"),
        (false, _) => anyhow::bail!("give KEY EXPECTED NEW (or KEY --absent NEW)"),
    };
    runtime()?.block_on(async {
        let c = connect(&a.target).await?;
        let out = c
            .cas(
                a.key.as_bytes(),
                expected.as_deref().map(str::as_bytes),
                new.as_bytes(),
            )
            .await?;
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
