//! The x87 FPU as Linux and busybox use it: control/status word handling (fninit,
//! fnstcw, fldcw, fnstsw, fnclex, fwait), FXSAVE/FXRSTOR of the whole x87+SSE state, and
//! the register stack with loads/stores (fld/fild/fst/fstp/fist/fistp/fisttp, fxch,
//! constants), basic arithmetic (fadd/fsub/fsubr/fmul/fdiv/fdivr with their pop forms,
//! fchs, fabs) and fcomi/fucomi. The AMD FXSAVE-leak workaround Linux runs on every FPU
//! restore (`fnclex; emms; fild`) needs the stack.
//!
//! Values are computed in f64 (53-bit mantissa) and stored in the 80-bit register format;
//! precision control, x87 exceptions and the remaining instructions (transcendentals,
//! BCD, fprem, ...) are not implemented (#UD, logged once).

use iced_x86::{Code, Instruction, Mnemonic as M};

use crate::cpu::{Cpu, CR0_EM, CR0_TS};
use crate::exceptions::{gp0, Fault, NM, R};
use crate::platform::Platform;

pub fn handles(m: M) -> bool {
    matches!(
        m,
        M::Fninit
            | M::Finit
            | M::Fnstcw
            | M::Fstcw
            | M::Fldcw
            | M::Fnstsw
            | M::Fstsw
            | M::Fnclex
            | M::Fclex
            | M::Wait
            | M::Fxsave
            | M::Fxsave64
            | M::Fxrstor
            | M::Fxrstor64
            | M::Emms
            | M::Fild
            | M::Fld
            | M::Fst
            | M::Fstp
            | M::Fist
            | M::Fistp
            | M::Fisttp
            | M::Fxch
            | M::Fldz
            | M::Fld1
            | M::Fchs
            | M::Fabs
            | M::Fadd
            | M::Faddp
            | M::Fsub
            | M::Fsubp
            | M::Fsubr
            | M::Fsubrp
            | M::Fmul
            | M::Fmulp
            | M::Fdiv
            | M::Fdivp
            | M::Fdivr
            | M::Fdivrp
            | M::Fcomi
            | M::Fcomip
            | M::Fucomi
            | M::Fucomip
            | M::Ffree
    )
}

/// f64 to the 80-bit extended format.
pub fn to_ext(v: f64) -> [u8; 10] {
    let bits = v.to_bits();
    let sign = ((bits >> 63) as u16) << 15;
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    let (e, m): (u16, u64) = if exp == 0 && frac == 0 {
        (0, 0)
    } else if exp == 0x7ff {
        (0x7fff, (1 << 63) | (frac << 11))
    } else if exp == 0 {
        let lz = frac.leading_zeros();
        let e = -1074 + (63 - lz as i32) + 16383;
        (e as u16, frac << lz)
    } else {
        ((exp - 1023 + 16383) as u16, (1 << 63) | (frac << 11))
    };
    let mut out = [0u8; 10];
    out[..8].copy_from_slice(&m.to_le_bytes());
    out[8..].copy_from_slice(&(sign | e).to_le_bytes());
    out
}

/// The 80-bit extended format to f64 (rounded to nearest).
pub fn from_ext(b: &[u8]) -> f64 {
    let mut m8 = [0u8; 8];
    m8.copy_from_slice(&b[..8]);
    let m = u64::from_le_bytes(m8);
    let se = u16::from_le_bytes([b[8], b[9]]);
    let neg = se & 0x8000 != 0;
    let e = (se & 0x7fff) as i32;
    let v = if e == 0x7fff {
        if m << 1 == 0 {
            f64::INFINITY
        } else {
            f64::NAN
        }
    } else if m == 0 {
        0.0
    } else {
        let x = m as f64; // rounds to 53 bits
        let mut p = e - 16383 - 63;
        let mut r = x;
        while p > 0 {
            let s = p.min(1000);
            r *= 2f64.powi(s);
            p -= s;
        }
        while p < 0 {
            let s = (-p).min(1000);
            r /= 2f64.powi(s);
            p += s;
        }
        r
    };
    if neg {
        -v
    } else {
        v
    }
}

impl Cpu {
    pub(crate) fn x87(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        if m == M::Wait {
            if self.cr0 & CR0_TS != 0 && self.cr0 & crate::cpu::CR0_MP != 0 {
                return Err(Fault::new(NM));
            }
            return Ok(());
        }
        if self.cr0 & CR0_EM != 0
            && !matches!(m, M::Fxsave | M::Fxsave64 | M::Fxrstor | M::Fxrstor64)
        {
            return Err(Fault::new(NM));
        }
        if self.cr0 & CR0_TS != 0 {
            return Err(Fault::new(NM));
        }
        let user = self.user();
        match m {
            M::Fninit | M::Finit => {
                self.fpu.fcw = 0x37f;
                self.fpu.fsw = 0;
                self.fpu.ftw = 0;
                self.fpu.fop = 0;
                self.fpu.fip = 0;
                self.fpu.fdp = 0;
            }
            M::Fnstcw | M::Fstcw => {
                let lin = self.mem_lin(ins);
                self.write_lin(io, lin, 2, self.fpu.fcw as u64, user)?;
            }
            M::Fldcw => {
                let lin = self.mem_lin(ins);
                self.fpu.fcw = self.read_lin(io, lin, 2, user)? as u16;
            }
            M::Fnstsw | M::Fstsw => {
                if ins.code() == Code::Fnstsw_AX || ins.code() == Code::Fstsw_AX {
                    self.set_gpr_sized(0, 2, self.fpu.fsw as u64);
                } else {
                    let lin = self.mem_lin(ins);
                    self.write_lin(io, lin, 2, self.fpu.fsw as u64, user)?;
                }
            }
            M::Fnclex | M::Fclex => self.fpu.fsw &= 0x7f00,
            M::Emms => self.fpu.ftw = 0,
            M::Fxsave | M::Fxsave64 => {
                let lin = self.mem_lin(ins);
                if lin & 15 != 0 {
                    return Err(gp0());
                }
                let img = self.fxsave_image(m == M::Fxsave64);
                self.write_bytes(io, lin, &img, user)?;
            }
            M::Fxrstor | M::Fxrstor64 => {
                let lin = self.mem_lin(ins);
                if lin & 15 != 0 {
                    return Err(gp0());
                }
                let mut img = [0u8; 512];
                self.read_bytes(io, lin, &mut img, user)?;
                self.fxrstor_image(&img, m == M::Fxrstor64)?;
            }
            _ => return self.x87_stack(io, ins),
        }
        Ok(())
    }

    fn fpu_top(&self) -> usize {
        ((self.fpu.fsw >> 11) & 7) as usize
    }

    fn st(&self, i: usize) -> f64 {
        from_ext(&self.fpu.st[i & 7][..10])
    }

    fn set_st(&mut self, i: usize, v: f64) {
        let mut r = [0u8; 16];
        r[..10].copy_from_slice(&to_ext(v));
        self.fpu.st[i & 7] = r;
    }

    fn fpush(&mut self, v: f64) {
        let top = (self.fpu_top() + 7) & 7;
        self.fpu.fsw = (self.fpu.fsw & !0x3800) | ((top as u16) << 11);
        self.fpu.st.rotate_right(1);
        self.set_st(0, v);
        self.fpu.ftw |= 1 << top;
    }

    fn fpop(&mut self) {
        let top = self.fpu_top();
        self.fpu.ftw &= !(1 << top);
        self.fpu.st.rotate_left(1);
        self.fpu.fsw = (self.fpu.fsw & !0x3800) | ((((top + 1) & 7) as u16) << 11);
    }

    fn st_index(r: iced_x86::Register) -> usize {
        (r as usize).wrapping_sub(iced_x86::Register::ST0 as usize) & 7
    }

    /// Reads a memory operand as a float (by memory size and integer-ness).
    fn fmem(&mut self, io: &mut dyn Platform, ins: &Instruction, int: bool) -> R<f64> {
        let lin = self.mem_lin(ins);
        let user = self.user();
        let size = ins.memory_size().size();
        if size == 10 {
            let mut b = [0u8; 10];
            self.read_bytes(io, lin, &mut b, user)?;
            return Ok(from_ext(&b));
        }
        let v = self.read_lin(io, lin, size, user)?;
        Ok(match (int, size) {
            (true, 2) => v as u16 as i16 as f64,
            (true, 4) => v as u32 as i32 as f64,
            (true, _) => v as i64 as f64,
            (false, 4) => f32::from_bits(v as u32) as f64,
            (false, _) => f64::from_bits(v),
        })
    }

    fn x87_stack(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let user = self.user();
        let mem = ins.op_count() > 0 && ins.op0_kind() == iced_x86::OpKind::Memory;
        match m {
            M::Fild => {
                let v = self.fmem(io, ins, true)?;
                self.fpush(v);
            }
            M::Fld => {
                let v = if mem {
                    self.fmem(io, ins, false)?
                } else {
                    self.st(Self::st_index(ins.op0_register()))
                };
                self.fpush(v);
            }
            M::Fldz => self.fpush(0.0),
            M::Fld1 => self.fpush(1.0),
            M::Fst | M::Fstp => {
                let v = self.st(0);
                if mem {
                    let lin = self.mem_lin(ins);
                    match ins.memory_size().size() {
                        4 => self.write_lin(io, lin, 4, (v as f32).to_bits() as u64, user)?,
                        8 => self.write_lin(io, lin, 8, v.to_bits(), user)?,
                        _ => self.write_bytes(io, lin, &to_ext(v), user)?,
                    }
                } else {
                    let i = Self::st_index(ins.op0_register());
                    self.set_st(i, v);
                }
                if m == M::Fstp {
                    self.fpop();
                }
            }
            M::Fist | M::Fistp | M::Fisttp => {
                let v = self.st(0);
                let size = ins.memory_size().size();
                let r = if m == M::Fisttp {
                    v.trunc()
                } else {
                    match (self.fpu.fcw >> 10) & 3 {
                        0 => v.round_ties_even(),
                        1 => v.floor(),
                        2 => v.ceil(),
                        _ => v.trunc(),
                    }
                };
                let bits = size as u32 * 8;
                let lim = 2f64.powi(bits as i32 - 1);
                let iv = if r.is_nan() || r < -lim || r >= lim {
                    1u64 << (bits - 1)
                } else {
                    r as i64 as u64
                };
                let lin = self.mem_lin(ins);
                self.write_lin(io, lin, size, iv & crate::flags::mask(size), user)?;
                if m != M::Fist {
                    self.fpop();
                }
            }
            M::Fxch => {
                let i = if ins.op_count() > 1 {
                    Self::st_index(ins.op1_register())
                } else {
                    1
                };
                self.fpu.st.swap(0, i);
            }
            M::Fchs => {
                let v = self.st(0);
                self.set_st(0, -v);
            }
            M::Fabs => {
                let v = self.st(0);
                self.set_st(0, v.abs());
            }
            M::Ffree => {
                let i = Self::st_index(ins.op0_register());
                let phys = (self.fpu_top() + i) & 7;
                self.fpu.ftw &= !(1 << phys);
            }
            M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip => {
                let i = Self::st_index(ins.op1_register());
                let (a, b) = (self.st(0), self.st(i));
                use crate::flags::{CF, PF, ZF};
                let f = match a.partial_cmp(&b) {
                    None => ZF | PF | CF,
                    Some(std::cmp::Ordering::Less) => CF,
                    Some(std::cmp::Ordering::Equal) => ZF,
                    Some(std::cmp::Ordering::Greater) => 0,
                };
                self.flags.set_arith(f);
                if matches!(m, M::Fcomip | M::Fucomip) {
                    self.fpop();
                }
            }
            M::Fadd
            | M::Faddp
            | M::Fsub
            | M::Fsubp
            | M::Fsubr
            | M::Fsubrp
            | M::Fmul
            | M::Fmulp
            | M::Fdiv
            | M::Fdivp
            | M::Fdivr
            | M::Fdivrp => {
                let (d, src) = if mem {
                    (0, self.fmem(io, ins, false)?)
                } else if ins.op_count() == 2 {
                    let d = Self::st_index(ins.op0_register());
                    (d, self.st(Self::st_index(ins.op1_register())))
                } else {
                    (1, self.st(0))
                };
                let a = self.st(d);
                let r = match m {
                    M::Fadd | M::Faddp => a + src,
                    M::Fsub | M::Fsubp => a - src,
                    M::Fsubr | M::Fsubrp => src - a,
                    M::Fmul | M::Fmulp => a * src,
                    M::Fdiv | M::Fdivp => a / src,
                    _ => src / a,
                };
                self.set_st(d, r);
                if matches!(
                    m,
                    M::Faddp | M::Fsubp | M::Fsubrp | M::Fmulp | M::Fdivp | M::Fdivrp
                ) {
                    self.fpop();
                }
            }
            _ => return Err(self.unimplemented(ins)),
        }
        Ok(())
    }

    fn fxsave_image(&self, wide: bool) -> [u8; 512] {
        let f = &self.fpu;
        let mut b = [0u8; 512];
        b[0..2].copy_from_slice(&f.fcw.to_le_bytes());
        b[2..4].copy_from_slice(&f.fsw.to_le_bytes());
        b[4] = f.ftw;
        b[6..8].copy_from_slice(&f.fop.to_le_bytes());
        if wide {
            b[8..16].copy_from_slice(&f.fip.to_le_bytes());
            b[16..24].copy_from_slice(&f.fdp.to_le_bytes());
        } else {
            b[8..12].copy_from_slice(&(f.fip as u32).to_le_bytes());
            b[16..20].copy_from_slice(&(f.fdp as u32).to_le_bytes());
        }
        b[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
        b[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
        for i in 0..8 {
            b[32 + i * 16..48 + i * 16].copy_from_slice(&f.st[i]);
        }
        let nregs = if self.long64() { 16 } else { 8 };
        for i in 0..nregs {
            b[160 + i * 16..176 + i * 16].copy_from_slice(&f.xmm[i].to_le_bytes());
        }
        b
    }

    fn fxrstor_image(&mut self, b: &[u8; 512], wide: bool) -> R<()> {
        let mxcsr = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
        if mxcsr & !MXCSR_MASK != 0 {
            return Err(gp0());
        }
        let f = &mut self.fpu;
        f.fcw = u16::from_le_bytes([b[0], b[1]]);
        f.fsw = u16::from_le_bytes([b[2], b[3]]);
        f.ftw = b[4];
        f.fop = u16::from_le_bytes([b[6], b[7]]);
        let u64at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(x)
        };
        if wide {
            f.fip = u64at(8);
            f.fdp = u64at(16);
        } else {
            f.fip = u64at(8) & 0xffff_ffff;
            f.fdp = u64at(16) & 0xffff_ffff;
        }
        f.mxcsr = mxcsr;
        for i in 0..8 {
            f.st[i].copy_from_slice(&b[32 + i * 16..48 + i * 16]);
        }
        let nregs = if self.bitness == 64 { 16 } else { 8 };
        for i in 0..nregs {
            let mut x = [0u8; 16];
            x.copy_from_slice(&b[160 + i * 16..176 + i * 16]);
            self.fpu.xmm[i] = u128::from_le_bytes(x);
        }
        Ok(())
    }
}

/// MXCSR bits that may be set (no DAZ).
pub const MXCSR_MASK: u32 = 0xffbf;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_format_round_trips_doubles() {
        for v in [
            0.0,
            -0.0,
            1.0,
            -2.5,
            1e300,
            -1e-300,
            4.9e-324,
            1e-310,
            f64::INFINITY,
            f64::MAX,
        ] {
            let e = to_ext(v);
            assert_eq!(from_ext(&e).to_bits(), v.to_bits(), "{v}");
        }
        assert!(from_ext(&to_ext(f64::NAN)).is_nan());
        // 1.0 is exponent 0x3fff with the explicit integer bit.
        assert_eq!(to_ext(1.0), [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]);
    }
}
