//! QEMU's `pc-testdev`: the test device kvm-unit-tests drives, only on request
//! (`wirt run --test-device`), never part of the default machine.
//!
//! Its registers, as the tests use them:
//!
//! | where | size | what |
//! |---|---|---|
//! | ports 0xe0..0xe3 ([`PORTS`] + 0) | 4 | a 32-bit scratch register, any width |
//! | ports 0xe4..0xe7 (+ 4) | 4 | "flush page": a guest-physical address whose host mapping QEMU drops to force re-faults; nothing is cached for a page here, so writes are accepted and ignored |
//! | ports 0xe8..0xeb (+ 8) | 4 | the same scratch register, decoded byte by byte |
//! | ports 0x2000..0x2017 ([`IRQ_PORTS`]) | 24 | IRQ lines: writing V to 0x2000 + n drives GSI n to V != 0 |
//! | MMIO 0xff000000.. ([`IORAM_BASE`]) | 64 KiB | scratch memory behind MMIO ("ioram") |
//!
//! Reads of the flush and IRQ-line ports return 0. The device is three bus windows over
//! one shared state: [`PcTestDev::ports`], [`PcTestDev::irq_lines`], [`PcTestDev::ioram`].

use std::sync::{Arc, Mutex, MutexGuard};

use crate::interrupt::InterruptSink;
use crate::legacy::bus::BusDevice;

/// The scratch, flush and byte-scratch ports (12 ports).
pub const PORTS: u16 = 0xe0;
pub const PORTS_LEN: u64 = 12;
/// One port per IOAPIC input (GSIs 0..23).
pub const IRQ_PORTS: u16 = 0x2000;
pub const IRQ_PORTS_LEN: u64 = 24;
/// The MMIO scratch RAM (kvm-unit-tests' `IORAM_BASE_PHYS`) and its size.
pub const IORAM_BASE: u64 = 0xff00_0000;
pub const IORAM_LEN: u64 = 0x1_0000;

/// Offset of the flush-page register within [`PORTS`].
const FLUSH: u64 = 4;
/// Offset of the byte-decoded alias of the scratch register within [`PORTS`].
const BYTE_SCRATCH: u64 = 8;

struct State {
    scratch: [u8; 4],
    ioram: Box<[u8]>,
}

/// The test device.
pub struct PcTestDev {
    state: Mutex<State>,
    irq: Arc<dyn InterruptSink>,
}

impl PcTestDev {
    /// A device whose IRQ-line ports drive `irq`'s GSIs.
    pub fn new(irq: Arc<dyn InterruptSink>) -> Arc<Self> {
        Arc::new(PcTestDev {
            state: Mutex::new(State {
                scratch: [0; 4],
                ioram: vec![0; IORAM_LEN as usize].into_boxed_slice(),
            }),
            irq,
        })
    }

    /// The window for ports [`PORTS`]..+[`PORTS_LEN`].
    pub fn ports(self: &Arc<Self>) -> Arc<dyn BusDevice> {
        Arc::new(Ports(self.clone()))
    }

    /// The window for ports [`IRQ_PORTS`]..+[`IRQ_PORTS_LEN`].
    pub fn irq_lines(self: &Arc<Self>) -> Arc<dyn BusDevice> {
        Arc::new(IrqLines(self.clone()))
    }

    /// The window for MMIO [`IORAM_BASE`]..+[`IORAM_LEN`].
    pub fn ioram(self: &Arc<Self>) -> Arc<dyn BusDevice> {
        Arc::new(Ioram(self.clone()))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The byte of the scratch register that byte `i` of an access at `offset` touches.
fn scratch_byte(offset: u64, i: usize) -> usize {
    ((offset as usize) + i) & 3
}

struct Ports(Arc<PcTestDev>);

impl BusDevice for Ports {
    fn read(&self, offset: u64, data: &mut [u8]) {
        match offset {
            0..FLUSH | BYTE_SCRATCH.. => {
                let s = self.0.state();
                for (i, b) in data.iter_mut().enumerate() {
                    *b = s.scratch[scratch_byte(offset, i)];
                }
            }
            _ => data.fill(0),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        match offset {
            0..FLUSH | BYTE_SCRATCH.. => {
                let mut s = self.0.state();
                for (i, b) in data.iter().enumerate() {
                    s.scratch[scratch_byte(offset, i)] = *b;
                }
            }
            // Flush page: nothing in wirt maps guest pages lazily.
            _ => {}
        }
    }
}

struct IrqLines(Arc<PcTestDev>);

impl BusDevice for IrqLines {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let (Ok(gsi), Some(&level)) = (u32::try_from(offset), data.first()) {
            self.0.irq.set_level(gsi, level != 0);
        }
    }
}

struct Ioram(Arc<PcTestDev>);

impl BusDevice for Ioram {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let s = self.0.state();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| s.ioram.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let mut s = self.0.state();
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = usize::try_from(offset)
                .ok()
                .and_then(|o| s.ioram.get_mut(o + i))
            {
                *slot = *b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records GSI levels.
    #[derive(Default)]
    struct Lines(Mutex<Vec<(u32, bool)>>);

    impl InterruptSink for Lines {
        fn set_level(&self, gsi: u32, level: bool) {
            self.0.lock().unwrap().push((gsi, level));
        }
    }

    #[test]
    fn scratch_register_any_width_and_byte_alias() {
        let dev = PcTestDev::new(Arc::new(Lines::default()));
        let ports = dev.ports();
        ports.write(0, &0x1234_5678u32.to_le_bytes());
        let mut d = [0u8; 4];
        ports.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1234_5678);
        ports.write(1, &[0xab]);
        let mut w = [0u8; 2];
        ports.read(0, &mut w);
        assert_eq!(w, [0x78, 0xab]);
        ports.write(BYTE_SCRATCH + 2, &[0xcd, 0xef]);
        ports.read(BYTE_SCRATCH, &mut d);
        assert_eq!(
            u32::from_le_bytes(d),
            0xefcd_ab78,
            "one register, two windows"
        );
        ports.write(FLUSH, &0x1000u32.to_le_bytes());
        ports.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0xefcd_ab78, "flush leaves it alone");
    }

    #[test]
    fn irq_line_ports_drive_gsis() {
        let lines = Arc::new(Lines::default());
        let dev = PcTestDev::new(lines.clone());
        let irq = dev.irq_lines();
        irq.write(0x0e, &[1]);
        irq.write(0x0e, &[0]);
        irq.write(23, &[7]);
        assert_eq!(
            *lines.0.lock().unwrap(),
            vec![(14, true), (14, false), (23, true)]
        );
    }

    #[test]
    fn ioram_is_byte_addressable_scratch_memory() {
        let dev = PcTestDev::new(Arc::new(Lines::default()));
        let ram = dev.ioram();
        ram.write(0x10, &0x1122_3344_5566_7788u64.to_le_bytes());
        let mut d = [0u8; 8];
        ram.read(0x10, &mut d);
        assert_eq!(u64::from_le_bytes(d), 0x1122_3344_5566_7788);
        let mut b = [0u8; 2];
        ram.read(0x13, &mut b);
        assert_eq!(b, [0x55, 0x44]);
        // The last bytes: an access running past the end is cut there.
        ram.write(IORAM_LEN - 2, &[1, 2, 3, 4]);
        let mut e = [0xffu8; 4];
        ram.read(IORAM_LEN - 2, &mut e);
        assert_eq!(e, [1, 2, 0, 0]);
    }
}
