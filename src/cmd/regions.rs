//! Region subcommands: `regatta regions` (the region map as PD knows it) and
//! `regatta split KEY`.

use crate::cmd::kv::{connect, runtime, Target};
use anyhow::Result;
use clap::Args;
use regatta_proto::metapb::Region;
use regatta_proto::pdpb::RegionWithLeader;
use std::process::ExitCode;

/// `regatta regions`.
#[derive(Args)]
pub struct RegionsArgs {
    #[command(flatten)]
    target: Target,
}

/// `regatta split`.
#[derive(Args)]
pub struct SplitArgs {
    /// The key the new region starts at.
    key: String,
    #[command(flatten)]
    target: Target,
}

/// A key for a table: printable ASCII as a quoted string, else hex; the unbounded ends as `-inf` / `+inf`.
pub fn show_key(k: &[u8], end: bool) -> String {
    if k.is_empty() {
        return if end { "+inf" } else { "-inf" }.to_string();
    }
    if k.iter().all(|b| (0x20..0x7f).contains(b)) {
        format!("{:?}", String::from_utf8_lossy(k))
    } else {
        format!(
            "0x{}",
            k.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }
}

fn range(r: &Region) -> String {
    format!(
        "[{}, {})",
        show_key(r.get_start_key(), false),
        show_key(r.get_end_key(), true)
    )
}

/// Runs `regatta regions`: one line per region, in key order.
pub fn regions(a: RegionsArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let c = connect(&a.target).await?;
        let regions = c.pd().scan_region_infos(b"", b"", 0).await?;
        print_table(&regions);
        eprintln!("{} region(s)", regions.len());
        Ok(ExitCode::SUCCESS)
    })
}

/// Prints the region table: id, range, epoch (conf_ver/version), leader store, size,
/// keys, peers.
pub fn print_table(regions: &[RegionWithLeader]) {
    println!(
        "{:>8}  {:<36}  {:>7}  {:>6}  {:>10}  {:>8}  peers (store:peer)",
        "id", "range", "epoch", "leader", "size", "keys"
    );
    for rl in regions {
        let (r, leader) = (rl.get_region(), rl.get_leader());
        {
            let epoch = r.get_region_epoch();
            let peers: Vec<String> = r
                .get_peers()
                .iter()
                .map(|p| format!("{}:{}", p.get_store_id(), p.get_id()))
                .collect();
            let known = |n: u64| {
                if n == 0 {
                    "-".to_string()
                } else {
                    n.to_string()
                }
            };
            println!(
                "{:>8}  {:<36}  {:>7}  {:>6}  {:>10}  {:>8}  {}",
                r.get_id(),
                range(r),
                format!("{}/{}", epoch.get_conf_ver(), epoch.get_version()),
                known(leader.get_store_id()),
                known(rl.get_approximate_size()),
                known(rl.get_approximate_keys()),
                peers.join(" ")
            );
        }
    }
}

/// Runs `regatta split KEY`.
pub fn split(a: SplitArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let c = connect(&a.target).await?;
        let (left, right) = c.split(a.key.as_bytes()).await?;
        println!("{} {}", left.get_id(), range(&left));
        println!("{} {}", right.get_id(), range(&right));
        Ok(ExitCode::SUCCESS)
    })
}
