//! F16C: VCVTPH2PS (half to single precision, exact) and VCVTPS2PH (single to half
//! precision, rounded as the immediate says: bits 1:0 a rounding mode, or MXCSR.RC when
//! bit 2 is set). NaNs keep their sign and the top payload bits and become quiet;
//! overflow gives infinity or the largest finite half as the rounding direction says.

use iced_x86::{Instruction, Mnemonic as M};

use super::rounding::Rc;
use crate::cpu::Cpu;
use crate::exceptions::R;
use crate::platform::Platform;

/// A half-precision value as the single-precision one it equals.
fn h2f(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let e = (h >> 10) & 0x1f;
    let m = (h & 0x3ff) as u32;
    match e {
        0 => sign * m as f32 * f32::from_bits(0x3380_0000), // m × 2^-24
        0x1f if m == 0 => sign * f32::INFINITY,
        0x1f => f32::from_bits(((h as u32 & 0x8000) << 16) | 0x7fc0_0000 | m << 13),
        _ => f32::from_bits(((h as u32 & 0x8000) << 16) | ((e as u32 + 112) << 23) | m << 13),
    }
}

/// `x` rounded to half precision as `rc` says.
fn f2h(x: f32, rc: Rc) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let negative = sign != 0;
    if x.is_nan() {
        return sign | 0x7e00 | ((b >> 13) & 0x3ff) as u16;
    }
    if x.is_infinite() {
        return sign | 0x7c00;
    }
    let v = (x as f64).abs();
    // The exponent of the result's quantum: 2^(e-10) for e ≥ -14 (subnormals share -14).
    let mut e = if v == 0.0 {
        -14
    } else {
        (((v.to_bits() >> 52) & 0x7ff) as i32 - 1023).max(-14)
    };
    let n = v / f64::from_bits(((e - 10 + 1023) as u64) << 52);
    let up = match rc {
        Rc::Nearest => n.round_ties_even(),
        Rc::TowardZero => n.trunc(),
        Rc::Up if !negative => n.ceil(),
        Rc::Down if negative => n.ceil(),
        _ => n.trunc(),
    };
    let mut q = up as u32;
    if q >= 2048 {
        q /= 2;
        e += 1;
    }
    if e > 15 {
        let to_inf = match rc {
            Rc::Nearest => true,
            Rc::TowardZero => false,
            Rc::Up => !negative,
            Rc::Down => negative,
        };
        return sign | if to_inf { 0x7c00 } else { 0x7bff };
    }
    if q < 1024 {
        // Subnormal (e is -14).
        return sign | q as u16;
    }
    sign | ((e + 15) as u16) << 10 | (q - 1024) as u16
}

impl Cpu {
    pub(super) fn f16c(&mut self, io: &mut dyn Platform, ins: &Instruction, m: M) -> R<()> {
        let src = self.vsrc(io, ins, 1)?;
        let wide = ins.op0_register().is_ymm() || ins.op1_register().is_ymm();
        let count = if wide { 8 } else { 4 };
        let mut out = [0u128; 2];
        if m == M::Vcvtph2ps {
            for i in 0..count {
                let f = h2f((src[0] >> (16 * i)) as u16).to_bits() as u128;
                out[i / 4] |= f << (32 * (i % 4));
            }
        } else {
            let imm = ins.immediate8();
            let rc = if imm & 4 != 0 {
                Rc::from_mxcsr(self.fpu.mxcsr)
            } else {
                Rc::from_mxcsr((imm as u32 & 3) << 13)
            };
            for i in 0..count {
                let f = f32::from_bits((src[i / 4] >> (32 * (i % 4))) as u32);
                out[0] |= (f2h(f, rc) as u128) << (16 * i);
            }
        }
        self.vdst(io, ins, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_round_trip_and_round() {
        for h in 0..=u16::MAX {
            let f = h2f(h);
            if !f.is_nan() {
                assert_eq!(f2h(f, Rc::Nearest), h, "{h:#x}");
            }
        }
        assert_eq!(f2h(65520.0, Rc::Nearest), 0x7c00);
        assert_eq!(f2h(65520.0, Rc::TowardZero), 0x7bff);
        assert_eq!(f2h(1.0 + 1.0 / 4096.0, Rc::Up), 0x3c01);
        assert_eq!(f2h(-1.0 - 1.0 / 4096.0, Rc::Down), 0xbc01);
        assert_eq!(f2h(f32::from_bits(1), Rc::Up), 1, "smallest subnormal");
    }
}
