//! The pair of 8259A programmable interrupt controllers of a PC (master at 0x20/0x21, slave
//! at 0xa0/0xa1 cascaded on the master's IR2) and their edge/level control registers (ELCR,
//! 0x4d0/0x4d1).
//!
//! Linux uses the PIC during early boot (before the IOAPIC is set up) and to check the timer
//! wiring; some guests use it for good. The model follows the datasheet and the behaviour of
//! QEMU's and KVM's i8259: ICW1..ICW4, OCW1..OCW3, IRR/ISR/IMR, edge and level triggering,
//! auto-EOI, specific and non-specific EOI, priority rotation, special mask mode, poll mode
//! and special fully nested mode.
//!
//! The struct is its own snapshot state (plain serde).

use serde::{Deserialize, Serialize};

/// One 8259A.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicChip {
    /// Line levels seen last (for edge detection).
    pub last_irr: u8,
    pub irr: u8,
    pub imr: u8,
    pub isr: u8,
    /// The IR line that currently has the lowest priority is `priority_add - 1`.
    pub priority_add: u8,
    /// Vector base from ICW2 (low 3 bits zero).
    pub irq_base: u8,
    /// OCW3 read register select: false = IRR, true = ISR.
    pub read_isr: bool,
    /// Next read is a poll (OCW3 P bit).
    pub poll: bool,
    pub special_mask: bool,
    /// 0: operational; 1..3: waiting for ICW2..ICW4.
    pub init_state: u8,
    pub auto_eoi: bool,
    pub rotate_on_auto_eoi: bool,
    pub special_fully_nested: bool,
    pub init4: bool,
    pub single_mode: bool,
    /// Edge/level control: bit set = level triggered.
    pub elcr: u8,
    /// Which ELCR bits are writable.
    pub elcr_mask: u8,
}

impl PicChip {
    fn new(elcr_mask: u8) -> Self {
        PicChip {
            elcr_mask,
            ..Default::default()
        }
    }

    /// Priority (0 = highest) of the highest-priority bit in `mask`, 8 if none.
    fn priority(&self, mask: u8) -> u8 {
        if mask == 0 {
            return 8;
        }
        let mut p: u8 = 0;
        while mask & (1 << (p.wrapping_add(self.priority_add) & 7)) == 0 {
            p += 1;
        }
        p
    }

    /// The IR line this chip would raise INTR for, if any.
    fn pending_irq(&self, is_master: bool) -> Option<u8> {
        let requests = self.irr & !self.imr;
        let priority = self.priority(requests);
        if priority == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.special_fully_nested && is_master {
            // The slave may interrupt its own in-service requests.
            in_service &= !(1 << 2);
        }
        if priority < self.priority(in_service) {
            Some(priority.wrapping_add(self.priority_add) & 7)
        } else {
            None
        }
    }

    fn set_irq(&mut self, irq: u8, level: bool) {
        let mask = 1u8 << irq;
        if self.elcr & mask != 0 {
            if level {
                self.irr |= mask;
                self.last_irr |= mask;
            } else {
                self.irr &= !mask;
                self.last_irr &= !mask;
            }
        } else if level {
            if self.last_irr & mask == 0 {
                self.irr |= mask;
            }
            self.last_irr |= mask;
        } else {
            self.last_irr &= !mask;
        }
    }

    /// The INTA cycle for line `irq`: in-service bit, edge request consumed.
    fn intack(&mut self, irq: u8) {
        let mask = 1u8 << irq;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= mask;
        }
        if self.elcr & mask == 0 {
            self.irr &= !mask;
        }
    }

    fn init_reset(&mut self) {
        let elcr = self.elcr;
        let elcr_mask = self.elcr_mask;
        let irr = self.irr & elcr;
        *self = PicChip::new(elcr_mask);
        self.elcr = elcr;
        self.irr = irr;
    }

    fn write_command(&mut self, val: u8) {
        if val & 0x10 != 0 {
            // ICW1. Bit 3 (level-triggered mode for all lines) is not supported: the ELCR
            // decides per line, as on every PC since the AT.
            self.init_reset();
            self.init_state = 1;
            self.init4 = val & 1 != 0;
            self.single_mode = val & 2 != 0;
        } else if val & 0x08 != 0 {
            // OCW3.
            if val & 0x04 != 0 {
                self.poll = true;
            }
            if val & 0x02 != 0 {
                self.read_isr = val & 1 != 0;
            }
            if val & 0x40 != 0 {
                self.special_mask = val & 0x20 != 0;
            }
        } else {
            // OCW2.
            let cmd = val >> 5;
            match cmd {
                0 | 4 => self.rotate_on_auto_eoi = cmd == 4,
                1 | 5 => {
                    let priority = self.priority(self.isr);
                    if priority != 8 {
                        let irq = priority.wrapping_add(self.priority_add) & 7;
                        self.isr &= !(1 << irq);
                        if cmd == 5 {
                            self.priority_add = (irq + 1) & 7;
                        }
                    }
                }
                3 => self.isr &= !(1 << (val & 7)),
                6 => self.priority_add = ((val & 7) + 1) & 7,
                7 => {
                    let irq = val & 7;
                    self.isr &= !(1 << irq);
                    self.priority_add = (irq + 1) & 7;
                }
                _ => {} // 2: no operation
            }
        }
    }

    fn write_data(&mut self, val: u8) {
        match self.init_state {
            0 => self.imr = val,
            1 => {
                self.irq_base = val & 0xf8;
                self.init_state = match (self.single_mode, self.init4) {
                    (true, true) => 3,
                    (true, false) => 0,
                    (false, _) => 2,
                };
            }
            2 => self.init_state = if self.init4 { 3 } else { 0 },
            _ => {
                self.special_fully_nested = val & 0x10 != 0;
                self.auto_eoi = val & 0x02 != 0;
                self.init_state = 0;
            }
        }
    }

    fn read_command(&self) -> u8 {
        if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }
}

/// The cascaded master/slave pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pic {
    pub master: PicChip,
    pub slave: PicChip,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

/// The master's command port.
pub const MASTER_CMD: u16 = 0x20;
/// The slave's command port.
pub const SLAVE_CMD: u16 = 0xa0;
/// ELCR of the master (0x4d0) and the slave (0x4d1).
pub const ELCR_BASE: u16 = 0x4d0;

impl Pic {
    /// A PIC pair as after power-on. IRQ0, 1, 2 (master) and 8, 13 (slave) are always edge.
    pub fn new() -> Self {
        Pic {
            master: PicChip::new(0xf8),
            slave: PicChip::new(0xde),
        }
    }

    /// Drive ISA IRQ line `irq` (0..15). Line 2 is the cascade and ignores devices.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            2 => {}
            0..=7 => self.master.set_irq(irq, level),
            8..=15 => {
                self.slave.set_irq(irq - 8, level);
                self.update_cascade();
            }
            _ => {}
        }
    }

    /// The slave's INTR output is the master's IR2. The master's request is withdrawn when
    /// the slave's output drops before the INTA (a real part would answer with its default
    /// IR7; withdrawing spares the guest that spurious interrupt).
    fn update_cascade(&mut self) {
        let slave_out = self.slave.pending_irq(false).is_some();
        self.master.set_irq(2, slave_out);
        if !slave_out {
            self.master.irr &= !(1 << 2);
        }
    }

    /// The master's INTR output: an interrupt is waiting for an INTA cycle.
    pub fn output(&self) -> bool {
        self.master.pending_irq(true).is_some()
    }

    /// The INTA cycle: the vector of the highest-priority request, moved to in-service.
    ///
    /// Like the real part, this always yields a vector: with no request (the line went away
    /// between INTR and INTA) the answer is the spurious IRQ7 of the master, or IRQ15 of the
    /// slave when the cascade was raised but the slave has nothing, without setting ISR.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.pending_irq(true) {
            Some(2) => {
                self.master.intack(2);
                let slave_irq = match self.slave.pending_irq(false) {
                    Some(irq) => {
                        self.slave.intack(irq);
                        irq
                    }
                    None => 7,
                };
                self.slave.irq_base.wrapping_add(slave_irq)
            }
            Some(irq) => {
                self.master.intack(irq);
                self.master.irq_base.wrapping_add(irq)
            }
            None => self.master.irq_base.wrapping_add(7),
        };
        self.update_cascade();
        vector
    }

    /// A poll-mode read of one chip: bit 7 = request pending, bits 0..2 = its line; acts
    /// as an INTA for that line.
    fn poll_read(&mut self, slave: bool) -> u8 {
        let result = if slave {
            self.slave.pending_irq(false).inspect(|&irq| {
                self.slave.intack(irq);
            })
        } else {
            let irq = self.master.pending_irq(true);
            if let Some(irq) = irq {
                self.master.intack(irq);
            }
            irq
        };
        if slave {
            self.slave.poll = false;
        } else {
            self.master.poll = false;
        }
        self.update_cascade();
        result.map_or(0, |irq| 0x80 | irq)
    }

    /// Whether this device decodes `port`.
    pub fn handles(port: u16) -> bool {
        matches!(port, 0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1)
    }

    /// A byte read from one of the PIC's ports; `None` if the port is not the PIC's.
    pub fn read(&mut self, port: u16) -> Option<u8> {
        let value = match port {
            0x20 | 0xa0 => {
                let slave = port == 0xa0;
                let chip = if slave { &self.slave } else { &self.master };
                if chip.poll {
                    self.poll_read(slave)
                } else {
                    chip.read_command()
                }
            }
            0x21 | 0xa1 => {
                let slave = port == 0xa1;
                let chip = if slave { &self.slave } else { &self.master };
                if chip.poll {
                    self.poll_read(slave)
                } else {
                    chip.imr
                }
            }
            0x4d0 => self.master.elcr,
            0x4d1 => self.slave.elcr,
            _ => return None,
        };
        Some(value)
    }

    /// A byte written to one of the PIC's ports; false if the port is not the PIC's.
    pub fn write(&mut self, port: u16, val: u8) -> bool {
        match port {
            0x20 => self.master.write_command(val),
            0x21 => self.master.write_data(val),
            0xa0 => self.slave.write_command(val),
            0xa1 => self.slave.write_data(val),
            0x4d0 => self.master.elcr = val & self.master.elcr_mask,
            0x4d1 => self.slave.elcr = val & self.slave.elcr_mask,
            _ => return false,
        }
        self.update_cascade();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ICW sequence of Linux's `init_8259A` (vectors 0x30.., cascade on IR2, no AEOI).
    fn linux_init(pic: &mut Pic) {
        pic.write(0x21, 0xff);
        pic.write(0xa1, 0xff);
        pic.write(0x20, 0x11); // ICW1: edge, cascade, ICW4
        pic.write(0x21, 0x30); // ICW2: vector base
        pic.write(0x21, 0x04); // ICW3: slave on IR2
        pic.write(0x21, 0x01); // ICW4: 8086, normal EOI
        pic.write(0xa0, 0x11);
        pic.write(0xa1, 0x38);
        pic.write(0xa1, 0x02); // slave id 2
        pic.write(0xa1, 0x01);
        pic.write(0x21, 0xfb); // everything masked but the cascade
        pic.write(0xa1, 0xff);
    }

    #[test]
    fn linux_sequence_irq0_ack_eoi() {
        let mut pic = Pic::new();
        linux_init(&mut pic);
        pic.set_irq(0, true);
        pic.set_irq(0, false);
        assert!(!pic.output(), "IRQ0 is still masked");
        pic.write(0x21, 0xfa); // unmask IRQ0
        assert!(pic.output(), "a masked edge stays in IRR");
        assert_eq!(pic.acknowledge(), 0x30);
        assert!(!pic.output());
        // In service: OCW3 read ISR.
        pic.write(0x20, 0x0b);
        assert_eq!(pic.read(0x20), Some(0x01));
        // A second edge waits for the EOI.
        pic.set_irq(0, true);
        pic.set_irq(0, false);
        assert!(!pic.output());
        pic.write(0x20, 0x20); // non-specific EOI
        assert_eq!(pic.read(0x20), Some(0x00));
        assert!(pic.output());
        assert_eq!(pic.acknowledge(), 0x30);
    }

    #[test]
    fn slave_irq_through_cascade_and_spurious() {
        let mut pic = Pic::new();
        linux_init(&mut pic);
        pic.write(0xa1, 0xfe); // unmask IRQ8
        pic.set_irq(8, true);
        assert!(pic.output());
        assert_eq!(pic.acknowledge(), 0x38);
        assert_eq!(pic.master.isr, 0x04);
        assert_eq!(pic.slave.isr, 0x01);
        pic.write(0xa0, 0x20);
        pic.write(0x20, 0x20);
        assert_eq!((pic.master.isr, pic.slave.isr), (0, 0));
        // Nothing pending: INTA yields the master's IRQ7 vector, ISR untouched.
        pic.set_irq(8, false);
        assert!(!pic.output());
        assert_eq!(pic.acknowledge(), 0x37);
        assert_eq!(pic.master.isr, 0);
    }

    #[test]
    fn level_triggered_line_via_elcr_stays_pending() {
        let mut pic = Pic::new();
        linux_init(&mut pic);
        pic.write(0x4d1, 0x02); // IRQ9 level
        assert_eq!(pic.read(0x4d1), Some(0x02));
        pic.write(0x4d0, 0xff);
        assert_eq!(pic.read(0x4d0), Some(0xf8), "IRQ0..2 can't be level");
        pic.write(0xa1, 0xfd);
        pic.set_irq(9, true);
        assert_eq!(pic.acknowledge(), 0x39);
        pic.write(0xa0, 0x20);
        pic.write(0x20, 0x20);
        assert!(pic.output(), "a level line still high re-requests");
        pic.set_irq(9, false);
        assert!(!pic.output());
    }

    #[test]
    fn priority_and_specific_eoi_and_rotation() {
        let mut pic = Pic::new();
        linux_init(&mut pic);
        pic.write(0x21, 0x00);
        pic.set_irq(3, true);
        pic.set_irq(1, true);
        assert_eq!(pic.acknowledge(), 0x31, "IRQ1 beats IRQ3");
        assert!(!pic.output(), "IRQ3 is lower than in-service IRQ1");
        pic.write(0x20, 0x60 | 1); // specific EOI for IRQ1
        assert_eq!(pic.acknowledge(), 0x33);
        // Rotate on non-specific EOI: IRQ3 becomes lowest priority.
        pic.write(0x20, 0xa0);
        assert_eq!(pic.master.priority_add, 4);
        pic.set_irq(1, false);
        pic.set_irq(1, true);
        pic.set_irq(3, false);
        pic.set_irq(3, true);
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), 0x35, "after rotation IRQ5 is highest");
        // Set priority command: IRQ7 lowest, IRQ0 highest again.
        pic.write(0x20, 0xc7);
        assert_eq!(pic.master.priority_add, 0);
    }

    #[test]
    fn auto_eoi_and_poll_mode() {
        let mut pic = Pic::new();
        pic.write(0x20, 0x11);
        pic.write(0x21, 0x08);
        pic.write(0x21, 0x04);
        pic.write(0x21, 0x03); // AEOI
        pic.write(0x21, 0x00);
        pic.set_irq(4, true);
        assert_eq!(pic.acknowledge(), 0x0c);
        assert_eq!(pic.master.isr, 0, "auto-EOI leaves nothing in service");
        // Poll: OCW3 with P bit, then read.
        pic.set_irq(6, true);
        pic.write(0x20, 0x0c);
        assert_eq!(pic.read(0x20), Some(0x86));
        assert_eq!(
            pic.read(0x20),
            Some(0x00),
            "poll is one-shot, IRR now empty"
        );
        pic.write(0x20, 0x0c);
        assert_eq!(pic.read(0x20), Some(0x00), "nothing pending polls as 0");
    }

    #[test]
    fn special_mask_mode_allows_lower_priority() {
        let mut pic = Pic::new();
        linux_init(&mut pic);
        pic.write(0x21, 0x00);
        pic.set_irq(1, true);
        assert_eq!(pic.acknowledge(), 0x31);
        pic.set_irq(4, true);
        assert!(!pic.output());
        pic.write(0x21, 0x02); // mask the in-service line
        pic.write(0x20, 0x68); // OCW3: set special mask
        assert!(pic.output());
        assert_eq!(pic.acknowledge(), 0x34);
    }

    #[test]
    fn imr_reads_back_and_unknown_ports_are_not_handled() {
        let mut pic = Pic::new();
        pic.write(0x21, 0x5a);
        assert_eq!(pic.read(0x21), Some(0x5a));
        assert_eq!(pic.read(0x22), None);
        assert!(!pic.write(0x22, 0));
        assert!(Pic::handles(0xa1) && !Pic::handles(0x40));
    }
}
