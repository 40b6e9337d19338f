//! The basic floating-point operations of SSE (add, subtract, multiply, divide, square
//! root, narrowing and integer-to-float conversions) rounded as MXCSR.RC says, and with
//! x86's NaN rule.
//!
//! Each operation is first done in the host's round-to-nearest; for the other modes the
//! sign of the rounding error (exact result minus rounded result) is found exactly and the
//! result moved one step toward the required direction. Single-precision errors come
//! from exact double-precision arithmetic; double-precision errors from an exact
//! two-sum, or from a fused multiply-add on operands scaled to [1, 4) so the error term
//! neither overflows nor underflows.

use std::cmp::Ordering::{self, Equal, Greater, Less};

/// MXCSR.RC (bits 14:13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rc {
    Nearest,
    Down,
    Up,
    TowardZero,
}

impl Rc {
    pub fn from_mxcsr(mxcsr: u32) -> Rc {
        match (mxcsr >> 13) & 3 {
            0 => Rc::Nearest,
            1 => Rc::Down,
            2 => Rc::Up,
            _ => Rc::TowardZero,
        }
    }
}

/// A two-source arithmetic operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

macro_rules! adjust {
    ($name:ident, $t:ty) => {
        /// Moves round-to-nearest result `r` to the neighbour `rc` asks for, given how the
        /// exact result compares with `r`.
        pub(super) fn $name(r: $t, exact: Ordering, rc: Rc) -> $t {
            match (rc, exact) {
                (Rc::Down, Less) => r.next_down(),
                (Rc::Up, Greater) => r.next_up(),
                (Rc::TowardZero, Less) if r > 0.0 => r.next_down(),
                (Rc::TowardZero, Greater) if r < 0.0 => r.next_up(),
                _ => r,
            }
        }
    };
}
adjust!(adjust64, f64);
adjust!(adjust32, f32);

/// Ordering of a finite exact value against an overflowed (infinite) result.
pub(super) fn beyond(r: f64) -> Ordering {
    if r > 0.0 {
        Less
    } else {
        Greater
    }
}

pub(super) fn sign_of(e: f64) -> Ordering {
    e.partial_cmp(&0.0).unwrap_or(Equal)
}

/// `x * 2^k`, exact when the result is a normal number or `x` is scaled up.
pub(super) fn scale(mut x: f64, mut k: i32) -> f64 {
    let pow = |k: i32| f64::from_bits(((k + 1023) as u64) << 52);
    while k > 1000 {
        x *= pow(1000);
        k -= 1000;
    }
    while k < -1000 {
        x *= pow(-1000);
        k += 1000;
    }
    x * pow(k)
}

/// `x` (finite, nonzero) as `m * 2^e` with `|m|` in [1, 2).
pub(super) fn split(x: f64) -> (f64, i32) {
    let (x, bias) = if x.to_bits() & 0x7ff0_0000_0000_0000 == 0 {
        (x * f64::from_bits((1023 + 64) << 52), 64)
    } else {
        (x, 0)
    };
    let b = x.to_bits();
    let e = ((b >> 52) & 0x7ff) as i32 - 1023 - bias;
    (
        f64::from_bits((b & !0x7ff0_0000_0000_0000) | (1023 << 52)),
        e,
    )
}

/// x86's NaN rule for two sources: the first NaN source wins, quieted.
fn nan2_64(x: f64, y: f64) -> Option<f64> {
    [x, y]
        .into_iter()
        .find(|v| v.is_nan())
        .map(|v| f64::from_bits(v.to_bits() | 1 << 51))
}

fn nan2_32(x: f32, y: f32) -> Option<f32> {
    [x, y]
        .into_iter()
        .find(|v| v.is_nan())
        .map(|v| f32::from_bits(v.to_bits() | 1 << 22))
}

fn add64(a: f64, b: f64, rc: Rc) -> f64 {
    let s = a + b;
    if rc == Rc::Nearest || !a.is_finite() || !b.is_finite() {
        return s;
    }
    if s.is_infinite() {
        return adjust64(s, beyond(s), rc);
    }
    // Two-sum: s + e == a + b exactly.
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    if e == 0.0 && s == 0.0 && rc == Rc::Down && (a.to_bits() | b.to_bits()) != 0 {
        // An exact zero sum is -0 when rounding down, unless both addends are +0.
        return -0.0;
    }
    adjust64(s, sign_of(e), rc)
}

fn mul64(a: f64, b: f64, rc: Rc) -> f64 {
    let p = a * b;
    if rc == Rc::Nearest || !a.is_finite() || !b.is_finite() || a == 0.0 || b == 0.0 {
        return p;
    }
    if p.is_infinite() {
        return adjust64(p, beyond(p), rc);
    }
    let ((ma, ea), (mb, eb)) = (split(a), split(b));
    let e = ma.mul_add(mb, -scale(p, -(ea + eb)));
    adjust64(p, sign_of(e), rc)
}

fn div64(a: f64, b: f64, rc: Rc) -> f64 {
    let q = a / b;
    if rc == Rc::Nearest || !a.is_finite() || !b.is_finite() || a == 0.0 || b == 0.0 {
        return q;
    }
    if q.is_infinite() {
        return adjust64(q, beyond(q), rc);
    }
    let ((ma, ea), (mb, eb)) = (split(a), split(b));
    // a/b - q has the sign of (a' - q'·b') · sign(b'), with q' = q·2^(eb-ea).
    let rem = (-scale(q, eb - ea)).mul_add(mb, ma);
    let s = sign_of(rem);
    adjust64(q, if mb < 0.0 { s.reverse() } else { s }, rc)
}

fn sqrt64(x: f64, rc: Rc) -> f64 {
    let r = x.sqrt();
    if rc == Rc::Nearest || !x.is_finite() || x <= 0.0 {
        return r;
    }
    // x = m·2^(2k) with m in [1, 4); r' = r·2^-k.
    let (m, e) = split(x);
    let (m, k) = if e % 2 != 0 {
        (m * 2.0, (e - 1) / 2)
    } else {
        (m, e / 2)
    };
    let rs = scale(r, -k);
    let rem = (-rs).mul_add(rs, m);
    adjust64(r, sign_of(rem), rc)
}

/// A double-precision two-source operation under `rc`, with the x86 NaN rule.
pub(super) fn arith64(op: Arith, x: f64, y: f64, rc: Rc) -> f64 {
    if let Some(n) = nan2_64(x, y) {
        return n;
    }
    match op {
        Arith::Add => add64(x, y, rc),
        Arith::Sub => add64(x, -y, rc),
        Arith::Mul => mul64(x, y, rc),
        Arith::Div => div64(x, y, rc),
    }
}

/// A single-precision two-source operation under `rc`, with the x86 NaN rule.
pub(super) fn arith32(op: Arith, x: f32, y: f32, rc: Rc) -> f32 {
    if let Some(n) = nan2_32(x, y) {
        return n;
    }
    let r = match op {
        Arith::Add => x + y,
        Arith::Sub => x - y,
        Arith::Mul => x * y,
        Arith::Div => x / y,
    };
    if rc == Rc::Nearest || !x.is_finite() || !y.is_finite() || r.is_nan() {
        return r;
    }
    let (a, b, r64) = (x as f64, y as f64, r as f64);
    let exact = match op {
        Arith::Add | Arith::Sub => {
            let b = if op == Arith::Sub { -b } else { b };
            if r.is_infinite() {
                beyond(r64)
            } else {
                // s + e == a + b exactly; s - r is exact (Sterbenz) and dominates e.
                let s = a + b;
                let bb = s - a;
                let e = (a - (s - bb)) + (b - bb);
                match sign_of(s - r64) {
                    Equal => sign_of(e),
                    o => o,
                }
            }
        }
        // Products of two singles are exact in double precision.
        Arith::Mul => (a * b).partial_cmp(&r64).unwrap_or(Equal),
        Arith::Div => {
            if b == 0.0 || a == 0.0 {
                Equal
            } else {
                // a/b vs r  <=>  a vs r·b (exact), reversed for negative b.
                let o = a.partial_cmp(&(r64 * b)).unwrap_or(Equal);
                if b < 0.0 {
                    o.reverse()
                } else {
                    o
                }
            }
        }
    };
    if exact == Equal
        && r == 0.0
        && rc == Rc::Down
        && matches!(op, Arith::Add | Arith::Sub)
        && (x.to_bits() | (if op == Arith::Sub { -y } else { y }).to_bits()) != 0
    {
        return -0.0;
    }
    adjust32(r, exact, rc)
}

/// Square root under `rc` (a NaN source is returned quieted).
pub(super) fn sqrt_64(x: f64, rc: Rc) -> f64 {
    if x.is_nan() {
        return f64::from_bits(x.to_bits() | 1 << 51);
    }
    sqrt64(x, rc)
}

pub(super) fn sqrt_32(x: f32, rc: Rc) -> f32 {
    if x.is_nan() {
        return f32::from_bits(x.to_bits() | 1 << 22);
    }
    let r = x.sqrt();
    if rc == Rc::Nearest || !x.is_finite() || x <= 0.0 {
        return r;
    }
    let r64 = r as f64;
    adjust32(r, (x as f64).partial_cmp(&(r64 * r64)).unwrap_or(Equal), rc)
}

/// Double to single (CVTSD2SS, CVTPD2PS) under `rc`.
pub(super) fn f64_to_f32(x: f64, rc: Rc) -> f32 {
    let r = x as f32;
    if rc == Rc::Nearest || !x.is_finite() {
        return r;
    }
    let exact = if r.is_infinite() {
        beyond(r as f64)
    } else {
        x.partial_cmp(&(r as f64)).unwrap_or(Equal)
    };
    adjust32(r, exact, rc)
}

/// Signed integer to double (CVTSI2SD) under `rc`.
pub(super) fn i64_to_f64(v: i64, rc: Rc) -> f64 {
    let r = v as f64;
    adjust64(r, (v as i128).cmp(&(r as i128)), rc)
}

/// Signed integer to single (CVTSI2SS, CVTDQ2PS) under `rc`.
pub(super) fn i64_to_f32(v: i64, rc: Rc) -> f32 {
    let r = v as f32;
    adjust32(r, (v as i128).cmp(&(r as i128)), rc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_modes_bracket_the_exact_result() {
        let third = arith64(Arith::Div, 1.0, 3.0, Rc::Nearest);
        let down = arith64(Arith::Div, 1.0, 3.0, Rc::Down);
        let up = arith64(Arith::Div, 1.0, 3.0, Rc::Up);
        assert_eq!(down, third);
        assert_eq!(up, third.next_up());
        assert_eq!(arith64(Arith::Div, -1.0, 3.0, Rc::TowardZero), -third);
        assert_eq!(arith64(Arith::Add, 1.0, 1e-30, Rc::Up), 1.0f64.next_up());
        assert_eq!(
            arith64(Arith::Sub, 1.0, 1e-30, Rc::TowardZero),
            1.0f64.next_down()
        );
        assert_eq!(arith64(Arith::Mul, f64::MAX, 2.0, Rc::TowardZero), f64::MAX);
        assert_eq!(arith64(Arith::Mul, f64::MAX, 2.0, Rc::Up), f64::INFINITY);
        // Products deep in the subnormal range.
        let tiny = f64::from_bits(1);
        assert_eq!(arith64(Arith::Mul, tiny, 0.75, Rc::Up), tiny);
        assert_eq!(arith64(Arith::Mul, tiny, 0.75, Rc::Down), 0.0);
        assert_eq!(arith64(Arith::Mul, 1e-200, 1e-200, Rc::Up), tiny);
        // The nearest double to sqrt(2) is above it.
        assert_eq!(sqrt_64(2.0, Rc::Up), 2.0f64.sqrt());
        assert_eq!(sqrt_64(2.0, Rc::Down), 2.0f64.sqrt().next_down());
        assert_eq!(arith32(Arith::Add, 1.0, 1e-20, Rc::Up), 1.0f32.next_up());
        let up = arith32(Arith::Div, 1.0, 3.0, Rc::Up);
        assert!(up as f64 > 1.0 / 3.0 && (up.next_down() as f64) < 1.0 / 3.0);
        assert!(f64_to_f32(0.1, Rc::Down) as f64 <= 0.1);
        assert!(f64_to_f32(0.1, Rc::Up) as f64 >= 0.1);
        assert_eq!(
            i64_to_f64(i64::MAX, Rc::TowardZero),
            9_223_372_036_854_774_784.0
        );
    }

    #[test]
    fn exact_zero_sums_are_negative_only_when_rounding_down() {
        assert!(arith64(Arith::Sub, 1.5, 1.5, Rc::Down).is_sign_negative());
        assert!(arith64(Arith::Sub, 1.5, 1.5, Rc::Up).is_sign_positive());
        assert!(arith64(Arith::Add, 0.0, 0.0, Rc::Down).is_sign_positive());
        assert!(arith32(Arith::Add, 0.0, -0.0, Rc::Down).is_sign_negative());
    }
}
