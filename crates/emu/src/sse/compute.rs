//! The per-lane semantics of the SSE instructions: one function from a 128-bit first
//! source (`a`, the destination's old value for the legacy forms), a 128-bit second source
//! (`b`), the immediate and the MXCSR/blend context to the 128-bit result. The legacy SSE
//! forms, the VEX.128 forms and each 128-bit lane of the VEX.256 forms all use it, and so
//! do the MMX forms (`mmx`, on their 64-bit values widened to 128 bits).

use iced_x86::Mnemonic as M;

use super::lanes::*;
use super::rounding::{self, arith32, arith64, Arith, Rc};
use super::{cmp_pred, crypto, f2i, float, int, maxf, minf, shift_lanes};

/// What a lane computation needs besides its operands, and what it reports back.
pub(crate) struct Env {
    /// MXCSR.RC as the raw field (float-to-integer conversions, ROUND*) and as a mode.
    pub rc: u32,
    pub rcm: Rc,
    /// The blend mask (XMM0 for the legacy BLENDV forms, the is4 register for VEX).
    pub x0: u128,
    /// The second source is memory (INSERTPS takes its element differently).
    pub src_mem: bool,
    /// The comparison predicate bits CMPxx honours: 3 (legacy) or 5 (VEX).
    pub predicates: u8,
    /// MXCSR exception flags raised (ROUND*).
    pub raised: u32,
}

impl Env {
    pub fn new(mxcsr: u32, x0: u128, src_mem: bool, vex: bool) -> Self {
        Env {
            rc: (mxcsr >> 13) & 3,
            rcm: Rc::from_mxcsr(mxcsr),
            x0,
            src_mem,
            predicates: if vex { 0x1f } else { 7 },
            raised: 0,
        }
    }
}

/// Whether `m` is computed by [`lane`] (the element shifts take their count as `b`).
pub(crate) fn is_lane_op(m: M) -> bool {
    use M::*;
    !matches!(
        m,
        Comisd
            | Ucomisd
            | Comiss
            | Ucomiss
            | Cvttsd2si
            | Cvtsd2si
            | Cvttss2si
            | Cvtss2si
            | Ldmxcsr
            | Stmxcsr
            | Movnti
            | Movmskpd
            | Movmskps
            | Pmovmskb
            | Pextrw
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
    ) && super::handles(m)
}

/// The result of `m` on one 128-bit lane; `None` for what the engine does not implement.
pub(crate) fn lane(m: M, a: u128, b: u128, imm: u8, env: &mut Env) -> Option<u128> {
    use M::*;
    let (rc, rcm) = (env.rc, env.rcm);
    if matches!(
        m,
        Psllw | Pslld | Psllq | Psrlw | Psrld | Psrlq | Psraw | Psrad | Pslldq | Psrldq
    ) {
        // The count is the low quadword of `b`.
        return Some(shift_lanes(m, a, b as u64));
    }
    let r: u128 = match m {
        Movdqa | Movdqu | Movaps | Movups | Movapd | Movupd | Lddqu | Movntdq | Movntps
        | Movntpd | Movntdqa => b,
        Movd => b as u32 as u128,
        Movq => b as u64 as u128,
        // The register-merging forms (VEX: `a` is the first source).
        Movss => (a & !0xffff_ffffu128) | (b & 0xffff_ffff),
        Movsd => (a & !(u64::MAX as u128)) | (b & u64::MAX as u128),
        Movhlps => (a & !(u64::MAX as u128)) | (b >> 64),
        Movlhps | Movhps | Movhpd => (a & u64::MAX as u128) | (b << 64),
        Movlps | Movlpd => (a & !(u64::MAX as u128)) | (b as u64 as u128),
        Pinsrw => {
            let mut w = w8(a);
            w[(imm & 7) as usize] = b as u16;
            from_w(w)
        }
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
            let imm = imm as usize;
            from_d(std::array::from_fn(|i| s[(imm >> (2 * i)) & 3]))
        }
        Pshuflw | Pshufhw => {
            let s = w8(b);
            let imm = imm as usize;
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
            let imm = imm as usize;
            from_d([
                x[imm & 3],
                x[(imm >> 2) & 3],
                y[(imm >> 4) & 3],
                y[(imm >> 6) & 3],
            ])
        }
        Shufpd => {
            let (x, y) = (q2(a), q2(b));
            let imm = imm as usize;
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
        Cmpsd | Cmpss | Cmppd | Cmpps => {
            let p = imm & env.predicates;
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
        // `b` is the integer source sign-extended to 64 bits.
        Cvtsi2sd => {
            (a & !(u64::MAX as u128)) | rounding::i64_to_f64(b as i64, rcm).to_bits() as u128
        }
        Cvtsi2ss => (a & !0xffff_ffffu128) | rounding::i64_to_f32(b as i64, rcm).to_bits() as u128,
        Cvtsd2ss => {
            let v = rounding::f64_to_f32(f64::from_bits(b as u64), rcm);
            (a & !0xffff_ffffu128) | v.to_bits() as u128
        }
        Cvtss2sd => (a & !(u64::MAX as u128)) | (f32::from_bits(b as u32) as f64).to_bits() as u128,
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
            let (r, raised) = float::round(m, a, b, imm, rc);
            env.raised |= raised;
            r
        }
        _ => {
            return int::compute(m, a, b, imm, env.x0)
                .or_else(|| float::compute(m, a, b, imm, env.x0, env.src_mem, rcm))
                .or_else(|| crypto::compute(m, a, b, imm))
        }
    };
    Some(r)
}
