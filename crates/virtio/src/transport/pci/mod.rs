//! The virtio-pci ("modern", virtio 1.x) transport: a PCI function whose virtio structures
//! (common configuration, notifications, ISR, device configuration) and MSI-X table sit in
//! one 64-bit memory BAR, found through vendor-specific capabilities.
//!
//! Config space is served to the [`root::PciRoot`] host bridge; BAR0 is a separate
//! [`BusDevice`] ([`VirtioPciBar`]) that the root places on the MMIO bus wherever the guest
//! programs the BAR. As with MMIO, a notification write only signals the queue's kick eventfd.

pub mod msix;
pub mod root;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use devices::legacy::bus::BusDevice;
use devices::InterruptSink;
use virtio_bindings::virtio_config::{VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK};
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;

use crate::device::VirtioDevice;
use crate::guest_ram::GuestRam;
use crate::transport::core::{lock_core, VirtioCore};
use crate::transport::mmio::{build_queues, TransportError};
use crate::transport::pci::msix::{MsiSink, PciIrq};
use crate::transport::pci::root::{BarMapping, PciFunction};
use crate::transport::state::PciState;
use crate::transport::VirtioTransport;

pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern virtio-pci device IDs are 0x1040 + the virtio device type.
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;

/// BAR0 size and the offsets of the structures in it.
pub const BAR0_SIZE: u64 = 0x8000;
pub const COMMON_OFFSET: u64 = 0x0000;
pub const COMMON_LEN: u64 = 0x38;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
pub const DEVICE_CFG_LEN: u64 = 0x1000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Queue n is notified at NOTIFY_OFFSET + n * NOTIFY_MULTIPLIER.
pub const NOTIFY_MULTIPLIER: u32 = 4;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;

// Config-space layout.
const CAP_START: usize = 0x40;
const CAP_MSIX: usize = 0x84;
const BAR0_FLAGS: u32 = 0x4; // 64-bit, non-prefetchable memory
const CMD_WRITABLE: u16 = 0x0407; // I/O, memory, bus master, INTx disable
const CMD_MEMORY: u16 = 0x2;

/// The BAR0 register window.
pub struct VirtioPciBar {
    core: Arc<Mutex<VirtioCore>>,
    kicks: Arc<Vec<EventFd>>,
    irq: Arc<PciIrq>,
}

/// Config-space registers that the guest can write.
#[derive(Debug, Default)]
struct ConfigRegs {
    command: u16,
    bar0: u64,
    interrupt_line: u8,
}

/// A virtio device as a PCI function.
pub struct PciTransport {
    core: Arc<Mutex<VirtioCore>>,
    kicks: Arc<Vec<EventFd>>,
    irq: Arc<PciIrq>,
    bar: Arc<VirtioPciBar>,
    regs: Mutex<ConfigRegs>,
    device_type: u32,
}

impl PciTransport {
    /// Wrap `device`. With `msi`, the function offers MSI-X (one vector per queue plus one
    /// for configuration changes); INTx on `gsi` through `intx` is used otherwise.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        ram: GuestRam,
        msi: Option<Arc<dyn MsiSink>>,
        intx: Arc<dyn InterruptSink>,
        gsi: u32,
    ) -> Result<Self, TransportError> {
        let device_type = device.device_type();
        let (queues, kicks) = build_queues(&device.queue_max_sizes())?;
        let irq = Arc::new(PciIrq::new(queues.len() + 1, queues.len(), msi, intx, gsi));
        let kicks = Arc::new(kicks);
        let core = Arc::new(Mutex::new(VirtioCore::new(
            device,
            queues,
            kicks.clone(),
            ram,
            irq.clone(),
        )));
        let bar = Arc::new(VirtioPciBar {
            core: core.clone(),
            kicks: kicks.clone(),
            irq: irq.clone(),
        });
        Ok(PciTransport {
            core,
            kicks,
            irq,
            bar,
            regs: Mutex::new(ConfigRegs {
                interrupt_line: gsi.min(255) as u8,
                ..ConfigRegs::default()
            }),
            device_type,
        })
    }

    fn regs(&self) -> MutexGuard<'_, ConfigRegs> {
        self.regs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kick eventfd of each queue; for KVM ioeventfds at
    /// `BAR0 + NOTIFY_OFFSET + 4 * queue` (no datamatch).
    pub fn queue_kicks(&self) -> Vec<RawFd> {
        self.kicks.iter().map(|e| e.as_raw_fd()).collect()
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        lock_core(&self.core).status
    }

    /// Snapshot of config registers, MSI-X state and the device core.
    pub fn state(&self) -> PciState {
        let core = lock_core(&self.core).state();
        let r = self.regs();
        PciState {
            core,
            command: r.command,
            bar0: r.bar0,
            interrupt_line: r.interrupt_line,
            irq: self.irq.state(),
        }
    }

    /// Resume from a snapshot. The caller re-places BAR0 (see [`PciFunction::bars`]) through
    /// the root, e.g. by re-adding the function.
    pub fn restore(&self, state: &PciState) {
        {
            let mut r = self.regs();
            r.command = state.command & CMD_WRITABLE;
            r.bar0 = state.bar0 & !(BAR0_SIZE - 1);
            r.interrupt_line = state.interrupt_line;
        }
        self.irq.restore(&state.irq);
        lock_core(&self.core).restore(&state.core);
    }

    /// The 256-byte standard config space (the extended space reads as zero).
    fn config_bytes(&self) -> [u8; 256] {
        let mut c = [0u8; 256];
        let put16 =
            |c: &mut [u8; 256], o: usize, v: u16| c[o..o + 2].copy_from_slice(&v.to_le_bytes());
        let put32 =
            |c: &mut [u8; 256], o: usize, v: u32| c[o..o + 4].copy_from_slice(&v.to_le_bytes());
        let regs = self.regs();
        put16(&mut c, 0x00, VIRTIO_PCI_VENDOR);
        put16(
            &mut c,
            0x02,
            VIRTIO_PCI_DEVICE_BASE + self.device_type as u16,
        );
        put16(&mut c, 0x04, regs.command);
        put16(&mut c, 0x06, 0x10); // capabilities list
        c[0x08] = 1; // revision: modern
        let class: u32 = match self.device_type {
            1 => 0x02_0000, // network controller
            2 => 0x01_8000, // mass storage, other
            3 => 0x07_8000, // communication, other
            _ => 0xff_0000,
        };
        c[0x09..0x0c].copy_from_slice(&class.to_le_bytes()[..3]);
        put32(
            &mut c,
            0x10,
            (regs.bar0 as u32 & !(BAR0_SIZE as u32 - 1)) | BAR0_FLAGS,
        );
        put32(&mut c, 0x14, (regs.bar0 >> 32) as u32);
        put16(&mut c, 0x2c, VIRTIO_PCI_VENDOR);
        put16(&mut c, 0x2e, 0x40 + self.device_type as u16);
        c[0x34] = CAP_START as u8;
        c[0x3c] = regs.interrupt_line;
        c[0x3d] = 1; // INTA#
        drop(regs);
        // Virtio capabilities: common, notify, ISR, device config.
        let caps: [(usize, u8, u64, u64, u8); 4] = [
            (0x40, 1, COMMON_OFFSET, COMMON_LEN, 16),
            (
                0x50,
                2,
                NOTIFY_OFFSET,
                self.kicks.len().max(1) as u64 * u64::from(NOTIFY_MULTIPLIER),
                20,
            ),
            (0x64, 3, ISR_OFFSET, 1, 16),
            (0x74, 4, DEVICE_CFG_OFFSET, DEVICE_CFG_LEN, 16),
        ];
        for (i, &(at, cfg_type, offset, len, cap_len)) in caps.iter().enumerate() {
            let next = match caps.get(i + 1) {
                Some(n) => n.0 as u8,
                None if self.irq.has_msix() => CAP_MSIX as u8,
                None => 0,
            };
            c[at] = 0x09; // vendor specific
            c[at + 1] = next;
            c[at + 2] = cap_len;
            c[at + 3] = cfg_type;
            c[at + 4] = 0; // BAR0
            put32(&mut c, at + 8, offset as u32);
            put32(&mut c, at + 12, len as u32);
            if cfg_type == 2 {
                put32(&mut c, at + 16, NOTIFY_MULTIPLIER);
            }
        }
        if self.irq.has_msix() {
            let (enabled, masked) = self.irq.control();
            c[CAP_MSIX] = 0x11;
            c[CAP_MSIX + 1] = 0;
            let control = (self.irq.vectors() as u16 - 1)
                | u16::from(masked) << 14
                | u16::from(enabled) << 15;
            put16(&mut c, CAP_MSIX + 2, control);
            put32(&mut c, CAP_MSIX + 4, MSIX_TABLE_OFFSET as u32);
            put32(&mut c, CAP_MSIX + 8, MSIX_PBA_OFFSET as u32);
        }
        c
    }

    fn write_dword(&self, offset: usize, v: u32) {
        match offset {
            0x04 => {
                let mut r = self.regs();
                r.command = v as u16 & CMD_WRITABLE;
            }
            0x10 => {
                let mut r = self.regs();
                r.bar0 = r.bar0 & !0xffff_ffff | u64::from(v & !(BAR0_SIZE as u32 - 1));
            }
            0x14 => {
                let mut r = self.regs();
                r.bar0 = r.bar0 & 0xffff_ffff | u64::from(v) << 32;
            }
            0x3c => self.regs().interrupt_line = v as u8,
            CAP_MSIX if self.irq.has_msix() => {
                let control = (v >> 16) as u16;
                self.irq
                    .set_control(control & 0x8000 != 0, control & 0x4000 != 0);
            }
            _ => {}
        }
    }
}

impl VirtioTransport for PciTransport {
    fn shared(&self) -> (Arc<Mutex<VirtioCore>>, Arc<Vec<EventFd>>) {
        (self.core.clone(), self.kicks.clone())
    }
}

impl PciFunction for PciTransport {
    fn config_read(&self, offset: u16, data: &mut [u8]) {
        let c = self.config_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = c.get(usize::from(offset) + i).copied().unwrap_or(0);
        }
    }

    fn config_write(&self, offset: u16, data: &[u8]) {
        let offset = usize::from(offset);
        if data.is_empty() || data.len() > 4 || offset + data.len() > 256 {
            return;
        }
        // Merge partial writes into the aligned dword they touch.
        let aligned = offset & !3;
        if offset + data.len() > aligned + 4 {
            return;
        }
        let c = self.config_bytes();
        let mut dword = [c[aligned], c[aligned + 1], c[aligned + 2], c[aligned + 3]];
        dword[offset - aligned..offset - aligned + data.len()].copy_from_slice(data);
        self.write_dword(aligned, u32::from_le_bytes(dword));
    }

    fn bars(&self) -> Vec<BarMapping> {
        let r = self.regs();
        // Not decoded while memory space is off, or while the BAR is being sized.
        if r.command & CMD_MEMORY == 0 || r.bar0 == 0 || r.bar0 >> 32 == 0xffff_ffff {
            return Vec::new();
        }
        vec![BarMapping {
            base: r.bar0,
            len: BAR0_SIZE,
            device: self.bar.clone(),
        }]
    }
}

impl VirtioPciBar {
    fn common_read(&self, offset: u64, data: &mut [u8]) {
        let mut core = lock_core(&self.core);
        let q = usize::from(core.queue_sel as u16);
        let v: u64 = match (offset, data.len()) {
            (0x00, 4) => core.device_features_sel.into(),
            (0x04, 4) => match core.device_features_sel {
                0 => core.device_features() & 0xffff_ffff,
                1 => core.device_features() >> 32,
                _ => 0,
            },
            (0x08, 4) => core.driver_features_sel.into(),
            (0x0c, 4) => match core.driver_features_sel {
                0 => core.driver_features & 0xffff_ffff,
                1 => core.driver_features >> 32,
                _ => 0,
            },
            (0x10, 2) => self.irq.config_vector().into(),
            (0x12, 2) => core.queues.len() as u64,
            (0x14, 1) => core.status.into(),
            (0x15, 1) => u64::from(core.config_generation as u8),
            (0x16, 2) => core.queue_sel.into(),
            (0x18, 2) => core.selected_queue().map_or(0, |q| q.size().into()),
            (0x1a, 2) => self.irq.queue_vector(q).into(),
            (0x1c, 2) => core.selected_queue().map_or(0, |q| q.ready().into()),
            (0x1e, 2) => core.selected_queue().map_or(0, |_| q as u64),
            (0x20, 4) => core
                .selected_queue()
                .map_or(0, |q| q.desc_table() & 0xffff_ffff),
            (0x24, 4) => core.selected_queue().map_or(0, |q| q.desc_table() >> 32),
            (0x28, 4) => core
                .selected_queue()
                .map_or(0, |q| q.avail_ring() & 0xffff_ffff),
            (0x2c, 4) => core.selected_queue().map_or(0, |q| q.avail_ring() >> 32),
            (0x30, 4) => core
                .selected_queue()
                .map_or(0, |q| q.used_ring() & 0xffff_ffff),
            (0x34, 4) => core.selected_queue().map_or(0, |q| q.used_ring() >> 32),
            (0x20 | 0x28 | 0x30, 8) => core.selected_queue().map_or(0, |qq| match offset {
                0x20 => qq.desc_table(),
                0x28 => qq.avail_ring(),
                _ => qq.used_ring(),
            }),
            _ => 0,
        };
        let bytes = v.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn common_write(&self, offset: u64, data: &[u8]) {
        let mut b = [0u8; 8];
        let n = data.len().min(8);
        b[..n].copy_from_slice(&data[..n]);
        let v = u64::from_le_bytes(b);
        let mut core = lock_core(&self.core);
        let q = usize::from(core.queue_sel as u16);
        let configuring = core.status & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && core.status & VIRTIO_CONFIG_S_DRIVER_OK == 0;
        match (offset, data.len()) {
            (0x00, 4) => core.device_features_sel = v as u32,
            (0x08, 4) => core.driver_features_sel = v as u32,
            (0x0c, 4) if core.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 => {
                match core.driver_features_sel {
                    0 => core.driver_features = core.driver_features & !0xffff_ffff | v,
                    1 => core.driver_features = core.driver_features & 0xffff_ffff | v << 32,
                    _ => {}
                }
            }
            (0x10, 2) => self.irq.set_config_vector(v as u16),
            (0x14, 1) => core.set_status(v as u32),
            (0x16, 2) => core.queue_sel = v as u32,
            (0x1a, 2) => self.irq.set_queue_vector(q, v as u16),
            (off, len) if configuring => {
                let Some(queue) = core.selected_queue() else {
                    return;
                };
                if queue.ready() {
                    return;
                }
                let (lo, hi) = (Some(v as u32), Some((v >> 32) as u32));
                match (off, len) {
                    (0x18, 2) => queue.set_size(v as u16),
                    (0x1c, 2) => queue.set_ready(v == 1),
                    (0x20, 4) => queue.set_desc_table_address(lo, None),
                    (0x24, 4) => queue.set_desc_table_address(None, lo),
                    (0x28, 4) => queue.set_avail_ring_address(lo, None),
                    (0x2c, 4) => queue.set_avail_ring_address(None, lo),
                    (0x30, 4) => queue.set_used_ring_address(lo, None),
                    (0x34, 4) => queue.set_used_ring_address(None, lo),
                    (0x20, 8) => queue.set_desc_table_address(lo, hi),
                    (0x28, 8) => queue.set_avail_ring_address(lo, hi),
                    (0x30, 8) => queue.set_used_ring_address(lo, hi),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

impl BusDevice for VirtioPciBar {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match offset {
            o if o < COMMON_OFFSET + COMMON_LEN => self.common_read(o - COMMON_OFFSET, data),
            ISR_OFFSET => {
                // Read-to-clear, and never behind the device lock.
                if let Some(b) = data.first_mut() {
                    *b = self.irq.read_isr();
                }
            }
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_LEN).contains(&o) => {
                lock_core(&self.core)
                    .device
                    .read_config(o - DEVICE_CFG_OFFSET, data)
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.irq.table_read(o - MSIX_TABLE_OFFSET, data)
            }
            o if (MSIX_PBA_OFFSET..BAR0_SIZE).contains(&o) => {
                self.irq.pba_read(o - MSIX_PBA_OFFSET, data)
            }
            _ => {}
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        match offset {
            o if o < COMMON_OFFSET + COMMON_LEN => self.common_write(o - COMMON_OFFSET, data),
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_LEN).contains(&o) => {
                lock_core(&self.core)
                    .device
                    .write_config(o - DEVICE_CFG_OFFSET, data)
            }
            o if (NOTIFY_OFFSET..MSIX_TABLE_OFFSET).contains(&o) => {
                let rel = o - NOTIFY_OFFSET;
                if rel.is_multiple_of(u64::from(NOTIFY_MULTIPLIER)) {
                    if let Some(kick) = self
                        .kicks
                        .get((rel / u64::from(NOTIFY_MULTIPLIER)) as usize)
                    {
                        // Only signal: the device runs on the event loop.
                        let _ = kick.write(1);
                    }
                }
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.irq.table_write(o - MSIX_TABLE_OFFSET, data)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
