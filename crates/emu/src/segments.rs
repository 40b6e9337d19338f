//! Segmentation: descriptor-table reads, segment-register loads with the protection checks
//! Linux and firmware rely on, and segment:offset to linear address conversion.
//!
//! Not modelled: limit checks on data accesses (flat segments everywhere in Linux), call
//! gates, task gates/task switches, and setting the descriptor accessed bit.

use crate::cpu::{Cpu, CS, FS, SS};
use crate::exceptions::{gp, gp0, np, ss, R};
use crate::platform::Platform;
use crate::state::SegmentState;

/// Decodes an 8-byte descriptor into a segment cache entry.
pub fn parse_descriptor(sel: u16, d: u64) -> SegmentState {
    let mut limit = ((d & 0xffff) | ((d >> 32) & 0xf_0000)) as u32;
    let g = (d >> 55) & 1 != 0;
    if g {
        limit = (limit << 12) | 0xfff;
    }
    SegmentState {
        selector: sel,
        base: ((d >> 16) & 0xff_ffff) | ((d >> 32) & 0xff00_0000),
        limit,
        type_: ((d >> 40) & 0xf) as u8,
        s: (d >> 44) & 1 != 0,
        dpl: ((d >> 45) & 3) as u8,
        present: (d >> 47) & 1 != 0,
        avl: (d >> 52) & 1 != 0,
        l: (d >> 53) & 1 != 0,
        db: (d >> 54) & 1 != 0,
        g,
        unusable: false,
    }
}

/// The segment real mode (and the reset state) gives a selector.
pub fn real_mode_segment(old: &SegmentState, sel: u16) -> SegmentState {
    SegmentState {
        selector: sel,
        base: (sel as u64) << 4,
        present: true,
        unusable: false,
        ..*old
    }
}

impl Cpu {
    /// Linear address of `off` in segment `seg`.
    #[inline(always)]
    pub(crate) fn seg_lin(&self, seg: usize, off: u64) -> u64 {
        if self.bitness == 64 {
            if seg >= FS {
                self.seg[seg].base.wrapping_add(off)
            } else {
                off
            }
        } else {
            self.seg[seg].base.wrapping_add(off) & 0xffff_ffff
        }
    }

    /// Linear address of descriptor `sel` in the GDT or LDT; #GP(sel) beyond the limit.
    fn descriptor_addr(&self, sel: u16, size: u64) -> R<u64> {
        let (base, limit) = if sel & 4 != 0 {
            if self.ldtr.unusable || !self.ldtr.present {
                return Err(gp((sel & 0xfffc) as u32));
            }
            (self.ldtr.base, self.ldtr.limit as u64)
        } else {
            (self.gdtr.base, self.gdtr.limit as u64)
        };
        let off = (sel & 0xfff8) as u64;
        if off + size - 1 > limit {
            return Err(gp((sel & 0xfffc) as u32));
        }
        Ok(base.wrapping_add(off))
    }

    /// Reads the 8-byte descriptor for `sel`.
    pub(crate) fn read_descriptor(&mut self, io: &mut dyn Platform, sel: u16) -> R<u64> {
        let a = self.descriptor_addr(sel, 8)?;
        self.read_sys(io, a, 8)
    }

    /// Reads a 16-byte system descriptor (LDT/TSS in long mode) into a segment.
    fn read_system_descriptor(&mut self, io: &mut dyn Platform, sel: u16) -> R<SegmentState> {
        let long = self.efer & crate::cpu::EFER_LMA != 0;
        let a = self.descriptor_addr(sel, if long { 16 } else { 8 })?;
        let lo = self.read_sys(io, a, 8)?;
        let mut s = parse_descriptor(sel, lo);
        if long {
            let hi = self.read_sys(io, a.wrapping_add(8), 8)?;
            s.base |= (hi & 0xffff_ffff) << 32;
            // A 64-bit LDT or TSS base must be canonical.
            if !matches!((s.base as i64) >> 47, 0 | -1) {
                return Err(gp((sel & 0xfffc) as u32));
            }
        }
        Ok(s)
    }

    /// MOV/POP/LxS to a data segment register or SS.
    pub(crate) fn load_seg(&mut self, io: &mut dyn Platform, idx: usize, sel: u16) -> R<()> {
        if self.real_mode() || self.flags.bits & crate::flags::VM != 0 {
            self.seg[idx] = real_mode_segment(&self.seg[idx], sel);
            if idx == CS {
                self.update_mode();
            }
            return Ok(());
        }
        if sel & 0xfffc == 0 {
            // A null SS is allowed only in 64-bit mode below CPL 3, with RPL = CPL.
            if idx == CS
                || (idx == SS && !(self.long64() && self.cpl != 3 && (sel & 3) as u8 == self.cpl))
            {
                return Err(gp0());
            }
            // The base is cleared for FS and GS too, as current AMD and Intel CPUs do
            // (CPUID 0x8000_0021 EAX[6], NullSelectorClearsBase).
            self.seg[idx] = SegmentState {
                selector: sel,
                base: 0,
                unusable: true,
                dpl: if idx == SS { self.cpl } else { 0 },
                ..SegmentState::default()
            };
            return Ok(());
        }
        let d = self.read_descriptor(io, sel)?;
        let s = parse_descriptor(sel, d);
        let rpl = (sel & 3) as u8;
        let err = (sel & 0xfffc) as u32;
        if !s.s {
            return Err(gp(err));
        }
        let code = s.type_ & 8 != 0;
        if idx == SS {
            if code || s.type_ & 2 == 0 || rpl != self.cpl || s.dpl != self.cpl {
                return Err(gp(err));
            }
            if !s.present {
                return Err(ss(err));
            }
        } else {
            if code && s.type_ & 2 == 0 {
                return Err(gp(err));
            }
            let conforming = code && s.type_ & 4 != 0;
            if !conforming && s.dpl < rpl.max(self.cpl) {
                return Err(gp(err));
            }
            if !s.present {
                return Err(np(err));
            }
        }
        self.seg[idx] = s;
        if idx == SS {
            self.shadow = true;
            self.dbg.movss = true;
            self.block_end = true;
        }
        Ok(())
    }

    /// Loads CS for a far JMP/CALL/RET or IRET to `sel:` at privilege `new_cpl`.
    pub(crate) fn load_cs(&mut self, io: &mut dyn Platform, sel: u16, ret: bool) -> R<()> {
        if self.real_mode() || self.flags.bits & crate::flags::VM != 0 {
            self.seg[CS] = real_mode_segment(&self.seg[CS], sel);
            self.seg[CS].type_ |= 8;
            self.update_mode();
            return Ok(());
        }
        if sel & 0xfffc == 0 {
            return Err(gp0());
        }
        let d = self.read_descriptor(io, sel)?;
        let s = parse_descriptor(sel, d);
        let err = (sel & 0xfffc) as u32;
        if !s.s || s.type_ & 8 == 0 {
            // Call gates, TSS and task gates are not supported.
            return Err(gp(err));
        }
        let rpl = (sel & 3) as u8;
        let conforming = s.type_ & 4 != 0;
        let new_cpl = if ret {
            if rpl < self.cpl {
                return Err(gp(err));
            }
            if conforming && s.dpl > rpl || !conforming && s.dpl != rpl {
                return Err(gp(err));
            }
            rpl
        } else {
            if conforming && s.dpl > self.cpl
                || !conforming && (s.dpl != self.cpl || rpl > self.cpl)
            {
                return Err(gp(err));
            }
            self.cpl
        };
        if !s.present {
            return Err(np(err));
        }
        self.seg[CS] = SegmentState {
            selector: (sel & 0xfffc) | new_cpl as u16,
            ..s
        };
        self.cpl = new_cpl;
        self.update_mode();
        Ok(())
    }

    /// Installs CS from an already-validated descriptor at privilege `cpl`.
    pub(crate) fn set_cs_desc(&mut self, sel: u16, d: u64, cpl: u8) {
        let s = parse_descriptor(sel, d);
        self.seg[CS] = SegmentState {
            selector: (sel & 0xfffc) | cpl as u16,
            ..s
        };
        self.cpl = cpl;
        self.update_mode();
    }

    pub(crate) fn lldt(&mut self, io: &mut dyn Platform, sel: u16) -> R<()> {
        if sel & 0xfffc == 0 {
            self.ldtr = SegmentState {
                selector: sel,
                unusable: true,
                ..SegmentState::default()
            };
            return Ok(());
        }
        if sel & 4 != 0 {
            return Err(gp((sel & 0xfffc) as u32));
        }
        let s = self.read_system_descriptor(io, sel)?;
        if s.s || s.type_ != 2 {
            return Err(gp((sel & 0xfffc) as u32));
        }
        if !s.present {
            return Err(np((sel & 0xfffc) as u32));
        }
        self.ldtr = s;
        Ok(())
    }

    pub(crate) fn ltr(&mut self, io: &mut dyn Platform, sel: u16) -> R<()> {
        if sel & 0xfffc == 0 || sel & 4 != 0 {
            return Err(gp((sel & 0xfffc) as u32));
        }
        let mut s = self.read_system_descriptor(io, sel)?;
        if s.s || (s.type_ != 9 && s.type_ != 1) {
            return Err(gp((sel & 0xfffc) as u32));
        }
        if !s.present {
            return Err(np((sel & 0xfffc) as u32));
        }
        // Mark the descriptor busy. Written through the physical page (the GDT may be
        // mapped read-only, as Linux does; hardware sets the bit before that mapping).
        let a = self.descriptor_addr(sel, 8)?.wrapping_add(5);
        if let Ok(e) = self.translate(a, crate::tlb::Access::Read, false) {
            let gpa = e.phys + (a & 0xfff);
            let mut b = [0u8; 1];
            if self.ram.read_phys(gpa, &mut b) {
                b[0] |= 2;
                self.ram.write_phys(gpa, &b);
            }
        }
        s.type_ |= 2;
        self.tr = s;
        Ok(())
    }
}
