//! The JSON bodies of the REST API (see `openapi.json`, which documents exactly these).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};
use vmm::config::{
    BalloonConfig, DiskConfig, EngineChoice, MemorySize, NetConfig, SerialConfig, VirtioTransport,
    VsockConfig,
};

use crate::lifecycle::VmState;

/// Longest VM name accepted (names become file names in the state directory).
pub const MAX_NAME_LEN: usize = 64;

/// A VM definition: the fields of `wirt run`'s flags, plus a name. What `POST /v1/vms`
/// takes and what the state directory stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 64 characters, unique on this host.
    pub name: String,
    /// Kernel to boot (ELF vmlinux, bzImage or Multiboot), a path on the daemon's host.
    pub kernel: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default = "default_cpus")]
    pub cpus: u8,
    /// Guest RAM: bytes as a number, or a string such as `"512M"`.
    #[serde(
        default = "default_memory",
        deserialize_with = "memory_from_number_or_string"
    )]
    pub memory: MemorySize,
    #[serde(default)]
    pub engine: EngineChoice,
    /// virtio-blk disks, in order (/dev/vda, /dev/vdb, ...); paths on the daemon's host.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// virtio-net interfaces on TAP devices.
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// A virtio-vsock device whose host side is a Unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
    /// A virtio console (the guest's /dev/hvc0): `{"kind":"file","path":...}`,
    /// `{"kind":"socket","path":...}` or `{"kind":"null"}` (not `stdio`: a daemon has no
    /// terminal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtio_console: Option<SerialConfig>,
    /// A virtio-rng device.
    #[serde(default)]
    pub rng: bool,
    /// A virtio-balloon device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<BalloonConfig>,
    /// Memory the balloon takes from the guest at start (needs `balloon`), written like
    /// `memory`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_memory"
    )]
    pub balloon_target: Option<MemorySize>,
    /// How the virtio devices reach the guest: `mmio` or `pci`.
    #[serde(default, skip_serializing_if = "is_mmio")]
    pub virtio_transport: VirtioTransport,
    /// Edits of the CPU model, e.g. `["-x2apic", "+tsc-deadline"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_features: Vec<vmm::config::FeatureEdit>,
}

fn is_mmio(t: &VirtioTransport) -> bool {
    *t == VirtioTransport::Mmio
}

fn default_cpus() -> u8 {
    1
}

fn default_memory() -> MemorySize {
    MemorySize(512 << 20)
}

fn memory_from_number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<MemorySize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Bytes(u64),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::Bytes(b) => Ok(MemorySize(b)),
        Either::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn optional_memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MemorySize>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "memory_from_number_or_string")] MemorySize);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

/// Exit counts by reason and instructions executed (software engine), so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub exits: BTreeMap<String, u64>,
    pub instructions: u64,
    pub elapsed_ms: u64,
    /// Milliseconds from start until the guest said it was ready (its first write to the
    /// boot-timer port; the default guest writes it when its shell is up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_ms: Option<u64>,
}

impl From<&vmm::stats::VmStats> for Stats {
    fn from(s: &vmm::stats::VmStats) -> Self {
        Stats {
            exits: s
                .exits
                .iter()
                .map(|(r, n)| (r.name().to_string(), *n))
                .collect(),
            instructions: s.instructions,
            elapsed_ms: u64::try_from(s.elapsed.as_millis()).unwrap_or(u64::MAX),
            ready_ms: s
                .ready
                .map(|r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// The body of `PUT /v1/vms/{name}/balloon`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonTarget {
    /// Memory the balloon should hold (taken from the guest): bytes as a number, or a
    /// string such as `"64M"`; `0` gives all of it back. A multiple of 4 KiB, below the VM's
    /// memory.
    #[serde(deserialize_with = "memory_from_number_or_string")]
    pub target: MemorySize,
}

/// A running VM's balloon: what the host asked for, what the guest gave, and the guest's
/// own memory statistics (from the stats queue; the guest refreshes them on each request,
/// so they are one request old).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonInfo {
    /// Memory the host asked the guest to put in the balloon.
    pub target_bytes: u64,
    /// Memory the guest says the balloon holds now.
    pub actual_bytes: u64,
    /// 4 KiB pages the guest gave to the balloon so far (dropped from the host's memory).
    pub inflated_pages: u64,
    /// 4 KiB pages the guest took back from the balloon so far.
    pub deflated_pages: u64,
    /// 4 KiB pages the guest reported free (free page reporting; dropped from the host).
    pub reported_pages: u64,
    /// The guest's latest statistics by name (`free_memory`, `total_memory`,
    /// `available_memory`, ... in bytes; fault and swap counts as counts); tags this
    /// version does not know appear as `tag_N`.
    #[serde(default)]
    pub guest_stats: BTreeMap<String, u64>,
}

impl From<&virtio::balloon::BalloonState> for BalloonInfo {
    fn from(s: &virtio::balloon::BalloonState) -> Self {
        let bytes = |pages: u32| u64::from(pages) << 12;
        BalloonInfo {
            target_bytes: bytes(s.target_pages),
            actual_bytes: bytes(s.actual_pages),
            inflated_pages: s.inflated_pages,
            deflated_pages: s.deflated_pages,
            reported_pages: s.reported_pages,
            guest_stats: s
                .stats
                .iter()
                .map(|&(tag, v)| match virtio::balloon::stat_name(tag) {
                    Some(n) => (n.to_string(), v),
                    None => (format!("tag_{tag}"), v),
                })
                .collect(),
        }
    }
}

/// Everything the daemon knows about one VM (`GET /v1/vms/{name}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    pub name: String,
    pub state: VmState,
    /// Why the VM is `stopped` or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The status `wirt run` would have exited with for this outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    pub config: VmSpec,
    /// The engine the VM runs (or last ran) on: `kvm` or `sw`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    pub vcpus: u8,
    pub memory_bytes: u64,
    /// Milliseconds since start, while running or paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Live counters while running or paused; final counters once stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    /// The process id of the VM's `wirt vmm` process, while running or paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm_pid: Option<u32>,
    /// The balloon, while running or paused (VMs defined with a balloon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<BalloonInfo>,
}

/// One line of `GET /v1/events`: a VM changed state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub vm: String,
    /// The new state, or `deleted`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable, machine-readable: see [`crate::error::ApiError::code`].
    pub code: String,
    /// One line for a person.
    pub message: String,
}

/// Whether `name` is an acceptable VM name.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("web-1.test_a"));
        assert!(!valid_name(""));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(&"a".repeat(65)));
    }

    #[test]
    fn spec_accepts_memory_as_number_or_string_and_rejects_unknown_fields() {
        let s: VmSpec =
            serde_json::from_str(r#"{"name":"a","kernel":"/k","memory":"64M"}"#).unwrap();
        assert_eq!(s.memory, MemorySize(64 << 20));
        assert_eq!(s.cpus, 1);
        let s: VmSpec =
            serde_json::from_str(r#"{"name":"a","kernel":"/k","memory":4194304}"#).unwrap();
        assert_eq!(s.memory, MemorySize(4 << 20));
        assert!(
            serde_json::from_str::<VmSpec>(r#"{"name":"a","kernel":"/k","memory":"12Q"}"#).is_err()
        );
        assert!(
            serde_json::from_str::<VmSpec>(r#"{"name":"a","kernel":"/k","colour":1}"#).is_err()
        );
    }

    #[test]
    fn balloon_target_takes_a_size_and_balloon_figures_are_named() {
        let t: BalloonTarget = serde_json::from_str(r#"{"target":"64M"}"#).unwrap();
        assert_eq!(t.target, MemorySize(64 << 20));
        let t: BalloonTarget = serde_json::from_str(r#"{"target":0}"#).unwrap();
        assert_eq!(t.target, MemorySize(0));
        assert!(serde_json::from_str::<BalloonTarget>(r#"{"target":"lots"}"#).is_err());
        assert!(serde_json::from_str::<BalloonTarget>(r#"{"target":"1M","x":1}"#).is_err());
        assert!(serde_json::from_str::<BalloonTarget>("{}").is_err());

        let mut state = virtio::balloon::BalloonState::default();
        state.target_pages = 256;
        state.actual_pages = 10;
        state.inflated_pages = 10;
        state.stats = vec![(4, 1 << 20), (5, 2 << 20), (200, 7)];
        let b = BalloonInfo::from(&state);
        assert_eq!((b.target_bytes, b.actual_bytes), (1 << 20, 10 << 12));
        assert_eq!(b.inflated_pages, 10);
        assert_eq!(b.guest_stats["free_memory"], 1 << 20);
        assert_eq!(b.guest_stats["total_memory"], 2 << 20);
        assert_eq!(b.guest_stats["tag_200"], 7);
    }

    #[test]
    fn spec_devices_default_to_none_and_parse_in_the_virtio_shapes() {
        let s: VmSpec = serde_json::from_str(r#"{"name":"a","kernel":"/k"}"#).unwrap();
        assert!(s.disks.is_empty() && s.nets.is_empty() && !s.rng);
        assert_eq!(s.virtio_transport, VirtioTransport::Mmio);
        assert_eq!(s.virtio_console, None);
        assert!(serde_json::from_str::<VmSpec>(
            r#"{"name":"a","kernel":"/k","virtio_transport":"isa"}"#
        )
        .is_err());
        assert_eq!((s.vsock, s.balloon, s.balloon_target), (None, None, None));
        let s: VmSpec = serde_json::from_str(
            r#"{"name":"a","kernel":"/k","disks":[{"path":"/d.img","readonly":true}],
                "nets":[{"tap":"tap0","mac":[82,84,0,1,2,3]}],"vsock":{"cid":3,"socket":"/v"},
                "rng":true,"balloon":{"deflate_on_oom":true,"free_page_reporting":false},
                "balloon_target":"64M","virtio_console":{"kind":"file","path":"/h.log"},
                "virtio_transport":"pci"}"#,
        )
        .unwrap();
        assert_eq!(s.virtio_console, Some(SerialConfig::File("/h.log".into())));
        assert_eq!(s.virtio_transport, VirtioTransport::Pci);
        assert_eq!(s.disks[0].path, PathBuf::from("/d.img"));
        assert!(s.disks[0].readonly);
        assert_eq!(s.nets[0].tap, "tap0");
        assert_eq!(s.vsock.as_ref().map(|v| v.cid), Some(3));
        assert!(s.rng);
        assert!(s.balloon.is_some_and(|b| b.deflate_on_oom));
        assert_eq!(s.balloon_target, Some(MemorySize(64 << 20)));
        let back: VmSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let s: VmSpec = serde_json::from_str(
            r#"{"name":"a","kernel":"/k","vsock":null,"balloon":null,"balloon_target":null}"#,
        )
        .unwrap();
        assert_eq!((s.vsock, s.balloon, s.balloon_target), (None, None, None));
        assert!(serde_json::from_str::<VmSpec>(
            r#"{"name":"a","kernel":"/k","balloon_target":"lots"}"#
        )
        .is_err());
    }
}
