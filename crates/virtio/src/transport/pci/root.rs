//! A PCI host bridge for bus 0: its configuration space through an ECAM window, and
//! placement of each function's memory BARs on the MMIO bus whenever the guest reprograms
//! them.
//!
//! Configuration mechanism #1 (ports 0xcf8/0xcfc) is the chipset's
//! (`devices::legacy::PciConfigPorts`): it turns each cycle into an access to this ECAM
//! window, so both mechanisms reach the same functions.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use devices::legacy::bus::{Bus, BusDevice};

/// ECAM size for bus 0 (32 devices x 8 functions x 4 KiB).
pub const ECAM_BUS0_SIZE: u64 = 1 << 20;
pub const SLOTS: usize = 32;

/// One memory BAR a function decodes right now.
pub struct BarMapping {
    pub base: u64,
    pub len: u64,
    pub device: Arc<dyn BusDevice>,
}

/// A PCI function (function 0 of a slot) as the host bridge sees it.
pub trait PciFunction: Send + Sync {
    /// Read configuration space at `offset` (0..4096).
    fn config_read(&self, offset: u16, data: &mut [u8]);
    /// Write configuration space at `offset`.
    fn config_write(&self, offset: u16, data: &[u8]);
    /// The memory BARs to place on the MMIO bus (empty while decoding is off).
    fn bars(&self) -> Vec<BarMapping> {
        Vec::new()
    }
}

/// Why a function could not be added.
#[derive(Debug, thiserror::Error)]
pub enum PciError {
    #[error("all {SLOTS} PCI slots of bus 0 are taken")]
    NoSlot,
    #[error("PCI slot {0} of bus 0 is taken or does not exist")]
    SlotTaken(u8),
}

/// The host bridge itself, in slot 0.
struct HostBridge;

impl PciFunction for HostBridge {
    fn config_read(&self, offset: u16, data: &mut [u8]) {
        // Red Hat PCIe host bridge 1b36:0008, class 06 00 00.
        let mut c = [0u8; 64];
        c[0..4].copy_from_slice(&[0x36, 0x1b, 0x08, 0x00]);
        c[0x0b] = 0x06;
        for (i, b) in data.iter_mut().enumerate() {
            *b = c.get(usize::from(offset) + i).copied().unwrap_or(0);
        }
    }
    fn config_write(&self, _offset: u16, _data: &[u8]) {}
}

struct Slot {
    function: Arc<dyn PciFunction>,
    /// Bases of the BARs currently on the MMIO bus.
    mapped: Vec<u64>,
}

/// Told when a slot's memory BARs move: `(slot, old bases, new bases)`, each in BAR order
/// (empty while decoding is off). Runs on the vCPU thread whose config write moved them.
pub type BarListener = Box<dyn Fn(u8, &[u64], &[u64]) + Send + Sync>;

/// Bus 0 with its functions.
pub struct PciRoot {
    slots: Mutex<Vec<Option<Slot>>>,
    /// Weak: the MMIO bus holds the ECAM window, which holds the root.
    mmio: Weak<Bus>,
    listener: Mutex<Option<BarListener>>,
}

impl PciRoot {
    /// A root whose functions' BARs go on `mmio`.
    pub fn new(mmio: &Arc<Bus>) -> Arc<Self> {
        let mut slots: Vec<Option<Slot>> = (0..SLOTS).map(|_| None).collect();
        slots[0] = Some(Slot {
            function: Arc::new(HostBridge),
            mapped: Vec::new(),
        });
        Arc::new(PciRoot {
            slots: Mutex::new(slots),
            mmio: Arc::downgrade(mmio),
            listener: Mutex::new(None),
        })
    }

    /// Calls `listener` whenever a function's BARs move (the VMM re-registers KVM
    /// ioeventfds for the notify registers inside them).
    pub fn set_bar_listener(&self, listener: BarListener) {
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    fn slots(&self) -> MutexGuard<'_, Vec<Option<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Put `function` in the first free slot; returns the slot (device) number.
    pub fn add(&self, function: Arc<dyn PciFunction>) -> Result<u8, PciError> {
        let mut slots = self.slots();
        let free = slots
            .iter()
            .position(|s| s.is_none())
            .ok_or(PciError::NoSlot)?;
        slots[free] = Some(Slot {
            function,
            mapped: Vec::new(),
        });
        Ok(free as u8)
    }

    /// Put `function` in `slot` (1..32; 0 is the host bridge), which must be free.
    pub fn add_at(&self, slot: u8, function: Arc<dyn PciFunction>) -> Result<(), PciError> {
        let mut slots = self.slots();
        match slots.get_mut(usize::from(slot)) {
            Some(s @ None) => {
                *s = Some(Slot {
                    function,
                    mapped: Vec::new(),
                });
                Ok(())
            }
            _ => Err(PciError::SlotTaken(slot)),
        }
    }

    fn read(&self, bus: u8, device: u8, function: u8, offset: u16, data: &mut [u8]) {
        let slots = self.slots();
        match slots.get(usize::from(device)).and_then(|s| s.as_ref()) {
            Some(s) if bus == 0 && function == 0 => s.function.config_read(offset, data),
            _ => data.fill(0xff),
        }
    }

    fn write(&self, bus: u8, device: u8, function: u8, offset: u16, data: &[u8]) {
        if bus != 0 || function != 0 {
            return;
        }
        let mut slots = self.slots();
        let Some(Some(slot)) = slots.get_mut(usize::from(device)) else {
            return;
        };
        slot.function.config_write(offset, data);
        self.remap(device, slot);
    }

    /// Move the slot's BARs on the MMIO bus to where the function now decodes them.
    fn remap(&self, number: u8, slot: &mut Slot) {
        let bars = slot.function.bars();
        let wanted: Vec<u64> = bars.iter().map(|b| b.base).collect();
        if wanted == slot.mapped {
            return;
        }
        let Some(mmio) = self.mmio.upgrade() else {
            return;
        };
        let old = std::mem::take(&mut slot.mapped);
        for base in &old {
            let _ = mmio.remove(*base);
        }
        for bar in bars {
            match mmio.insert(bar.device, bar.base, bar.len) {
                Ok(()) => slot.mapped.push(bar.base),
                Err(e) => tracing::warn!("PCI BAR at {:#x} not placed: {e}", bar.base),
            }
        }
        if let Some(listener) = &*self.listener.lock().unwrap_or_else(|e| e.into_inner()) {
            listener(number, &old, &slot.mapped);
        }
    }

    /// The ECAM window for bus 0, to insert on the MMIO bus with length [`ECAM_BUS0_SIZE`].
    pub fn ecam(self: &Arc<Self>) -> Arc<dyn BusDevice> {
        Arc::new(Ecam(self.clone()))
    }
}

struct Ecam(Arc<PciRoot>);

fn ecam_decode(offset: u64) -> (u8, u8, u8, u16) {
    (
        (offset >> 20) as u8,
        ((offset >> 15) & 0x1f) as u8,
        ((offset >> 12) & 7) as u8,
        (offset & 0xfff) as u16,
    )
}

impl BusDevice for Ecam {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let (b, d, f, reg) = ecam_decode(offset);
        if data.len() > 4 || usize::from(reg) + data.len() > 4096 {
            data.fill(0xff);
            return;
        }
        self.0.read(b, d, f, reg, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let (b, d, f, reg) = ecam_decode(offset);
        if data.len() <= 4 && usize::from(reg) + data.len() <= 4096 {
            self.0.write(b, d, f, reg, data);
        }
    }
}
