//! `wirt-bench`: runs wirt and QEMU on the same kernel, initramfs and VM size, alternating
//! them, and prints medians and wirt/QEMU ratios as a markdown table; the same figures go
//! to `benches/results/latest.json` with the machine's description and the date.
//!
//! Rows that cannot run here (KVM on a PVM host, rows whose feature has not landed) are
//! printed with the reason instead of a figure. Nothing here asserts on timing.

mod blk;
mod fleet;
mod measure;
mod report;
mod rows;
mod start_rate;

use std::path::PathBuf;

use clap::Parser;

/// Benchmarks wirt side by side with QEMU on the default guest.
#[derive(Parser, Debug)]
#[command(name = "wirt-bench")]
pub struct Args {
    /// Runs per VMM and row (alternating wirt and QEMU).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The wirt binary to measure (default: the one next to this program).
    #[arg(long)]
    wirt: Option<PathBuf>,
    /// Guest memory for every VM, in MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: u64,
    /// Only these rows (boot, boot-kvm, memory, throughput, blk, start-rate).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "benches/results/latest.json")]
    json: PathBuf,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("wirt-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let setup = rows::Setup::new(args)?;
    let load_at_start = report::Machine::describe().load;
    let mut results = Vec::new();
    for row in rows::ALL {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == row.name) {
            continue;
        }
        eprintln!("wirt-bench: {} ...", row.title);
        for r in (row.run)(&setup) {
            eprintln!("wirt-bench:   {}: {}", r.name, r.summary());
            results.push(r);
        }
    }
    let mut machine = report::Machine::describe();
    machine.load = format!("{load_at_start} at start, {} at end", machine.load);
    println!("{}", report::markdown(&machine, &results));
    report::write_json(&args.json, &machine, &results)?;
    eprintln!("wirt-bench: wrote {}", args.json.display());
    Ok(())
}
