//! `wirt run`: flags → [`vmm::config::VmConfig`] → a running VM → an exit status.

use crate::vm_args::{DeviceArgs, Guest, MachineArgs};
use clap::Args;
use vmm::config::{BalloonConfig, MemorySize, SerialConfig, VmConfig};
use vmm::outcome::StopReason;
use vmm::RunOptions;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    machine: MachineArgs,
    /// Serial console backend: stdio, null, file:PATH or socket:PATH.
    #[arg(long, default_value = "stdio", value_name = "BACKEND")]
    serial: SerialConfig,
    #[command(flatten)]
    devices: DeviceArgs,
    /// Print VM exits by reason (and instructions executed) when the VM ends.
    #[arg(long)]
    stats: bool,
    /// Print what wirt does: engine chosen, guest ready time.
    #[arg(long, short)]
    verbose: bool,
}

/// End of transmission: a shell reading a terminal in canonical mode sees end of input.
const CTRL_D: u8 = 0x04;

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let default_guest = args.machine.kernel.is_none();
    let Guest {
        kernel,
        initrd,
        mut cmdline,
    } = args.machine.guest(args.verbose)?;
    if default_guest
        && !vmm::terminal::is_tty(libc::STDIN_FILENO)
        && args.serial == SerialConfig::Stdio
    {
        // A script is piped in: the guest's shell reads it without prompt or echo and
        // powers off when it ends (Ctrl-D is sent at end of input).
        cmdline.push(' ');
        cmdline.push_str(image::cmdline::BATCH_CONSOLE);
    }
    let config = VmConfig {
        kernel,
        initrd,
        cmdline,
        cpus: args.machine.cpus,
        memory: args.machine.memory,
        engine: args.machine.engine,
        serial: args.serial,
        disks: args.devices.disk,
        nets: args.devices.net,
        vsock: args.devices.vsock,
        virtio_console: args.devices.virtio_console.map(|c| *c),
        rng: args.devices.rng,
        balloon_target: args.devices.balloon.as_ref().and_then(|b| b.1),
        balloon: args.devices.balloon.map(|b| b.0),
        virtio_transport: args.devices.virtio_transport,
        cpu_features: args.machine.cpu_features.map(|f| f.0).unwrap_or_default(),
        test_device: args.devices.test_device,
    };
    config.validate()?;
    let opts = RunOptions {
        verbose: args.verbose,
        hold_input_until_ready: default_guest,
        eof_byte: default_guest.then_some(CTRL_D),
    };
    let report = vmm::run_vm(&config, &opts)?;
    // Outcomes that are failures of the guest or of wirt are always explained.
    let failed = matches!(
        report.reason,
        StopReason::TripleFault | StopReason::InternalError { .. } | StopReason::Failed(_)
    );
    if args.verbose || failed {
        eprintln!("wirt: {}", report.reason.describe());
    }
    if args.stats {
        eprint!("{}", report.stats.table());
    }
    Ok(report.reason.exit_status())
}

/// `--balloon [deflate-on-oom=on,free-page-reporting=on]`.
#[derive(Clone, Debug, PartialEq)]
pub struct BalloonSpec(pub(crate) BalloonConfig, pub(crate) Option<MemorySize>);

impl std::str::FromStr for BalloonSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut cfg = BalloonConfig::default();
        let mut target = None;
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, "on"));
            if key == "target" {
                target = Some(value.parse::<MemorySize>().map_err(|e| e.to_string())?);
                continue;
            }
            let on = match value {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                _ => return Err(format!("{key}={value}: use on or off")),
            };
            match key {
                "deflate-on-oom" => cfg.deflate_on_oom = on,
                "free-page-reporting" => cfg.free_page_reporting = on,
                _ => {
                    return Err(format!(
                        "unknown balloon option {key:?}: use deflate-on-oom, free-page-reporting \
                         or target"
                    ))
                }
            }
        }
        Ok(BalloonSpec(cfg, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balloon_options_parse() {
        let b: BalloonSpec = "".parse().unwrap();
        assert!(!b.0.deflate_on_oom && !b.0.free_page_reporting);
        let b: BalloonSpec = "deflate-on-oom=on,free-page-reporting".parse().unwrap();
        assert!(b.0.deflate_on_oom && b.0.free_page_reporting);
        assert!("inflate=on".parse::<BalloonSpec>().is_err());
        let b: BalloonSpec = "target=64M".parse().unwrap();
        assert_eq!(b.1, Some(MemorySize(64 << 20)));
        assert!("target=lots".parse::<BalloonSpec>().is_err());
        assert!("deflate-on-oom=maybe".parse::<BalloonSpec>().is_err());
    }
}
