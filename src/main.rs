//! `regatta`: the command line of Regatta — run a playground cluster, a PD or a store, and
//! talk to a cluster. Results go to stdout, diagnostics to stderr.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "regatta",
    version,
    about = "A transactional multi-raft key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run PD and N stores in this process (real TCP on loopback) until Ctrl-C.
    Playground(cmd::cluster::PlaygroundArgs),
    /// Run the placement driver alone.
    Pd(cmd::cluster::PdArgs),
    /// Run one store.
    Store(cmd::cluster::StoreArgs),
    /// Print the value of KEY.
    Get(cmd::kv::GetArgs),
    /// Set KEY to VALUE.
    Put(cmd::kv::PutArgs),
    /// Delete KEY.
    Delete(cmd::kv::DeleteArgs),
    /// Compare-and-swap: set KEY to NEW if it holds EXPECTED (or is absent with --absent).
    Cas(cmd::kv::CasArgs),
    /// Print the pairs with START <= key < END (empty END = to the end).
    Scan(cmd::kv::ScanArgs),
    /// Run a small script as one transaction: `get K`, `put K V`, `delete K` ...
    Txn(cmd::txn::TxnArgs),
    /// Print the region map: id, range, epoch (conf_ver/version), leader store, peers.
    Regions(cmd::regions::RegionsArgs),
    /// Split the region holding KEY at KEY.
    Split(cmd::regions::SplitArgs),
    /// Run one node speaking the Maelstrom JSON-lines protocol on stdin/stdout.
    Maelstrom(MaelstromArgs),
    /// Run a demo on an embedded playground (`demo split`: watch regions split under load).
    Demo(cmd::demo::DemoArgs),
    /// Run a benchmark (embedded playground by default, or --pd for a running cluster).
    Bench(cmd::bench::BenchArgs),
    /// Run the deterministic simulator over many seeds (or replay one with --seed).
    Sim(cmd::sim::SimArgs),
}

/// `regatta maelstrom`.
#[derive(clap::Args)]
struct MaelstromArgs {
    /// Data directory (kept across restarts); default: a fresh temporary directory.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Playground(a) => cmd::cluster::playground(a),
        Command::Pd(a) => cmd::cluster::pd(a),
        Command::Store(a) => cmd::cluster::store(a),
        Command::Get(a) => cmd::kv::get(a),
        Command::Put(a) => cmd::kv::put(a),
        Command::Delete(a) => cmd::kv::delete(a),
        Command::Cas(a) => cmd::kv::cas(a),
        Command::Scan(a) => cmd::kv::scan(a),
        Command::Txn(a) => cmd::txn::txn(a),
        Command::Bench(a) => cmd::bench::bench(a),
        Command::Demo(a) => cmd::demo::demo(a),
        Command::Sim(a) => cmd::sim::sim(a),
        Command::Regions(a) => cmd::regions::regions(a),
        Command::Split(a) => cmd::regions::split(a),
        Command::Maelstrom(a) => regatta::maelstrom::run(a.data_dir, regatta::logging::logger())
            .map(|_| ExitCode::SUCCESS),
    };
    regatta::logging::flush();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
