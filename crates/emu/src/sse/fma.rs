//! FMA: VFMADD, VFMSUB, VFNMADD, VFNMSUB, VFMADDSUB and VFMSUBADD in their 132, 213 and
//! 231 operand orders, packed (PS/PD, VEX.128 and VEX.256) and scalar (SS/SD).
//!
//! One rounding: the result is `mul_add` (correctly rounded to nearest); for the other
//! MXCSR.RC modes the sign of its rounding error is found exactly as in `rounding` and the
//! result moved one step. NaNs: the first NaN of the multiplicand, the multiplier and the
//! addend (in the order the operand order gives them) is returned quieted and unnegated; an invalid product (0 × ∞) without
//! a NaN operand gives the default NaN. Exception flags are not recorded (as for the
//! other arithmetic).

use std::collections::HashMap;
use std::sync::OnceLock;

use iced_x86::{Instruction, Mnemonic as M};

use super::avx::Ymm;
use std::cmp::Ordering::{self, Equal, Greater, Less};

use super::rounding::{adjust32, adjust64, beyond, scale, sign_of, split, Rc};
use crate::cpu::Cpu;
use crate::exceptions::R;
use crate::platform::Platform;

/// The operation on the product `a × b` and the addend `c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// a·b + c
    Madd,
    /// a·b − c
    Msub,
    /// −a·b + c
    Nmadd,
    /// −a·b − c
    Nmsub,
    /// Even elements a·b − c, odd a·b + c.
    MaddSub,
    /// Even elements a·b + c, odd a·b − c.
    MsubAdd,
}

/// Which operands (1 = destination, 2 = VEX.vvvv, 3 = r/m) are a, b and c.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    O132,
    O213,
    O231,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Form {
    op: Op,
    order: Order,
    double: bool,
    scalar: bool,
}

/// The FMA form of mnemonic `m` (from its name: VF + op + order + PS/PD/SS/SD).
fn form(m: M) -> Option<Form> {
    static MAP: OnceLock<HashMap<M, Form>> = OnceLock::new();
    MAP.get_or_init(|| {
        M::values()
            .filter_map(|m| {
                let name = format!("{m:?}").to_ascii_lowercase();
                let rest = name.strip_prefix("vf")?;
                let (op, rest) = [
                    ("maddsub", Op::MaddSub),
                    ("msubadd", Op::MsubAdd),
                    ("nmadd", Op::Nmadd),
                    ("nmsub", Op::Nmsub),
                    ("madd", Op::Madd),
                    ("msub", Op::Msub),
                ]
                .iter()
                .find_map(|(p, op)| rest.strip_prefix(p).map(|r| (*op, r)))?;
                let (order, rest) = [
                    ("132", Order::O132),
                    ("213", Order::O213),
                    ("231", Order::O231),
                ]
                .iter()
                .find_map(|(p, o)| rest.strip_prefix(p).map(|r| (*o, r)))?;
                let (double, scalar) = match rest {
                    "ps" => (false, false),
                    "pd" => (true, false),
                    "ss" => (false, true),
                    "sd" => (true, true),
                    _ => return None,
                };
                Some((
                    m,
                    Form {
                        op,
                        order,
                        double,
                        scalar,
                    },
                ))
            })
            .collect()
    })
    .get(&m)
    .copied()
}

pub(super) fn handles(m: M) -> bool {
    form(m).is_some()
}

/// a·b + c in double precision with one rounding as `rc` says (finite operands and result
/// adjusted; everything else as `mul_add` gives it).
fn fma64(a: f64, b: f64, c: f64, rc: Rc) -> f64 {
    let r = a.mul_add(b, c);
    if rc == Rc::Nearest || !a.is_finite() || !b.is_finite() || !c.is_finite() {
        return r;
    }
    if r.is_infinite() {
        return adjust64(r, beyond(r), rc);
    }
    if a == 0.0 || b == 0.0 {
        if c == 0.0 {
            // An exact zero: −0 when rounding down (or when both terms are −0).
            let neg_p = a.is_sign_negative() != b.is_sign_negative();
            let neg_c = c.is_sign_negative();
            return if neg_p && neg_c || rc == Rc::Down && (neg_p || neg_c) {
                -0.0
            } else {
                0.0
            };
        }
        return r;
    }
    match error_sign(a, b, c, r) {
        Equal if r == 0.0 => {
            // Exact cancellation.
            if rc == Rc::Down {
                -0.0
            } else {
                0.0
            }
        }
        sign => adjust64(r, sign, rc),
    }
}

/// How the exact a·b + c compares with `r` (a, b nonzero, all finite).
fn error_sign(a: f64, b: f64, c: f64, r: f64) -> Ordering {
    let (_, ka) = split(a);
    let (_, kb) = split(b);
    let kp = ka + kb;
    if kp < -900 {
        // The product's low part would underflow. Far below c, it only decides the
        // direction from c (which is then `r`); otherwise scale everything up.
        if c != 0.0 && split(c).1 - kp > 110 && r == c {
            return if a.is_sign_negative() != b.is_sign_negative() {
                Less
            } else {
                Greater
            };
        }
        // The product near 2^-500; c at most 2^110 times that.
        let k = -kp - 500;
        return exact_error_sign(scale(a, k), b, scale(c, k), scale(r, k));
    }
    if kp > 1000 {
        // The product may overflow: scale everything down. If c is far below the
        // product (and so would underflow), it only decides an otherwise exact result.
        let k = 500 - kp;
        if c == 0.0 || kp - split(c).1 > 110 {
            return match exact_error_sign(scale(a, k), b, 0.0, scale(r, k)) {
                Equal => sign_of(c),
                s => s,
            };
        }
        return exact_error_sign(scale(a, k), b, scale(c, k), scale(r, k));
    }
    exact_error_sign(a, b, c, r)
}

/// The sign of a·b + c − r, exact when the product's low part does not underflow.
fn exact_error_sign(a: f64, b: f64, c: f64, r: f64) -> Ordering {
    let p = a * b;
    let p_lo = a.mul_add(b, -p);
    // a·b + c − r = (s − r) + e + p_lo, with p + c = s + e exactly.
    let (s, e) = two_sum(p, c);
    let (u, e2) = two_sum(e, p_lo);
    let d = (s - r) + u;
    if d != 0.0 {
        sign_of(d)
    } else {
        sign_of(e2)
    }
}

fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// a·b + c in single precision with one rounding: the product is exact in double
/// precision, and the double-precision sum's error is exact (two-sum).
fn fma32(a: f32, b: f32, c: f32, rc: Rc) -> f32 {
    let r = a.mul_add(b, c);
    if rc == Rc::Nearest || !a.is_finite() || !b.is_finite() || !c.is_finite() {
        return r;
    }
    let p = a as f64 * b as f64;
    let (s, e) = two_sum(p, c as f64);
    if s == 0.0 && e == 0.0 {
        // Exact zero.
        let neg_p = p.is_sign_negative();
        let neg_c = c.is_sign_negative();
        return if rc == Rc::Down && (neg_p || neg_c) || neg_p && neg_c {
            -0.0
        } else {
            0.0
        };
    }
    if r.is_infinite() {
        return adjust32(r, beyond(r as f64), rc);
    }
    let d = s - r as f64;
    let sign = if d != 0.0 { sign_of(d) } else { sign_of(e) };
    adjust32(r, sign, rc)
}

/// One element: sources in instruction order (x1, x2, x3), as raw bits.
fn element(f: Form, x: [u64; 3], i: usize, rc: Rc) -> u64 {
    let (ai, bi, ci) = match f.order {
        Order::O132 => (0, 2, 1),
        Order::O213 => (1, 0, 2),
        Order::O231 => (1, 2, 0),
    };
    let (neg_product, neg_addend) = match f.op {
        Op::Madd => (false, false),
        Op::Msub => (false, true),
        Op::Nmadd => (true, false),
        Op::Nmsub => (true, true),
        Op::MaddSub => (false, i.is_multiple_of(2)),
        Op::MsubAdd => (false, i % 2 == 1),
    };
    if f.double {
        let v = x.map(f64::from_bits);
        if let Some(n) = [v[ai], v[bi], v[ci]].iter().find(|v| v.is_nan()) {
            return n.to_bits() | 1 << 51;
        }
        let a = if neg_product { -v[ai] } else { v[ai] };
        let c = if neg_addend { -v[ci] } else { v[ci] };
        fma64(a, v[bi], c, rc).to_bits()
    } else {
        let v = x.map(|b| f32::from_bits(b as u32));
        if let Some(n) = [v[ai], v[bi], v[ci]].iter().find(|v| v.is_nan()) {
            return (n.to_bits() | 1 << 22) as u64;
        }
        let a = if neg_product { -v[ai] } else { v[ai] };
        let c = if neg_addend { -v[ci] } else { v[ci] };
        fma32(a, v[bi], c, rc).to_bits() as u64
    }
}

impl Cpu {
    pub(super) fn fma(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let Some(f) = form(ins.mnemonic()) else {
            return Err(self.unimplemented(ins));
        };
        let x = [
            self.vsrc(io, ins, 0)?,
            self.vsrc(io, ins, 1)?,
            self.vsrc(io, ins, 2)?,
        ];
        let rc = Rc::from_mxcsr(self.fpu.mxcsr);
        let size = if f.double { 8 } else { 4 };
        let count = if f.scalar {
            1
        } else if ins.op0_register().is_ymm() {
            32 / size
        } else {
            16 / size
        };
        let bits = 8 * size;
        let elem_mask: u128 = if f.double {
            u64::MAX as u128
        } else {
            u32::MAX as u128
        };
        let get = |v: Ymm, i: usize| (v[i * bits / 128] >> ((i * bits) % 128) & elem_mask) as u64;
        // Elements not computed (scalar forms) keep the destination's.
        let mut out = x[0];
        for i in 0..count {
            let r = element(f, [get(x[0], i), get(x[1], i), get(x[2], i)], i, rc);
            let (lane, at) = (i * bits / 128, (i * bits) % 128);
            out[lane] = (out[lane] & !(elem_mask << at)) | (r as u128) << at;
        }
        self.vdst(io, ins, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_rounding_near_overflow() {
        // The product overflows on its own; the sum does not.
        let a = -f64::from_bits(0x7f9f584080c27d37);
        let b = f64::from_bits(0xc040f00000000000);
        let c = -f64::from_bits(0x7fefffffffffffef);
        assert_eq!(fma64(a, b, c, Rc::Down).to_bits(), 0x7fa2e6c484de29e3);
    }
}
