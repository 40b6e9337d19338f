//! `wirt-conformance`: runs kvm-unit-tests on wirt (or QEMU) and checks the outcomes
//! against an expected-results file. See the crate's README.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use conformance::{cfg, expect, plan::Vmm};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum VmmKind {
    Wirt,
    Qemu,
}

/// Runs the x86_64 entries of kvm-unit-tests' unittests.cfg on a VMM, one line per test
/// and the totals; with --expected, exits 1 when a test listed PASS did not pass.
#[derive(Parser, Debug)]
#[command(name = "wirt-conformance")]
struct Args {
    /// The suite (a directory with x86/unittests.cfg and x86/*.flat); default:
    /// $WIRT_KVM_UNIT_TESTS, else ../shared/kvm-unit-tests beside the repository.
    #[arg(long)]
    suite: Option<PathBuf>,
    /// Which VMM runs the tests.
    #[arg(long, value_enum, default_value = "wirt")]
    vmm: VmmKind,
    /// The wirt binary (default: target/release/wirt of this repository).
    #[arg(long)]
    wirt: Option<PathBuf>,
    /// wirt's engine.
    #[arg(long, default_value = "sw")]
    engine: String,
    /// The QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// QEMU's accelerator.
    #[arg(long, default_value = "tcg")]
    accel: String,
    /// Tests run at once (default: the number of host CPUs).
    #[arg(long)]
    jobs: Option<usize>,
    /// Where the serial logs go (default: target/conformance/<vmm>).
    #[arg(long)]
    logs: Option<PathBuf>,
    /// Compare with this expected-results file; exit 1 on a regression.
    #[arg(long)]
    expected: Option<PathBuf>,
    /// Write the outcomes as an expected-results file.
    #[arg(long)]
    write_expected: Option<PathBuf>,
    /// Run only tests whose names contain one of these.
    filters: Vec<String>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("wirt-conformance: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<bool> {
    let a = Args::parse();
    let root = repo_root();
    let suite = a
        .suite
        .clone()
        .unwrap_or_else(|| conformance::default_suite_dir(&root));
    let x86 = suite.join("x86");
    let cfg_path = x86.join("unittests.cfg");
    if !cfg_path.exists() {
        bail!(
            "{} not found: point --suite (or WIRT_KVM_UNIT_TESTS) at a kvm-unit-tests x86_64 build",
            cfg_path.display()
        );
    }
    let entries = cfg::load(&cfg_path).context("reading the suite's configuration")?;
    let vmm = match a.vmm {
        VmmKind::Wirt => {
            let binary = a
                .wirt
                .clone()
                .unwrap_or_else(|| root.join("target/release/wirt"));
            if !binary.exists() {
                bail!(
                    "{} not found: build it with `cargo build --release -p wirt` or pass --wirt",
                    binary.display()
                );
            }
            Vmm::Wirt {
                binary,
                engine: a.engine.clone(),
            }
        }
        VmmKind::Qemu => Vmm::Qemu {
            binary: a.qemu.clone(),
            accel: a.accel.clone(),
        },
    };
    let label = vmm.label();
    let logs = a.logs.clone().unwrap_or_else(|| {
        root.join("target/conformance")
            .join(label.replace(' ', "-"))
    });
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!(
        "kvm-unit-tests on {label}: {} entries, {jobs} at a time, logs in {}",
        entries.len(),
        logs.display()
    );
    let results = conformance::run_suite(&entries, &x86, &vmm, &logs, jobs, &a.filters, &|r| {
        println!("{}", conformance::line(r))
    });
    let t = conformance::totals(&results);
    let words: Vec<String> = t.iter().map(|(w, n)| format!("{n} {w}")).collect();
    println!("kvm-unit-tests on {label}: {}", words.join(", "));
    if let Some(path) = &a.write_expected {
        let header = format!(
            "kvm-unit-tests on {label}: the expected outcome of every entry.\n\
             Checked by crates/wirt/tests/conformance.rs: a test listed PASS must pass.\n\
             Regenerate: cargo run --release -p conformance -- --write-expected {}",
            path.display()
        );
        std::fs::write(path, expect::render(&header, &results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &a.expected {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let exp = expect::parse(&text).map_err(anyhow::Error::msg)?;
        let c = expect::compare(&exp, &results);
        // A filtered run cannot miss what it did not select.
        let missing = if a.filters.is_empty() {
            c.missing.len()
        } else {
            0
        };
        for (name, got) in &c.regressions {
            println!("REGRESSION {name}: expected PASS, got {got}");
        }
        for name in &c.improvements {
            println!("IMPROVED {name}: passes now; update {}", path.display());
        }
        return Ok(c.regressions.is_empty() && missing == 0);
    }
    Ok(true)
}
