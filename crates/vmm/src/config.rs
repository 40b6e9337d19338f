//! The description of one VM: what `wirt run`'s flags and (later) the API's create request
//! both turn into. Validation happens here, before any resource is allocated.

pub use arch::cpuid::{parse_edits as parse_cpu_features, FeatureEdit};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
pub use virtio::balloon::BalloonConfig;
pub use virtio::config::{DiskConfig, DiskFormat, NetConfig, VsockConfig};

/// Smallest guest RAM wirt accepts.
pub const MIN_MEMORY: u64 = 16 << 20;
/// Largest guest RAM wirt accepts (a sanity bound, not a platform limit).
pub const MAX_MEMORY: u64 = 1 << 40;
/// Most vCPUs per VM (the MP table, MADT and APIC IDs fit in a byte).
pub const MAX_CPUS: u8 = 64;

/// Which engine to run the guest on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// KVM where it can run the guest (hardware VMX/SVM), the software engine otherwise.
    #[default]
    Auto,
    Kvm,
    Sw,
}

impl FromStr for EngineChoice {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(EngineChoice::Auto),
            "kvm" => Ok(EngineChoice::Kvm),
            "sw" => Ok(EngineChoice::Sw),
            _ => Err(ConfigError::Engine(s.to_string())),
        }
    }
}

/// How virtio devices are attached to the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtioTransport {
    /// virtio-mmio windows described in the ACPI DSDT (the smallest boot path).
    #[default]
    Mmio,
    /// virtio-pci (modern) functions behind a PCI host bridge, with MSI-X where the engine
    /// delivers MSIs and INTx otherwise: what stock distribution kernels look for.
    Pci,
}

impl FromStr for VirtioTransport {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mmio" => Ok(VirtioTransport::Mmio),
            "pci" => Ok(VirtioTransport::Pci),
            _ => Err(ConfigError::VirtioTransport(s.to_string())),
        }
    }
}

/// Where the guest's serial console (COM1) goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "path")]
pub enum SerialConfig {
    /// The terminal wirt runs in: output to stdout, input from stdin.
    #[default]
    Stdio,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// A Unix socket wirt listens on; one client at a time is the console.
    Socket(PathBuf),
    /// Output discarded; no input.
    Null,
}

impl FromStr for SerialConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::Serial(s.to_string());
        match s.split_once(':') {
            None if s == "stdio" => Ok(SerialConfig::Stdio),
            None if s == "null" => Ok(SerialConfig::Null),
            Some(("file", p)) if !p.is_empty() => Ok(SerialConfig::File(p.into())),
            Some(("socket", p)) if !p.is_empty() => Ok(SerialConfig::Socket(p.into())),
            _ => Err(bad()),
        }
    }
}

/// A memory size as a user writes it: `512M`, `2G`, `1048576` (bytes), `64K`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemorySize(pub u64);

impl FromStr for MemorySize {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::MemorySyntax(s.to_string());
        let t = s.trim();
        let (digits, shift) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let shift = match c.to_ascii_uppercase() {
                    'K' => 10,
                    'M' => 20,
                    'G' => 30,
                    'T' => 40,
                    _ => return Err(bad()),
                };
                (&t[..i], shift)
            }
            _ => (t, 0),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        n.checked_mul(1u64 << shift).map(MemorySize).ok_or_else(bad)
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b.is_multiple_of(1 << 30) {
            write!(f, "{}G", b >> 30)
        } else if b.is_multiple_of(1 << 20) {
            write!(f, "{}M", b >> 20)
        } else {
            write!(f, "{b}")
        }
    }
}

/// Everything needed to start one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub kernel: PathBuf,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default = "default_cpus")]
    pub cpus: u8,
    #[serde(default = "default_memory")]
    pub memory: MemorySize,
    #[serde(default)]
    pub engine: EngineChoice,
    #[serde(default)]
    pub serial: SerialConfig,
    /// virtio-blk disks, in order (/dev/vda, /dev/vdb, ...).
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// virtio-net interfaces with TAP back ends.
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// A virtio-vsock device whose host side is a Unix socket.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// A virtio-console device (the guest's /dev/hvc0) and where its host side goes:
    /// null, file:PATH or socket:PATH (stdio belongs to the serial console).
    #[serde(default)]
    pub virtio_console: Option<SerialConfig>,
    /// A virtio-rng device fed by the host's getrandom.
    #[serde(default)]
    pub rng: bool,
    /// A virtio-balloon device.
    #[serde(default)]
    pub balloon: Option<BalloonConfig>,
    /// How much memory the balloon takes from the guest at start (needs `balloon`).
    #[serde(default)]
    pub balloon_target: Option<MemorySize>,
    /// How the virtio devices are attached (virtio-mmio or virtio-pci).
    #[serde(default)]
    pub virtio_transport: VirtioTransport,
    /// Edits of the CPU model (`"+x2apic"`, `"-pcid"`): a feature the engine offers is
    /// on unless removed; adding one it cannot offer is refused when the VM starts.
    #[serde(default)]
    pub cpu_features: Vec<FeatureEdit>,
    /// QEMU's `pc-testdev` (scratch ports at 0xe0, IRQ-line ports at 0x2000, MMIO scratch
    /// RAM at 0xff000000), for kvm-unit-tests; never part of a normal machine.
    #[serde(default)]
    pub test_device: bool,
}

/// At most this many virtio devices: one free ISA interrupt line each.
pub const MAX_VIRTIO_DEVICES: usize = 7;

fn default_cpus() -> u8 {
    1
}

fn default_memory() -> MemorySize {
    MemorySize(512 << 20)
}

impl VmConfig {
    pub fn new(kernel: PathBuf) -> Self {
        VmConfig {
            kernel,
            initrd: None,
            cmdline: String::new(),
            cpus: default_cpus(),
            memory: default_memory(),
            engine: EngineChoice::Auto,
            serial: SerialConfig::Stdio,
            disks: Vec::new(),
            nets: Vec::new(),
            vsock: None,
            virtio_console: None,
            rng: false,
            balloon: None,
            balloon_target: None,
            virtio_transport: VirtioTransport::Mmio,
            cpu_features: Vec::new(),
            test_device: false,
        }
    }

    /// How many virtio devices this VM has.
    pub fn virtio_device_count(&self) -> usize {
        self.disks.len()
            + self.nets.len()
            + usize::from(self.vsock.is_some())
            + usize::from(self.virtio_console.is_some())
            + usize::from(self.rng)
            + usize::from(self.balloon.is_some())
    }

    /// Checks everything that can be checked without allocating anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(ConfigError::Cpus(self.cpus));
        }
        if self.memory.0 < MIN_MEMORY {
            return Err(ConfigError::MemoryTooSmall(self.memory));
        }
        if self.memory.0 > MAX_MEMORY {
            return Err(ConfigError::MemoryTooLarge(self.memory));
        }
        if !self.memory.0.is_multiple_of(4096) {
            return Err(ConfigError::MemoryAlignment(self.memory));
        }
        check_readable(&self.kernel, "kernel")?;
        for d in &self.disks {
            check_readable(&d.path, "disk image")?;
            if d.direct && d.format != DiskFormat::Raw {
                return Err(ConfigError::DirectNeedsRaw(d.path.clone()));
            }
        }
        if let Some(t) = self.balloon_target {
            if self.balloon.is_none() {
                return Err(ConfigError::BalloonTargetWithoutBalloon);
            }
            if t.0 >= self.memory.0 {
                return Err(ConfigError::BalloonTargetTooLarge(t, self.memory));
            }
        }
        if self.virtio_console == Some(SerialConfig::Stdio) {
            return Err(ConfigError::VirtioConsoleStdio);
        }
        let n = self.virtio_device_count();
        if n > MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDevices(n));
        }
        if let Some(initrd) = &self.initrd {
            check_readable(initrd, "initrd")?;
        }
        Ok(())
    }
}

fn check_readable(path: &std::path::Path, what: &'static str) -> Result<(), ConfigError> {
    match std::fs::File::open(path) {
        Ok(f) => match f.metadata() {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(ConfigError::NotAFile {
                what,
                path: path.into(),
            }),
            Err(e) => Err(ConfigError::Unreadable {
                what,
                path: path.into(),
                source: e,
            }),
        },
        Err(e) => Err(ConfigError::Unreadable {
            what,
            path: path.into(),
            source: e,
        }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown engine {0:?}: use auto, kvm or sw")]
    Engine(String),
    #[error("unknown virtio transport {0:?}: use mmio or pci")]
    VirtioTransport(String),
    #[error("bad serial backend {0:?}: use stdio, null, file:PATH or socket:PATH")]
    Serial(String),
    #[error("bad memory size {0:?}: use a number with an optional K, M, G or T suffix, e.g. 512M")]
    MemorySyntax(String),
    #[error("memory {0} is too small: a guest needs at least 16M")]
    MemoryTooSmall(MemorySize),
    #[error("memory {0} is too large: wirt accepts at most 1T")]
    MemoryTooLarge(MemorySize),
    #[error("memory {0} is not a multiple of 4K")]
    MemoryAlignment(MemorySize),
    #[error("{0} virtio devices requested: wirt supports at most 7 per VM")]
    TooManyDevices(usize),
    #[error("disk {}: direct=on (O_DIRECT) is for raw images", .0.display())]
    DirectNeedsRaw(PathBuf),
    #[error("a balloon target needs a balloon device")]
    BalloonTargetWithoutBalloon,
    #[error("the virtio console cannot use stdio (the serial console does): use null, file:PATH or socket:PATH")]
    VirtioConsoleStdio,
    #[error("balloon target {0} must be less than the guest's memory {1}")]
    BalloonTargetTooLarge(MemorySize, MemorySize),
    #[error("{0} vCPUs requested: use 1 to 64")]
    Cpus(u8),
    #[error("cannot read {what} {}: {source}", path.display())]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {} is not a regular file", path.display())]
    NotAFile { what: &'static str, path: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse() {
        assert_eq!("512M".parse::<MemorySize>().unwrap().0, 512 << 20);
        assert_eq!("2g".parse::<MemorySize>().unwrap().0, 2 << 30);
        assert_eq!("4096".parse::<MemorySize>().unwrap().0, 4096);
        assert_eq!("64K".parse::<MemorySize>().unwrap().0, 64 << 10);
        assert!("12Q".parse::<MemorySize>().is_err());
        assert!("M".parse::<MemorySize>().is_err());
        assert!("99999999999T".parse::<MemorySize>().is_err());
        assert_eq!(MemorySize(512 << 20).to_string(), "512M");
    }

    #[test]
    fn virtio_transport_parses_and_defaults_to_mmio() {
        assert_eq!(
            "pci".parse::<VirtioTransport>().unwrap(),
            VirtioTransport::Pci
        );
        assert_eq!(
            "mmio".parse::<VirtioTransport>().unwrap(),
            VirtioTransport::Mmio
        );
        let e = "isa".parse::<VirtioTransport>().unwrap_err().to_string();
        assert!(e.contains("use mmio or pci"), "{e}");
        assert_eq!(VirtioTransport::default(), VirtioTransport::Mmio);
        assert_eq!(
            VmConfig::new("/k".into()).virtio_transport,
            VirtioTransport::Mmio
        );
    }

    #[test]
    fn serial_parses() {
        assert_eq!(
            "stdio".parse::<SerialConfig>().unwrap(),
            SerialConfig::Stdio
        );
        assert_eq!(
            "file:/tmp/x".parse::<SerialConfig>().unwrap(),
            SerialConfig::File("/tmp/x".into())
        );
        assert!("file:".parse::<SerialConfig>().is_err());
        assert!("tcp:1".parse::<SerialConfig>().is_err());
    }

    #[test]
    fn validation_rejects_bad_values() {
        let kernel = std::env::current_exe().unwrap();
        let mut c = VmConfig::new(kernel);
        assert!(c.validate().is_ok());
        c.memory = MemorySize(1 << 20);
        assert!(matches!(c.validate(), Err(ConfigError::MemoryTooSmall(_))));
        c.memory = MemorySize(2 << 40);
        assert!(matches!(c.validate(), Err(ConfigError::MemoryTooLarge(_))));
        c.memory = MemorySize(64 << 20);
        c.cpus = 0;
        assert!(matches!(c.validate(), Err(ConfigError::Cpus(0))));
        c.cpus = 1;
        c.kernel = "/nonexistent/vmlinux".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("cannot read kernel /nonexistent/vmlinux"), "{e}");
        c.kernel = "/".into();
        assert!(matches!(c.validate(), Err(ConfigError::NotAFile { .. })));
        c.kernel = std::env::current_exe().unwrap();
        c.disks.push("path=/nonexistent/disk.img".parse().unwrap());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("cannot read disk image /nonexistent/disk.img"),
            "{e}"
        );
        c.disks.clear();
        c.rng = true;
        c.nets = (0..7)
            .map(|i| format!("tap=t{i}").parse().unwrap())
            .collect();
        assert!(matches!(c.validate(), Err(ConfigError::TooManyDevices(8))));
    }

    #[test]
    fn the_virtio_console_cannot_take_stdio() {
        let mut c = VmConfig::new(std::env::current_exe().unwrap());
        c.virtio_console = Some(SerialConfig::Stdio);
        assert!(matches!(c.validate(), Err(ConfigError::VirtioConsoleStdio)));
        c.virtio_console = Some("file:/tmp/hvc0.log".parse().unwrap());
        assert!(c.validate().is_ok());
        assert_eq!(c.virtio_device_count(), 1);
    }
}
