//! Region subcommands: `regatta regions` (the region map as PD knows it) and
//! `regatta split KEY`.

use crate::cmd::kv::{connect, runtime, Target};
use anyhow::Result;
use clap::Args;
use regatta_proto::metapb::Region;
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

/// A key for a table: printable as text, else hex; the unbounded ends as `-inf` / `+inf`.
pub fn show_key(k: &[u8], end: bool) -> String {
    if k.is_empty() {
        return if end { "+inf" } else { "-inf" }.to_string();
    }
    match std::str::from_utf8(k) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => format!(
            "0x{}",
            k.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
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
        let regions = c.pd().scan_regions(b"", b"", 0).await?;
        println!(
            "{:>8}  {:<40}  {:>7}  {:>6}  peers (store:peer)",
            "id", "range", "epoch", "leader"
        );
        for (r, leader) in &regions {
            let epoch = r.get_region_epoch();
            let peers: Vec<String> = r
                .get_peers()
                .iter()
                .map(|p| format!("{}:{}", p.get_store_id(), p.get_id()))
                .collect();
            println!(
                "{:>8}  {:<40}  {:>7}  {:>6}  {}",
                r.get_id(),
                range(r),
                format!("{}/{}", epoch.get_conf_ver(), epoch.get_version()),
                leader
                    .as_ref()
                    .map_or("-".to_string(), |l| l.get_store_id().to_string()),
                peers.join(" ")
            );
        }
        eprintln!("{} region(s)", regions.len());
        Ok(ExitCode::SUCCESS)
    })
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
