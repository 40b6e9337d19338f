//! The MMX-register instruction forms: MMX itself, the MMX forms SSE and SSE2 added
//! (PSHUFW, PMINUB & co., PSADBW, PMOVMSKB, PEXTRW, PINSRW, MOVNTQ, MASKMOVQ, PADDQ,
//! PSUBQ, PMULUDQ), MOVQ2DQ/MOVDQ2Q, the CVT*PI* conversions, SSSE3's MMX forms, and
//! EMMS (and AMD's FEMMS, the same here).
//!
//! The lanes are computed by the XMM code (`compute::lane`) on the
//! 64-bit values zero-extended to 128 bits, keeping the low 64 bits of the result. That is
//! exact for every lane-wise operation; the few whose lanes cross the halves of an XMM
//! register get their inputs arranged so that the low half is the MMX result ([`widen`]).
//!
//! Architectural state: MMi is the significand of x87 physical register i (the accessors
//! are in `x87/stack.rs`). Every instruction here but EMMS, FEMMS and the memory forms of
//! CVTPI2PS/CVTPI2PD sets TOP = 0 and tags every register valid; writing MMi sets its
//! sign and exponent (bits 79:64) to all ones; EMMS tags every register empty and also
//! sets TOP = 0 (as the host CPU of the differential test does).
//! Exceptions, in order: #UD if CR0.EM (or, for the forms with an XMM operand, if
//! CR4.OSFXSR is clear), #NM if CR0.TS, #MF for a pending unmasked x87 exception if CR0.NE.
//! The conversions round by MXCSR.RC and, like the XMM conversions, neither set MXCSR flags
//! nor raise #XM.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use super::compute;
use super::lanes::*;
use crate::cpu::{Cpu, CR0_EM, CR0_TS, CR4_OSFXSR};
use crate::exceptions::{ud, Fault, NM, R};
use crate::flags::mask;
use crate::platform::Platform;

/// Mnemonics that only exist as MMX forms (the others share the XMM mnemonics).
pub(super) fn handles(m: M) -> bool {
    use M::*;
    matches!(
        m,
        Emms | Femms
            | Pshufw
            | Movntq
            | Maskmovq
            | Movq2dq
            | Movdq2q
            | Cvtpi2ps
            | Cvtps2pi
            | Cvttps2pi
            | Cvtpi2pd
            | Cvtpd2pi
            | Cvttpd2pi
    )
}

/// Whether `ins` is an MMX form: an MM register operand, or one of the MMX-only mnemonics
/// (CVTPI2PS/CVTPI2PD with a memory source have no MM operand).
pub(super) fn is_mmx_form(ins: &Instruction) -> bool {
    handles(ins.mnemonic())
        || (0..ins.op_count())
            .any(|i| ins.op_kind(i) == OpKind::Register && ins.op_register(i).is_mm())
}

/// The forms with an XMM operand, which (like SSE) need CR4.OSFXSR.
fn uses_xmm(m: M) -> bool {
    use M::*;
    matches!(
        m,
        Movq2dq | Movdq2q | Cvtpi2ps | Cvtps2pi | Cvttps2pi | Cvtpi2pd | Cvtpd2pi | Cvttpd2pi
    )
}

/// The XMM inputs whose low 64 result bits are the MMX result of `m` on `a` (destination)
/// and `b` (source): the pack and horizontal instructions take both halves from one
/// register, PUNPCKH* interleaves the upper halves, PSHUFB indexes 8 bytes modulo 8 and
/// PALIGNR shifts the 128-bit concatenation.
fn widen(m: M, a: u64, b: u64) -> (u128, u128) {
    use M::*;
    let (a, b) = (a as u128, b as u128);
    match m {
        Packsswb | Packssdw | Packuswb | Phaddw | Phaddd | Phaddsw | Phsubw | Phsubd | Phsubsw => {
            (a | b << 64, 0)
        }
        Punpckhbw | Punpckhwd | Punpckhdq => (a << 32, b << 32),
        Pshufb => (a | a << 64, b),
        Palignr => (0, b | a << 64),
        _ => (a, b),
    }
}

/// MMi of an MM register.
fn mm_index(r: Register) -> Option<usize> {
    r.is_mm().then(|| r as usize - Register::MM0 as usize)
}

impl Cpu {
    pub(super) fn mmx(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        use M::*;
        let m = ins.mnemonic();
        if self.cr0 & CR0_EM != 0 || (uses_xmm(m) && self.cr4 & CR4_OSFXSR == 0) {
            return Err(ud());
        }
        if self.cr0 & CR0_TS != 0 {
            return Err(Fault::new(NM));
        }
        self.pending_mf()?;
        if matches!(m, Emms | Femms) {
            self.mmx_empty();
            return Ok(());
        }
        self.mmx_execute(io, ins)?;
        // Only an MM register operand makes the conversions enter MMX mode.
        if !(matches!(m, Cvtpi2ps | Cvtpi2pd) && ins.op1_kind() == OpKind::Memory) {
            self.mmx_enter();
        }
        Ok(())
    }

    /// Operand `i`: an MM register, or whatever `xsrc` reads (XMM, GPR, memory, immediate).
    fn msrc(&mut self, io: &mut dyn Platform, ins: &Instruction, i: u32) -> R<u128> {
        if ins.op_kind(i) == OpKind::Register {
            if let Some(n) = mm_index(ins.op_register(i)) {
                return Ok(self.mm(n) as u128);
            }
        }
        self.xsrc(io, ins, i)
    }

    /// Writes operand 0: an MM register (the low 64 bits of `v`), or as `xdst` does.
    fn mdst(&mut self, io: &mut dyn Platform, ins: &Instruction, v: u128) -> R<()> {
        if ins.op0_kind() == OpKind::Register {
            if let Some(n) = mm_index(ins.op0_register()) {
                self.set_mm(n, v as u64);
                return Ok(());
            }
        }
        self.xdst(io, ins, v)
    }

    /// The XMM lanes of `m` on `a` and `b`: the lane function the legacy SSE and the VEX
    /// forms use (`compute::lane`), with `ins`'s immediate and MXCSR.
    fn lanes(&mut self, m: M, ins: &Instruction, a: u128, b: u128) -> R<u128> {
        let src_mem = ins.op1_kind() == OpKind::Memory;
        let mut env = compute::Env::new(self.fpu.mxcsr, self.fpu.xmm[0], src_mem, false);
        let Some(r) = compute::lane(m, a, b, ins.immediate8(), &mut env) else {
            return Err(self.unimplemented(ins));
        };
        self.fpu.mxcsr |= env.raised;
        Ok(r)
    }

    fn mmx_execute(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        use M::*;
        let m = ins.mnemonic();
        let low = u64::MAX as u128;
        match m {
            Movd | Movq | Movntq | Movq2dq | Movdq2q => {
                let v = self.msrc(io, ins, 1)?;
                let v = if m == Movd { v as u32 as u128 } else { v & low };
                self.mdst(io, ins, v)
            }
            Pmovmskb => {
                let v = byte_signs(self.msrc(io, ins, 1)? & low);
                self.reg_write(ins.op0_register(), v);
                Ok(())
            }
            Pextrw => {
                let s = self.msrc(io, ins, 1)?;
                let v = w8(s)[(ins.immediate(2) & 3) as usize] as u64;
                self.reg_write(ins.op0_register(), v);
                Ok(())
            }
            Pinsrw => {
                let s = self.xsrc(io, ins, 1)? as u16;
                let mut w = w8(self.msrc(io, ins, 0)?);
                w[(ins.immediate(2) & 3) as usize] = s;
                self.mdst(io, ins, from_w(w))
            }
            Maskmovq => self.maskmovq(io, ins),
            Cvtpi2ps => {
                let b = self.msrc(io, ins, 1)? & low;
                let r = self.lanes(Cvtdq2ps, ins, 0, b)?;
                let v = (self.xreg0(ins) & !low) | (r & low);
                self.xdst(io, ins, v)
            }
            Cvtpi2pd | Cvtps2pi | Cvttps2pi | Cvtpd2pi | Cvttpd2pi => {
                let xm = match m {
                    Cvtpi2pd => Cvtdq2pd,
                    Cvtps2pi => Cvtps2dq,
                    Cvttps2pi => Cvttps2dq,
                    Cvtpd2pi => Cvtpd2dq,
                    _ => Cvttpd2dq,
                };
                let b = self.msrc(io, ins, 1)?;
                let r = self.lanes(xm, ins, 0, b)?;
                self.mdst(io, ins, r)
            }
            Psllw | Pslld | Psllq | Psrlw | Psrld | Psrlq | Psraw | Psrad => {
                let a = self.msrc(io, ins, 0)?;
                // The lane function takes the count as the second source's low quadword.
                let count = if ins.op1_kind() == OpKind::Immediate8 {
                    ins.immediate8() as u128
                } else {
                    self.msrc(io, ins, 1)? & low
                };
                let r = self.lanes(m, ins, a, count)?;
                self.mdst(io, ins, r & low)
            }
            _ => {
                let a = self.msrc(io, ins, 0)? as u64;
                let b = self.msrc(io, ins, 1)? as u64;
                let (a, b) = widen(m, a, b);
                // PSHUFW is PSHUFLW's low half.
                let xm = if m == Pshufw { Pshuflw } else { m };
                let r = self.lanes(xm, ins, a, b)?;
                self.mdst(io, ins, r & low)
            }
        }
    }

    /// MASKMOVQ: the bytes of the first source whose mask byte (second source) has its
    /// top bit set go to DS:rDI (segment overridable), one byte store each.
    fn maskmovq(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let data = self.msrc(io, ins, 1)? as u64;
        let sel = self.msrc(io, ins, 2)? as u64;
        let asize = match ins.op0_kind() {
            OpKind::MemorySegDI => 2,
            OpKind::MemorySegEDI => 4,
            _ => 8,
        };
        let am = mask(asize);
        let seg = (ins.memory_segment() as usize)
            .saturating_sub(Register::ES as usize)
            .min(5);
        let user = self.user();
        for i in 0..8u64 {
            if (sel >> (8 * i + 7)) & 1 != 0 {
                let lin = self.seg_lin(seg, self.gpr[7].wrapping_add(i) & am);
                self.write_lin(io, lin, 1, (data >> (8 * i)) & 0xff, user)?;
            }
        }
        Ok(())
    }
}
