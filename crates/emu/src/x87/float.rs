//! The correctly rounded x87 operations on [`Ext`] values: add, subtract, multiply,
//! divide (computed in [`Wide`] rounded to odd, then rounded once by `Ext::from_wide`),
//! compare, square root (exact integer root), round to integer, scale, the exact
//! FPREM/FPREM1 remainder and FXTRACT. The register format, the rounding and the NaN
//! rules are in `ext.rs`; this module re-exports them so callers have one path.

use core::cmp::Ordering;

use rustc_apfloat::ieee::Quad;
use rustc_apfloat::{Float, Round, Status};

pub use super::ext::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

/// `a op b` rounded per `ctl`, with the exception flags (and C1 on round-up).
pub fn arith(op: Op, a: Ext, b: Ext, ctl: Ctl) -> (Ext, u16) {
    if let Some(r) = nan_operands(a, b) {
        return r;
    }
    let f = denormal(&[a, b]);
    let (qa, qb) = (a.to_wide(), b.to_wide());
    let calc = |rc| match op {
        Op::Add => qa.add_r(qb, rc),
        Op::Sub => qa.sub_r(qb, rc),
        Op::Mul => qa.mul_r(qb, rc),
        Op::Div => qa.div_r(qb, rc),
    };
    let r = calc(Round::TowardZero);
    if r.status.contains(Status::INVALID_OP) {
        return (Ext::INDEFINITE, f | IE);
    }
    let zf = if r.status.contains(Status::DIV_BY_ZERO) {
        ZE
    } else {
        0
    };
    let q = if r.value.is_zero() && !r.status.contains(Status::INEXACT) {
        // An exact zero's sign depends on the rounding mode (x + -x = -0 rounding down).
        calc(ctl.rc).value
    } else {
        odd(r)
    };
    let (v, g) = Ext::from_wide(q, ctl);
    (v, f | zf | g)
}

/// Compares (FCOM/FUCOM/FCOMI/FTST/FICOM): None if unordered. `quiet` (FUCOM*) raises IE
/// only for SNaNs, the others for any NaN.
pub fn compare(a: Ext, b: Ext, quiet: bool) -> (Option<Ordering>, u16) {
    let (ca, cb) = (a.class(), b.class());
    if ca == Class::Unsupported || cb == Class::Unsupported {
        return (None, IE);
    }
    if a.is_nan() || b.is_nan() {
        let f = if ca == Class::SNan || cb == Class::SNan || !quiet {
            IE
        } else {
            0
        };
        return (None, f);
    }
    (a.to_quad().partial_cmp(&b.to_quad()), denormal(&[a, b]))
}

/// Normalized significand (J set) and unbiased exponent of a finite nonzero value:
/// value = man * 2^(exp - 63).
pub fn normalize(a: Ext) -> (u64, i32) {
    let e = a.exp().max(1) as i32 - 16383;
    let lz = a.man.leading_zeros();
    (a.man << lz, e - lz as i32)
}

/// FSQRT.
pub fn sqrt(a: Ext, ctl: Ctl) -> (Ext, u16) {
    if let Some(r) = nan_operand(a) {
        return r;
    }
    match a.class() {
        Class::Zero => return (a, 0),
        _ if a.neg() => return (Ext::INDEFINITE, IE),
        Class::Inf => return (a, 0),
        _ => {}
    }
    let f = denormal(&[a]);
    let (m, e) = normalize(a);
    // value = m * 2^(e-63); make the exponent even.
    let mut ex = e - 63;
    let mut m = m as u128;
    if ex & 1 != 0 {
        m <<= 1;
        ex -= 1;
    }
    // sqrt(m * 2^76) has about 70 bits: enough for round-to-odd to 64.
    let (root, rem) = isqrt_shifted(m, 76);
    let q = Quad::from_u128(root | (rem as u128))
        .value
        .scalbn((ex - 76) / 2);
    let (v, g) = Ext::from_quad(q, ctl);
    (v, f | g)
}

/// Integer square root of `m << zeros` (`zeros` even): the root and whether the
/// remainder is nonzero (digit-by-digit, two radicand bits per step).
fn isqrt_shifted(m: u128, zeros: u32) -> (u128, bool) {
    let nbits = 128 - m.leading_zeros() + zeros;
    let pairs = nbits.div_ceil(2);
    let (mut rem, mut root) = (0u128, 0u128);
    for i in (0..pairs).rev() {
        let p = 2 * i;
        let pair = if p >= zeros && p - zeros < 128 {
            (m >> (p - zeros)) & 3
        } else {
            0
        };
        rem = (rem << 2) | pair;
        let trial = (root << 2) | 1;
        root <<= 1;
        if rem >= trial {
            rem -= trial;
            root |= 1;
        }
    }
    (root, rem != 0)
}

/// FRNDINT: round to an integer with FCW.RC (precision control does not apply).
pub fn round_int(a: Ext, rc: Round) -> (Ext, u16) {
    if let Some(r) = nan_operand(a) {
        return r;
    }
    if matches!(a.class(), Class::Zero | Class::Inf) {
        return (a, 0);
    }
    let q = a.to_quad();
    let r = q.round_to_integral(rc);
    let v = Ext::from_quad_exact(r.value).with_sign(a.neg());
    (v, denormal(&[a]) | round_flags(r.status, r.value, q))
}

/// FSCALE: `a * 2^trunc(b)`.
pub fn scale(a: Ext, b: Ext, ctl: Ctl) -> (Ext, u16) {
    if let Some(r) = nan_operands(a, b) {
        return r;
    }
    let f = denormal(&[a, b]);
    let (ca, cb) = (a.class(), b.class());
    if cb == Class::Inf {
        return match (ca, b.neg()) {
            (Class::Zero, false) | (Class::Inf, true) => (Ext::INDEFINITE, f | IE),
            (Class::Zero, true) | (Class::Inf, false) => (a, f),
            (_, false) => (Ext::INF.with_sign(a.neg()), f),
            (_, true) => (Ext::ZERO.with_sign(a.neg()), f),
        };
    }
    if matches!(ca, Class::Zero | Class::Inf) || cb == Class::Zero {
        // Scaling by ±0 leaves ST0 as it is (SDM FSCALE table), even a denormal (no
        // underflow); a pseudo-denormal becomes canonical.
        return (a.canonical(), f);
    }
    let n = b
        .to_quad()
        .round_to_integral(Round::TowardZero)
        .value
        .to_i128(32)
        .value
        .clamp(-70000, 70000) as i32;
    // Exact in the wide format (|n| is clamped far beyond any finite result).
    let (v, g) = Ext::from_wide(a.to_wide().scalbn(n), ctl);
    (v, f | g)
}

/// The result of FPREM/FPREM1.
#[derive(Debug, PartialEq, Eq)]
pub struct Rem {
    pub value: Ext,
    pub flags: u16,
    /// The quotient (its low three bits go to C0, C3, C1), None for NaN or invalid
    /// operands.
    pub quotient: Option<u64>,
    /// Partial reduction (C2 = 1): the caller must loop.
    pub partial: bool,
}

/// FPREM (`nearest` false: quotient truncated) and FPREM1 (IEEE remainder: quotient
/// rounded to nearest even). Exact. If the exponents differ by 64 or more, the reduction
/// is partial: the quotient is taken by truncation on the top `32 + d % 32` bits and
/// C2 = 1 asks software to loop.
pub fn rem(a: Ext, b: Ext, nearest: bool, ctl: Ctl) -> Rem {
    // An exact result m * 2^e; only a tiny one can raise (unmasked) underflow.
    let value = |neg: bool, m: u128, e: i32| -> (Ext, u16) {
        let w = Wide::from_u128(m).value.scalbn(e);
        Ext::from_wide(if neg { -w } else { w }, ctl.full())
    };
    let done = |(value, g): (Ext, u16), flags: u16| Rem {
        value,
        flags: flags | g,
        quotient: Some(0),
        partial: false,
    };
    // NaN and invalid operands leave C0 and C3 alone (only C1 and C2 are cleared).
    let special = |value, flags| Rem {
        value,
        flags,
        quotient: None,
        partial: false,
    };
    if let Some((v, f)) = nan_operands(a, b) {
        return special(v, f);
    }
    let f = denormal(&[a, b]);
    let (ca, cb) = (a.class(), b.class());
    if ca == Class::Inf || cb == Class::Zero {
        return special(Ext::INDEFINITE, f | IE);
    }
    if ca == Class::Zero {
        return done((a, 0), f);
    }
    if cb == Class::Inf {
        // The dividend, canonical (a pseudo-denormal gets exponent 1), no underflow.
        return done((a.canonical(), 0), f);
    }
    let (ma, ea) = normalize(a);
    let (mb, eb) = normalize(b);
    let d = ea - eb;
    let neg = a.neg();
    if d < 0 {
        // |a| < |b|: quotient 0, or 1 for FPREM1 when |a| > |b|/2.
        if nearest && d == -1 && ma > mb {
            // a - b*sign: |b| - |a| in units of 2^(ea-63).
            let r = ((mb as u128) << 1) - ma as u128;
            let (v, g) = value(!neg, r, ea - 63);
            return Rem {
                value: v,
                flags: f | g,
                quotient: Some(1),
                partial: false,
            };
        }
        // The dividend comes back in canonical form (a pseudo-denormal gets exponent 1).
        return done(value(neg, ma as u128, ea - 63), f);
    }
    let (steps, partial) = if d >= 64 {
        (32 + d % 32, true)
    } else {
        (d, false)
    };
    let mbw = mb as u128;
    let mut r = ma as u128;
    let mut q: u64 = 0;
    if r >= mbw {
        r -= mbw;
        q = 1;
    }
    for _ in 0..steps {
        r <<= 1;
        q <<= 1;
        if r >= mbw {
            r -= mbw;
            q |= 1;
        }
    }
    let unit = ea - steps - 63;
    let mut neg_r = neg;
    if nearest && !partial && (2 * r > mbw || (2 * r == mbw && q & 1 != 0)) {
        r = mbw - r;
        q = q.wrapping_add(1);
        neg_r = !neg;
    }
    let (v, g) = if r == 0 {
        (Ext::ZERO.with_sign(neg), 0)
    } else {
        value(neg_r, r, unit)
    };
    Rem {
        value: v,
        flags: f | g,
        quotient: Some(q),
        partial,
    }
}

/// FXTRACT: (exponent, significand).
pub fn extract(a: Ext) -> (Ext, Ext, u16) {
    if let Some((v, f)) = nan_operand(a) {
        return (v, v, f);
    }
    match a.class() {
        Class::Zero => (Ext::INF.with_sign(true), a, ZE),
        Class::Inf => (Ext::INF, a, 0),
        _ => {
            let (m, e) = normalize(a);
            (
                Ext::from_i64(e as i64),
                Ext {
                    se: 0x3fff | (a.se & 0x8000),
                    man: m,
                },
                denormal(&[a]),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: f64) -> Ext {
        Ext::from_f64(v.to_bits()).0
    }

    /// `m * 2^e` exactly.
    fn exact(neg: bool, m: u128, e: i32) -> Ext {
        let q = Quad::from_u128(m).value.scalbn(e);
        Ext::from_quad_exact(q).with_sign(neg)
    }

    #[test]
    fn classes() {
        assert_eq!(Ext::INDEFINITE.class(), Class::QNan);
        assert_eq!(
            Ext {
                se: 0x7fff,
                man: J | 1
            }
            .class(),
            Class::SNan
        );
        assert_eq!(Ext { se: 0x3fff, man: 1 }.class(), Class::Unsupported);
        assert_eq!(Ext { se: 0x7fff, man: 0 }.class(), Class::Unsupported);
        assert_eq!(Ext { se: 0, man: J }.class(), Class::Denormal);
        assert_eq!(Ext::ONE.class(), Class::Normal);
        assert_eq!(d(1.0), Ext::ONE);
    }

    #[test]
    fn rounding_modes_and_precision() {
        let third = |fcw| arith(Op::Div, Ext::ONE, d(3.0), Ctl::from_fcw(fcw));
        // 1/3 = 0.aaaa...: nearest and down truncate, up rounds up (C1).
        assert_eq!(third(0x37f).0.man, 0xaaaa_aaaa_aaaa_aaab);
        assert_eq!(third(0x37f).1, PE | C1);
        assert_eq!(third(0x77f).0.man, 0xaaaa_aaaa_aaaa_aaaa);
        assert_eq!(third(0x77f).1, PE);
        assert_eq!(third(0xb7f).0.man, 0xaaaa_aaaa_aaaa_aaab);
        assert_eq!(third(0xf7f).0.man, 0xaaaa_aaaa_aaaa_aaaa);
        // Double precision: 53 bits, the rest zero.
        assert_eq!(third(0x27f).0.man, 0xaaaa_aaaa_aaaa_a800);
        assert_eq!(third(0x07f).0.man, 0xaaaa_ab00_0000_0000);
        // x + -x is -0 only rounding down.
        let z = |fcw| arith(Op::Add, Ext::ONE, d(-1.0), Ctl::from_fcw(fcw)).0;
        assert_eq!(z(0x37f), Ext::ZERO);
        assert_eq!(z(0x77f), Ext::ZERO.with_sign(true));
        // Overflow rounds to infinity or the largest value by direction.
        let big = Ext {
            se: 0x7ffe,
            man: u64::MAX,
        };
        let (v, f) = arith(Op::Mul, big, d(2.0), Ctl::from_fcw(0xf7f));
        assert_eq!((v, f), (big, OE | PE));
        let (v, f) = arith(Op::Mul, big, d(2.0), Ctl::from_fcw(0x37f));
        assert_eq!((v, f), (Ext::INF, OE | PE | C1));
    }

    #[test]
    fn division_by_zero_and_invalid() {
        let c = Ctl::from_fcw(0x37f);
        assert_eq!(arith(Op::Div, Ext::ONE, Ext::ZERO, c), (Ext::INF, ZE));
        assert_eq!(
            arith(Op::Div, Ext::ZERO, Ext::ZERO, c),
            (Ext::INDEFINITE, IE)
        );
        let snan = Ext {
            se: 0x7fff,
            man: J | 5,
        };
        assert_eq!(arith(Op::Add, snan, Ext::ONE, c), (snan.quiet(), IE));
    }

    #[test]
    fn fprem_partial_remainder_loop() {
        // 2^100 mod 3 = 1 (2^even = 1 mod 3): needs a partial first step.
        let c = Ctl::from_fcw(0x37f);
        let mut a = exact(false, 1, 100);
        let b = d(3.0);
        let mut rounds = 0;
        let q = loop {
            let r = rem(a, b, false, c);
            a = r.value;
            rounds += 1;
            if !r.partial {
                break r.quotient.unwrap();
            }
        };
        assert_eq!(rounds, 2);
        assert_eq!(a, Ext::ONE);
        // (2^100 - 1) / 3 = 0x5555...: after the partial step the last quotient's low
        // bits are those of the full quotient.
        assert_eq!(q & 7, 0x5);
        // FPREM1 rounds the quotient: 5 rem 3 = -1 (quotient 2).
        let r = rem(d(5.0), b, true, c);
        assert_eq!((r.value, r.quotient), (d(-1.0), Some(2)));
        let r = rem(d(-7.5), d(2.0), false, c);
        assert_eq!((r.value, r.quotient), (d(-1.5), Some(3)));
    }

    #[test]
    fn sqrt_is_exact_or_rounded() {
        let c = Ctl::from_fcw(0x37f);
        assert_eq!(sqrt(d(16.0), c), (d(4.0), 0));
        let (v, f) = sqrt(d(2.0), c);
        assert_eq!(v.man, 0xb504_f333_f9de_6484);
        assert_eq!(f, PE);
        assert_eq!(sqrt(d(-1.0), c), (Ext::INDEFINITE, IE));
        assert_eq!(sqrt(d(-0.0), c), (d(-0.0), 0));
    }
}
