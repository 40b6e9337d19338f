//! The virtio device flags `wirt run` and `wirt vm create` share.

use clap::Args;
use vmm::config::{DiskConfig, NetConfig, VsockConfig};

use crate::run::BalloonSpec;

#[derive(Args, Debug, Default)]
pub struct DeviceArgs {
    /// A virtio-blk disk: path=FILE[,readonly=on][,format=raw|qcow2][,serial=ID].
    /// Repeat for more disks (/dev/vda, /dev/vdb, ...).
    #[arg(long, value_name = "SPEC")]
    pub disk: Vec<DiskConfig>,
    /// A virtio-net interface on a TAP device: tap=NAME[,mac=52:54:00:12:34:56]
    /// (the TAP is created if missing; needs CAP_NET_ADMIN).
    #[arg(long, value_name = "SPEC")]
    pub net: Vec<NetConfig>,
    /// A virtio-vsock device: cid=N,socket=PATH (host side: Firecracker-style Unix socket).
    #[arg(long, value_name = "SPEC")]
    pub vsock: Option<VsockConfig>,
    /// A virtio-rng device (the guest's /dev/hwrng, fed by the host's getrandom).
    #[arg(long)]
    pub rng: bool,
    /// A virtio-balloon device; options: deflate-on-oom=on, free-page-reporting=on, and
    /// target=SIZE (memory the balloon takes from the guest at start, e.g. target=64M).
    #[arg(long, value_name = "SPEC", num_args = 0..=1, default_missing_value = "")]
    pub balloon: Option<BalloonSpec>,
}
