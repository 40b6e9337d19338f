//! The x87 80-bit register format and its correctly rounded arithmetic.
//!
//! Values are kept as [`Ext`] (sign+exponent word and the 64-bit significand with its
//! explicit integer bit J). Rounding is done by `rustc_apfloat` (the Rust port of LLVM's
//! APFloat): an operation is first computed in [`Wide`] (an apfloat format with a 109-bit
//! significand and a 19-bit exponent, so nothing overflows or underflows there) with
//! round-toward-zero, and an inexact result gets its last bit set ("round to odd").
//! Because 109 ≥ 64 + 2, converting that value to the destination format with the FCW's
//! rounding mode gives the correctly rounded result and the right overflow, underflow and
//! inexact flags, with no double-rounding error. Exact conversions and the series of
//! `transcendental.rs` use binary128 (`Quad`, the x87 exponent range, 113 bits).
//!
//! The destination formats are apfloat semantics with the x87 exponent range and 24, 53
//! or 64 bits of precision ([`E24S`], [`E53S`], [`E64S`]): that is precision control,
//! which rounds the significand but keeps the extended exponent range. apfloat's own
//! `X87DoubleExtended` is not used because it has no reduced-precision variants.
//!
//! NaN propagation, unsupported encodings (unnormals, pseudo-NaN/infinity), the denormal
//! operand flag and the C1 "rounded up" bit are x87-specific and done here, before and
//! after the apfloat operation.

use core::cmp::Ordering;

use rustc_apfloat::ieee::{Double, IeeeFloat, Quad, Semantics, Single};
use rustc_apfloat::{Float, FloatConvert, Round, Status, StatusAnd};

/// Invalid operation.
pub const IE: u16 = 1 << 0;
/// Denormal operand.
pub const DE: u16 = 1 << 1;
/// Zero divide.
pub const ZE: u16 = 1 << 2;
/// Overflow.
pub const OE: u16 = 1 << 3;
/// Underflow.
pub const UE: u16 = 1 << 4;
/// Precision (inexact).
pub const PE: u16 = 1 << 5;
/// Stack fault.
pub const SF: u16 = 1 << 6;
/// Exception summary.
pub const ES: u16 = 1 << 7;
pub const C0: u16 = 1 << 8;
pub const C1: u16 = 1 << 9;
pub const C2: u16 = 1 << 10;
pub const C3: u16 = 1 << 14;
/// Busy (mirrors ES).
pub const B: u16 = 1 << 15;
/// The six exception flags (and the mask bits at the same positions in FCW).
pub const EXC: u16 = 0x3f;

/// x87 exponent range, 24-bit significand (precision control 00).
pub struct E24S;
/// x87 exponent range, 53-bit significand (precision control 10).
pub struct E53S;
/// x87 exponent range, 64-bit significand (precision control 11); IEEE layout with an
/// implicit integer bit, converted to and from the explicit-J register format here.
pub struct E64S;
impl Semantics for E24S {
    const BITS: usize = 15 + 24;
    const EXP_BITS: usize = 15;
}
impl Semantics for E53S {
    const BITS: usize = 15 + 53;
    const EXP_BITS: usize = 15;
}
impl Semantics for E64S {
    const BITS: usize = 15 + 64;
    const EXP_BITS: usize = 15;
}
/// The intermediate format: 109-bit significand and a 19-bit exponent, so that no
/// operation on x87 values overflows or underflows in it (a result that does not fit the
/// x87 range can still be rounded correctly, or scaled by 2^±24576 for an unmasked
/// overflow/underflow).
pub struct WideS;
impl Semantics for WideS {
    const BITS: usize = 128;
    const EXP_BITS: usize = 19;
}
pub type Wide = IeeeFloat<WideS>;
type E24 = IeeeFloat<E24S>;
type E53 = IeeeFloat<E53S>;
type E64 = IeeeFloat<E64S>;

const J: u64 = 1 << 63;
const QBIT: u64 = 1 << 62;

/// Precision control (FCW bits 8-9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prec {
    P24,
    P53,
    P64,
}

/// Precision and rounding control from FCW, and whether overflow and underflow are
/// unmasked (their results are then scaled by 2^-24576 or 2^24576 into range).
#[derive(Clone, Copy, Debug)]
pub struct Ctl {
    pub prec: Prec,
    pub rc: Round,
    pub oe_unmasked: bool,
    pub ue_unmasked: bool,
}

impl Ctl {
    /// PC 01 is reserved; it is treated as 64-bit precision.
    pub fn from_fcw(fcw: u16) -> Ctl {
        let prec = match (fcw >> 8) & 3 {
            0 => Prec::P24,
            2 => Prec::P53,
            _ => Prec::P64,
        };
        Ctl {
            prec,
            rc: rounding(fcw),
            oe_unmasked: fcw & OE == 0,
            ue_unmasked: fcw & UE == 0,
        }
    }
    /// The same with 64-bit precision (instructions that ignore PC).
    pub fn full(self) -> Ctl {
        Ctl {
            prec: Prec::P64,
            ..self
        }
    }
    /// Exact conversions: 64-bit precision, all exceptions masked.
    fn exact() -> Ctl {
        Ctl {
            prec: Prec::P64,
            rc: Round::NearestTiesToEven,
            oe_unmasked: false,
            ue_unmasked: false,
        }
    }
}

/// The rounding mode of FCW.RC.
pub fn rounding(fcw: u16) -> Round {
    match (fcw >> 10) & 3 {
        0 => Round::NearestTiesToEven,
        1 => Round::TowardNegative,
        2 => Round::TowardPositive,
        _ => Round::TowardZero,
    }
}

/// The class of an 80-bit value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Zero,
    /// Exponent 0 with a nonzero significand (denormals and pseudo-denormals).
    Denormal,
    Normal,
    Inf,
    QNan,
    SNan,
    /// Unnormals, pseudo-infinities and pseudo-NaNs (no longer supported since the 387).
    Unsupported,
}

/// An 80-bit register value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ext {
    /// Sign (bit 15) and biased exponent.
    pub se: u16,
    /// Significand with the explicit integer bit 63.
    pub man: u64,
}

impl Ext {
    /// The "real indefinite" QNaN the x87 produces for masked invalid operations.
    pub const INDEFINITE: Ext = Ext {
        se: 0xffff,
        man: 0xc000_0000_0000_0000,
    };
    pub const ZERO: Ext = Ext { se: 0, man: 0 };
    pub const ONE: Ext = Ext { se: 0x3fff, man: J };
    pub const INF: Ext = Ext { se: 0x7fff, man: J };

    pub fn from_bytes(b: &[u8]) -> Ext {
        let mut m = [0u8; 8];
        m.copy_from_slice(&b[..8]);
        Ext {
            se: u16::from_le_bytes([b[8], b[9]]),
            man: u64::from_le_bytes(m),
        }
    }

    pub fn to_bytes(self) -> [u8; 10] {
        let mut b = [0u8; 10];
        b[..8].copy_from_slice(&self.man.to_le_bytes());
        b[8..].copy_from_slice(&self.se.to_le_bytes());
        b
    }

    pub fn neg(self) -> bool {
        self.se & 0x8000 != 0
    }

    pub fn exp(self) -> u16 {
        self.se & 0x7fff
    }

    pub fn with_sign(self, neg: bool) -> Ext {
        Ext {
            se: (self.se & 0x7fff) | ((neg as u16) << 15),
            man: self.man,
        }
    }

    pub fn class(self) -> Class {
        let e = self.exp();
        if e == 0 {
            if self.man == 0 {
                Class::Zero
            } else {
                Class::Denormal
            }
        } else if self.man & J == 0 {
            Class::Unsupported
        } else if e == 0x7fff {
            if self.man << 1 == 0 {
                Class::Inf
            } else if self.man & QBIT != 0 {
                Class::QNan
            } else {
                Class::SNan
            }
        } else {
            Class::Normal
        }
    }

    pub fn is_nan(self) -> bool {
        matches!(self.class(), Class::QNan | Class::SNan)
    }

    /// A pseudo-denormal (exponent 0 with J set) as the normal number it stands for.
    pub fn canonical(self) -> Ext {
        if self.exp() == 0 && self.man & J != 0 {
            Ext {
                se: self.se | 1,
                man: self.man,
            }
        } else {
            self
        }
    }

    /// The QNaN version of a NaN.
    pub fn quiet(self) -> Ext {
        Ext {
            se: self.se,
            man: self.man | QBIT,
        }
    }

    /// The tag of a non-empty register: 0 valid, 1 zero, 2 special.
    pub fn tag(self) -> u16 {
        match self.class() {
            Class::Zero => 1,
            Class::Normal => 0,
            _ => 2,
        }
    }

    /// The exact binary128 value (finite, zero or infinity; NaNs and unsupported
    /// encodings must be handled by the caller). Pseudo-denormals get their real value.
    pub fn to_quad(self) -> Quad {
        let sign = (self.neg() as u128) << 127;
        let e = self.exp() as u128;
        let frac = ((self.man & !J) as u128) << 49;
        let bits = match self.class() {
            Class::Inf => sign | (0x7fff << 112),
            Class::Zero => sign,
            _ if e == 0 && self.man & J != 0 => sign | (1 << 112) | frac,
            _ if e == 0 => sign | ((self.man as u128) << 49),
            _ => sign | (e << 112) | frac,
        };
        Quad::from_bits(bits)
    }

    /// The exact value in the wide intermediate format.
    pub fn to_wide(self) -> Wide {
        self.to_quad().convert(&mut false).value
    }

    /// Rounds `q` to the precision and rounding of `ctl` (see [`Ext::from_wide`]).
    pub fn from_quad(q: Quad, ctl: Ctl) -> (Ext, u16) {
        Ext::from_wide(q.convert(&mut false).value, ctl)
    }

    /// Rounds `w` to the precision and rounding of `ctl`; returns the value and the
    /// OE/UE/PE flags, plus C1 if the magnitude was rounded up. With overflow (underflow)
    /// unmasked, an out-of-range result is scaled by 2^-24576 (2^24576) first, as the
    /// x87 does for a register destination.
    pub fn from_wide(w: Wide, ctl: Ctl) -> (Ext, u16) {
        let (v, mut f) = Ext::round_wide(w, ctl);
        let finite = w.is_finite_non_zero();
        // apfloat reports no overflow when rounding toward zero stops at the largest
        // value; the exact value is at least 2^16384 then.
        if finite && w.ilogb() >= 16384 {
            f |= OE | PE;
        }
        // Results out of range even after that scaling become infinity or zero.
        if f & OE != 0 && ctl.oe_unmasked {
            if w.ilogb() >= 16384 + 24576 {
                return (Ext::INF.with_sign(w.is_negative()), OE | PE | C1);
            }
            let (v, g) = Ext::round_wide(w.scalbn(-24576), ctl);
            return (v, OE | (g & (PE | C1)));
        }
        if finite && w.ilogb() < -16382 && ctl.ue_unmasked {
            if w.ilogb() < -16382 - 24576 {
                return (Ext::ZERO.with_sign(w.is_negative()), UE | PE);
            }
            let (v, g) = Ext::round_wide(w.scalbn(24576), ctl);
            return (v, UE | (g & (PE | C1)));
        }
        (v, f)
    }

    fn round_wide(w: Wide, ctl: Ctl) -> (Ext, u16) {
        let mut lost = false;
        let (status, v) = match ctl.prec {
            Prec::P24 => {
                let r: StatusAnd<E24> = w.convert_r(ctl.rc, &mut lost);
                (r.status, unpack(r.value.to_bits(), 24))
            }
            Prec::P53 => {
                let r: StatusAnd<E53> = w.convert_r(ctl.rc, &mut lost);
                (r.status, unpack(r.value.to_bits(), 53))
            }
            Prec::P64 => {
                let r: StatusAnd<E64> = w.convert_r(ctl.rc, &mut lost);
                (r.status, unpack(r.value.to_bits(), 64))
            }
        };
        let mut f = status_flags(status);
        if status.contains(Status::INEXACT) && v.to_wide().abs() > w.abs() {
            f |= C1;
        }
        (v, f)
    }

    /// An exactly representable binary128 value (e.g. an integer of at most 64 bits).
    pub fn from_quad_exact(q: Quad) -> Ext {
        Ext::from_quad(q, Ctl::exact()).0
    }

    pub fn from_i64(v: i64) -> Ext {
        Ext::from_quad_exact(Quad::from_i128(v as i128).value)
    }

    /// An m32fp operand; DE if it is a denormal. SNaNs stay signaling (the operation
    /// using the value reports IE).
    pub fn from_f32(bits: u32) -> (Ext, u16) {
        let sign = ((bits >> 31) as u16) << 15;
        let e = (bits >> 23) & 0xff;
        let frac = (bits & 0x7f_ffff) as u64;
        if e == 0xff {
            return (
                Ext {
                    se: sign | 0x7fff,
                    man: J | (frac << 40),
                },
                0,
            );
        }
        let q: Quad = Single::from_bits(bits as u128).convert(&mut false).value;
        let f = if e == 0 && frac != 0 { DE } else { 0 };
        (Ext::from_quad_exact(q), f)
    }

    /// An m64fp operand (see [`Ext::from_f32`]).
    pub fn from_f64(bits: u64) -> (Ext, u16) {
        let sign = ((bits >> 63) as u16) << 15;
        let e = (bits >> 52) & 0x7ff;
        let frac = bits & ((1 << 52) - 1);
        if e == 0x7ff {
            return (
                Ext {
                    se: sign | 0x7fff,
                    man: J | (frac << 11),
                },
                0,
            );
        }
        let q: Quad = Double::from_bits(bits as u128).convert(&mut false).value;
        let f = if e == 0 && frac != 0 { DE } else { 0 };
        (Ext::from_quad_exact(q), f)
    }

    /// Rounds to m32fp (FST m32fp): bits and flags (IE for SNaN/unsupported, OE, UE, PE,
    /// C1 when rounded up).
    pub fn to_f32(self, rc: Round) -> (u32, u16) {
        let sign = (self.neg() as u32) << 31;
        match self.class() {
            Class::Unsupported => (0xffc0_0000, IE),
            Class::QNan | Class::SNan => {
                let f = if self.class() == Class::SNan { IE } else { 0 };
                (
                    sign | 0x7fc0_0000 | ((self.man >> 40) as u32 & 0x3f_ffff),
                    f,
                )
            }
            _ => {
                let q = self.to_quad();
                let r: StatusAnd<Single> = q.convert_r(rc, &mut false);
                let back: Quad = r.value.convert(&mut false).value;
                let over = if q.is_finite_non_zero() && q.ilogb() > 127 {
                    OE
                } else {
                    0
                };
                (
                    r.value.to_bits() as u32,
                    round_flags(r.status, back, q) | over,
                )
            }
        }
    }

    /// Rounds to m64fp (see [`Ext::to_f32`]).
    pub fn to_f64(self, rc: Round) -> (u64, u16) {
        let sign = (self.neg() as u64) << 63;
        match self.class() {
            Class::Unsupported => (0xfff8_0000_0000_0000, IE),
            Class::QNan | Class::SNan => {
                let f = if self.class() == Class::SNan { IE } else { 0 };
                (
                    sign | 0x7ff8_0000_0000_0000 | ((self.man >> 11) & 0x7_ffff_ffff_ffff),
                    f,
                )
            }
            _ => {
                let q = self.to_quad();
                let r: StatusAnd<Double> = q.convert_r(rc, &mut false);
                let back: Quad = r.value.convert(&mut false).value;
                let over = if q.is_finite_non_zero() && q.ilogb() > 1023 {
                    OE
                } else {
                    0
                };
                (
                    r.value.to_bits() as u64,
                    round_flags(r.status, back, q) | over,
                )
            }
        }
    }

    /// Rounds to an integer of `bits` bits (FIST/FISTP/FISTTP/FBSTP with `limit` the
    /// exclusive magnitude bound): the value, or None (IE, the caller stores the integer
    /// indefinite) for NaN, infinity, unsupported or out-of-range values.
    pub fn to_int(self, rc: Round, limit: i128) -> (Option<i128>, u16) {
        match self.class() {
            Class::Unsupported | Class::QNan | Class::SNan | Class::Inf => return (None, IE),
            _ => {}
        }
        let q = self.to_quad();
        let r = q.round_to_integral(rc);
        let i = r.value.to_i128(128).value;
        if i >= limit || i < -limit {
            return (None, IE);
        }
        (Some(i), round_flags(r.status, r.value, q))
    }
}

/// Unpacks an IEEE-layout value with 15 exponent bits and precision `p` (one of the E*
/// semantics) into the register format.
fn unpack(bits: u128, p: u32) -> Ext {
    let fb = p - 1;
    let sign = ((bits >> (15 + fb)) & 1) as u16;
    let e = ((bits >> fb) & 0x7fff) as u16;
    let frac = (bits & ((1u128 << fb) - 1)) as u64;
    let j = if e != 0 { J } else { 0 };
    Ext {
        se: (sign << 15) | e,
        man: j | (frac << (64 - p)),
    }
}

fn status_flags(s: Status) -> u16 {
    let mut f = 0;
    if s.contains(Status::INVALID_OP) {
        f |= IE;
    }
    if s.contains(Status::DIV_BY_ZERO) {
        f |= ZE;
    }
    if s.contains(Status::OVERFLOW) {
        f |= OE;
    }
    if s.contains(Status::UNDERFLOW) {
        f |= UE;
    }
    if s.contains(Status::INEXACT) {
        f |= PE;
    }
    f
}

/// Flags of a rounding from `exact` to `rounded` (C1 if the magnitude grew).
fn round_flags(s: Status, rounded: Quad, exact: Quad) -> u16 {
    let mut f = status_flags(s);
    if s.contains(Status::INEXACT) && rounded.abs() > exact.abs() {
        f |= C1;
    }
    f
}

/// Round-to-odd from a round-toward-zero result: an inexact value gets its last bit set.
pub fn odd<S: Semantics>(r: StatusAnd<IeeeFloat<S>>) -> IeeeFloat<S> {
    if r.status.contains(Status::INEXACT) && r.value.is_finite() {
        IeeeFloat::<S>::from_bits(r.value.to_bits() | 1)
    } else {
        r.value
    }
}

/// The NaN result of a two-operand operation with at least one NaN operand (SDM Vol. 1
/// Table 4-7, x87 column): a QNaN beats an SNaN, otherwise the larger significand wins
/// (the positive one on a tie); the result is quiet.
pub fn propagate(a: Ext, b: Ext) -> Ext {
    match (a.is_nan(), b.is_nan()) {
        (true, false) => a.quiet(),
        (false, true) => b.quiet(),
        _ => {
            let (aq, bq) = (a.class() == Class::QNan, b.class() == Class::QNan);
            if aq != bq {
                return if aq { a } else { b };
            }
            let (ma, mb) = (a.man | QBIT, b.man | QBIT);
            let r = match ma.cmp(&mb) {
                Ordering::Greater => a,
                Ordering::Less => b,
                Ordering::Equal => {
                    if a.se < b.se {
                        a
                    } else {
                        b
                    }
                }
            };
            r.quiet()
        }
    }
}

/// Operands of a two-operand operation that decide the result on their own: unsupported
/// encodings (IE, indefinite) and NaNs (propagated; IE for an SNaN).
pub fn nan_operands(a: Ext, b: Ext) -> Option<(Ext, u16)> {
    let (ca, cb) = (a.class(), b.class());
    if ca == Class::Unsupported || cb == Class::Unsupported {
        return Some((Ext::INDEFINITE, IE));
    }
    if !a.is_nan() && !b.is_nan() {
        return None;
    }
    let f = if ca == Class::SNan || cb == Class::SNan {
        IE
    } else {
        0
    };
    Some((propagate(a, b), f))
}

/// The one-operand version of [`nan_operands`].
pub fn nan_operand(a: Ext) -> Option<(Ext, u16)> {
    match a.class() {
        Class::Unsupported => Some((Ext::INDEFINITE, IE)),
        Class::SNan => Some((a.quiet(), IE)),
        Class::QNan => Some((a, 0)),
        _ => None,
    }
}

/// DE if any operand is a denormal.
pub fn denormal(v: &[Ext]) -> u16 {
    if v.iter().any(|x| x.class() == Class::Denormal) {
        DE
    } else {
        0
    }
}

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
