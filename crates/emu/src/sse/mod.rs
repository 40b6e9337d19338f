//! SSE through SSE4.2, PCLMULQDQ and AES-NI on the XMM registers. This module: moves, SSE/SSE2 integer lane
//! arithmetic, logic, shifts, shuffles/unpacks/packs, scalar and packed single/double
//! floating point, comparisons, conversions, MXCSR access, and the operand plumbing
//! (XMM/memory sources and destinations, GPR extracts and inserts) for the submodules:
//! `int` (SSSE3 and SSE4.1/4.2 integer lanes), `float` (SSE3 and SSE4.1 floating point),
//! `string` (SSE4.2 PCMPxSTRx), `crypto` (PCLMULQDQ, AES-NI), `rounding` (MXCSR.RC for
//! the arithmetic) and `lanes` (lane views).
//!
//! Floating point: every rounding operation honours MXCSR.RC — arithmetic, square roots,
//! narrowing and integer-to-float conversions through `rounding` (which also applies the
//! x86 NaN rule: the first NaN source wins, quieted), float-to-integer conversions
//! (cvtsd2si & co.) and ROUND*. MXCSR.FTZ and DAZ are not applied (DAZ cannot be set).
//! MXCSR exception flags: only ROUND* sets them (invalid for a signalling NaN, precision
//! when inexact unless imm bit 3 suppresses it); every other instruction leaves them
//! unchanged, and SIMD floating-point exceptions (#XM) are never raised, whatever the
//! MXCSR masks say. The MMX-register forms (and EMMS) go to `mmx`, which computes them
//! with the same lane operations on 64-bit values.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::{Cpu, CR0_EM, CR0_TS, CR4_OSFXSR};
use crate::exceptions::{gp0, ud, Fault, NM, R};
use crate::flags::{mask, CF, PF, ZF};
use crate::platform::Platform;

mod crypto;
mod float;
mod int;
mod lanes;
mod mmx;
mod rounding;
mod string;

use lanes::*;
use rounding::{arith32, arith64, Arith, Rc};

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

fn cmp_pred<T: PartialOrd>(a: T, b: T, p: u8) -> bool {
    let unord = a.partial_cmp(&b).is_none();
    match p & 7 {
        0 => a == b,
        1 => a < b,
        2 => a <= b,
        3 => unord,
        4 => a != b || unord,
        5 => a.partial_cmp(&b) != Some(std::cmp::Ordering::Less),
        6 => matches!(a.partial_cmp(&b), Some(std::cmp::Ordering::Greater) | None),
        _ => !unord,
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
                if size == 16 && !unaligned_ok(ins.mnemonic()) && lin & 15 != 0 {
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
        use M::*;
        let m = ins.mnemonic();
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
                self.pcmpstr(io, ins)
            }
            Pinsrw => {
                let s = self.xsrc(io, ins, 1)? as u16;
                let i = (ins.immediate(2) & 7) as usize;
                let mut w = w8(self.xreg0(ins));
                w[i] = s;
                self.xdst(io, ins, from_w(w))
            }
            _ => self.sse_compute(io, ins),
        }
    }

    fn sse_compute(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        use M::*;
        let m = ins.mnemonic();
        // Shifts by immediate have the XMM register as operand 0 and an immediate.
        if matches!(
            m,
            Psllw | Pslld | Psllq | Psrlw | Psrld | Psrlq | Psraw | Psrad | Pslldq | Psrldq
        ) {
            let a = self.xreg0(ins);
            let count = if ins.op1_kind() == OpKind::Register || ins.op1_kind() == OpKind::Memory {
                self.xsrc(io, ins, 1)? as u64
            } else {
                ins.immediate(1) & 0xff
            };
            let r = shift_lanes(m, a, count);
            return self.xdst(io, ins, r);
        }
        let a = self.xreg0(ins);
        let b = self.xsrc(io, ins, 1)?;
        match self.sse_values(ins.mnemonic(), ins, a, b)? {
            Some(r) => self.xdst(io, ins, r),
            None => Ok(()),
        }
    }

    /// The lanes of instruction `m` (`ins`'s mnemonic, or for an MMX form the XMM
    /// instruction with its lane semantics) on destination `a` and source `b`: the result
    /// to write, or None if the instruction wrote its result (flags, a GPR) itself.
    fn sse_values(&mut self, m: M, ins: &Instruction, a: u128, b: u128) -> R<Option<u128>> {
        use M::*;
        let rc = (self.fpu.mxcsr >> 13) & 3;
        let rcm = Rc::from_mxcsr(self.fpu.mxcsr);
        let r: u128 = match m {
            Pxor | Xorps | Xorpd => a ^ b,
            Por | Orps | Orpd => a | b,
            Pand | Andps | Andpd => a & b,
            Pandn | Andnps | Andnpd => !a & b,
            Paddb | Psubb | Paddusb | Psubusb | Paddsb | Psubsb | Pcmpeqb | Pcmpgtb | Pminub
            | Pmaxub | Pavgb => {
                let (x, y) = (b16(a), b16(b));
                from_b(std::array::from_fn(|i| {
                    let (p, q) = (x[i], y[i]);
                    match m {
                        Paddb => p.wrapping_add(q),
                        Psubb => p.wrapping_sub(q),
                        Paddusb => p.saturating_add(q),
                        Psubusb => p.saturating_sub(q),
                        Paddsb => sat_i8(p as i8 as i32 + q as i8 as i32),
                        Psubsb => sat_i8(p as i8 as i32 - q as i8 as i32),
                        Pcmpeqb => {
                            if p == q {
                                0xff
                            } else {
                                0
                            }
                        }
                        Pcmpgtb => {
                            if (p as i8) > (q as i8) {
                                0xff
                            } else {
                                0
                            }
                        }
                        Pminub => p.min(q),
                        Pmaxub => p.max(q),
                        _ => ((p as u16 + q as u16 + 1) >> 1) as u8,
                    }
                }))
            }
            Paddw | Psubw | Paddusw | Psubusw | Paddsw | Psubsw | Pcmpeqw | Pcmpgtw | Pminsw
            | Pmaxsw | Pavgw | Pmullw | Pmulhw | Pmulhuw => {
                let (x, y) = (w8(a), w8(b));
                from_w(std::array::from_fn(|i| {
                    let (p, q) = (x[i], y[i]);
                    let (sp, sq) = (p as i16 as i32, q as i16 as i32);
                    match m {
                        Paddw => p.wrapping_add(q),
                        Psubw => p.wrapping_sub(q),
                        Paddusw => p.saturating_add(q),
                        Psubusw => p.saturating_sub(q),
                        Paddsw => sat_i16(sp + sq),
                        Psubsw => sat_i16(sp - sq),
                        Pcmpeqw => {
                            if p == q {
                                0xffff
                            } else {
                                0
                            }
                        }
                        Pcmpgtw => {
                            if sp > sq {
                                0xffff
                            } else {
                                0
                            }
                        }
                        Pminsw => sp.min(sq) as u16,
                        Pmaxsw => sp.max(sq) as u16,
                        Pavgw => ((p as u32 + q as u32 + 1) >> 1) as u16,
                        Pmullw => (sp * sq) as u16,
                        Pmulhw => ((sp * sq) >> 16) as u16,
                        _ => ((p as u32 * q as u32) >> 16) as u16,
                    }
                }))
            }
            Paddd | Psubd | Pcmpeqd | Pcmpgtd => {
                let (x, y) = (d4(a), d4(b));
                from_d(std::array::from_fn(|i| {
                    let (p, q) = (x[i], y[i]);
                    match m {
                        Paddd => p.wrapping_add(q),
                        Psubd => p.wrapping_sub(q),
                        Pcmpeqd => {
                            if p == q {
                                u32::MAX
                            } else {
                                0
                            }
                        }
                        _ => {
                            if (p as i32) > (q as i32) {
                                u32::MAX
                            } else {
                                0
                            }
                        }
                    }
                }))
            }
            Paddq | Psubq | Pmuludq => {
                let (x, y) = (q2(a), q2(b));
                from_q(std::array::from_fn(|i| match m {
                    Paddq => x[i].wrapping_add(y[i]),
                    Psubq => x[i].wrapping_sub(y[i]),
                    _ => (x[i] as u32 as u64) * (y[i] as u32 as u64),
                }))
            }
            Pmaddwd => {
                let (x, y) = (w8(a), w8(b));
                from_d(std::array::from_fn(|i| {
                    let p0 = x[2 * i] as i16 as i32 * y[2 * i] as i16 as i32;
                    let p1 = x[2 * i + 1] as i16 as i32 * y[2 * i + 1] as i16 as i32;
                    p0.wrapping_add(p1) as u32
                }))
            }
            Psadbw => {
                let (x, y) = (b16(a), b16(b));
                let s = |h: usize| {
                    (0..8)
                        .map(|i| (x[h + i] as i32 - y[h + i] as i32).unsigned_abs() as u64)
                        .sum::<u64>()
                };
                from_q([s(0), s(8)])
            }
            Punpcklbw | Punpckhbw => {
                let h = if m == Punpckhbw { 8 } else { 0 };
                let (x, y) = (b16(a), b16(b));
                from_b(std::array::from_fn(|i| {
                    if i % 2 == 0 {
                        x[h + i / 2]
                    } else {
                        y[h + i / 2]
                    }
                }))
            }
            Punpcklwd | Punpckhwd => {
                let h = if m == Punpckhwd { 4 } else { 0 };
                let (x, y) = (w8(a), w8(b));
                from_w(std::array::from_fn(|i| {
                    if i % 2 == 0 {
                        x[h + i / 2]
                    } else {
                        y[h + i / 2]
                    }
                }))
            }
            Punpckldq | Punpckhdq | Unpcklps | Unpckhps => {
                let h = if matches!(m, Punpckhdq | Unpckhps) {
                    2
                } else {
                    0
                };
                let (x, y) = (d4(a), d4(b));
                from_d(std::array::from_fn(|i| {
                    if i % 2 == 0 {
                        x[h + i / 2]
                    } else {
                        y[h + i / 2]
                    }
                }))
            }
            Punpcklqdq | Unpcklpd => from_q([q2(a)[0], q2(b)[0]]),
            Punpckhqdq | Unpckhpd => from_q([q2(a)[1], q2(b)[1]]),
            Packsswb | Packuswb => {
                let (x, y) = (w8(a), w8(b));
                from_b(std::array::from_fn(|i| {
                    let v = if i < 8 { x[i] } else { y[i - 8] } as i16 as i32;
                    if m == Packsswb {
                        sat_i8(v)
                    } else {
                        sat_u8(v)
                    }
                }))
            }
            Packssdw => {
                let (x, y) = (d4(a), d4(b));
                from_w(std::array::from_fn(|i| {
                    sat_i16(if i < 4 { x[i] } else { y[i - 4] } as i32)
                }))
            }
            Pshufd => {
                let s = d4(b);
                let imm = ins.immediate(2) as usize;
                from_d(std::array::from_fn(|i| s[(imm >> (2 * i)) & 3]))
            }
            Pshuflw | Pshufhw => {
                let s = w8(b);
                let imm = ins.immediate(2) as usize;
                let h = if m == Pshufhw { 4 } else { 0 };
                from_w(std::array::from_fn(|i| {
                    if i / 4 == h / 4 {
                        s[h + ((imm >> (2 * (i - h))) & 3)]
                    } else {
                        s[i]
                    }
                }))
            }
            Shufps => {
                let (x, y) = (d4(a), d4(b));
                let imm = ins.immediate(2) as usize;
                from_d([
                    x[imm & 3],
                    x[(imm >> 2) & 3],
                    y[(imm >> 4) & 3],
                    y[(imm >> 6) & 3],
                ])
            }
            Shufpd => {
                let (x, y) = (q2(a), q2(b));
                let imm = ins.immediate(2) as usize;
                from_q([x[imm & 1], y[(imm >> 1) & 1]])
            }
            Addsd | Subsd | Mulsd | Divsd | Minsd | Maxsd | Sqrtsd => {
                let (x, y) = (f64::from_bits(a as u64), f64::from_bits(b as u64));
                let r = match m {
                    Addsd => arith64(Arith::Add, x, y, rcm),
                    Subsd => arith64(Arith::Sub, x, y, rcm),
                    Mulsd => arith64(Arith::Mul, x, y, rcm),
                    Divsd => arith64(Arith::Div, x, y, rcm),
                    Minsd => minf(x, y),
                    Maxsd => maxf(x, y),
                    _ => rounding::sqrt_64(y, rcm),
                };
                (a & !(u64::MAX as u128)) | r.to_bits() as u128
            }
            Addss | Subss | Mulss | Divss | Minss | Maxss | Sqrtss => {
                let (x, y) = (f32::from_bits(a as u32), f32::from_bits(b as u32));
                let r = match m {
                    Addss => arith32(Arith::Add, x, y, rcm),
                    Subss => arith32(Arith::Sub, x, y, rcm),
                    Mulss => arith32(Arith::Mul, x, y, rcm),
                    Divss => arith32(Arith::Div, x, y, rcm),
                    Minss => minf(x, y),
                    Maxss => maxf(x, y),
                    _ => rounding::sqrt_32(y, rcm),
                };
                (a & !0xffff_ffffu128) | r.to_bits() as u128
            }
            Addpd | Subpd | Mulpd | Divpd | Minpd | Maxpd | Sqrtpd => {
                let (x, y) = (f64s(a), f64s(b));
                from_f64(std::array::from_fn(|i| match m {
                    Addpd => arith64(Arith::Add, x[i], y[i], rcm),
                    Subpd => arith64(Arith::Sub, x[i], y[i], rcm),
                    Mulpd => arith64(Arith::Mul, x[i], y[i], rcm),
                    Divpd => arith64(Arith::Div, x[i], y[i], rcm),
                    Minpd => minf(x[i], y[i]),
                    Maxpd => maxf(x[i], y[i]),
                    _ => rounding::sqrt_64(y[i], rcm),
                }))
            }
            Addps | Subps | Mulps | Divps | Minps | Maxps | Sqrtps => {
                let (x, y) = (f32s(a), f32s(b));
                from_f32(std::array::from_fn(|i| match m {
                    Addps => arith32(Arith::Add, x[i], y[i], rcm),
                    Subps => arith32(Arith::Sub, x[i], y[i], rcm),
                    Mulps => arith32(Arith::Mul, x[i], y[i], rcm),
                    Divps => arith32(Arith::Div, x[i], y[i], rcm),
                    Minps => minf(x[i], y[i]),
                    Maxps => maxf(x[i], y[i]),
                    _ => rounding::sqrt_32(y[i], rcm),
                }))
            }
            Comisd | Ucomisd | Comiss | Ucomiss => {
                let ord = if matches!(m, Comisd | Ucomisd) {
                    f64::from_bits(a as u64).partial_cmp(&f64::from_bits(b as u64))
                } else {
                    f32::from_bits(a as u32).partial_cmp(&f32::from_bits(b as u32))
                };
                let f = match ord {
                    None => ZF | PF | CF,
                    Some(std::cmp::Ordering::Less) => CF,
                    Some(std::cmp::Ordering::Equal) => ZF,
                    Some(std::cmp::Ordering::Greater) => 0,
                };
                self.flags.set_arith(f);
                return Ok(None);
            }
            Cmpsd | Cmpss | Cmppd | Cmpps => {
                let p = ins.immediate(2) as u8;
                match m {
                    Cmpsd => {
                        let t = cmp_pred(f64::from_bits(a as u64), f64::from_bits(b as u64), p);
                        (a & !(u64::MAX as u128)) | if t { u64::MAX as u128 } else { 0 }
                    }
                    Cmpss => {
                        let t = cmp_pred(f32::from_bits(a as u32), f32::from_bits(b as u32), p);
                        (a & !0xffff_ffffu128) | if t { 0xffff_ffff } else { 0 }
                    }
                    Cmppd => {
                        let (x, y) = (f64s(a), f64s(b));
                        from_q(std::array::from_fn(|i| {
                            if cmp_pred(x[i], y[i], p) {
                                u64::MAX
                            } else {
                                0
                            }
                        }))
                    }
                    _ => {
                        let (x, y) = (f32s(a), f32s(b));
                        from_d(std::array::from_fn(|i| {
                            if cmp_pred(x[i], y[i], p) {
                                u32::MAX
                            } else {
                                0
                            }
                        }))
                    }
                }
            }
            Cvtsi2sd | Cvtsi2ss => {
                let size = self.op_size(ins, 1);
                let v = b as u64;
                let iv = if size == 8 {
                    v as i64
                } else {
                    v as u32 as i32 as i64
                };
                if m == Cvtsi2sd {
                    (a & !(u64::MAX as u128)) | rounding::i64_to_f64(iv, rcm).to_bits() as u128
                } else {
                    (a & !0xffff_ffffu128) | rounding::i64_to_f32(iv, rcm).to_bits() as u128
                }
            }
            Cvttsd2si | Cvtsd2si | Cvttss2si | Cvtss2si => {
                let d = ins.op0_register();
                let bits = (d.size() * 8) as u32;
                let v = if matches!(m, Cvttsd2si | Cvtsd2si) {
                    f64::from_bits(b as u64)
                } else {
                    f32::from_bits(b as u32) as f64
                };
                let r = f2i(v, bits, rc, matches!(m, Cvttsd2si | Cvttss2si));
                self.reg_write(d, r);
                return Ok(None);
            }
            Cvtsd2ss => {
                let v = rounding::f64_to_f32(f64::from_bits(b as u64), rcm);
                (a & !0xffff_ffffu128) | v.to_bits() as u128
            }
            Cvtss2sd => {
                (a & !(u64::MAX as u128)) | (f32::from_bits(b as u32) as f64).to_bits() as u128
            }
            Cvtdq2pd => {
                let s = d4(b);
                from_f64([s[0] as i32 as f64, s[1] as i32 as f64])
            }
            Cvtdq2ps => from_f32(d4(b).map(|x| rounding::i64_to_f32(x as i32 as i64, rcm))),
            Cvttps2dq | Cvtps2dq => {
                let t = m == Cvttps2dq;
                from_d(f32s(b).map(|x| f2i(x as f64, 32, rc, t) as u32))
            }
            Cvttpd2dq | Cvtpd2dq => {
                let t = m == Cvttpd2dq;
                let s = f64s(b);
                from_d([
                    f2i(s[0], 32, rc, t) as u32,
                    f2i(s[1], 32, rc, t) as u32,
                    0,
                    0,
                ])
            }
            Cvtps2pd => {
                let s = f32s(b);
                from_f64([s[0] as f64, s[1] as f64])
            }
            Cvtpd2ps => {
                let s = f64s(b);
                let n = |x: f64| rounding::f64_to_f32(x, rcm);
                from_f32([n(s[0]), n(s[1]), 0.0, 0.0])
            }
            Roundps | Roundpd | Roundss | Roundsd => {
                let (r, raised) = float::round(m, a, b, ins.immediate8(), rc);
                self.fpu.mxcsr |= raised;
                r
            }
            _ => {
                let imm = ins.immediate8();
                let x0 = self.fpu.xmm[0];
                let src_mem = ins.op1_kind() == OpKind::Memory;
                match int::compute(m, a, b, imm, x0)
                    .or_else(|| float::compute(m, a, b, imm, x0, src_mem, rcm))
                    .or_else(|| crypto::compute(m, a, b, imm))
                {
                    Some(r) => r,
                    None => return Err(self.unimplemented(ins)),
                }
            }
        };
        Ok(Some(r))
    }

    /// PCMPESTRI/PCMPESTRM/PCMPISTRI/PCMPISTRM: lengths from EAX/EDX (RAX/RDX for the
    /// REX.W forms) or the first NUL element; the index goes to ECX, the mask to XMM0.
    fn pcmpstr(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        use M::*;
        let m = ins.mnemonic();
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
                Psllw => {
                    if c >= 16 {
                        0
                    } else {
                        x << c
                    }
                }
                Psrlw => {
                    if c >= 16 {
                        0
                    } else {
                        x >> c
                    }
                }
                _ => ((x as i16) >> c.min(15)) as u16,
            }
        })),
        Pslld | Psrld | Psrad => from_d(d4(a).map(|x| {
            let c = count.min(32) as u32;
            match m {
                Pslld => {
                    if c >= 32 {
                        0
                    } else {
                        x << c
                    }
                }
                Psrld => {
                    if c >= 32 {
                        0
                    } else {
                        x >> c
                    }
                }
                _ => ((x as i32) >> c.min(31)) as u32,
            }
        })),
        _ => from_q(q2(a).map(|x| {
            let c = count.min(64) as u32;
            match m {
                Psllq => {
                    if c >= 64 {
                        0
                    } else {
                        x << c
                    }
                }
                _ => {
                    if c >= 64 {
                        0
                    } else {
                        x >> c
                    }
                }
            }
        })),
    }
}
