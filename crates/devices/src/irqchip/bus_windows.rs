//! The chip's port ranges and its IOAPIC page as [`BusDevice`]s, so the VMM places them on
//! its buses like every other device (at the addresses of `arch::layout`).
//!
//! The local APICs are not here: every vCPU sees its own APIC at the same address, which a
//! bus shared by all vCPUs cannot express. The software engine sends accesses to the APIC
//! page of the accessing vCPU to [`SwIrqChip::lapic_read`]/[`SwIrqChip::lapic_write`].

use std::sync::Arc;

use super::chip::SwIrqChip;
use crate::legacy::BusDevice;

/// The chip's port ranges as `(first port, length)`: PIC master, PIT, port 0x61, PIC slave,
/// ELCR.
pub const PORT_RANGES: [(u16, u16); 5] = [(0x20, 2), (0x40, 4), (0x61, 1), (0xa0, 2), (0x4d0, 2)];

/// One of [`PORT_RANGES`] on the port-I/O bus.
pub struct PortWindow {
    chip: Arc<SwIrqChip>,
    base: u16,
}

impl PortWindow {
    /// The window for the range that starts at `base` (a first port of [`PORT_RANGES`]).
    pub fn new(chip: Arc<SwIrqChip>, base: u16) -> Self {
        PortWindow { chip, base }
    }

    /// One window per range, with its base and length, ready for `Bus::insert`.
    pub fn all(chip: &Arc<SwIrqChip>) -> Vec<(Arc<dyn BusDevice>, u64, u64)> {
        PORT_RANGES
            .iter()
            .map(|&(base, len)| {
                let device: Arc<dyn BusDevice> = Arc::new(PortWindow::new(chip.clone(), base));
                (device, u64::from(base), u64::from(len))
            })
            .collect()
    }

    fn port(&self, offset: u64) -> Option<u16> {
        u16::try_from(offset)
            .ok()
            .and_then(|o| self.base.checked_add(o))
    }
}

impl BusDevice for PortWindow {
    fn read(&self, offset: u64, data: &mut [u8]) {
        match self.port(offset) {
            Some(port) => {
                self.chip.pio_read(port, data);
            }
            None => data.fill(0xff),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let Some(port) = self.port(offset) {
            self.chip.pio_write(port, data);
        }
    }
}

/// The IOAPIC's register page on the MMIO bus.
pub struct IoapicWindow {
    chip: Arc<SwIrqChip>,
}

impl IoapicWindow {
    pub fn new(chip: Arc<SwIrqChip>) -> Self {
        IoapicWindow { chip }
    }
}

impl BusDevice for IoapicWindow {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.chip.ioapic_read(offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.chip.ioapic_write(offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irqchip::clock::ManualClock;
    use crate::legacy::Bus;

    #[test]
    fn windows_on_buses_reach_the_chip() {
        let clock = Arc::new(ManualClock::new());
        let chip = Arc::new(SwIrqChip::new(1, 1_000_000_000, clock).unwrap());
        let pio = Bus::new();
        for (device, base, len) in PortWindow::all(&chip) {
            pio.insert(device, base, len).unwrap();
        }
        let mmio = Bus::new();
        mmio.insert(
            Arc::new(IoapicWindow::new(chip.clone())),
            0xfec0_0000,
            0x1000,
        )
        .unwrap();

        assert!(pio.write(0xa1, &[0x5a]));
        let mut d = [0u8];
        assert!(pio.read(0xa1, &mut d));
        assert_eq!(d, [0x5a], "slave IMR through the bus");
        assert!(pio.write(0x4d1, &[0x0e]));
        let mut d = [0u8; 2];
        pio.read(0x4d0, &mut d);
        assert_eq!(d, [0x00, 0x0e]);

        mmio.write(0xfec0_0000, &[1]);
        let mut d = [0u8; 4];
        mmio.read(0xfec0_0010, &mut d);
        assert_eq!(
            u32::from_le_bytes(d),
            0x0017_0020,
            "IOAPIC version through the bus"
        );
    }
}
