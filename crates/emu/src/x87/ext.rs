//! The x87 80-bit register format: classes, NaN rules, conversions, and the rounding of an
//! exact (or rounded-to-odd) intermediate to the destination precision.
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
//! after the apfloat operation. The operations themselves are in `float.rs`.

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

/// The explicit integer bit of the significand.
pub const J: u64 = 1 << 63;
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
pub fn round_flags(s: Status, rounded: Quad, exact: Quad) -> u16 {
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
