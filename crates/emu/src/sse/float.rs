//! Floating-point lane instructions of SSE3 (add-subtract, horizontal add/subtract,
//! duplicating moves) and SSE4.1 (blends, dot products, INSERTPS, ROUND*), as pure
//! functions of the destination `a`, the source `b` and the immediate.
//!
//! Arithmetic goes through `rounding` (MXCSR.RC and the x86 NaN rule). ROUND* honours the
//! immediate's rounding mode or MXCSR.RC (imm bit 2) and reports the MXCSR exception
//! flags it raises (invalid for a signalling NaN, precision for an inexact result unless
//! imm bit 3 suppresses it); the caller ORs them into MXCSR.

use iced_x86::Mnemonic as M;

use super::lanes::*;
use super::rounding::{arith32, arith64, Arith, Rc};

/// MXCSR exception flags.
pub(super) const MXCSR_IE: u32 = 1 << 0;
pub(super) const MXCSR_PE: u32 = 1 << 5;

pub(super) fn handles(m: M) -> bool {
    use M::*;
    matches!(
        m,
        Addsubps
            | Addsubpd
            | Haddps
            | Haddpd
            | Hsubps
            | Hsubpd
            | Movshdup
            | Movsldup
            | Movddup
            | Blendps
            | Blendpd
            | Blendvps
            | Blendvpd
            | Dpps
            | Dppd
            | Insertps
            | Roundps
            | Roundpd
            | Roundss
            | Roundsd
    )
}

/// The result of `m` (one of `handles` except ROUND*), with `x0` the implicit XMM0
/// operand of BLENDVPS/PD and `src_mem` whether the source operand is in memory.
pub(super) fn compute(
    m: M,
    a: u128,
    b: u128,
    imm: u8,
    x0: u128,
    src_mem: bool,
    rc: Rc,
) -> Option<u128> {
    use M::*;
    let sel = |bit: usize| imm >> bit & 1 != 0;
    Some(match m {
        Addsubps => {
            let (x, y) = (f32s(a), f32s(b));
            let sub = |i: usize| arith32(Arith::Sub, x[i], y[i], rc);
            let add = |i: usize| arith32(Arith::Add, x[i], y[i], rc);
            from_f32([sub(0), add(1), sub(2), add(3)])
        }
        Addsubpd => {
            let (x, y) = (f64s(a), f64s(b));
            from_f64([
                arith64(Arith::Sub, x[0], y[0], rc),
                arith64(Arith::Add, x[1], y[1], rc),
            ])
        }
        Haddps => {
            let (x, y) = (f32s(a), f32s(b));
            let add = |p: f32, q: f32| arith32(Arith::Add, p, q, rc);
            from_f32([
                add(x[0], x[1]),
                add(x[2], x[3]),
                add(y[0], y[1]),
                add(y[2], y[3]),
            ])
        }
        Hsubps => {
            let (x, y) = (f32s(a), f32s(b));
            let sub = |p: f32, q: f32| arith32(Arith::Sub, p, q, rc);
            from_f32([
                sub(x[0], x[1]),
                sub(x[2], x[3]),
                sub(y[0], y[1]),
                sub(y[2], y[3]),
            ])
        }
        Haddpd => {
            let (x, y) = (f64s(a), f64s(b));
            let add = |p: f64, q: f64| arith64(Arith::Add, p, q, rc);
            from_f64([add(x[0], x[1]), add(y[0], y[1])])
        }
        Hsubpd => {
            let (x, y) = (f64s(a), f64s(b));
            let sub = |p: f64, q: f64| arith64(Arith::Sub, p, q, rc);
            from_f64([sub(x[0], x[1]), sub(y[0], y[1])])
        }
        Movshdup => {
            let y = d4(b);
            from_d([y[1], y[1], y[3], y[3]])
        }
        Movsldup => {
            let y = d4(b);
            from_d([y[0], y[0], y[2], y[2]])
        }
        Movddup => from_q([b as u64, b as u64]),
        Blendps | Blendvps => {
            let (x, y, s) = (d4(a), d4(b), d4(x0));
            from_d(std::array::from_fn(|i| {
                let take = if m == Blendps {
                    sel(i)
                } else {
                    s[i] >> 31 != 0
                };
                if take {
                    y[i]
                } else {
                    x[i]
                }
            }))
        }
        Blendpd | Blendvpd => {
            let (x, y, s) = (q2(a), q2(b), q2(x0));
            from_q(std::array::from_fn(|i| {
                let take = if m == Blendpd {
                    sel(i)
                } else {
                    s[i] >> 63 != 0
                };
                if take {
                    y[i]
                } else {
                    x[i]
                }
            }))
        }
        // The dot products compute the same sum per destination lane, but with the
        // operands of each addition in a lane-dependent order, which decides which NaN
        // comes out when several products are NaN (measured on hardware): for DPPS, even
        // lanes add the pairs as (t1 + t0), (t3 + t2), odd lanes as (t0 + t1),
        // (t2 + t3); lanes 0-1 then add low + high pair, lanes 2-3 high + low. DPPD adds
        // t0 + t1 in lane 0, t1 + t0 in lane 1.
        Dpps => {
            let (x, y) = (f32s(a), f32s(b));
            let t: [f32; 4] = std::array::from_fn(|i| {
                if sel(4 + i) {
                    arith32(Arith::Mul, x[i], y[i], rc)
                } else {
                    0.0
                }
            });
            let add = |p: f32, q: f32| arith32(Arith::Add, p, q, rc);
            from_f32(std::array::from_fn(|i| {
                if !sel(i) {
                    return 0.0;
                }
                let (lo, hi) = if i % 2 == 0 {
                    (add(t[1], t[0]), add(t[3], t[2]))
                } else {
                    (add(t[0], t[1]), add(t[2], t[3]))
                };
                if i < 2 {
                    add(lo, hi)
                } else {
                    add(hi, lo)
                }
            }))
        }
        Dppd => {
            let (x, y) = (f64s(a), f64s(b));
            let t: [f64; 2] = std::array::from_fn(|i| {
                if sel(4 + i) {
                    arith64(Arith::Mul, x[i], y[i], rc)
                } else {
                    0.0
                }
            });
            let add = |p: f64, q: f64| arith64(Arith::Add, p, q, rc);
            from_f64([
                if sel(0) { add(t[0], t[1]) } else { 0.0 },
                if sel(1) { add(t[1], t[0]) } else { 0.0 },
            ])
        }
        Insertps => {
            let v = if src_mem {
                b as u32
            } else {
                d4(b)[(imm as usize >> 6) & 3]
            };
            let mut x = d4(a);
            x[(imm as usize >> 4) & 3] = v;
            from_d(std::array::from_fn(|i| if sel(i) { 0 } else { x[i] }))
        }
        _ => return None,
    })
}

/// Rounds `v` to an integral value: mode 0 nearest-even, 1 down, 2 up, 3 toward zero.
fn round_mode(v: f64, mode: u32) -> f64 {
    match mode & 3 {
        0 => v.round_ties_even(),
        1 => v.floor(),
        2 => v.ceil(),
        _ => v.trunc(),
    }
}

/// One ROUND lane of `bits`-wide float `x` (raw bits): the rounded value's bits and the
/// MXCSR exception flags it raises.
fn round_lane(x: u64, double: bool, mode: u32, suppress_pe: bool) -> (u64, u32) {
    let (v, quiet) = if double {
        (f64::from_bits(x), 1u64 << 51)
    } else {
        (f32::from_bits(x as u32) as f64, 1u64 << 22)
    };
    if v.is_nan() {
        // A NaN comes back quieted; a signalling one raises invalid.
        let ie = if x & quiet == 0 { MXCSR_IE } else { 0 };
        return (x | quiet, ie);
    }
    // f32 values round exactly in f64 (an f32 of magnitude >= 2^23 is already integral).
    let r = round_mode(v, mode);
    let pe = if r != v && !suppress_pe { MXCSR_PE } else { 0 };
    let bits = if double {
        r.to_bits()
    } else {
        (r as f32).to_bits() as u64
    };
    (bits, pe)
}

/// ROUNDPS/PD/SS/SD: the result and the MXCSR exception flags raised. `rc` is MXCSR.RC,
/// used when imm bit 2 is set; imm bit 3 suppresses the precision exception.
pub(super) fn round(m: M, a: u128, b: u128, imm: u8, rc: u32) -> (u128, u32) {
    let mode = if imm & 4 != 0 { rc } else { imm as u32 & 3 };
    let suppress = imm & 8 != 0;
    let mut flags = 0;
    let mut lane = |x: u64, double: bool| {
        let (r, f) = round_lane(x, double, mode, suppress);
        flags |= f;
        r
    };
    let r = match m {
        M::Roundps => from_d(d4(b).map(|x| lane(x as u64, false) as u32)),
        M::Roundpd => from_q(q2(b).map(|x| lane(x, true))),
        M::Roundss => (a & !0xffff_ffffu128) | lane(b as u32 as u64, false) as u128,
        _ => (a & !(u64::MAX as u128)) | lane(b as u64, true) as u128,
    };
    (r, flags)
}
