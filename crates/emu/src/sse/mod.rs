//! SSE through SSE4.2, PCLMULQDQ and AES-NI on the XMM registers, and their VEX forms
//! (`avx`, `avx_ops`, `gather`: AVX and AVX2 on the YMM registers; `fma`, `f16c`). This
//! module: moves, SSE/SSE2 integer lane arithmetic, logic, shifts,
//! shuffles/unpacks/packs, scalar and packed single/double floating point, comparisons,
//! conversions, MXCSR access, and the operand plumbing (XMM/memory sources and
//! destinations, GPR extracts and inserts) for the submodules: `compute` (the lane
//! function of every SSE operation), `int` (SSSE3 and SSE4.1/4.2 integer lanes),
//! `float` (SSE3 and SSE4.1 floating point), `string` (SSE4.2 PCMPxSTRx), `crypto`
//! (PCLMULQDQ, AES-NI), `rounding` (MXCSR.RC for the arithmetic) and `lanes` (lane
//! views).
//!
//! Floating point: every rounding operation honours MXCSR.RC — arithmetic, square roots,
//! narrowing and integer-to-float conversions through `rounding` (which also applies the
//! x86 NaN rule: the first NaN source wins, quieted), float-to-integer conversions
//! (cvtsd2si & co.) and ROUND*. MXCSR.FTZ and DAZ are not applied (DAZ cannot be set).
//! MXCSR exception flags: only ROUND* sets them (invalid for a signalling NaN, precision
//! when inexact unless imm bit 3 suppresses it); every other instruction leaves them
//! unchanged, and SIMD floating-point exceptions (#XM) are never raised, whatever the
//! MXCSR masks say. The MMX-register forms (and EMMS) go to `mmx`, which computes them
//! with the same lane function (`compute::lane`) on 64-bit values.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::{Cpu, CR0_EM, CR0_TS, CR4_OSFXSR};
use crate::exceptions::{gp0, ud, Fault, NM, R};
use crate::flags::{mask, CF, PF, ZF};
use crate::platform::Platform;

mod avx;
mod avx_ops;
mod compute;
mod crypto;
mod f16c;
mod float;
mod fma;
mod gather;
mod int;
mod lanes;
mod mmx;
mod rounding;
mod string;

pub(crate) use avx::VexOffer;
use lanes::*;

pub fn handles(m: M) -> bool {
    use M::*;
    int::handles(m)
        || float::handles(m)
        || crypto::handles(m)
        || mmx::handles(m)
        || matches!(
            m,
            Movntdqa
                | Pextrb
                | Pextrd
                | Pextrq
                | Extractps
                | Ptest
                | Pcmpestri
                | Pcmpestri64
                | Pcmpestrm
                | Pcmpestrm64
                | Pcmpistri
                | Pcmpistrm
        )
        || matches!(
            m,
            Movdqa
                | Movdqu
                | Movaps
                | Movups
                | Movapd
                | Movupd
                | Lddqu
                | Movntdq
                | Movntps
                | Movntpd
                | Movnti
                | Movq
                | Movd
                | Movss
                | Movhpd
                | Movhps
                | Movlpd
                | Movlps
                | Movhlps
                | Movlhps
                | Movmskpd
                | Movmskps
                | Pmovmskb
                | Pxor
                | Xorps
                | Xorpd
                | Por
                | Orps
                | Orpd
                | Pand
                | Andps
                | Andpd
                | Pandn
                | Andnps
                | Andnpd
                | Paddb
                | Paddw
                | Paddd
                | Paddq
                | Psubb
                | Psubw
                | Psubd
                | Psubq
                | Paddusb
                | Paddusw
                | Psubusb
                | Psubusw
                | Paddsb
                | Paddsw
                | Psubsb
                | Psubsw
                | Pcmpeqb
                | Pcmpeqw
                | Pcmpeqd
                | Pcmpgtb
                | Pcmpgtw
                | Pcmpgtd
                | Pminub
                | Pmaxub
                | Pminsw
                | Pmaxsw
                | Pavgb
                | Pavgw
                | Pmullw
                | Pmulhw
                | Pmulhuw
                | Pmuludq
                | Pmaddwd
                | Psadbw
                | Psllw
                | Pslld
                | Psllq
                | Psrlw
                | Psrld
                | Psrlq
                | Psraw
                | Psrad
                | Pslldq
                | Psrldq
                | Punpcklbw
                | Punpcklwd
                | Punpckldq
                | Punpcklqdq
                | Punpckhbw
                | Punpckhwd
                | Punpckhdq
                | Punpckhqdq
                | Packsswb
                | Packssdw
                | Packuswb
                | Pshufd
                | Pshuflw
                | Pshufhw
                | Shufps
                | Shufpd
                | Unpcklps
                | Unpckhps
                | Unpcklpd
                | Unpckhpd
                | Addsd
                | Subsd
                | Mulsd
                | Divsd
                | Minsd
                | Maxsd
                | Sqrtsd
                | Addss
                | Subss
                | Mulss
                | Divss
                | Minss
                | Maxss
                | Sqrtss
                | Addpd
                | Subpd
                | Mulpd
                | Divpd
                | Minpd
                | Maxpd
                | Sqrtpd
                | Addps
                | Subps
                | Mulps
                | Divps
                | Minps
                | Maxps
                | Sqrtps
                | Comisd
                | Ucomisd
                | Comiss
                | Ucomiss
                | Cmpss
                | Cmppd
                | Cmpps
                | Cvtsi2sd
                | Cvtsi2ss
                | Cvttsd2si
                | Cvtsd2si
                | Cvttss2si
                | Cvtss2si
                | Cvtsd2ss
                | Cvtss2sd
                | Cvtdq2pd
                | Cvtdq2ps
                | Cvttps2dq
                | Cvtps2dq
                | Cvtps2pd
                | Cvtpd2ps
                | Cvttpd2dq
                | Cvtpd2dq
                | Ldmxcsr
                | Stmxcsr
                | Pextrw
                | Pinsrw
                | Movsd
                | Cmpsd
        )
}

/// Whether `ins` requires its 16-byte memory operand to be aligned: the legacy SSE forms
/// unless `unaligned_ok`, the VEX forms only for the explicitly aligned moves.
fn must_align(ins: &Instruction) -> bool {
    if ins.encoding() == iced_x86::EncodingKind::VEX {
        avx::aligned_move(ins.mnemonic())
    } else {
        !unaligned_ok(ins.mnemonic())
    }
}

/// Instructions that accept an unaligned 16-byte memory operand.
fn unaligned_ok(m: M) -> bool {
    use M::*;
    matches!(
        m,
        Movdqu
            | Movups
            | Movupd
            | Lddqu
            | Pcmpestri
            | Pcmpestri64
            | Pcmpestrm
            | Pcmpestrm64
            | Pcmpistri
            | Pcmpistrm
    )
}

fn minf<T: PartialOrd>(a: T, b: T) -> T {
    if a < b {
        a
    } else {
        b
    }
}
fn maxf<T: PartialOrd>(a: T, b: T) -> T {
    if a > b {
        a
    } else {
        b
    }
}

/// The CMPPS/CMPSS/... predicate `p` (0-31; the legacy forms pass 0-7): bits 2:0 pick
/// the relation, bit 3 its unordered/ordered counterpart (bit 4 only changes which NaNs
/// signal, which the engine does not report).
fn cmp_pred<T: PartialOrd>(a: T, b: T, p: u8) -> bool {
    use std::cmp::Ordering::*;
    let ord = a.partial_cmp(&b);
    let unord = ord.is_none();
    let base = match p & 7 {
        0 => ord == Some(Equal),
        1 => ord == Some(Less),
        2 => matches!(ord, Some(Less | Equal)),
        3 => unord,
        4 => ord != Some(Equal),
        5 => ord != Some(Less),
        6 => !matches!(ord, Some(Less | Equal)),
        _ => !unord,
    };
    if p & 8 == 0 {
        base
    } else {
        match p & 7 {
            // EQ_UQ, NGE_US, NGT_US: also true when unordered.
            0..=2 => base || unord,
            // FALSE, NEQ_OQ, GE_OS, GT_OS, TRUE: the opposite treatment of unordered.
            3 => false,
            4..=6 => base && !unord,
            _ => true,
        }
    }
}

/// Float to integer conversion with x86 semantics: NaN or out of range gives the
/// "integer indefinite" value (the minimum signed integer).
fn f2i(v: f64, bits: u32, rc: u32, truncate: bool) -> u64 {
    let r = if truncate {
        v.trunc()
    } else {
        match rc {
            0 => v.round_ties_even(),
            1 => v.floor(),
            2 => v.ceil(),
            _ => v.trunc(),
        }
    };
    let (lo, hi) = if bits == 64 {
        (
            -9_223_372_036_854_775_808.0f64,
            9_223_372_036_854_775_808.0f64,
        )
    } else {
        (-2_147_483_648.0f64, 2_147_483_648.0f64)
    };
    if r.is_nan() || r < lo || r >= hi {
        if bits == 64 {
            1u64 << 63
        } else {
            1u64 << 31
        }
    } else if bits == 64 {
        r as i64 as u64
    } else {
        r as i32 as u32 as u64
    }
}

impl Cpu {
    fn xmm_index(r: Register) -> Option<usize> {
        if r.is_xmm() && (r as usize) < Register::XMM16 as usize {
            Some(r as usize - Register::XMM0 as usize)
        } else {
            None
        }
    }

    /// Reads operand `i` as 128 bits (XMM register, or memory of the operand's size,
    /// zero-extended; 16-byte memory must be aligned unless `m` allows otherwise).
    fn xsrc(&mut self, io: &mut dyn Platform, ins: &Instruction, i: u32) -> R<u128> {
        match ins.op_kind(i) {
            OpKind::Register => {
                let r = ins.op_register(i);
                match Self::xmm_index(r) {
                    Some(n) => Ok(self.fpu.xmm[n]),
                    None if r.is_gpr() => Ok(self.reg_read(r) as u128),
                    None => Err(self.unimplemented(ins)),
                }
            }
            OpKind::Memory => {
                let size = ins.memory_size().size().min(16);
                let lin = self.mem_lin(ins);
                if size == 16 && lin & 15 != 0 && must_align(ins) {
                    return Err(gp0());
                }
                let user = self.user();
                let mut b = [0u8; 16];
                self.read_bytes(io, lin, &mut b[..size], user)?;
                Ok(u128::from_le_bytes(b))
            }
            _ => Ok(ins.try_immediate(i).unwrap_or(0) as u128),
        }
    }

    /// Writes XMM register operand 0, or memory operand 0 with its size.
    fn xdst(&mut self, io: &mut dyn Platform, ins: &Instruction, v: u128) -> R<()> {
        match ins.op0_kind() {
            OpKind::Register => {
                let r = ins.op0_register();
                match Self::xmm_index(r) {
                    Some(n) => self.fpu.xmm[n] = v,
                    None if r.is_gpr() => self.reg_write(r, v as u64 & mask(r.size())),
                    None => return Err(self.unimplemented(ins)),
                }
                Ok(())
            }
            _ => {
                let size = ins.memory_size().size().min(16);
                let lin = self.mem_lin(ins);
                if size == 16
                    && lin & 15 != 0
                    && matches!(
                        ins.mnemonic(),
                        M::Movdqa | M::Movaps | M::Movapd | M::Movntdq | M::Movntps | M::Movntpd
                    )
                {
                    return Err(gp0());
                }
                let user = self.user();
                self.write_bytes(io, lin, &v.to_le_bytes()[..size], user)
            }
        }
    }

    fn xreg0(&self, ins: &Instruction) -> u128 {
        Self::xmm_index(ins.op0_register()).map_or(0, |n| self.fpu.xmm[n])
    }

    pub(crate) fn sse(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        if mmx::is_mmx_form(ins) {
            return self.mmx(io, ins);
        }
        if self.cr0 & CR0_EM != 0 || self.cr4 & CR4_OSFXSR == 0 {
            return Err(ud());
        }
        if self.cr0 & CR0_TS != 0 {
            return Err(Fault::new(NM));
        }
        self.sse_op(io, ins, ins.mnemonic())
    }

    /// Executes `ins` as the legacy SSE instruction `m` (also the VEX.128 forms whose
    /// operands are laid out as the legacy ones: `avx` passes their legacy mnemonic).
    fn sse_op(&mut self, io: &mut dyn Platform, ins: &Instruction, m: M) -> R<()> {
        use M::*;
        let op0_mem = ins.op0_kind() == OpKind::Memory;
        match m {
            Ldmxcsr => {
                let v = self.xsrc(io, ins, 0)? as u32;
                if v & !crate::x87::MXCSR_MASK != 0 {
                    return Err(gp0());
                }
                self.fpu.mxcsr = v;
                Ok(())
            }
            Stmxcsr => {
                let v = self.fpu.mxcsr as u128;
                self.xdst(io, ins, v)
            }
            Movnti => {
                let v = self.reg_read(ins.op1_register());
                let size = ins.op1_register().size();
                self.wr(io, ins, 0, size, v)
            }
            Movdqa | Movdqu | Movaps | Movups | Movapd | Movupd | Lddqu | Movntdq | Movntps
            | Movntpd | Movntdqa => {
                let v = self.xsrc(io, ins, 1)?;
                self.xdst(io, ins, v)
            }
            Movq | Movd => {
                let v = self.xsrc(io, ins, 1)?;
                let v = if m == Movd {
                    v as u32 as u128
                } else {
                    v as u64 as u128
                };
                if op0_mem || !ins.op0_register().is_xmm() {
                    return self.xdst(io, ins, v);
                }
                self.xdst(io, ins, v)
            }
            Movss | Movsd => {
                let (w, mk): (u32, u128) = if m == Movss {
                    (4, 0xffff_ffff)
                } else {
                    (8, u64::MAX as u128)
                };
                let _ = w;
                let src = self.xsrc(io, ins, 1)?;
                if op0_mem {
                    return self.xdst(io, ins, src & mk);
                }
                let v = if ins.op1_kind() == OpKind::Memory {
                    src & mk
                } else {
                    (self.xreg0(ins) & !mk) | (src & mk)
                };
                self.xdst(io, ins, v)
            }
            Movhpd | Movhps => {
                if op0_mem {
                    let v = self.xsrc(io, ins, 1)? >> 64;
                    return self.xdst(io, ins, v);
                }
                let src = self.xsrc(io, ins, 1)? as u64 as u128;
                let v = (self.xreg0(ins) & u64::MAX as u128) | src << 64;
                self.xdst(io, ins, v)
            }
            Movlpd | Movlps => {
                if op0_mem {
                    let v = self.xsrc(io, ins, 1)? as u64 as u128;
                    return self.xdst(io, ins, v);
                }
                let src = self.xsrc(io, ins, 1)? as u64 as u128;
                let v = (self.xreg0(ins) & !(u64::MAX as u128)) | src;
                self.xdst(io, ins, v)
            }
            Movhlps => {
                let src = self.xsrc(io, ins, 1)?;
                let v = (self.xreg0(ins) & !(u64::MAX as u128)) | (src >> 64);
                self.xdst(io, ins, v)
            }
            Movlhps => {
                let src = self.xsrc(io, ins, 1)?;
                let v = (self.xreg0(ins) & u64::MAX as u128) | (src << 64);
                self.xdst(io, ins, v)
            }
            Movmskpd | Movmskps | Pmovmskb => {
                let s = self.xsrc(io, ins, 1)?;
                let v: u64 = match m {
                    Movmskpd => ((s >> 63) & 1 | (s >> 126) & 2) as u64,
                    Movmskps => (0..4)
                        .map(|i| ((s >> (32 * i + 31)) & 1) << i)
                        .sum::<u128>() as u64,
                    _ => byte_signs(s),
                };
                let d = ins.op0_register();
                self.reg_write(d, v);
                Ok(())
            }
            Pextrw => {
                let s = self.xsrc(io, ins, 1)?;
                let i = (ins.immediate(2) & 7) as usize;
                let v = w8(s)[i] as u64;
                if op0_mem {
                    return self.wr(io, ins, 0, 2, v);
                }
                self.reg_write(ins.op0_register(), v);
                Ok(())
            }
            Pextrb | Pextrd | Pextrq | Extractps => {
                let s = self.xsrc(io, ins, 1)?;
                let i = ins.immediate8() as usize;
                let (v, size) = match m {
                    Pextrb => (b16(s)[i & 15] as u64, 1),
                    Pextrq => (q2(s)[i & 1], 8),
                    _ => (d4(s)[i & 3] as u64, 4),
                };
                if op0_mem {
                    return self.wr(io, ins, 0, size, v);
                }
                // A 32- or 64-bit register destination: zero-extended.
                self.reg_write(ins.op0_register(), v);
                Ok(())
            }
            Ptest => {
                let a = self.xreg0(ins);
                let b = self.xsrc(io, ins, 1)?;
                let zf = if a & b == 0 { ZF } else { 0 };
                let cf = if !a & b == 0 { CF } else { 0 };
                self.flags.set_arith(zf | cf);
                Ok(())
            }
            Pcmpestri | Pcmpestri64 | Pcmpestrm | Pcmpestrm64 | Pcmpistri | Pcmpistrm => {
                self.pcmpstr(io, ins, m)
            }
            Pinsrw => {
                let s = self.xsrc(io, ins, 1)? as u16;
                let i = (ins.immediate(2) & 7) as usize;
                let mut w = w8(self.xreg0(ins));
                w[i] = s;
                self.xdst(io, ins, from_w(w))
            }
            _ => self.sse_compute(io, ins, m),
        }
    }

    fn sse_compute(&mut self, io: &mut dyn Platform, ins: &Instruction, m: M) -> R<()> {
        use M::*;
        let a = self.xreg0(ins);
        // The element shifts by immediate have the immediate as operand 1.
        let b = match ins.op1_kind() {
            OpKind::Register | OpKind::Memory => self.xsrc(io, ins, 1)?,
            _ => ins.immediate8() as u128,
        };
        let rc = (self.fpu.mxcsr >> 13) & 3;
        match m {
            Comisd | Ucomisd | Comiss | Ucomiss => {
                self.flags.set_arith(comi_flags(m, a, b));
                return Ok(());
            }
            Cvttsd2si | Cvtsd2si | Cvttss2si | Cvtss2si => {
                let d = ins.op0_register();
                let r = cvt_to_int(m, b, (d.size() * 8) as u32, rc);
                self.reg_write(d, r);
                return Ok(());
            }
            _ => {}
        }
        let b = match m {
            Cvtsi2sd | Cvtsi2ss => sign_extend(b, self.op_size(ins, 1)),
            _ => b,
        };
        let src_mem = ins.op1_kind() == OpKind::Memory;
        let mut env = compute::Env::new(self.fpu.mxcsr, self.fpu.xmm[0], src_mem, false);
        let Some(r) = compute::lane(m, a, b, ins.immediate8(), &mut env) else {
            return Err(self.unimplemented(ins));
        };
        self.fpu.mxcsr |= env.raised;
        self.xdst(io, ins, r)
    }

    /// PCMPESTRI/PCMPESTRM/PCMPISTRI/PCMPISTRM: lengths from EAX/EDX (RAX/RDX for the
    /// REX.W forms) or the first NUL element; the index goes to ECX, the mask to XMM0.
    fn pcmpstr(&mut self, io: &mut dyn Platform, ins: &Instruction, m: M) -> R<()> {
        use M::*;
        let a = self.xreg0(ins);
        let b = self.xsrc(io, ins, 1)?;
        let mode = string::Mode::new(ins.immediate8());
        let (la, lb) = match m {
            Pcmpistri | Pcmpistrm => (mode.implicit_len(a), mode.implicit_len(b)),
            Pcmpestri64 | Pcmpestrm64 => (
                mode.explicit_len(self.gpr[0] as i64),
                mode.explicit_len(self.gpr[2] as i64),
            ),
            _ => (
                mode.explicit_len(self.gpr[0] as i32 as i64),
                mode.explicit_len(self.gpr[2] as i32 as i64),
            ),
        };
        let out = string::compare(mode, a, la, b, lb);
        if matches!(m, Pcmpestri | Pcmpestri64 | Pcmpistri) {
            self.gpr[1] = string::index(mode, out.res);
        } else {
            self.fpu.xmm[0] = string::mask(mode, out.res);
        }
        self.flags.set_arith(out.flags);
        Ok(())
    }
}

/// COMISS/UCOMISS/COMISD/UCOMISD: ZF, PF, CF from comparing the low elements.
fn comi_flags(m: M, a: u128, b: u128) -> u64 {
    let ord = if matches!(m, M::Comisd | M::Ucomisd) {
        f64::from_bits(a as u64).partial_cmp(&f64::from_bits(b as u64))
    } else {
        f32::from_bits(a as u32).partial_cmp(&f32::from_bits(b as u32))
    };
    match ord {
        None => ZF | PF | CF,
        Some(std::cmp::Ordering::Less) => CF,
        Some(std::cmp::Ordering::Equal) => ZF,
        Some(std::cmp::Ordering::Greater) => 0,
    }
}

/// CVT(T)SS2SI / CVT(T)SD2SI of the low element of `b` to a `bits`-bit integer.
fn cvt_to_int(m: M, b: u128, bits: u32, rc: u32) -> u64 {
    let v = if matches!(m, M::Cvttsd2si | M::Cvtsd2si) {
        f64::from_bits(b as u64)
    } else {
        f32::from_bits(b as u32) as f64
    };
    f2i(v, bits, rc, matches!(m, M::Cvttsd2si | M::Cvttss2si))
}

/// The low `size` bytes of `v` sign-extended to 64 bits (as a lane value).
pub(super) fn sign_extend(v: u128, size: usize) -> u128 {
    if size == 8 {
        v as u64 as u128
    } else {
        v as u32 as i32 as i64 as u64 as u128
    }
}

/// Lane shifts; counts at or beyond the lane width give zero (or all sign bits).
fn shift_lanes(m: M, a: u128, count: u64) -> u128 {
    use M::*;
    match m {
        Pslldq => {
            let c = count.min(16) as u32;
            if c >= 16 {
                0
            } else {
                a << (8 * c)
            }
        }
        Psrldq => {
            let c = count.min(16) as u32;
            if c >= 16 {
                0
            } else {
                a >> (8 * c)
            }
        }
        Psllw | Psrlw | Psraw => from_w(w8(a).map(|x| {
            let c = count.min(16) as u32;
            match m {
                Psllw => x.checked_shl(c).unwrap_or(0),
                Psrlw => x.checked_shr(c).unwrap_or(0),
                _ => ((x as i16) >> c.min(15)) as u16,
            }
        })),
        Pslld | Psrld | Psrad => from_d(d4(a).map(|x| {
            let c = count.min(32) as u32;
            match m {
                Pslld => x.checked_shl(c).unwrap_or(0),
                Psrld => x.checked_shr(c).unwrap_or(0),
                _ => ((x as i32) >> c.min(31)) as u32,
            }
        })),
        _ => from_q(q2(a).map(|x| {
            let c = count.min(64) as u32;
            match m {
                Psllq => x.checked_shl(c).unwrap_or(0),
                _ => x.checked_shr(c).unwrap_or(0),
            }
        })),
    }
}
