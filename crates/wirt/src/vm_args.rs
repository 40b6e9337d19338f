//! The flags `wirt run` and `wirt vm create` share: the machine (kernel, vCPUs, memory,
//! engine) and its virtio devices.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use vmm::config::{
    DiskConfig, EngineChoice, FeatureEdit, MemorySize, NetConfig, SerialConfig, VirtioTransport,
    VsockConfig,
};

use crate::run::BalloonSpec;

#[derive(Args, Debug)]
pub struct MachineArgs {
    /// Kernel to boot: ELF vmlinux (64-bit or PVH entry), bzImage or Multiboot v1.
    /// Default: the default guest's kernel (built into the cache if missing).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk (Linux) or first module (Multiboot).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Number of vCPUs (1-64).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub cpus: u8,
    /// Guest RAM, e.g. 512M or 2G.
    #[arg(long, default_value = "512M", value_name = "SIZE")]
    pub memory: MemorySize,
    /// Execution engine: auto (KVM when it can run the guest, else sw), kvm or sw.
    #[arg(long, default_value = "auto", value_name = "ENGINE")]
    pub engine: EngineChoice,
    /// Edit the CPU model: a comma-separated list of +FEATURE / -FEATURE with QEMU's
    /// feature names (e.g. -x2apic,-pcid). Every feature the engine implements is on by
    /// default; adding one it does not implement is an error.
    #[arg(long, value_name = "LIST", value_parser = parse_cpu_features, allow_hyphen_values = true)]
    pub cpu_features: Option<CpuFeatures>,
}

/// The parsed `--cpu-features` list (one clap value holding many edits).
#[derive(Clone, Debug)]
pub struct CpuFeatures(pub Vec<FeatureEdit>);

fn parse_cpu_features(s: &str) -> Result<CpuFeatures, String> {
    vmm::config::parse_cpu_features(s)
        .map(CpuFeatures)
        .map_err(|e| e.to_string())
}

/// Kernel, initrd and command line to boot.
pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
}

impl MachineArgs {
    /// The guest these flags name: the given kernel, or the default guest (found in the
    /// cache or built first), whose initrd and command line fill what was not given.
    pub fn guest(&self, verbose: bool) -> anyhow::Result<Guest> {
        match &self.kernel {
            Some(k) => Ok(Guest {
                kernel: k.clone(),
                initrd: self.initrd.clone(),
                cmdline: self.cmdline.clone().unwrap_or_default(),
            }),
            None => {
                let img = crate::image_cmd::ensure_default(verbose)
                    .context("cannot prepare the default guest image")?;
                Ok(Guest {
                    kernel: img.kernel,
                    initrd: self.initrd.clone().or(Some(img.initrd)),
                    cmdline: self.cmdline.clone().unwrap_or(img.cmdline),
                })
            }
        }
    }
}

#[derive(Args, Debug, Default)]
pub struct DeviceArgs {
    /// A virtio-blk disk: path=FILE[,readonly=on][,format=raw|qcow2][,serial=ID]
    /// [,direct=on] (direct: a raw image opened with O_DIRECT, bypassing the host's page
    /// cache). Repeat for more disks (/dev/vda, /dev/vdb, ...).
    #[arg(long, value_name = "SPEC")]
    pub disk: Vec<DiskConfig>,
    /// A virtio-net interface on a TAP device: tap=NAME[,mac=52:54:00:12:34:56]
    /// (the TAP is created if missing; needs CAP_NET_ADMIN).
    #[arg(long, value_name = "SPEC")]
    pub net: Vec<NetConfig>,
    /// A virtio-vsock device: cid=N,socket=PATH (host side: Firecracker-style Unix socket).
    #[arg(long, value_name = "SPEC")]
    pub vsock: Option<VsockConfig>,
    /// A virtio console, the guest's /dev/hvc0: null, file:PATH (output appended) or
    /// socket:PATH (a Unix socket; its client is the console, both directions).
    // Boxed: keeps the argument structs (and clippy's enum size check) small.
    #[arg(long, value_name = "BACKEND", value_parser = boxed_backend)]
    pub virtio_console: Option<Box<SerialConfig>>,
    /// A virtio-rng device (the guest's /dev/hwrng, fed by the host's getrandom).
    #[arg(long)]
    pub rng: bool,
    /// A virtio-balloon device; options: deflate-on-oom=on, free-page-reporting=on, and
    /// target=SIZE (memory the balloon takes from the guest at start, e.g. target=64M).
    #[arg(long, value_name = "SPEC", num_args = 0..=1, default_missing_value = "")]
    pub balloon: Option<BalloonSpec>,
    /// How the virtio devices reach the guest: mmio (virtio-mmio windows described in
    /// ACPI; the smallest boot path) or pci (virtio-pci functions behind a PCI host bridge,
    /// MSI-X where the engine delivers MSIs, INTx otherwise; what stock distribution
    /// kernels expect).
    #[arg(long, default_value = "mmio", value_name = "mmio|pci")]
    pub virtio_transport: VirtioTransport,
    /// QEMU's pc-testdev, for kvm-unit-tests: scratch ports 0xe0.., IRQ-line ports
    /// 0x2000.. and scratch RAM at MMIO 0xff000000. Test guests only.
    #[arg(long)]
    pub test_device: bool,
}

/// Parses the virtio console's backend (see `DeviceArgs::virtio_console`).
fn boxed_backend(s: &str) -> Result<Box<SerialConfig>, String> {
    match s.parse::<SerialConfig>() {
        Ok(SerialConfig::Stdio) | Err(_) => {
            Err("use null, file:PATH or socket:PATH (stdio belongs to the serial console)".into())
        }
        Ok(backend) => Ok(Box::new(backend)),
    }
}
