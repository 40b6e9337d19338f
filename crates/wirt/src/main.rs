//! `wirt`: the command-line front end. Parses arguments, reports errors in one line with a
//! non-zero status (never a panic trace), and leaves the work to the `vmm` and `image`
//! crates.

mod image_cmd;
mod run;
mod serve_cmd;
mod vm_args;
mod vm_cmd;
mod vmm_cmd;

use clap::{Parser, Subcommand};

/// wirt — a hypervisor with two engines (KVM and a software x86-64 emulator).
#[derive(Parser, Debug)]
#[command(name = "wirt", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a VM and attach its serial console to this terminal.
    ///
    /// Without --kernel, boots the default guest (built first if it is not cached).
    /// Press Ctrl-A x to quit. Exit status: 0 when the guest powers off, (V << 1) | 1 when
    /// it writes V to the debug-exit port 0xf4, 2 on a guest reset, 4 on a triple fault,
    /// 6 when the engine cannot execute the guest, 8 when wirt fails while the VM runs,
    /// 1 on a usage or setup error.
    Run(run::RunArgs),
    /// Build and manage the default guest image.
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
    /// Run the host daemon: a REST API on a Unix socket that manages many VMs, each in its
    /// own process. SIGTERM or SIGINT stops it and kills its VMs (definitions are kept).
    Serve(serve_cmd::ServeArgs),
    /// Control VMs through the daemon (`wirt serve`).
    Vm(vm_cmd::VmArgs),
    /// Internal: one VM's process under `wirt serve`.
    #[command(hide = true)]
    Vmm(vmm_cmd::VmmArgs),
}

fn main() {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Image(cmd) => image_cmd::run(cmd),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Vm(args) => vm_cmd::run(args),
        Command::Vmm(args) => vmm_cmd::run(args),
    };
    match status {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("wirt: error: {}", one_line(&e));
            std::process::exit(1);
        }
    }
}

/// An error and its causes on one line: "what failed: why: underlying cause".
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if parts.last().is_none_or(|p| !p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_image_and_the_platform_agree_on_the_boot_timer_port() {
        assert_eq!(image::BOOT_TIMER_PORT, arch::layout::BOOT_TIMER);
    }
}
