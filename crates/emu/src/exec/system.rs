//! System instructions: control/debug registers, descriptor tables, MSRs, CPUID, TSC,
//! SYSCALL/SYSRET/SWAPGS, HLT, INVLPG and cache control.

use iced_x86::{Code, Instruction, Mnemonic as M, Register};

use crate::cpu::*;
use crate::exceptions::{gp0, ud, R};
use crate::flags::{IF, RF, VM};
use crate::platform::Platform;
use crate::state::SegmentState;

/// CPUID.1:EDX bit 9: an enabled local APIC is present.
const LEAF1_EDX_APIC: u32 = 1 << 9;

impl Cpu {
    fn require_cpl0(&self) -> R<()> {
        if self.cpl != 0 {
            Err(gp0())
        } else {
            Ok(())
        }
    }

    pub(super) fn mov_from_cr_dr(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        self.require_cpl0()?;
        let s = ins.op1_register();
        if s.is_dr() {
            let v = self.read_dr(s as usize - Register::DR0 as usize)?;
            let d = ins.op0_register();
            self.reg_write(d, v & crate::flags::mask(d.size()));
            return Ok(());
        }
        let v = match s {
            Register::CR0 => self.cr0,
            Register::CR2 => self.cr2,
            Register::CR3 => self.cr3,
            Register::CR4 => self.cr4,
            // CR8 is the local APIC's TPR[7:4]: the platform owns it.
            Register::CR8 => io.cr8(),
            _ => return Err(ud()),
        };
        let d = ins.op0_register();
        self.reg_write(d, v & crate::flags::mask(d.size()));
        Ok(())
    }

    pub(super) fn mov_to_cr_dr(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        self.require_cpl0()?;
        let v = self.reg_read(ins.op1_register());
        let d = ins.op0_register();
        self.block_end = true;
        match d {
            Register::CR0 => self.write_cr0(v),
            Register::CR2 => {
                self.cr2 = v;
                Ok(())
            }
            Register::CR3 => self.write_cr3(v),
            Register::CR4 => self.write_cr4(v),
            Register::CR8 => {
                if v > 15 {
                    return Err(gp0());
                }
                io.set_cr8(v);
                Ok(())
            }
            r if r.is_dr() => self.write_dr(r as usize - Register::DR0 as usize, v),
            _ => Err(ud()),
        }
    }

    pub(crate) fn write_cr0(&mut self, v: u64) -> R<()> {
        let v = v | 0x10; // ET is hardwired
        if v >> 32 != 0 && self.long64() {
            return Err(gp0());
        }
        let v = v & 0xffff_ffff;
        if v & CR0_PG != 0 && v & CR0_PE == 0 {
            return Err(gp0());
        }
        if v & CR0_PG != 0 && self.cr0 & CR0_PG == 0 && self.efer & EFER_LME != 0 {
            if self.cr4 & CR4_PAE == 0 {
                return Err(gp0());
            }
            self.efer |= EFER_LMA;
        }
        if v & CR0_PG == 0 && self.cr4 & crate::protect::CR4_PCIDE != 0 {
            return Err(gp0());
        }
        if v & CR0_PG == 0 && self.cr0 & CR0_PG != 0 {
            if self.long64() {
                return Err(gp0());
            }
            self.efer &= !EFER_LMA;
        }
        let changed = self.cr0 ^ v;
        self.cr0 = v;
        if self.cr0 & CR0_PE == 0 {
            self.cpl = 0;
        }
        if changed & (CR0_PG | CR0_WP | CR0_PE) != 0 {
            self.tlb.flush_all();
        }
        self.update_mode();
        Ok(())
    }

    pub(crate) fn write_cr4(&mut self, v: u64) -> R<()> {
        // Writable: what CPUID offers (see `protect::Features::cr4_writable`), and
        // OSXSAVE when this vCPU's CPUID offers XSAVE.
        let xsave = if self.offers_xsave() { CR4_OSXSAVE } else { 0 };
        if v & !(self.feat.cr4_writable() | xsave) != 0 {
            return Err(gp0());
        }
        if self.efer & EFER_LMA != 0 && v & CR4_PAE == 0 {
            return Err(gp0());
        }
        self.check_cr4_pcide(v)?;
        let changed = self.cr4 ^ v;
        self.cr4 = v;
        // Bits that change translations or the permissions cached in TLB entries.
        use crate::protect::{CR4_PCIDE, CR4_PKE, CR4_PKS, CR4_SMAP, CR4_SMEP};
        let paging = CR4_PAE | CR4_PGE | CR4_PSE | CR4_PCIDE | CR4_SMEP | CR4_SMAP;
        if changed & (paging | CR4_PKE | CR4_PKS) != 0 {
            self.tlb.flush_all();
        }
        Ok(())
    }

    pub(super) fn system(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        match m {
            M::Hlt => {
                self.require_cpl0()?;
                self.halted = true;
                self.block_end = true;
                Ok(())
            }
            M::Cpuid => {
                let (a, b, c, d) = self.cpuid_dynamic(self.gpr[0] as u32, self.gpr[1] as u32);
                let c = self.cpuid_ospke(self.gpr[0] as u32, self.gpr[1] as u32, c);
                self.gpr[0] = a as u64;
                self.gpr[3] = b as u64;
                self.gpr[1] = c as u64;
                self.gpr[2] = d as u64;
                Ok(())
            }
            M::Rdtsc | M::Rdtscp => {
                if self.cr4 & 4 != 0 && self.cpl != 0 {
                    return Err(gp0());
                }
                let t = io.tsc().wrapping_add(self.msr.tsc_offset);
                self.gpr[0] = t & 0xffff_ffff;
                self.gpr[2] = t >> 32;
                if m == M::Rdtscp {
                    self.gpr[1] = self.msr.tsc_aux & 0xffff_ffff;
                }
                Ok(())
            }
            M::Rdpmc => self.rdpmc(),
            M::Rdmsr => {
                self.require_cpl0()?;
                let v = self.rdmsr(io, self.gpr[1] as u32)?;
                self.gpr[0] = v & 0xffff_ffff;
                self.gpr[2] = v >> 32;
                Ok(())
            }
            M::Wrmsr => {
                self.require_cpl0()?;
                let v = (self.gpr[2] << 32) | (self.gpr[0] & 0xffff_ffff);
                self.block_end = true;
                self.wrmsr(io, self.gpr[1] as u32, v)
            }
            M::Lgdt | M::Lidt => {
                self.require_cpl0()?;
                let lin = self.mem_lin(ins);
                let limit = self.read_lin(io, lin, 2, false)? as u16;
                let bsize = if self.long64() { 8 } else { 4 };
                let mut base = self.read_lin(io, lin.wrapping_add(2), bsize, false)?;
                if !self.long64() && matches!(ins.code(), Code::Lgdt_m1632_16 | Code::Lidt_m1632_16)
                {
                    base &= 0xff_ffff;
                }
                if self.long64() && !matches!((base as i64) >> 47, 0 | -1) {
                    return Err(gp0());
                }
                let t = crate::state::TableState { base, limit };
                if m == M::Lgdt {
                    self.gdtr = t;
                } else {
                    self.idtr = t;
                }
                Ok(())
            }
            M::Sgdt | M::Sidt => {
                self.check_umip()?;
                let t = if m == M::Sgdt { self.gdtr } else { self.idtr };
                let lin = self.mem_lin(ins);
                let user = self.user();
                let bsize = if self.long64() { 8 } else { 4 };
                let mut buf = [0u8; 10];
                buf[..2].copy_from_slice(&t.limit.to_le_bytes());
                buf[2..10].copy_from_slice(&t.base.to_le_bytes());
                self.write_bytes(io, lin, &buf[..2 + bsize], user)
            }
            M::Lldt | M::Ltr => {
                self.require_cpl0()?;
                if self.real_mode() {
                    return Err(ud());
                }
                let sel = self.rd(io, ins, 0, 2)? as u16;
                if m == M::Lldt {
                    self.lldt(io, sel)
                } else {
                    self.ltr(io, sel)
                }
            }
            M::Sldt | M::Str | M::Smsw => {
                self.check_umip()?;
                let v = match m {
                    M::Sldt => self.ldtr.selector as u64,
                    M::Str => self.tr.selector as u64,
                    _ => self.cr0,
                };
                let size = self.op_size(ins, 0);
                self.wr(io, ins, 0, size, v & crate::flags::mask(size))
            }
            M::Lmsw => {
                self.require_cpl0()?;
                let v = self.rd(io, ins, 0, 2)?;
                // LMSW can set PE but not clear it.
                let nv = (self.cr0 & !0xe) | (v & 0xf) | (self.cr0 & CR0_PE);
                self.write_cr0(nv)
            }
            M::Clts => {
                self.require_cpl0()?;
                self.cr0 &= !CR0_TS;
                Ok(())
            }
            M::Invlpg => {
                self.require_cpl0()?;
                let lin = self.mem_lin(ins);
                self.tlb.flush_page(lin);
                Ok(())
            }
            M::Invpcid => self.invpcid(io, ins),
            M::Stac | M::Clac => self.stac_clac(m == M::Stac),
            M::Rdpkru => self.rdpkru(),
            M::Wrpkru => self.wrpkru(),
            M::Wbinvd | M::Invd => self.require_cpl0(),
            M::Swapgs => {
                if !self.long64() {
                    return Err(ud());
                }
                self.require_cpl0()?;
                std::mem::swap(&mut self.seg[GS].base, &mut self.msr.kernel_gs_base);
                Ok(())
            }
            M::Lar | M::Lsl | M::Verr | M::Verw => self.segment_query(io, ins),
            M::Syscall | M::Sysret | M::Sysretq => {
                // Their single-step trap depends on TF at the end, not the start.
                self.dbg.tf_at_end = true;
                self.block_end = true;
                if m == M::Syscall {
                    self.syscall()
                } else {
                    self.sysret(ins)
                }
            }
            M::Ud0 | M::Ud1 | M::Ud2 => Err(ud()),
            _ => Err(self.unimplemented(ins)),
        }
    }

    /// LAR/LSL/VERR/VERW: inspect a descriptor without loading it; ZF reports validity.
    fn segment_query(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        if self.real_mode() {
            return Err(ud());
        }
        let m = ins.mnemonic();
        let src = if matches!(m, M::Verr | M::Verw) { 0 } else { 1 };
        let sel = self.rd(io, ins, src, 2)? as u16;
        let desc = if sel & 0xfffc == 0 {
            None
        } else {
            match self.read_descriptor(io, sel) {
                Ok(d) => Some(d),
                Err(f) if f.vector == crate::exceptions::GP => None,
                Err(f) => return Err(f),
            }
        };
        let ok = desc.and_then(|d| {
            let s = crate::segments::parse_descriptor(sel, d);
            let rpl = (sel & 3) as u8;
            let code = s.s && s.type_ & 8 != 0;
            let conforming = code && s.type_ & 4 != 0;
            if !conforming && s.dpl < self.cpl.max(rpl) {
                return None;
            }
            let long = self.efer & EFER_LMA != 0;
            let valid = match m {
                M::Verr => s.s && (!code || s.type_ & 2 != 0),
                M::Verw => s.s && !code && s.type_ & 2 != 0,
                M::Lar => {
                    s.s || if long {
                        matches!(s.type_, 2 | 9 | 11 | 12)
                    } else {
                        matches!(s.type_, 1..=5 | 9 | 11 | 12)
                    }
                }
                _ => {
                    s.s || if long {
                        matches!(s.type_, 2 | 9 | 11)
                    } else {
                        matches!(s.type_, 1 | 2 | 3 | 9 | 11)
                    }
                }
            };
            valid.then_some((d, s))
        });
        match ok {
            Some((d, s)) => {
                self.flags.set_masked(crate::flags::ZF, crate::flags::ZF);
                match m {
                    M::Lar => {
                        let v = (d >> 32) & 0x00f0_ff00;
                        let r = ins.op0_register();
                        self.reg_write(r, v & crate::flags::mask(r.size()));
                    }
                    M::Lsl => {
                        let r = ins.op0_register();
                        self.reg_write(r, s.limit as u64 & crate::flags::mask(r.size()));
                    }
                    _ => {}
                }
            }
            None => self.flags.set_masked(crate::flags::ZF, 0),
        }
        Ok(())
    }

    fn syscall(&mut self) -> R<()> {
        if self.efer & EFER_SCE == 0 || self.efer & EFER_LMA == 0 {
            return Err(ud());
        }
        let star = self.msr.star;
        let sel = ((star >> 32) & 0xfffc) as u16;
        let fl = self.flags.get();
        if self.long64() {
            self.gpr[1] = self.next_rip;
            self.gpr[11] = fl & !RF;
            self.next_rip = self.msr.lstar;
        } else {
            self.gpr[1] = self.next_rip & 0xffff_ffff;
            self.gpr[11] = fl & !RF;
            self.next_rip = self.msr.cstar;
        }
        self.seg[CS] = flat_segment(sel, 0xb, 0, true);
        self.seg[SS] = flat_segment(sel + 8, 0x3, 0, false);
        self.cpl = 0;
        self.flags.set(fl & !self.msr.sfmask & !(RF | VM));
        self.update_mode();
        Ok(())
    }

    fn sysret(&mut self, ins: &Instruction) -> R<()> {
        if self.efer & EFER_SCE == 0 {
            return Err(ud());
        }
        if !self.long64() || self.cpl != 0 {
            return Err(gp0());
        }
        let base = ((self.msr.star >> 48) & 0xffff) as u16;
        let to64 = ins.code() == Code::Sysretq;
        let rip = self.gpr[1];
        if to64 {
            let top = (rip as i64) >> 47;
            if top != 0 && top != -1 {
                return Err(gp0());
            }
            self.seg[CS] = flat_segment((base + 16) | 3, 0xb, 3, true);
            self.next_rip = rip;
        } else {
            self.seg[CS] = flat_segment(base | 3, 0xb, 3, false);
            self.seg[CS].db = true;
            self.next_rip = rip & 0xffff_ffff;
        }
        // SS keeps the hidden part hardware gives it (flat, writable, DPL 3).
        self.seg[SS] = SegmentState {
            selector: (base + 8) | 3,
            ..flat_segment(0, 0x3, 3, false)
        };
        self.seg[SS].db = true;
        self.cpl = 3;
        let f = (self.gpr[11] & 0x3c_7fd7) | 2;
        self.flags.set(f);
        let _ = IF;
        self.update_mode();
        Ok(())
    }
}

/// A flat 4 GiB segment as SYSCALL/SYSRET load them.
pub(crate) fn flat_segment(sel: u16, type_: u8, dpl: u8, long: bool) -> SegmentState {
    SegmentState {
        selector: sel,
        base: 0,
        limit: 0xffff_ffff,
        type_,
        s: true,
        dpl,
        present: true,
        avl: false,
        l: long,
        db: !long,
        g: true,
        unusable: false,
    }
}

impl Cpu {
    /// CPUID as the instruction returns it: the vCPU's table, plus the bits that follow
    /// the vCPU's state as on hardware — leaf 1 ECX bit 27 (OSXSAVE) is CR4.OSXSAVE, leaf 1
    /// EDX bit 9 (APIC) IA32_APIC_BASE's global enable, and leaf 0xD subleaf 0 EBX the
    /// XSAVE area size for the components XCR0 enables.
    pub(crate) fn cpuid_dynamic(&self, leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
        let (a, mut b, mut c, mut d) = crate::cpuid::lookup(&self.cpuid, leaf, sub);
        match (leaf, sub) {
            (1, _) => {
                c &= !(1 << 27);
                if self.cr4 & CR4_OSXSAVE != 0 {
                    c |= 1 << 27;
                }
                if self.msr.apic_base & crate::msr::APIC_BASE_ENABLE == 0 {
                    // EDX.APIC follows IA32_APIC_BASE's global enable.
                    d &= !LEAF1_EDX_APIC;
                }
            }
            (0xd, 0) if a != 0 => b = crate::xsave::area_size(self.fpu.xcr0),
            _ => {}
        }
        (a, b, c, d)
    }
}
