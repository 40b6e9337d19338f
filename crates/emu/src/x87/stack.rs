//! The register stack (TOP, tags, push/pop), stack faults and the status word's exception
//! bookkeeping.
//!
//! `FpuState::st` holds the registers in stack order (ST0 first), as FXSAVE stores them;
//! `FpuState::ftw` is the abridged tag (one "not empty" bit per physical register), so
//! ST(i) is physical register (TOP + i) mod 8. The full two-bit tags of FNSTENV/FNSAVE
//! are derived from the register contents ([`Ext::tag`]).

use iced_x86::Register;

use super::float::{Ext, B, C0, C1, C2, C3, DE, ES, EXC, IE, OE, PE, SF, UE, ZE};
use crate::cpu::Cpu;

impl Cpu {
    pub(super) fn top(&self) -> usize {
        ((self.fpu.fsw >> 11) & 7) as usize
    }

    pub(super) fn set_top(&mut self, top: usize) {
        self.fpu.fsw = (self.fpu.fsw & !0x3800) | (((top & 7) as u16) << 11);
    }

    /// Changes TOP without push or pop (FINCSTP, FDECSTP, FLDENV): the physical registers
    /// stay, so the stack-ordered copy rotates.
    pub(super) fn move_top(&mut self, top: usize) {
        let d = (top + 8 - self.top()) & 7;
        self.fpu.st.rotate_left(d);
        self.set_top(top);
    }

    /// Physical register number of ST(i).
    pub(super) fn phys(&self, i: usize) -> usize {
        (self.top() + i) & 7
    }

    pub(super) fn is_empty(&self, i: usize) -> bool {
        self.fpu.ftw & (1 << self.phys(i)) == 0
    }

    /// ST(i) regardless of its tag.
    pub(super) fn raw(&self, i: usize) -> Ext {
        Ext::from_bytes(&self.fpu.st[i & 7][..10])
    }

    /// ST(i), or None if it is empty.
    pub(super) fn get(&self, i: usize) -> Option<Ext> {
        (!self.is_empty(i)).then(|| self.raw(i))
    }

    /// Writes ST(i) and tags it non-empty.
    pub(super) fn put(&mut self, i: usize, v: Ext) {
        let mut r = [0u8; 16];
        r[..10].copy_from_slice(&v.to_bytes());
        self.fpu.st[i & 7] = r;
        self.fpu.ftw |= 1 << self.phys(i);
    }

    pub(super) fn fpush(&mut self, v: Ext) {
        let top = (self.top() + 7) & 7;
        self.set_top(top);
        self.fpu.st.rotate_right(1);
        self.put(0, v);
    }

    pub(super) fn fpop(&mut self) {
        let top = self.top();
        self.fpu.ftw &= !(1 << top);
        self.fpu.st.rotate_left(1);
        self.set_top(top + 1);
    }

    /// Sets the condition codes given in `mask` to the bits of `v`.
    pub(super) fn set_cc(&mut self, mask: u16, v: u16) {
        self.fpu.fsw = (self.fpu.fsw & !mask) | (v & mask);
    }

    /// Records exception flags (IE..PE, SF) and sets ES/B if one of them is unmasked.
    /// Returns true if an unmasked IE, DE or ZE suppresses the result: the destination
    /// and TOP stay unchanged.
    /// An invalid operation or a zero divide is reported without DE, even with a denormal
    /// operand.
    pub(super) fn raise(&mut self, f: u16) -> bool {
        let mut f = if f & (IE | ZE) != 0 { f & !DE } else { f };
        // An unmasked pre-computation exception stops the operation: no OE/UE/PE.
        let stop = f & (IE | DE | ZE) & !self.fpu.fcw != 0;
        if stop {
            f &= !(OE | UE | PE);
        }
        self.fpu.fsw |= f & (EXC | SF);
        self.update_es();
        stop
    }

    /// ES and B summarize the unmasked exception flags.
    pub(super) fn update_es(&mut self) {
        if self.fpu.fsw & EXC & !self.fpu.fcw != 0 {
            self.fpu.fsw |= ES | B;
        } else {
            self.fpu.fsw &= !(ES | B);
        }
    }

    /// Stack overflow or underflow: IE and SF, C1 = 1 for overflow. Returns true if IE is
    /// masked (the caller then writes the QNaN indefinite).
    pub(super) fn stack_fault(&mut self, overflow: bool) -> bool {
        self.set_cc(C1, if overflow { C1 } else { 0 });
        !self.raise(IE | SF)
    }

    /// Pushes a loaded value with the flags of its conversion (stack overflow first).
    pub(super) fn push_checked(&mut self, v: Ext, f: u16) {
        if !self.is_empty(7) {
            if self.stack_fault(true) {
                self.fpush(Ext::INDEFINITE);
            }
            return;
        }
        self.set_cc(C1, 0);
        // A load goes ahead even with an unmasked DE (what the hardware does).
        if !self.raise(f) || f & IE == 0 {
            self.fpush(v);
        }
    }

    /// Writes an arithmetic result to ST(i) (C1 from the rounding) and pops if asked,
    /// unless an unmasked exception suppresses it.
    pub(super) fn result(&mut self, i: usize, v: Ext, f: u16, pop: bool) {
        let stop = self.raise(f);
        self.set_cc(C1, if stop { 0 } else { f & C1 });
        if stop {
            return;
        }
        self.put(i, v);
        if pop {
            self.fpop();
        }
    }

    /// Stack underflow of an instruction writing ST(i): the indefinite if masked.
    pub(super) fn underflow_into(&mut self, i: usize, pop: bool) {
        if self.stack_fault(false) {
            self.put(i, Ext::INDEFINITE);
            if pop {
                self.fpop();
            }
        }
    }

    /// Condition codes of a comparison: C3 C2 C0 = 000 (>), 001 (<), 100 (=), 111
    /// (unordered); C1 = 0.
    pub(super) fn compare_cc(&mut self, ord: Option<std::cmp::Ordering>) {
        use std::cmp::Ordering::*;
        let cc = match ord {
            Some(Greater) => 0,
            Some(Less) => C0,
            Some(Equal) => C3,
            None => C3 | C2 | C0,
        };
        self.set_cc(C0 | C1 | C2 | C3, cc);
    }

    /// The full tag word (two bits per physical register) for FNSTENV/FNSAVE.
    pub(super) fn full_tag(&self) -> u16 {
        let mut t = 0u16;
        for p in 0..8 {
            let tag = if self.fpu.ftw & (1 << p) == 0 {
                3
            } else {
                self.raw((p + 8 - self.top()) & 7).tag()
            };
            t |= tag << (2 * p);
        }
        t
    }

    /// The MMX view of the register file: MMi is the significand (bits 63:0) of physical
    /// register i, whatever TOP is.
    pub(crate) fn mm(&self, i: usize) -> u64 {
        let r = &self.fpu.st[(i + 8 - self.top()) & 7];
        u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]])
    }

    /// Writes MMi: the significand of physical register i, with its sign and exponent
    /// (bits 79:64) set to all ones. The tags are the caller's business ([`Cpu::mmx_enter`]).
    pub(crate) fn set_mm(&mut self, i: usize, v: u64) {
        let r = &mut self.fpu.st[(i + 8 - self.top()) & 7];
        r[..8].copy_from_slice(&v.to_le_bytes());
        r[8..10].copy_from_slice(&[0xff, 0xff]);
    }

    /// The x87-to-MMX transition every MMX instruction but EMMS makes: TOP = 0 and every
    /// register tagged valid (the registers themselves stay where they are).
    pub(crate) fn mmx_enter(&mut self) {
        self.move_top(0);
        self.fpu.ftw = 0xff;
    }

    /// EMMS: every register tagged empty, and TOP = 0 too (what this host's Intel CPU does;
    /// the SDM only speaks of the tags).
    pub(crate) fn mmx_empty(&mut self) {
        self.move_top(0);
        self.fpu.ftw = 0;
    }

    /// ST index of an `ST(i)` register operand.
    pub(super) fn st_index(r: Register) -> usize {
        (r as usize).wrapping_sub(Register::ST0 as usize) & 7
    }
}
