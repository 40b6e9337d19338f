//! `wirt image build`, and finding (or building) the default guest for `wirt run`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use image::{BuildOptions, KernelFlavour, Progress};

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build the default guest (kernel + initramfs) from Debian packages into the cache,
    /// or reuse the cached one when no input changed. Prints `kernel: PATH` and
    /// `initrd: PATH` on their own lines at the end.
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Which kernel: minimal (compiled from Debian's linux-source with guest/kernel.config)
    /// or stock (Debian's cloud kernel, virtio drivers as modules).
    #[arg(long, default_value = "minimal", value_name = "FLAVOUR")]
    flavour: KernelFlavour,
    /// Cache directory (default: $WIRT_CACHE_DIR, else $XDG_CACHE_HOME/wirt, else ~/.cache/wirt).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Parallel compile jobs for the kernel (default: number of CPUs).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
}

pub fn run(cmd: ImageCommand) -> anyhow::Result<i32> {
    match cmd {
        ImageCommand::Build(args) => {
            let opts = BuildOptions {
                flavour: args.flavour,
                cache_dir: args.cache_dir,
                jobs: args.jobs,
            };
            let img = build(&opts, true)?;
            println!("kernel: {}", img.kernel.display());
            println!("initrd: {}", img.initrd.display());
            Ok(0)
        }
    }
}

/// Builds (or finds) an image, showing progress on stderr.
fn build(opts: &BuildOptions, announce_reuse: bool) -> anyhow::Result<image::Image> {
    let mut last_len = 0usize;
    let mut progress = |p: Progress| {
        let line = match p {
            Progress::Step(s) => {
                if last_len > 0 {
                    eprintln!();
                    last_len = 0;
                }
                eprintln!("wirt image: {s}");
                return;
            }
            Progress::Compile {
                objects,
                estimate,
                current,
            } => {
                if estimate > 0 {
                    format!("compiling kernel: {objects}/~{estimate} {current}")
                } else {
                    format!("compiling kernel: {objects} {current}")
                }
            }
        };
        let line: String = line.chars().take(100).collect();
        eprint!("\r{line:<width$}", width = last_len.max(line.len()));
        let _ = std::io::stderr().flush();
        last_len = line.len();
    };
    let img = image::build(opts, &mut progress).context("cannot build the default guest image")?;
    if last_len > 0 {
        eprintln!();
    }
    if img.reused && announce_reuse {
        eprintln!("wirt image: reusing the cached {} image", img.flavour);
    }
    Ok(img)
}

/// The default guest for `wirt run` without `--kernel`.
pub struct DefaultGuest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// Finds the default guest in the cache, building it first (and saying so) if missing.
pub fn ensure_default(verbose: bool) -> anyhow::Result<DefaultGuest> {
    let opts = BuildOptions::default();
    let img = match image::cached(&opts)? {
        Some(img) => img,
        None => {
            eprintln!("wirt: the default guest image is not built yet; building it now (once)");
            build(&opts, false)?
        }
    };
    if verbose {
        eprintln!("wirt: default guest {}", img.kernel.display());
    }
    Ok(DefaultGuest {
        kernel: img.kernel.clone(),
        initrd: img.initrd.clone(),
        cmdline: img.cmdline().to_string(),
    })
}
