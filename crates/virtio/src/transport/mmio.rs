//! The virtio-mmio transport, version 2 ("modern"), as a [`BusDevice`] on the MMIO bus.
//!
//! The register file is accessed on vCPU threads; the device back end runs on the event-loop
//! thread. The two meet in [`VirtioCore`] behind a mutex. A QueueNotify write does nothing but
//! signal the queue's kick [`EventFd`] — the same fd the VMM may register with KVM as an
//! ioeventfd, so on KVM the write never even reaches this code — and the event loop does the
//! work. A queue that turns out to be broken sets DEVICE_NEEDS_RESET instead of failing the
//! process.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use devices::legacy::bus::BusDevice;
use devices::InterruptSink;
use virtio_bindings::virtio_config::{VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::device::VirtioDevice;
use crate::guest_ram::GuestRam;
use crate::interrupt::VirtioInterrupt;
use crate::transport::core::{lock_core, VirtioCore};
use crate::transport::state::MmioState;

/// Size of a virtio-mmio register window.
pub const MMIO_WINDOW_SIZE: u64 = 0x200;
/// "virt" in little endian.
const MAGIC: u32 = 0x7472_6976;
/// The vendor ID wirt reports: "WIRT".
pub const VENDOR_ID: u32 = 0x5452_4957;

/// The `virtio_mmio.device=` kernel parameter announcing a device (needs a guest kernel with
/// `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`; otherwise announce it in the DSDT with
/// `arch::acpi::DsdtDevice::virtio_mmio(index, base, MMIO_WINDOW_SIZE, gsi)`).
pub fn mmio_cmdline_arg(base: u64, len: u64, gsi: u32) -> String {
    format!("virtio_mmio.device={len}@{base:#x}:{gsi}")
}

/// Why a transport could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("device offers {0} queues, more than 64")]
    TooManyQueues(usize),
    #[error("queue {index}: invalid maximum size {size} (must be a power of two <= 32768)")]
    BadQueueSize { index: usize, size: u16 },
    #[error("cannot create a kick eventfd: {0}")]
    EventFd(std::io::Error),
}

impl VirtioCore {
    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset as u32 {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => 2,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            VIRTIO_MMIO_QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready().into()),
            VIRTIO_MMIO_INTERRUPT_STATUS => 0, // answered by the transport, without this lock
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            VIRTIO_MMIO_QUEUE_DESC_LOW => {
                self.selected_queue().map_or(0, |q| q.desc_table() as u32)
            }
            VIRTIO_MMIO_QUEUE_DESC_HIGH => self
                .selected_queue()
                .map_or(0, |q| (q.desc_table() >> 32) as u32),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => {
                self.selected_queue().map_or(0, |q| q.avail_ring() as u32)
            }
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => self
                .selected_queue()
                .map_or(0, |q| (q.avail_ring() >> 32) as u32),
            VIRTIO_MMIO_QUEUE_USED_LOW => self.selected_queue().map_or(0, |q| q.used_ring() as u32),
            VIRTIO_MMIO_QUEUE_USED_HIGH => self
                .selected_queue()
                .map_or(0, |q| (q.used_ring() >> 32) as u32),
            // Shared memory regions: none (length all ones means "absent").
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            VIRTIO_MMIO_SHM_BASE_LOW | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            _ => 0,
        }
    }

    fn queue_writable(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        let configuring = self.queue_writable();
        match offset as u32 {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES => {
                if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
                    match self.driver_features_sel {
                        0 => {
                            self.driver_features =
                                self.driver_features & !0xffff_ffff | u64::from(v)
                        }
                        1 => {
                            self.driver_features =
                                self.driver_features & 0xffff_ffff | u64::from(v) << 32
                        }
                        _ => {}
                    }
                }
            }
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = v,
            VIRTIO_MMIO_STATUS => self.set_status(v),
            reg => {
                let Some(q) = self.selected_queue() else {
                    return;
                };
                if !configuring || q.ready() && reg != VIRTIO_MMIO_QUEUE_READY {
                    return;
                }
                let (lo, hi) = (Some(v), None);
                let (lo_h, hi_h) = (None, Some(v));
                match reg {
                    VIRTIO_MMIO_QUEUE_NUM => q.set_size(v as u16),
                    VIRTIO_MMIO_QUEUE_READY => q.set_ready(v == 1),
                    VIRTIO_MMIO_QUEUE_DESC_LOW => q.set_desc_table_address(lo, hi),
                    VIRTIO_MMIO_QUEUE_DESC_HIGH => q.set_desc_table_address(lo_h, hi_h),
                    VIRTIO_MMIO_QUEUE_AVAIL_LOW => q.set_avail_ring_address(lo, hi),
                    VIRTIO_MMIO_QUEUE_AVAIL_HIGH => q.set_avail_ring_address(lo_h, hi_h),
                    VIRTIO_MMIO_QUEUE_USED_LOW => q.set_used_ring_address(lo, hi),
                    VIRTIO_MMIO_QUEUE_USED_HIGH => q.set_used_ring_address(lo_h, hi_h),
                    _ => {}
                }
            }
        }
    }
}

/// The queues and kick eventfds for a device with queues of `sizes`.
pub(crate) fn build_queues(sizes: &[u16]) -> Result<(Vec<Queue>, Vec<EventFd>), TransportError> {
    if sizes.len() > 64 {
        return Err(TransportError::TooManyQueues(sizes.len()));
    }
    let mut queues = Vec::with_capacity(sizes.len());
    let mut kicks = Vec::with_capacity(sizes.len());
    for (index, &size) in sizes.iter().enumerate() {
        queues.push(Queue::new(size).map_err(|_| TransportError::BadQueueSize { index, size })?);
        kicks.push(EventFd::new(EFD_NONBLOCK).map_err(TransportError::EventFd)?);
    }
    Ok((queues, kicks))
}

/// A virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    core: Arc<Mutex<VirtioCore>>,
    kicks: Arc<Vec<EventFd>>,
    interrupt: Arc<VirtioInterrupt>,
}

impl MmioTransport {
    /// Wrap `device`; its interrupt goes to `gsi` on `sink`, its writes to guest memory are
    /// reported through `ram`'s notifier.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        ram: GuestRam,
        sink: Arc<dyn InterruptSink>,
        gsi: u32,
    ) -> Result<Self, TransportError> {
        let (queues, kicks) = build_queues(&device.queue_max_sizes())?;
        let interrupt = Arc::new(VirtioInterrupt::new(sink, gsi));
        let kicks = Arc::new(kicks);
        let core = VirtioCore::new(device, queues, kicks.clone(), ram, interrupt.clone());
        Ok(MmioTransport {
            core: Arc::new(Mutex::new(core)),
            kicks,
            interrupt,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, VirtioCore> {
        lock_core(&self.core)
    }

    /// The kick eventfd of each queue, by queue index. Register them with KVM as ioeventfds
    /// on `base + 0x50` (4 bytes, datamatch = queue index) to bypass the vCPU exit.
    pub fn queue_kicks(&self) -> Vec<RawFd> {
        self.kicks.iter().map(|e| e.as_raw_fd()).collect()
    }

    /// Offset of the QueueNotify register (for ioeventfd registration).
    pub const QUEUE_NOTIFY_OFFSET: u64 = VIRTIO_MMIO_QUEUE_NOTIFY as u64;

    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    /// The device's status register.
    pub fn status(&self) -> u32 {
        self.lock().status
    }

    /// Snapshot of the register file and queues.
    pub fn state(&self) -> MmioState {
        MmioState {
            core: self.lock().state(),
            interrupt_status: self.interrupt.status(),
        }
    }

    /// Resume from a snapshot taken of the same kind of device.
    pub fn restore(&self, state: &MmioState) {
        self.lock().restore(&state.core);
        self.interrupt.restore(state.interrupt_status);
    }
}

impl crate::transport::VirtioTransport for MmioTransport {
    fn shared(&self) -> (Arc<Mutex<VirtioCore>>, Arc<Vec<EventFd>>) {
        (self.core.clone(), self.kicks.clone())
    }
}

impl BusDevice for MmioTransport {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let config_base = u64::from(VIRTIO_MMIO_CONFIG);
        if offset >= config_base {
            let core = self.lock();
            core.device.read_config(offset - config_base, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        let v = if offset == u64::from(VIRTIO_MMIO_INTERRUPT_STATUS) {
            self.interrupt.status()
        } else {
            self.lock().read_reg(offset)
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let config_base = u64::from(VIRTIO_MMIO_CONFIG);
        if offset >= config_base {
            self.lock().device.write_config(offset - config_base, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            return;
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        if offset == u64::from(VIRTIO_MMIO_INTERRUPT_ACK) {
            // Like InterruptStatus reads, never waits for a device busy on the event loop.
            self.interrupt.ack(v);
            return;
        }
        if offset == u64::from(VIRTIO_MMIO_QUEUE_NOTIFY) {
            // Only signal: the device runs on the event loop, never on this vCPU thread.
            if let Some(kick) = self.kicks.get(v as usize) {
                if let Err(e) = kick.write(1) {
                    tracing::warn!("virtio-mmio: kick eventfd write failed: {e}");
                }
            }
            return;
        }
        self.lock().write_reg(offset, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::test_driver::{w, TestDriver, GSI};
    use std::sync::atomic::Ordering;
    use virtio_bindings::virtio_config::*;

    #[test]
    fn cmdline_announcement() {
        assert_eq!(
            mmio_cmdline_arg(0xd000_0000, MMIO_WINDOW_SIZE, 5),
            "virtio_mmio.device=512@0xd0000000:5"
        );
    }

    #[test]
    fn event_idx_is_not_offered_while_avail_event_is_not_published() {
        let d = TestDriver::new(Box::new(Rng::new()));
        let event_idx = virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
        assert_eq!(d.device_features() & 1 << event_idx, 0);
    }

    #[test]
    fn feature_negotiation_rejects_unoffered_features() {
        let d = TestDriver::new(Box::new(Rng::new()));
        assert_eq!(d.read32(VIRTIO_MMIO_VENDOR_ID), VENDOR_ID);
        let offered = d.device_features();
        assert_ne!(offered & 1 << VIRTIO_F_VERSION_1, 0);
        let base = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
        for bad in [1u64 << 50 | 1 << VIRTIO_F_VERSION_1, 0] {
            d.write32(VIRTIO_MMIO_STATUS, 0);
            d.write32(VIRTIO_MMIO_STATUS, base);
            for sel in 0..2 {
                d.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
                d.write32(VIRTIO_MMIO_DRIVER_FEATURES, (bad >> (32 * sel)) as u32);
            }
            d.write32(VIRTIO_MMIO_STATUS, base | VIRTIO_CONFIG_S_FEATURES_OK);
            assert_eq!(
                d.read32(VIRTIO_MMIO_STATUS),
                base,
                "features {bad:#x} refused"
            );
        }
        // Queues that do not exist report size 0; odd-sized register reads give 0.
        d.write32(VIRTIO_MMIO_QUEUE_SEL, 3);
        assert_eq!(d.read32(VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
        let mut b = [0xffu8; 2];
        devices::legacy::bus::BusDevice::read(&*d.transport, 0, &mut b);
        assert_eq!(b, [0, 0]);
    }

    #[test]
    fn reset_clears_interrupt_and_queues() {
        let mut d = TestDriver::new(Box::new(Rng::new()));
        d.init(0, 1, 8);
        let buf = d.alloc(8);
        d.add_chain(0, &[w(buf, 8)]);
        d.kick(0);
        d.wait_used(0).unwrap();
        let t0 = std::time::Instant::now();
        while !d.sink.level.load(Ordering::SeqCst) {
            assert!(t0.elapsed().as_secs() < 5);
        }
        assert_eq!(
            d.read32(VIRTIO_MMIO_INTERRUPT_STATUS),
            VIRTIO_MMIO_INT_VRING
        );
        d.write32(VIRTIO_MMIO_STATUS, 0);
        assert!(
            !d.sink.level.load(Ordering::SeqCst),
            "reset lowers the line"
        );
        assert_eq!(d.read32(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        assert_eq!(d.read32(VIRTIO_MMIO_STATUS), 0);
        d.write32(VIRTIO_MMIO_QUEUE_SEL, 0);
        assert_eq!(d.read32(VIRTIO_MMIO_QUEUE_READY), 0);
        // And it comes back up.
        d.init(0, 1, 8);
        assert_eq!(d.request(0, &[w(buf, 8)]), 8);
    }

    #[test]
    fn snapshot_round_trips() {
        let mut d = TestDriver::new(Box::new(Rng::new()));
        d.init(0, 1, 8);
        let buf = d.alloc(8);
        d.request(0, &[w(buf, 8)]);
        d.request(0, &[w(buf, 8)]);
        let state = d.transport.state();
        assert_eq!(state.core.queues[0].next_used, 2);
        assert_eq!(state.core.queues[0].size, 8);
        assert_ne!(state.core.status & VIRTIO_CONFIG_S_DRIVER_OK, 0);
        let json = serde_json::to_string(&state).unwrap();
        let back: MmioState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);

        let ram = GuestRam::new(d.mem.clone(), crate::guest_ram::ignore_guest_writes());
        let sink = Arc::new(devices::interrupt::NullInterruptSink);
        let t2 = MmioTransport::new(Box::new(Rng::new()), ram, sink, GSI).unwrap();
        t2.restore(&back);
        assert_eq!(t2.state(), state);
    }
}
