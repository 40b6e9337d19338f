//! The I/O APIC: 24 interrupt pins, each turned into an APIC message by its redirection
//! table entry.
//!
//! Linux routes every device interrupt (and, after `check_timer`, the PIT's IRQ0 on pin 2)
//! through it. The model is version 0x20 (as QEMU's default): it has the EOI register at
//! offset 0x40 in addition to the broadcast EOI that arrives from the local APICs. Pin
//! polarity is recorded but not applied: devices call `set_level(true)` to *assert* a line,
//! whatever its electrical polarity (as in KVM and QEMU).
//!
//! An edge arriving on a masked pin stays in IRR while the line stays asserted and is
//! delivered when the pin is unmasked; if the line drops first the request is gone (KVM's
//! behaviour, which kvm-unit-tests' `ioapic` checks: a pulse on a masked pin is lost). A level-triggered
//! pin sets remote IRR when delivered and is not delivered again until the EOI for its
//! vector; an EOI while the line is still asserted delivers it again.
//!
//! The struct is its own snapshot state (plain serde). It does not deliver messages itself:
//! its methods return them and the chip routes them to the local APICs.

use serde::{Deserialize, Serialize};

/// Number of pins (GSIs 0..23).
pub const NUM_PINS: usize = 24;
/// The value of the version register: version 0x20, 24 entries (max index 23).
pub const IOAPIC_VERSION: u32 = 0x20 | ((NUM_PINS as u32 - 1) << 16);

/// Register offsets in the MMIO window.
pub const IOREGSEL: u64 = 0x00;
pub const IOWIN: u64 = 0x10;
pub const IOEOI: u64 = 0x40;

const RTE_MASKED: u64 = 1 << 16;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_DELIVERY_STATUS: u64 = 1 << 12;
/// Bits software may write (everything but delivery status and remote IRR).
const RTE_WRITABLE: u64 = !(RTE_REMOTE_IRR | RTE_DELIVERY_STATUS) & 0xff00_0000_0001_ffff;

/// How an APIC message is delivered (the encoding of the redirection table and the ICR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    Startup,
    ExtInt,
    Reserved,
}

impl DeliveryMode {
    pub fn from_bits(bits: u32) -> Self {
        match bits & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::Startup,
            7 => DeliveryMode::ExtInt,
            _ => DeliveryMode::Reserved,
        }
    }
}

/// Who receives an APIC message.
///
/// IDs are 32-bit (x2APIC); the 8-bit destinations of xAPIC-format senders (IOAPIC, MSI,
/// an ICR in xAPIC mode) enter through [`Destination::xapic`], which turns their broadcast
/// value 0xff into [`Destination::BROADCAST`], the x2APIC broadcast, so that every APIC
/// model recognises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Destination {
    /// One APIC by ID ([`Destination::BROADCAST`]: all).
    Physical(u32),
    /// The APICs whose logical destination matches (flat, cluster or x2APIC cluster model;
    /// [`Destination::BROADCAST`]: all).
    Logical(u32),
    /// The sender only.
    SelfOnly,
    /// Every APIC.
    All,
    /// Every APIC except the sender.
    AllButSelf,
}

impl Destination {
    /// The broadcast ID of either addressing mode.
    pub const BROADCAST: u32 = u32::MAX;

    /// An 8-bit (xAPIC-format) destination, logical or physical; 0xff is the broadcast.
    pub fn xapic(id: u8, logical: bool) -> Self {
        let id = if id == 0xff {
            Self::BROADCAST
        } else {
            u32::from(id)
        };
        if logical {
            Destination::Logical(id)
        } else {
            Destination::Physical(id)
        }
    }
}

/// An interrupt message on the APIC bus (from the IOAPIC, an MSI, or an ICR write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApicMessage {
    pub vector: u8,
    pub mode: DeliveryMode,
    pub dest: Destination,
    pub level_triggered: bool,
}

impl ApicMessage {
    /// Decode an MSI (address 0xfeeX_XXXX, data); `None` if the address is not an MSI.
    pub fn from_msi(addr: u64, data: u32) -> Option<Self> {
        if addr >> 20 != 0xfee {
            return None;
        }
        let id = ((addr >> 12) & 0xff) as u8;
        let logical = addr & (1 << 2) != 0;
        Some(ApicMessage {
            vector: (data & 0xff) as u8,
            mode: DeliveryMode::from_bits(data >> 8),
            dest: Destination::xapic(id, logical),
            level_triggered: false,
        })
    }
}

/// The I/O APIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ioapic {
    pub id: u8,
    pub ioregsel: u8,
    /// Pending requests (edge: latched until delivered; level: the line is asserted).
    pub irr: u32,
    /// Line levels seen last, for edge detection.
    pub line: u32,
    pub redirection: Vec<u64>,
}

impl Default for Ioapic {
    fn default() -> Self {
        Self::new()
    }
}

impl Ioapic {
    /// An IOAPIC as after reset: every pin masked.
    pub fn new() -> Self {
        Ioapic {
            id: 0,
            ioregsel: 0,
            irr: 0,
            line: 0,
            redirection: vec![RTE_MASKED; NUM_PINS],
        }
    }

    /// The redirection entry of `pin` (masked if out of range).
    pub fn entry(&self, pin: usize) -> u64 {
        self.redirection.get(pin).copied().unwrap_or(RTE_MASKED)
    }

    fn message(entry: u64) -> ApicMessage {
        let dest = (entry >> 56) as u8;
        ApicMessage {
            vector: (entry & 0xff) as u8,
            mode: DeliveryMode::from_bits((entry >> 8) as u32),
            dest: Destination::xapic(dest, entry & (1 << 11) != 0),
            level_triggered: entry & RTE_LEVEL != 0,
        }
    }

    /// Deliver `pin` if it is requested, unmasked and not waiting for an EOI.
    fn service(&mut self, pin: usize, out: &mut Vec<ApicMessage>) {
        let bit = 1u32 << pin;
        if self.irr & bit == 0 {
            return;
        }
        let Some(entry) = self.redirection.get_mut(pin) else {
            return;
        };
        if *entry & RTE_MASKED != 0 {
            return;
        }
        if *entry & RTE_LEVEL != 0 {
            if *entry & RTE_REMOTE_IRR != 0 {
                return;
            }
            *entry |= RTE_REMOTE_IRR;
        } else {
            self.irr &= !bit;
        }
        out.push(Self::message(*entry));
    }

    /// Drive pin `pin`; messages to deliver are appended to `out`.
    pub fn set_irq(&mut self, pin: usize, level: bool, out: &mut Vec<ApicMessage>) {
        if pin >= NUM_PINS {
            return;
        }
        let bit = 1u32 << pin;
        let was_high = self.line & bit != 0;
        if level {
            self.line |= bit;
        } else {
            self.line &= !bit;
        }
        if self.entry(pin) & RTE_LEVEL != 0 {
            if level {
                self.irr |= bit;
                self.service(pin, out);
            } else {
                self.irr &= !bit;
            }
        } else if level && !was_high {
            self.irr |= bit;
            self.service(pin, out);
        } else if !level {
            // An undelivered edge (masked pin) ends with the line.
            self.irr &= !bit;
        }
    }

    /// An EOI for `vector` (broadcast by a local APIC, or written to the EOI register):
    /// clears remote IRR of the level-triggered pins with that vector and re-delivers those
    /// whose line is still asserted.
    pub fn end_of_interrupt(&mut self, vector: u8, out: &mut Vec<ApicMessage>) {
        for pin in 0..NUM_PINS {
            let entry = self.entry(pin);
            if entry & 0xff != u64::from(vector) || entry & RTE_REMOTE_IRR == 0 {
                continue;
            }
            if let Some(e) = self.redirection.get_mut(pin) {
                *e &= !RTE_REMOTE_IRR;
            }
            if entry & RTE_LEVEL != 0 && self.line & (1 << pin) != 0 {
                self.irr |= 1 << pin;
                self.service(pin, out);
            }
        }
    }

    fn read_register(&self) -> u32 {
        match self.ioregsel {
            0x00 => u32::from(self.id & 0x0f) << 24,
            0x01 => IOAPIC_VERSION,
            0x02 => u32::from(self.id & 0x0f) << 24,
            reg @ 0x10..=0x3f => {
                let index = usize::from((reg - 0x10) / 2);
                let entry = self.entry(index);
                if reg & 1 == 0 {
                    entry as u32
                } else {
                    (entry >> 32) as u32
                }
            }
            _ => 0xffff_ffff,
        }
    }

    fn write_register(&mut self, value: u32, out: &mut Vec<ApicMessage>) {
        match self.ioregsel {
            0x00 => self.id = ((value >> 24) & 0x0f) as u8,
            reg @ 0x10..=0x3f => {
                let index = usize::from((reg - 0x10) / 2);
                let Some(entry) = self.redirection.get_mut(index) else {
                    return;
                };
                let old = *entry;
                let new = if reg & 1 == 0 {
                    (old & !0xffff_ffff) | u64::from(value)
                } else {
                    (old & 0xffff_ffff) | (u64::from(value) << 32)
                };
                *entry = (new & RTE_WRITABLE) | (old & RTE_REMOTE_IRR);
                if *entry & RTE_LEVEL == 0 {
                    // Remote IRR is meaningless for edge pins.
                    *entry &= !RTE_REMOTE_IRR;
                    if old & RTE_LEVEL != 0 {
                        // Level request state does not carry over to edge mode.
                        self.irr &= !(1 << index);
                    }
                } else if self.line & (1 << index) != 0 {
                    self.irr |= 1 << index;
                }
                self.service(index, out);
            }
            _ => {} // version and arbitration are read-only
        }
    }

    /// An MMIO read at `offset` within the IOAPIC page (any width up to 4 bytes).
    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        let value: u32 = match offset & !3 {
            IOREGSEL => u32::from(self.ioregsel),
            IOWIN => self.read_register(),
            _ => 0,
        };
        write_bytes(value, offset, data);
    }

    /// An MMIO write at `offset`; messages to deliver are appended to `out`.
    pub fn mmio_write(&mut self, offset: u64, data: &[u8], out: &mut Vec<ApicMessage>) {
        let Some(value) = read_bytes(offset, data) else {
            return;
        };
        match offset {
            IOREGSEL => self.ioregsel = value as u8,
            IOWIN => self.write_register(value, out),
            IOEOI => self.end_of_interrupt(value as u8, out),
            _ => {}
        }
    }
}

/// Copy the bytes of the 32-bit register `value` that an access at `offset` of width
/// `data.len()` sees; bytes beyond the register read as zero.
pub(crate) fn write_bytes(value: u32, offset: u64, data: &mut [u8]) {
    let bytes = value.to_le_bytes();
    let start = (offset & 3) as usize;
    for (i, b) in data.iter_mut().enumerate() {
        *b = bytes.get(start + i).copied().unwrap_or(0);
    }
}

/// The value of an aligned write of 1..4 bytes; `None` for misaligned or wider accesses.
pub(crate) fn read_bytes(offset: u64, data: &[u8]) -> Option<u32> {
    if offset & 3 != 0 || data.is_empty() || data.len() > 4 {
        return None;
    }
    let mut bytes = [0u8; 4];
    bytes[..data.len()].copy_from_slice(data);
    Some(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_reg(io: &mut Ioapic, reg: u8, value: u32, out: &mut Vec<ApicMessage>) {
        io.mmio_write(IOREGSEL, &[reg], out);
        io.mmio_write(IOWIN, &value.to_le_bytes(), out);
    }

    fn read_reg(io: &mut Ioapic, reg: u8) -> u32 {
        let mut out = Vec::new();
        io.mmio_write(IOREGSEL, &[reg], &mut out);
        let mut data = [0u8; 4];
        io.mmio_read(IOWIN, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn version_and_id_registers() {
        let mut io = Ioapic::new();
        assert_eq!(read_reg(&mut io, 1), 0x0017_0020);
        let mut out = Vec::new();
        write_reg(&mut io, 0, 0x0300_0000, &mut out);
        assert_eq!(read_reg(&mut io, 0), 0x0300_0000);
        assert_eq!(read_reg(&mut io, 0x10), 0x0001_0000, "reset: masked");
    }

    #[test]
    fn edge_pin_delivers_once_per_rising_edge() {
        let mut io = Ioapic::new();
        let mut out = Vec::new();
        write_reg(&mut io, 0x10 + 2 * 2, 0x30, &mut out); // pin 2: vector 0x30, edge, unmasked
        write_reg(&mut io, 0x11 + 2 * 2, 0x0100_0000, &mut out); // dest APIC 1
        io.set_irq(2, true, &mut out);
        io.set_irq(2, true, &mut out);
        io.set_irq(2, false, &mut out);
        assert_eq!(
            out,
            vec![ApicMessage {
                vector: 0x30,
                mode: DeliveryMode::Fixed,
                dest: Destination::Physical(1),
                level_triggered: false
            }]
        );
    }

    #[test]
    fn masked_edge_is_delivered_on_unmask_while_the_line_is_high() {
        let mut io = Ioapic::new();
        let mut out = Vec::new();
        write_reg(&mut io, 0x10 + 8, 0x1_0041, &mut out); // pin 4 masked
        io.set_irq(4, true, &mut out);
        assert!(out.is_empty());
        write_reg(&mut io, 0x10 + 8, 0x41, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].vector, 0x41);
        // A pulse on the masked pin is lost.
        out.clear();
        io.set_irq(4, false, &mut out);
        write_reg(&mut io, 0x10 + 8, 0x1_0041, &mut out);
        io.set_irq(4, true, &mut out);
        io.set_irq(4, false, &mut out);
        write_reg(&mut io, 0x10 + 8, 0x41, &mut out);
        assert!(out.is_empty());
        io.set_irq(4, true, &mut out);
        assert_eq!(out.len(), 1, "the next edge is delivered once");
    }

    #[test]
    fn level_pin_remote_irr_and_eoi_redelivery() {
        let mut io = Ioapic::new();
        let mut out = Vec::new();
        // pin 16: vector 0x50, level, active low, logical destination 0x01.
        write_reg(
            &mut io,
            0x10 + 32,
            0x50 | (1 << 15) | (1 << 13) | (1 << 11),
            &mut out,
        );
        write_reg(&mut io, 0x11 + 32, 0x0100_0000, &mut out);
        io.set_irq(16, true, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dest, Destination::Logical(1));
        assert!(out[0].level_triggered);
        assert_ne!(
            read_reg(&mut io, 0x10 + 32) & (1 << 14),
            0,
            "remote IRR set"
        );
        // Still asserted, but no new delivery until EOI.
        io.set_irq(16, true, &mut out);
        assert_eq!(out.len(), 1);
        // EOI for another vector changes nothing.
        io.end_of_interrupt(0x51, &mut out);
        assert_eq!(out.len(), 1);
        // EOI while still asserted: delivered again.
        io.end_of_interrupt(0x50, &mut out);
        assert_eq!(out.len(), 2);
        // Line drops, EOI: remote IRR clear, nothing delivered.
        io.set_irq(16, false, &mut out);
        io.mmio_write(IOEOI, &0x50u32.to_le_bytes(), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(read_reg(&mut io, 0x10 + 32) & (1 << 14), 0);
        // Remote IRR is read-only.
        write_reg(&mut io, 0x10 + 32, 0x50 | (1 << 15) | (1 << 14), &mut out);
        assert_eq!(read_reg(&mut io, 0x10 + 32) & (1 << 14), 0);
    }

    #[test]
    fn unmasking_an_asserted_level_pin_delivers() {
        let mut io = Ioapic::new();
        let mut out = Vec::new();
        write_reg(&mut io, 0x10 + 2 * 9, 0x1_0000 | 0x8000 | 0x39, &mut out);
        io.set_irq(9, true, &mut out);
        assert!(out.is_empty());
        write_reg(&mut io, 0x10 + 2 * 9, 0x8000 | 0x39, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn out_of_range_accesses_are_harmless() {
        let mut io = Ioapic::new();
        let mut out = Vec::new();
        io.set_irq(99, true, &mut out);
        write_reg(&mut io, 0x10 + 2 * 30, 0x30, &mut out);
        assert_eq!(read_reg(&mut io, 0x10 + 2 * 30), 0xffff_ffff);
        assert_eq!(read_reg(&mut io, 0x77), 0xffff_ffff);
        io.mmio_write(0x13, &[1, 2, 3, 4, 5], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn msi_decoding() {
        let m = ApicMessage::from_msi(0xfee0_2000, 0x4061).unwrap();
        assert_eq!(m.vector, 0x61);
        assert_eq!(m.dest, Destination::Physical(2));
        assert_eq!(m.mode, DeliveryMode::Fixed);
        let m = ApicMessage::from_msi(0xfee0_300c, 0x0162).unwrap();
        assert_eq!(m.dest, Destination::Logical(3));
        assert_eq!(m.mode, DeliveryMode::LowestPriority);
        assert!(ApicMessage::from_msi(0xfec0_0000, 0).is_none());
    }
}
