//! Integer lane instructions of SSSE3, SSE4.1 and SSE4.2 (PCMPGTQ) on XMM registers: pure
//! functions of the destination `a`, the source `b`, the immediate and (for the variable
//! blends) XMM0. SSSE3's MMX-register forms use them too (`mmx.rs`).

use iced_x86::Mnemonic as M;

use super::lanes::*;

/// Horizontal pairs: `f` applied to adjacent lanes of `a` (low half of the result) and
/// then of `b` (high half).
fn horizontal<T: Copy, const N: usize>(x: [T; N], y: [T; N], f: impl Fn(T, T) -> T) -> [T; N] {
    std::array::from_fn(|i| {
        let (s, j) = if i < N / 2 { (&x, i) } else { (&y, i - N / 2) };
        f(s[2 * j], s[2 * j + 1])
    })
}

/// PSIGN: `v` negated, zeroed or kept by the sign of `s`.
fn sign<T: Copy + Default + PartialOrd + std::ops::Neg<Output = T>>(v: T, s: T) -> T {
    let z = T::default();
    if s < z {
        -v
    } else if s == z {
        z
    } else {
        v
    }
}

/// Sign or zero extension of the low lanes of `b` (PMOVSX*/PMOVZX*): `from` and `to` are
/// lane widths in bytes.
fn extend(b: u128, from: usize, to: usize, signed: bool) -> u128 {
    let n = 16 / to;
    let fbits = 8 * from as u32;
    (0..n).fold(0u128, |acc, i| {
        let raw = (b >> (fbits as usize * i)) as u64 & (u64::MAX >> (64 - fbits));
        let v = if signed {
            ((raw << (64 - fbits)) as i64 >> (64 - fbits)) as u64
        } else {
            raw
        };
        let tmask = u128::MAX >> (128 - 8 * to);
        acc | ((v as u128) & tmask) << (8 * to * i)
    })
}

/// PMOVSX/PMOVZX: (source lane bytes, destination lane bytes, signed).
fn extension(m: M) -> Option<(usize, usize, bool)> {
    use M::*;
    Some(match m {
        Pmovsxbw => (1, 2, true),
        Pmovsxbd => (1, 4, true),
        Pmovsxbq => (1, 8, true),
        Pmovsxwd => (2, 4, true),
        Pmovsxwq => (2, 8, true),
        Pmovsxdq => (4, 8, true),
        Pmovzxbw => (1, 2, false),
        Pmovzxbd => (1, 4, false),
        Pmovzxbq => (1, 8, false),
        Pmovzxwd => (2, 4, false),
        Pmovzxwq => (2, 8, false),
        Pmovzxdq => (4, 8, false),
        _ => return None,
    })
}

/// How many source bytes one 128-bit lane of a PMOVSX/PMOVZX result takes.
pub(super) fn extension_input(m: M) -> Option<u32> {
    extension(m).map(|(from, to, _)| (16 * from / to) as u32)
}

pub(super) fn handles(m: M) -> bool {
    use M::*;
    extension(m).is_some()
        || matches!(
            m,
            Pabsb
                | Pabsw
                | Pabsd
                | Palignr
                | Phaddw
                | Phaddd
                | Phaddsw
                | Phsubw
                | Phsubd
                | Phsubsw
                | Pmaddubsw
                | Pmulhrsw
                | Pshufb
                | Psignb
                | Psignw
                | Psignd
                | Pblendvb
                | Pblendw
                | Mpsadbw
                | Packusdw
                | Pcmpeqq
                | Pcmpgtq
                | Pinsrb
                | Pinsrd
                | Pinsrq
                | Phminposuw
                | Pmaxsb
                | Pmaxsd
                | Pmaxuw
                | Pmaxud
                | Pminsb
                | Pminsd
                | Pminuw
                | Pminud
                | Pmuldq
                | Pmulld
        )
}

/// The result of integer instruction `m` (one of `handles`) on destination `a` and
/// source `b` (memory sources zero-extended from their size), immediate `imm`, and `x0`
/// (XMM0, the implicit mask of PBLENDVB).
pub(super) fn compute(m: M, a: u128, b: u128, imm: u8, x0: u128) -> Option<u128> {
    use M::*;
    if let Some((from, to, signed)) = extension(m) {
        return Some(extend(b, from, to, signed));
    }
    Some(match m {
        Pabsb => from_b(b16(b).map(|x| (x as i8).unsigned_abs())),
        Pabsw => from_w(w8(b).map(|x| (x as i16).unsigned_abs())),
        Pabsd => from_d(d4(b).map(|x| (x as i32).unsigned_abs())),
        Palignr => {
            let sh = imm as u32 * 8;
            if sh >= 256 {
                0
            } else if sh >= 128 {
                a >> (sh - 128)
            } else if sh == 0 {
                b
            } else {
                (b >> sh) | (a << (128 - sh))
            }
        }
        Phaddw => from_w(horizontal(w8(a), w8(b), u16::wrapping_add)),
        Phsubw => from_w(horizontal(w8(a), w8(b), u16::wrapping_sub)),
        Phaddd => from_d(horizontal(d4(a), d4(b), u32::wrapping_add)),
        Phsubd => from_d(horizontal(d4(a), d4(b), u32::wrapping_sub)),
        Phaddsw => from_w(horizontal(w8(a), w8(b), |p, q| {
            sat_i16(p as i16 as i32 + q as i16 as i32)
        })),
        Phsubsw => from_w(horizontal(w8(a), w8(b), |p, q| {
            sat_i16(p as i16 as i32 - q as i16 as i32)
        })),
        Pmaddubsw => {
            let (x, y) = (b16(a), b16(b));
            from_w(std::array::from_fn(|i| {
                let p = |k: usize| x[k] as i32 * y[k] as i8 as i32;
                sat_i16(p(2 * i) + p(2 * i + 1))
            }))
        }
        Pmulhrsw => {
            let (x, y) = (w8(a), w8(b));
            from_w(std::array::from_fn(|i| {
                let p = x[i] as i16 as i32 * y[i] as i16 as i32;
                (((p >> 14) + 1) >> 1) as u16
            }))
        }
        Pshufb => {
            let (x, y) = (b16(a), b16(b));
            from_b(y.map(|s| {
                if s & 0x80 != 0 {
                    0
                } else {
                    x[(s & 15) as usize]
                }
            }))
        }
        Psignb => {
            let (x, y) = (b16(a), b16(b));
            from_b(std::array::from_fn(|i| {
                sign(x[i] as i8 as i16, y[i] as i8 as i16) as u8
            }))
        }
        Psignw => {
            let (x, y) = (w8(a), w8(b));
            from_w(std::array::from_fn(|i| {
                sign(x[i] as i16 as i32, y[i] as i16 as i32) as u16
            }))
        }
        Psignd => {
            let (x, y) = (d4(a), d4(b));
            from_d(std::array::from_fn(|i| {
                sign(x[i] as i32 as i64, y[i] as i32 as i64) as u32
            }))
        }
        Pblendvb => {
            let (x, y, s) = (b16(a), b16(b), b16(x0));
            from_b(std::array::from_fn(|i| {
                if s[i] & 0x80 != 0 {
                    y[i]
                } else {
                    x[i]
                }
            }))
        }
        Pblendw => {
            let (x, y) = (w8(a), w8(b));
            from_w(std::array::from_fn(|i| {
                if imm >> i & 1 != 0 {
                    y[i]
                } else {
                    x[i]
                }
            }))
        }
        Mpsadbw => {
            let (x, y) = (b16(a), b16(b));
            let ao = 4 * (imm as usize >> 2 & 1);
            let bo = 4 * (imm as usize & 3);
            from_w(std::array::from_fn(|i| {
                (0..4)
                    .map(|j| (x[ao + i + j] as i16 - y[bo + j] as i16).unsigned_abs())
                    .sum()
            }))
        }
        Packusdw => {
            let (x, y) = (d4(a), d4(b));
            from_w(std::array::from_fn(|i| {
                sat_u16(if i < 4 { x[i] } else { y[i - 4] } as i32 as i64)
            }))
        }
        Pcmpeqq => from_q(std::array::from_fn(|i| lane_mask(q2(a)[i] == q2(b)[i]))),
        Pcmpgtq => from_q(std::array::from_fn(|i| {
            lane_mask(q2(a)[i] as i64 > q2(b)[i] as i64)
        })),
        Pinsrb => {
            let mut x = b16(a);
            x[imm as usize & 15] = b as u8;
            from_b(x)
        }
        Pinsrd => {
            let mut x = d4(a);
            x[imm as usize & 3] = b as u32;
            from_d(x)
        }
        Pinsrq => {
            let mut x = q2(a);
            x[imm as usize & 1] = b as u64;
            from_q(x)
        }
        Phminposuw => {
            let y = w8(b);
            // The lowest index wins a tie.
            let (idx, min) = y
                .iter()
                .enumerate()
                .min_by_key(|&(i, v)| (*v, i))
                .map_or((0, 0), |(i, v)| (i, *v));
            min as u128 | (idx as u128) << 16
        }
        Pmaxsb | Pminsb => {
            let (x, y) = (b16(a), b16(b));
            from_b(std::array::from_fn(|i| {
                let (p, q) = (x[i] as i8, y[i] as i8);
                (if m == Pmaxsb { p.max(q) } else { p.min(q) }) as u8
            }))
        }
        Pmaxuw | Pminuw => {
            let (x, y) = (w8(a), w8(b));
            from_w(std::array::from_fn(|i| {
                if m == Pmaxuw {
                    x[i].max(y[i])
                } else {
                    x[i].min(y[i])
                }
            }))
        }
        Pmaxsd | Pminsd => {
            let (x, y) = (d4(a), d4(b));
            from_d(std::array::from_fn(|i| {
                let (p, q) = (x[i] as i32, y[i] as i32);
                (if m == Pmaxsd { p.max(q) } else { p.min(q) }) as u32
            }))
        }
        Pmaxud | Pminud => {
            let (x, y) = (d4(a), d4(b));
            from_d(std::array::from_fn(|i| {
                if m == Pmaxud {
                    x[i].max(y[i])
                } else {
                    x[i].min(y[i])
                }
            }))
        }
        Pmuldq => {
            let (x, y) = (q2(a), q2(b));
            from_q(std::array::from_fn(|i| {
                (x[i] as i32 as i64).wrapping_mul(y[i] as i32 as i64) as u64
            }))
        }
        Pmulld => {
            let (x, y) = (d4(a), d4(b));
            from_d(std::array::from_fn(|i| x[i].wrapping_mul(y[i])))
        }
        _ => return None,
    })
}
