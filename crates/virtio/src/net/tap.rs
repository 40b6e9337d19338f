//! Opening a TAP interface (`/dev/net/tun`) with virtio-net headers, and its offloads.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Size of `virtio_net_hdr_v1` (VERSION_1 always has `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;
const TUN_PATH: &str = "/dev/net/tun";

/// Why a TAP device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot open or create {TUN_PATH}: {0} (is the tun module loaded? are you root?)")]
    OpenTun(std::io::Error),
    #[error("cannot attach TAP interface `{name}`: {source}")]
    SetIff {
        name: String,
        source: std::io::Error,
    },
    #[error("TAP `{name}`: cannot set the virtio-net header size: {source}")]
    VnetHdr {
        name: String,
        source: std::io::Error,
    },
    #[error("interface name `{0}` is empty or longer than 15 bytes")]
    BadName(String),
}

/// Create `/dev/net/tun` (character device 10:200) if this host lacks the node.
fn ensure_tun_node() -> std::io::Result<()> {
    if Path::new(TUN_PATH).exists() {
        return Ok(());
    }
    std::fs::create_dir_all("/dev/net")?;
    let path = std::ffi::CString::new(TUN_PATH).map_err(std::io::Error::other)?;
    // SAFETY: `path` is a valid NUL-terminated string; mknod reads it and nothing else.
    let r = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(10, 200)) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn ioctl_int(fd: &OwnedFd, req: libc::Ioctl, value: libc::c_int) -> std::io::Result<()> {
    // SAFETY: the TUNSET* ioctls used here read one int from the pointer, which points to a
    // live local.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &value as *const libc::c_int) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Open (creating if needed) TAP interface `name`, non-blocking, with 12-byte vnet headers.
pub fn open_tap(name: &str) -> Result<OwnedFd, TapError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(TapError::BadName(name.into()));
    }
    ensure_tun_node().map_err(TapError::OpenTun)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(TapError::OpenTun)?;
    let fd = OwnedFd::from(file);
    let mut ifr_name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (d, s) in ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    let ifr = libc::ifreq {
        ifr_name,
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        },
    };
    // SAFETY: TUNSETIFF reads (and may update the name of) the ifreq, a live local.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &ifr as *const libc::ifreq) };
    if r < 0 {
        return Err(TapError::SetIff {
            name: name.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    ioctl_int(&fd, libc::TUNSETVNETHDRSZ, VNET_HDR_LEN as libc::c_int).map_err(|source| {
        TapError::VnetHdr {
            name: name.into(),
            source,
        }
    })?;
    Ok(fd)
}

/// Tell the TAP which offloaded packets the guest accepts (`TUN_F_*`).
pub fn set_offload(fd: &OwnedFd, flags: libc::c_uint) -> std::io::Result<()> {
    ioctl_int(fd, libc::TUNSETOFFLOAD, flags as libc::c_int)
}
