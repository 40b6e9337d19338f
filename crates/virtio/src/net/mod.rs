//! virtio-net with a TAP back end.
//!
//! Frames cross the TAP fd with the 12-byte virtio-net header in front, exactly as they
//! cross the virtqueues, so checksum and segmentation offloads pass straight through: the
//! guest's accepted GUEST_* features become the TAP's `TUNSETOFFLOAD` flags. The back end
//! is any packet fd (a TAP, or a socketpair in tests); received frames wait in the fd until
//! the guest has posted receive buffers.

pub mod tap;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::*;

use crate::chain::{ChainReader, ChainWriter, DescChain};
use crate::config::{MacAddr, NetConfig};
use crate::device::{read_config_bytes, DeviceContext, DeviceError, DeviceEvent, VirtioDevice};
use crate::net::tap::{open_tap, set_offload, TapError, VNET_HDR_LEN};

pub const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
/// Largest frame with header: 64 KiB of GSO payload plus Ethernet and vnet headers.
pub const MAX_FRAME: usize = 65562 + VNET_HDR_LEN;

/// A virtio-net device.
#[derive(Debug)]
pub struct Net {
    fd: OwnedFd,
    mac: MacAddr,
    tap: bool,
    /// A frame read from the fd that is waiting for a receive buffer.
    pending: Option<Vec<u8>>,
    buf: Vec<u8>,
}

fn random_mac() -> MacAddr {
    let mut b = [0u8; 3];
    // SAFETY: the pointer and length describe `b`, a live local array.
    let _ = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    MacAddr([0x52, 0x54, 0x00, b[0], b[1], b[2]])
}

impl Net {
    /// Open the TAP named in `cfg` (created if missing).
    pub fn new(cfg: &NetConfig) -> Result<Self, TapError> {
        let fd = open_tap(&cfg.tap)?;
        Ok(Self::from_fd(fd, cfg.mac.unwrap_or_else(random_mac), true))
    }

    /// A device on an already open packet fd carrying vnet-header-prefixed frames. With
    /// `tap = false` no offloads are offered (the peer cannot handle them).
    pub fn from_fd(fd: OwnedFd, mac: MacAddr, tap: bool) -> Self {
        // SAFETY: F_GETFL/F_SETFL on an fd we own; no pointers.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
        Net {
            fd,
            mac,
            tap,
            pending: None,
            buf: vec![0u8; MAX_FRAME],
        }
    }

    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    fn read_frame(&mut self) -> Option<Vec<u8>> {
        // SAFETY: reads at most `buf.len()` bytes into `buf`, a live, writable Vec.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
            )
        };
        if n <= 0 {
            return None; // EAGAIN, EOF or an error: nothing to deliver now.
        }
        let mut frame = self.buf[..n as usize].to_vec();
        if frame.len() >= VNET_HDR_LEN {
            // num_buffers = 1 (no MRG_RXBUF); the TAP leaves these bytes alone.
            frame[10..12].copy_from_slice(&1u16.to_le_bytes());
        }
        Some(frame)
    }

    fn receive(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        loop {
            let frame = match self.pending.take() {
                Some(f) => f,
                None => match self.read_frame() {
                    Some(f) => f,
                    None => return Ok(()),
                },
            };
            let Some(head) = ctx.pop(RX)? else {
                self.pending = Some(frame);
                return Ok(());
            };
            let (table, size) = ctx.table(RX);
            let mut len = 0;
            if let Ok(chain) = DescChain::walk(ctx.ram, table, size, head) {
                let mut w = ChainWriter::new(ctx.ram, &chain.writable);
                // A frame that does not fit is dropped, not truncated.
                if w.remaining() >= frame.len() as u64 && w.write(&frame).is_ok() {
                    len = w.written() as u32;
                }
            }
            ctx.complete(RX, head, len)?;
        }
    }

    fn transmit(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let fd = self.fd.as_raw_fd();
        let buf = &mut self.buf;
        ctx.for_each_chain(TX, |ram, chain| {
            let Ok(chain) = chain else { return 0 };
            let total = chain.readable_len();
            if total < VNET_HDR_LEN as u64 || total > buf.len() as u64 {
                return 0;
            }
            let mut r = ChainReader::new(ram, &chain.readable);
            if r.read(&mut buf[..total as usize]) != Ok(total as usize) {
                return 0;
            }
            // SAFETY: writes `total` initialized bytes from `buf` to an fd we own.
            let n = unsafe { libc::write(fd, buf.as_ptr().cast(), total as usize) };
            if n < 0 {
                tracing::debug!(
                    "virtio-net: tx dropped: {}",
                    std::io::Error::last_os_error()
                );
            }
            0
        })
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = 1 << VIRTIO_NET_F_MAC | 1 << VIRTIO_NET_F_STATUS;
        if self.tap {
            f |= 1 << VIRTIO_NET_F_CSUM
                | 1 << VIRTIO_NET_F_GUEST_CSUM
                | 1 << VIRTIO_NET_F_GUEST_TSO4
                | 1 << VIRTIO_NET_F_GUEST_TSO6
                | 1 << VIRTIO_NET_F_HOST_TSO4
                | 1 << VIRTIO_NET_F_HOST_TSO6;
        }
        f
    }

    fn config_len(&self) -> usize {
        8
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut c = [0u8; 8];
        c[..6].copy_from_slice(&self.mac.0);
        c[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        read_config_bytes(&c, offset, data);
    }

    fn activate(&mut self, features: u64) {
        if !self.tap {
            return;
        }
        let has = |bit: u32| features & 1 << bit != 0;
        let mut flags = 0;
        if has(VIRTIO_NET_F_GUEST_CSUM) {
            flags |= libc::TUN_F_CSUM;
            if has(VIRTIO_NET_F_GUEST_TSO4) {
                flags |= libc::TUN_F_TSO4;
            }
            if has(VIRTIO_NET_F_GUEST_TSO6) {
                flags |= libc::TUN_F_TSO6;
            }
        }
        if let Err(e) = set_offload(&self.fd, flags) {
            tracing::warn!("virtio-net: TUNSETOFFLOAD {flags:#x} failed: {e}");
        }
    }

    fn reset(&mut self) {
        self.pending = None;
    }

    fn handle(
        &mut self,
        event: DeviceEvent,
        ctx: &mut DeviceContext<'_>,
    ) -> Result<(), DeviceError> {
        match event {
            DeviceEvent::Queue(TX) => self.transmit(ctx),
            DeviceEvent::Queue(RX) | DeviceEvent::Extra(0) => self.receive(ctx),
            _ => Ok(()),
        }
    }

    fn extra_fds(&self) -> Vec<RawFd> {
        vec![self.fd.as_raw_fd()]
    }
}

#[cfg(test)]
mod tests;
