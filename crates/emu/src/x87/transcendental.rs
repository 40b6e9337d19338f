//! F2XM1, FYL2X, FYL2XP1, FSIN, FCOS, FSINCOS, FPTAN and FPATAN.
//!
//! No maintained crate offers these on the 80-bit format, so they are evaluated here in
//! binary128 (`rustc_apfloat`'s `Quad`, 113-bit significand) with power series (Taylor
//! for exp/sin/cos/atan, atanh for logarithms) after argument reduction, and the result is
//! rounded once to the 64-bit register format with FCW.RC. The intermediate error is far
//! below 2^-64, so results are the correctly rounded value in nearly all cases; real
//! hardware is only specified to 1 ulp, and the differential test allows 1 ulp (and any C1)
//! for these instructions only.
//!
//! FSIN/FCOS/FSINCOS/FPTAN reduce their argument like the hardware: exactly, by multiples
//! of π/2 where π is the 66-bit approximation the x87 uses (SDM Vol. 1 §8.3.10). So
//! `fsin(π as f64)` gives the hardware's 1.2246063538223773e-16, not the true
//! 1.2246467991473532e-16.

use rustc_apfloat::ieee::Quad;
use rustc_apfloat::{Float, FloatConvert, Round};

use super::float::{
    denormal, nan_operand, nan_operands, normalize, odd, Class, Ctl, Ext, Wide, IE, PE, UE, ZE,
};

/// π as binary128.
const PI: u128 = 0x4000_921f_b544_42d1_8469_898c_c517_01b8;
/// ln 2 as binary128.
const LN2: u128 = 0x3ffe_62e4_2fef_a39e_f357_93c7_6730_07e6;
/// sqrt(1/2) as binary128 (rounded up; only used as a range bound).
const SQRT_HALF: u128 = 0x3ffe_6a09_e667_f3bc_c908_b2fb_1366_ea95;
/// The x87's 66-bit π, as an integer: π66 = PI66 * 2^-64.
const PI66: u128 = (0xc90f_daa2_2168_c234 << 2) | 3;

fn q(bits: u128) -> Quad {
    Quad::from_bits(bits)
}
fn int(v: i64) -> Quad {
    Quad::from_i128(v as i128).value
}
fn add(a: Quad, b: Quad) -> Quad {
    (a + b).value
}
fn sub(a: Quad, b: Quad) -> Quad {
    (a - b).value
}
fn mul(a: Quad, b: Quad) -> Quad {
    (a * b).value
}
fn div(a: Quad, b: Quad) -> Quad {
    (a / b).value
}

/// Sums a power series until the terms stop mattering: `term(k)` given the previous term.
fn series(first: Quad, mut next: impl FnMut(Quad, i64) -> Quad) -> Quad {
    let mut sum = first;
    let mut term = first;
    for k in 1..200 {
        term = next(term, k);
        let s = add(sum, term);
        if s.bitwise_eq(sum) {
            break;
        }
        sum = s;
    }
    sum
}

/// e^t - 1 for |t| ≤ 1.
fn expm1(t: Quad) -> Quad {
    series(t, |term, k| div(mul(term, t), int(k + 1)))
}

/// atanh(s) for |s| ≤ 0.2.
fn atanh(s: Quad) -> Quad {
    let s2 = mul(s, s);
    let mut pow = s;
    let mut sum = s;
    for k in 1..200 {
        pow = mul(pow, s2);
        let n = add(sum, div(pow, int(2 * k + 1)));
        if n.bitwise_eq(sum) {
            break;
        }
        sum = n;
    }
    sum
}

/// log2 of a positive finite value.
fn log2(x: Quad) -> Quad {
    // x = m * 2^e with m in [sqrt(1/2), sqrt(2)): ln m = 2 atanh((m-1)/(m+1)).
    let mut e = 0;
    let mut m = x.frexp(&mut e);
    if m < q(SQRT_HALF) {
        m = m.scalbn(1);
        e -= 1;
    }
    let one = int(1);
    let ln = mul(int(2), atanh(div(sub(m, one), add(m, one))));
    add(int(e as i64), div(ln, q(LN2)))
}

/// log2(1 + x) (accurate for small |x| too).
fn log2p1(x: Quad) -> Quad {
    if x.abs() > q(SQRT_HALF).scalbn(-1) {
        return log2(add(int(1), x));
    }
    let ln = mul(int(2), atanh(div(x, add(int(2), x))));
    div(ln, q(LN2))
}

fn sin_cos(r: Quad) -> (Quad, Quad) {
    let r2 = mul(r, r);
    let s = series(r, |t, k| div(mul(t, r2), int(-(2 * k) * (2 * k + 1))));
    let c = series(int(1), |t, k| div(mul(t, r2), int(-(2 * k - 1) * (2 * k))));
    (s, c)
}

fn sqrt(x: Quad) -> Quad {
    // Newton's iteration from x itself (x in [1, 2] here): eight steps are plenty.
    let mut y = x;
    for _ in 0..8 {
        y = div(add(y, div(x, y)), int(2));
    }
    y
}

/// atan(t) for 0 ≤ t ≤ 1.
fn atan01(t: Quad) -> Quad {
    // Halve the angle twice: atan t = 2 atan(t / (1 + sqrt(1 + t^2))).
    let one = int(1);
    let mut t = t;
    for _ in 0..2 {
        t = div(t, add(one, sqrt(add(one, mul(t, t)))));
    }
    let t2 = mul(t, t);
    let mut pow = t;
    let mut sum = t;
    for k in 1..300 {
        pow = mul(pow, t2);
        let term = div(pow, int(2 * k + 1));
        let n = if k % 2 == 1 {
            sub(sum, term)
        } else {
            add(sum, term)
        };
        if n.bitwise_eq(sum) {
            break;
        }
        sum = n;
    }
    mul(sum, int(4))
}

/// Rounds a binary128 result to the register format (precision control does not apply to
/// transcendental instructions).
/// These results are inexact (PE, and UE if tiny) even when the binary128 value happens to
/// be exact (e.g. tan x = x for tiny x, an underflow to 0, or log2 of a power of two).
fn done(v: Quad, ctl: Ctl, flags: u16) -> (Ext, u16) {
    done_wide(wide(v), ctl, flags)
}

fn wide(v: Quad) -> Wide {
    v.convert(&mut false).value
}

fn done_wide(v: Wide, ctl: Ctl, flags: u16) -> (Ext, u16) {
    let (e, mut f) = Ext::from_wide(v, ctl.full());
    f |= PE;
    if e.exp() == 0 {
        f |= UE;
    }
    (e, flags | f)
}

/// F2XM1: 2^x - 1 (defined for -1 ≤ x ≤ 1; like the hardware, a finite operand outside
/// that range is returned unchanged, with PE).
pub fn f2xm1(x: Ext, ctl: Ctl) -> (Ext, u16) {
    if let Some(r) = nan_operand(x) {
        return r;
    }
    let f = denormal(&[x]);
    match x.class() {
        Class::Zero => return (x, f),
        Class::Inf if x.neg() => return (Ext::ONE.with_sign(true), f),
        Class::Inf => return (x, f),
        _ => {}
    }
    if x.exp() >= 0x3fff && (x.exp(), x.man) != (0x3fff, 1 << 63) {
        return (x, f | super::float::PE);
    }
    if normalize(x).1 < -80 {
        // 2^x - 1 = x ln 2 to 2^-80 relative; in the wide format so that a denormal x
        // keeps its precision (an unmasked underflow scales the full result).
        let p = x.to_wide().mul_r(wide(q(LN2)), Round::TowardZero);
        return done_wide(odd(p), ctl, f);
    }
    done(expm1(mul(x.to_quad(), q(LN2))), ctl, f)
}

/// FYL2X: y * log2(x).
pub fn fyl2x(x: Ext, y: Ext, ctl: Ctl) -> (Ext, u16) {
    if let Some(r) = nan_operands(x, y) {
        return r;
    }
    let f = denormal(&[x, y]);
    if x.neg() && x.class() != Class::Zero {
        return (Ext::INDEFINITE, f | IE);
    }
    let (yq, yc) = (y.to_quad(), y.class());
    let l = match x.class() {
        Class::Zero => {
            if yc == Class::Zero {
                return (Ext::INDEFINITE, f | IE);
            }
            let z = if yc == Class::Inf { 0 } else { ZE };
            return (Ext::INF.with_sign(!y.neg()), f | z);
        }
        Class::Inf => {
            if yc == Class::Zero {
                return (Ext::INDEFINITE, f | IE);
            }
            return (Ext::INF.with_sign(y.neg()), f);
        }
        _ => log2(x.to_quad()),
    };
    if l.is_zero() {
        if yc == Class::Inf {
            return (Ext::INDEFINITE, f | IE);
        }
        return (Ext::ZERO.with_sign(y.neg()), f);
    }
    if yc == Class::Inf || yc == Class::Zero {
        return (y.with_sign(y.neg() != l.is_negative()), f);
    }
    // Rounded toward zero and to odd so that an overflow rounds per FCW.RC below. The
    // hardware reports PE even when the product is exact (x a power of two).
    done_wide(odd(wide(yq).mul_r(wide(l), Round::TowardZero)), ctl, f)
}

/// FYL2XP1: y * log2(x + 1) (defined for |x| < 1 - sqrt(2)/2).
pub fn fyl2xp1(x: Ext, y: Ext, ctl: Ctl) -> (Ext, u16) {
    if let Some(r) = nan_operands(x, y) {
        return r;
    }
    let f = denormal(&[x, y]);
    let (xc, yc) = (x.class(), y.class());
    if (xc == Class::Inf && (x.neg() || yc == Class::Zero))
        || (xc == Class::Zero && yc == Class::Inf)
    {
        return (Ext::INDEFINITE, f | IE);
    }
    if xc == Class::Inf {
        // Outside the defined range, but the hardware gives y * log2(+inf).
        return (Ext::INF.with_sign(y.neg()), f);
    }
    if xc == Class::Zero || yc == Class::Zero {
        return (Ext::ZERO.with_sign(x.neg() != y.neg()), f);
    }
    if yc == Class::Inf {
        return (y.with_sign(x.neg() != y.neg()), f);
    }
    let (_, ex) = normalize(x);
    let (xq, yq) = (x.to_quad(), y.to_quad());
    let p = if ex < -100 {
        // log2(1 + x) = x / ln 2 to 2^-100 relative; x is scaled up and y down by the same
        // power of two so that a denormal x keeps its precision next to a large y.
        let k = -100 - ex;
        let xs = div(xq.scalbn(k), q(LN2));
        wide(yq).scalbn(-k).mul_r(wide(xs), Round::TowardZero)
    } else {
        wide(yq).mul_r(wide(log2p1(xq)), Round::TowardZero)
    };
    done_wide(odd(p), ctl, f)
}

/// The argument reduction of FSIN/FCOS/FSINCOS/FPTAN: None if |x| ≥ 2^63 (C2 = 1, the
/// operand is left alone), else (r, k mod 4) with x = k·π66/2 + r exactly, |r| ≤ π66/4.
fn reduce(x: Ext) -> Option<(Quad, u32)> {
    if x.class() == Class::Zero {
        return Some((x.to_quad(), 0));
    }
    let (m, e) = normalize(x);
    if e >= 63 {
        return None;
    }
    // x = m * 2^(e+2) * 2^-65 and π66/2 = PI66 * 2^-65.
    if e + 2 < 0 {
        return Some((x.to_quad(), 0));
    }
    let n = (m as u128) << (e + 2);
    let mut k = n / PI66;
    let rem = n % PI66;
    let mut r = Quad::from_u128(rem).value;
    if rem > PI66 / 2 {
        r = sub(r, Quad::from_u128(PI66).value);
        k += 1;
    }
    let r = r.scalbn(-65);
    let r = if x.neg() { -r } else { r };
    let k = (k % 4) as u32;
    let k = if x.neg() { (4 - k) % 4 } else { k };
    Some((r, k))
}

/// The shared checks of the trigonometric instructions: Err(result) for a NaN or
/// unsupported operand or infinity (IE), Ok(None) if out of range.
#[allow(clippy::type_complexity)]
fn trig_arg(x: Ext) -> Result<Option<(Quad, u32, u16)>, (Ext, u16)> {
    if let Some(r) = nan_operand(x) {
        return Err(r);
    }
    if x.class() == Class::Inf {
        return Err((Ext::INDEFINITE, IE));
    }
    let f = denormal(&[x]);
    Ok(reduce(x).map(|(r, k)| (r, k, f)))
}

/// Outcome of a trigonometric instruction.
pub enum Trig {
    /// |x| ≥ 2^63: C2 = 1, nothing else changes.
    OutOfRange,
    /// A NaN/invalid operand: the value for every result register, and the flags.
    Special(Ext, u16),
    /// Results (one or two) and flags.
    Done(Ext, Ext, u16),
}

/// FSIN (`.0`), FCOS, FSINCOS (sin, cos) and FPTAN (tan, 1).
pub fn trig(x: Ext, what: TrigOp, ctl: Ctl) -> Trig {
    let (r, k, f) = match trig_arg(x) {
        Err((v, f)) => return Trig::Special(v, f),
        Ok(None) => return Trig::OutOfRange,
        Ok(Some(a)) => a,
    };
    if x.class() == Class::Zero {
        return match what {
            TrigOp::Cos => Trig::Done(Ext::ONE, Ext::ONE, f),
            TrigOp::SinCos => Trig::Done(x, Ext::ONE, f),
            _ => Trig::Done(x, Ext::ONE, f),
        };
    }
    let (s, c) = sin_cos(r);
    let sin = match k {
        0 => s,
        1 => c,
        2 => -s,
        _ => -c,
    };
    let cos = match k {
        0 => c,
        1 => -s,
        2 => -c,
        _ => s,
    };
    let (a, b) = match what {
        TrigOp::Sin => (sin, sin),
        TrigOp::Cos => (cos, cos),
        TrigOp::SinCos => (sin, cos),
        TrigOp::Tan => (div(sin, cos), int(1)),
    };
    let (ea, fa) = done(a, ctl, f);
    let (eb, fb) = done(b, ctl, f);
    Trig::Done(ea, eb, fa | (fb & !super::float::C1))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrigOp {
    Sin,
    Cos,
    SinCos,
    Tan,
}

/// FPATAN: atan2(y, x).
pub fn fpatan(x: Ext, y: Ext, ctl: Ctl) -> (Ext, u16) {
    if let Some(r) = nan_operands(x, y) {
        return r;
    }
    let f = denormal(&[x, y]);
    let pi = q(PI);
    let half_pi = pi.scalbn(-1);
    let (xc, yc) = (x.class(), y.class());
    let a = match (xc, yc) {
        (_, Class::Zero) => {
            if x.neg() {
                pi
            } else {
                int(0)
            }
        }
        (Class::Inf, Class::Inf) => {
            let quarter = pi.scalbn(-2);
            if x.neg() {
                mul(quarter, int(3))
            } else {
                quarter
            }
        }
        (Class::Inf, _) => {
            if x.neg() {
                pi
            } else {
                int(0)
            }
        }
        (_, Class::Inf) | (Class::Zero, _) => half_pi,
        _ if !x.neg() && normalize(y).1 - normalize(x).1 < -80 => {
            // atan(y/x) = y/x to 2^-160 relative; the quotient in the wide format keeps
            // its precision when it is below the x87 range.
            let t = y.to_wide().div_r(x.to_wide(), Round::TowardZero);
            return done_wide(odd(t), ctl, f);
        }
        _ => {
            let (ax, ay) = (x.to_quad().abs(), y.to_quad().abs());
            let a = if ay <= ax {
                atan01(div(ay, ax))
            } else {
                sub(half_pi, atan01(div(ax, ay)))
            };
            if x.neg() {
                sub(pi, a)
            } else {
                a
            }
        }
    };
    let a = if y.neg() { -a } else { a };
    let exact_zero =
        (yc == Class::Zero && !x.neg()) || (xc == Class::Inf && !x.neg() && yc != Class::Inf);
    if exact_zero {
        return (Ext::ZERO.with_sign(y.neg()), f);
    }
    done(a, ctl, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: f64) -> Ext {
        Ext::from_f64(v.to_bits()).0
    }
    fn c() -> Ctl {
        Ctl::from_fcw(0x37f)
    }
    fn f(e: Ext) -> f64 {
        f64::from_bits(e.to_f64(rustc_apfloat::Round::NearestTiesToEven).0)
    }

    #[test]
    fn values() {
        assert_eq!(f(f2xm1(d(0.5), c()).0), 0.414_213_562_373_095_05);
        assert_eq!(f(fyl2x(d(8.0), d(3.0), c()).0), 9.0);
        assert_eq!(
            f(fpatan(d(1.0), d(1.0), c()).0),
            std::f64::consts::FRAC_PI_4
        );
        let Trig::Done(s, co, _) = trig(d(0.5), TrigOp::SinCos, c()) else {
            panic!()
        };
        assert_eq!((f(s), f(co)), (0.5f64.sin(), 0.5f64.cos()));
        // The 66-bit π reduction of the hardware.
        let Trig::Done(s, _, _) = trig(d(std::f64::consts::PI), TrigOp::Sin, c()) else {
            panic!()
        };
        assert_eq!(f(s), 1.2246063538223773e-16);
    }
}
