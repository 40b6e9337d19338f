//! The chipset's I/O ports 0xcf8..0xd00: PCI configuration mechanism #1 (CONFIG_ADDRESS at
//! 0xcf8, CONFIG_DATA at 0xcfc) with the reset control register at 0xcf9 inside the
//! CONFIG_ADDRESS dword, as on the PIIX/ICH.
//!
//! One device owns the whole range because a bus routes by an access's first port: a
//! one-byte access at 0xcf9 goes to the reset register (`reboot=pci`, the FADT reset
//! register), a dword at 0xcf8 sets CONFIG_ADDRESS. Other byte and word accesses to
//! 0xcf8..0xcfb are ignored, as on real chipsets (only dword accesses latch the address).
//!
//! The device is placed at 0xcf8 with length 8. A configuration cycle is carried out as the
//! MCH does it: CONFIG_ADDRESS names bus, device, function and register, which is the same
//! access as one into the ECAM window, so CONFIG_DATA accesses become accesses at
//! `ecam_base + (bus << 20 | dev << 15 | fn << 12 | reg)` on the MMIO bus. Whatever serves
//! ECAM (the PCI host bridge) serves both mechanisms; with nothing there (a VM without PCI)
//! every read floats to all ones.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::legacy::bus::{Bus, BusDevice};

/// Offset of the reset control register (0xcf9) in the range.
const RESET_OFFSET: u64 = 1;
/// Offset of CONFIG_DATA (0xcfc).
const DATA_OFFSET: u64 = 4;
const ENABLE: u32 = 0x8000_0000;

/// Ports 0xcf8..0xd00.
pub struct PciConfigPorts {
    address: AtomicU32,
    reset: Arc<dyn BusDevice>,
    mmio: Arc<Bus>,
    ecam_base: u64,
    /// Buses the ECAM window covers (1 MiB each); cycles to other buses float.
    ecam_buses: u16,
}

impl PciConfigPorts {
    /// `reset` serves one-byte accesses at 0xcf9; configuration cycles go to the ECAM
    /// window at `ecam_base` on `mmio`, which covers buses `0..ecam_buses`.
    pub fn new(reset: Arc<dyn BusDevice>, mmio: Arc<Bus>, ecam_base: u64, ecam_buses: u16) -> Self {
        PciConfigPorts {
            address: AtomicU32::new(0),
            reset,
            mmio,
            ecam_base,
            ecam_buses,
        }
    }

    /// The ECAM address of an access at `data_offset` (0..4) into CONFIG_DATA, if
    /// CONFIG_ADDRESS is enabled and names a bus the window covers.
    fn ecam_address(&self, data_offset: u64, len: usize) -> Option<u64> {
        if data_offset + len as u64 > 4 {
            return None;
        }
        let a = self.address.load(Ordering::SeqCst);
        if a & ENABLE == 0 {
            return None;
        }
        let bus = (a >> 16) & 0xff;
        if bus >= u32::from(self.ecam_buses) {
            return None;
        }
        // Bus, device, function in bits 23..8, register (dword-aligned) in bits 7..2: the
        // ECAM offset is the same fields shifted by 4, plus the byte within the dword.
        let bdf = u64::from((a >> 8) & 0xffff);
        let reg = u64::from(a & 0xfc) + data_offset;
        Some(self.ecam_base + (bdf << 12) + reg)
    }
}

impl BusDevice for PciConfigPorts {
    fn read(&self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 4) => data.copy_from_slice(&self.address.load(Ordering::SeqCst).to_le_bytes()),
            (RESET_OFFSET, 1) => self.reset.read(0, data),
            (o, len) if o >= DATA_OFFSET => match self.ecam_address(o - DATA_OFFSET, len) {
                Some(addr) => {
                    self.mmio.read(addr, data);
                }
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 4) => self.address.store(
                u32::from_le_bytes([data[0], data[1], data[2], data[3]]),
                Ordering::SeqCst,
            ),
            (RESET_OFFSET, 1) => self.reset.write(0, data),
            (o, len) if o >= DATA_OFFSET => {
                if let Some(addr) = self.ecam_address(o - DATA_OFFSET, len) {
                    self.mmio.write(addr, data);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::control::{ControlEvent, VmControl};
    use crate::legacy::reset_control::ResetControl;
    use std::sync::Mutex;

    /// Records the ECAM accesses it sees; reads return the low byte of the offset.
    #[derive(Default)]
    struct Ecam(Mutex<Vec<(u64, Vec<u8>)>>);

    impl BusDevice for Ecam {
        fn read(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    const ECAM: u64 = 0xe000_0000;

    fn setup() -> (PciConfigPorts, Arc<Ecam>, Arc<VmControl>) {
        let control = Arc::new(VmControl::new().unwrap());
        let mmio = Arc::new(Bus::new());
        let ecam = Arc::new(Ecam::default());
        mmio.insert(ecam.clone(), ECAM, 1 << 20).unwrap();
        let reset = Arc::new(ResetControl::new(control.clone()));
        (PciConfigPorts::new(reset, mmio, ECAM, 1), ecam, control)
    }

    fn read(p: &PciConfigPorts, offset: u64, len: usize) -> Vec<u8> {
        let mut d = vec![0; len];
        p.read(offset, &mut d);
        d
    }

    #[test]
    fn config_cycles_become_ecam_accesses() {
        let (p, ecam, _) = setup();
        // Bus 0, device 3, function 0, register 0x10.
        let a: u32 = ENABLE | 3 << 11 | 0x10;
        p.write(0, &a.to_le_bytes());
        assert_eq!(read(&p, 0, 4), a.to_le_bytes());
        // Offset of 3 << 15 | 0x10 | byte: reads return its low byte.
        assert_eq!(read(&p, 4, 4), [0x10; 4]);
        assert_eq!(read(&p, 6, 2), [0x12; 2]);
        p.write(5, &[0xab]);
        p.write(4, &[1, 2, 3, 4]);
        assert_eq!(
            *ecam.0.lock().unwrap(),
            vec![
                (3 << 15 | 0x11, vec![0xab]),
                (3 << 15 | 0x10, vec![1, 2, 3, 4])
            ]
        );
    }

    #[test]
    fn disabled_or_uncovered_cycles_float() {
        let (p, ecam, _) = setup();
        p.write(0, &(3u32 << 11).to_le_bytes()); // enable bit clear
        assert_eq!(read(&p, 4, 4), [0xff; 4]);
        p.write(0, &(ENABLE | 1 << 16).to_le_bytes()); // bus 1: outside the window
        assert_eq!(read(&p, 4, 4), [0xff; 4]);
        p.write(4, &[0; 4]);
        p.write(0, &ENABLE.to_le_bytes());
        assert_eq!(read(&p, 6, 4), [0xff; 4], "runs past CONFIG_DATA");
        assert!(ecam.0.lock().unwrap().is_empty());
    }

    #[test]
    fn byte_at_cf9_resets_dword_at_cf8_does_not() {
        let (p, _, control) = setup();
        p.write(0, &0x0000_0600u32.to_le_bytes());
        assert_eq!(
            control.requested(),
            None,
            "a dword at 0xcf8 is CONFIG_ADDRESS"
        );
        p.write(1, &[0x02]);
        assert_eq!(read(&p, 1, 1), [0x02], "the reset register reads back");
        assert_eq!(control.requested(), None);
        p.write(1, &[0x06]);
        assert_eq!(control.take(), Some(ControlEvent::Reset));
        // Linux's type-1 probe writes a byte at 0xcfb; it must not disturb anything.
        p.write(3, &[0x01]);
        assert_eq!(read(&p, 0, 4), 0x0000_0600u32.to_le_bytes());
        assert_eq!(control.requested(), None);
    }
}
