//! The semantics of the register-stack instructions: loads and stores (float, integer,
//! BCD, constants), exchange and conditional moves, arithmetic with register and memory
//! operands, comparisons and classification (the functions on ST0/ST1 are in
//! `functions.rs`). Each instruction has exactly one definition; the numerics are in
//! `float.rs` and `transcendental.rs`.

use iced_x86::{Instruction, Mnemonic as M, OpKind};
use rustc_apfloat::Round;

use super::float::{self, Class, Ctl, Ext, Op, C0, C1, C2, C3, IE};
use crate::cpu::Cpu;
use crate::exceptions::R;
use crate::flags::{CF, PF, ZF};
use crate::platform::Platform;

pub fn handles(m: M) -> bool {
    use M::*;
    matches!(
        m,
        Fld | Fild
            | Fbld
            | Fld1
            | Fldl2t
            | Fldl2e
            | Fldpi
            | Fldlg2
            | Fldln2
            | Fldz
            | Fst
            | Fstp
            | Fstpnce
            | Fist
            | Fistp
            | Fisttp
            | Fbstp
            | Fxch
            | Fcmovb
            | Fcmove
            | Fcmovbe
            | Fcmovu
            | Fcmovnb
            | Fcmovne
            | Fcmovnbe
            | Fcmovnu
            | Fadd
            | Faddp
            | Fiadd
            | Fsub
            | Fsubp
            | Fisub
            | Fsubr
            | Fsubrp
            | Fisubr
            | Fmul
            | Fmulp
            | Fimul
            | Fdiv
            | Fdivp
            | Fidiv
            | Fdivr
            | Fdivrp
            | Fidivr
            | Fcom
            | Fcomp
            | Fcompp
            | Fucom
            | Fucomp
            | Fucompp
            | Ficom
            | Ficomp
            | Fcomi
            | Fcomip
            | Fucomi
            | Fucomip
            | Ftst
            | Fxam
            | Fchs
            | Fabs
            | Fsqrt
            | Frndint
            | Fscale
            | Fxtract
            | Fprem
            | Fprem1
            | F2xm1
            | Fyl2x
            | Fyl2xp1
            | Fptan
            | Fpatan
            | Fsin
            | Fcos
            | Fsincos
    )
}

/// The constants of FLD1/FLDZ/FLDPI/...: the value rounded to nearest, and whether that
/// rounding went up (then RC down/chop give the next lower significand) or down (RC up
/// gives the next higher one). The x87 rounds its internal constants per FCW.RC.
fn constant(m: M, rc: Round) -> Ext {
    let (se, man, nearest_up) = match m {
        M::Fld1 => return Ext::ONE,
        M::Fldz => return Ext::ZERO,
        M::Fldl2t => (0x4000, 0xd49a_784b_cd1b_8afe, false),
        M::Fldl2e => (0x3fff, 0xb8aa_3b29_5c17_f0bc, true),
        M::Fldpi => (0x4000, 0xc90f_daa2_2168_c235, true),
        M::Fldlg2 => (0x3ffd, 0x9a20_9a84_fbcf_f799, true),
        _ => (0x3ffe, 0xb172_17f7_d1cf_79ac, true), // Fldln2
    };
    let man = match rc {
        Round::TowardNegative | Round::TowardZero if nearest_up => man - 1,
        Round::TowardPositive if !nearest_up => man + 1,
        _ => man,
    };
    Ext { se, man }
}

/// How a value for a memory store came about.
#[derive(Clone, Copy, Debug)]
enum Conv {
    /// ST0 was empty: the indefinite is stored (if IE is masked).
    Underflow,
    /// Converted from ST0, with these exception flags (and C1).
    Flags(u16),
}

/// Integer-operand instructions (FIADD, FILD, FICOM, ...).
fn int_operand(m: M) -> bool {
    use M::*;
    matches!(
        m,
        Fild | Fiadd | Fisub | Fisubr | Fimul | Fidiv | Fidivr | Ficom | Ficomp
    )
}

impl Cpu {
    /// Reads the memory operand as an x87 value: m32/m64/m80 real or m16/m32/m64 integer,
    /// with DE for a denormal m32/m64 real (SNaNs stay signaling).
    fn mem_value(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<(Ext, u16)> {
        let lin = self.mem_lin(ins);
        let user = self.user();
        let size = ins.memory_size().size();
        if size == 10 {
            let mut b = [0u8; 10];
            self.read_bytes(io, lin, &mut b, user)?;
            return Ok((Ext::from_bytes(&b), 0));
        }
        let v = self.read_lin(io, lin, size, user)?;
        Ok(match (int_operand(ins.mnemonic()), size) {
            (true, 2) => (Ext::from_i64(v as u16 as i16 as i64), 0),
            (true, 4) => (Ext::from_i64(v as u32 as i32 as i64), 0),
            (true, _) => (Ext::from_i64(v as i64), 0),
            (false, 4) => Ext::from_f32(v as u32),
            (false, _) => Ext::from_f64(v),
        })
    }

    fn write_mem(&mut self, io: &mut dyn Platform, ins: &Instruction, b: &[u8]) -> R<()> {
        let lin = self.mem_lin(ins);
        let user = self.user();
        self.write_bytes(io, lin, b, user)
    }

    pub(super) fn x87_stack(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let mem = ins.op_count() > 0 && ins.op0_kind() == OpKind::Memory;
        let ctl = Ctl::from_fcw(self.fpu.fcw);
        let rc = ctl.rc;
        let reg = |n: u32| Self::st_index(ins.op_register(n));
        match m {
            M::Fld | M::Fild | M::Fbld => {
                let (v, f) = if m == M::Fbld {
                    (self.read_bcd(io, ins)?, 0)
                } else if mem {
                    let (v, f) = self.mem_value(io, ins)?;
                    // m32/m64 SNaNs load as QNaNs with IE; m80 loads as is.
                    if v.class() == Class::SNan && ins.memory_size().size() != 10 {
                        (v.quiet(), f | IE)
                    } else {
                        (v, f)
                    }
                } else {
                    match self.get(reg(0)) {
                        Some(v) => (v, 0),
                        // An empty source is an underflow, even if ST7 is in use too.
                        None => {
                            if self.stack_fault(false) {
                                self.fpush(Ext::INDEFINITE);
                            }
                            return Ok(());
                        }
                    }
                };
                self.push_checked(v, f);
            }
            M::Fld1 | M::Fldz | M::Fldl2t | M::Fldl2e | M::Fldpi | M::Fldlg2 | M::Fldln2 => {
                self.push_checked(constant(m, rc), 0);
            }
            // FSTPNCE (D9 D8+i) is FSTP ST(i) without the stack check: an empty ST0 is
            // just popped (what the host does).
            M::Fstpnce if self.is_empty(0) => {
                self.set_cc(C1, 0);
                self.fpop();
            }
            M::Fst | M::Fstp | M::Fstpnce => self.fst(io, ins, mem, m != M::Fst)?,
            M::Fist | M::Fistp | M::Fisttp | M::Fbstp => self.fist(io, ins)?,
            M::Fxch => {
                let i = if ins.op_count() > 1 { reg(1) } else { 1 };
                let (a, b) = (self.get(0), self.get(i));
                let (a, b) = match (a, b) {
                    (Some(a), Some(b)) => (a, b),
                    _ => {
                        if !self.stack_fault(false) {
                            return Ok(());
                        }
                        (a.unwrap_or(Ext::INDEFINITE), b.unwrap_or(Ext::INDEFINITE))
                    }
                };
                self.set_cc(C1, 0);
                self.put(0, b);
                self.put(i, a);
            }
            M::Fcmovb
            | M::Fcmove
            | M::Fcmovbe
            | M::Fcmovu
            | M::Fcmovnb
            | M::Fcmovne
            | M::Fcmovnbe
            | M::Fcmovnu => {
                let fl = self.flags.get();
                let (cf, zf, pf) = (fl & CF != 0, fl & ZF != 0, fl & PF != 0);
                let cond = match m {
                    M::Fcmovb => cf,
                    M::Fcmove => zf,
                    M::Fcmovbe => cf || zf,
                    M::Fcmovu => pf,
                    M::Fcmovnb => !cf,
                    M::Fcmovne => !zf,
                    M::Fcmovnbe => !cf && !zf,
                    _ => !pf,
                };
                let i = reg(1);
                match (self.get(0), self.get(i)) {
                    (Some(_), Some(v)) => {
                        if cond {
                            self.put(0, v);
                        }
                    }
                    _ => {
                        if self.stack_fault(false) {
                            self.put(0, Ext::INDEFINITE);
                        }
                    }
                }
            }
            M::Fadd
            | M::Faddp
            | M::Fiadd
            | M::Fsub
            | M::Fsubp
            | M::Fisub
            | M::Fsubr
            | M::Fsubrp
            | M::Fisubr
            | M::Fmul
            | M::Fmulp
            | M::Fimul
            | M::Fdiv
            | M::Fdivp
            | M::Fidiv
            | M::Fdivr
            | M::Fdivrp
            | M::Fidivr => {
                use M::*;
                let op = match m {
                    Fadd | Faddp | Fiadd => Op::Add,
                    Fsub | Fsubp | Fisub | Fsubr | Fsubrp | Fisubr => Op::Sub,
                    Fmul | Fmulp | Fimul => Op::Mul,
                    _ => Op::Div,
                };
                let reverse = matches!(m, Fsubr | Fsubrp | Fisubr | Fdivr | Fdivrp | Fidivr);
                let pop = matches!(m, Faddp | Fsubp | Fsubrp | Fmulp | Fdivp | Fdivrp);
                let (d, src, f0) = if mem {
                    let (v, f) = self.mem_value(io, ins)?;
                    (0, Some(v), f)
                } else if ins.op_count() == 2 {
                    (reg(0), self.get(reg(1)), 0)
                } else {
                    (1, self.get(0), 0)
                };
                let (Some(a), Some(b)) = (self.get(d), src) else {
                    self.underflow_into(d, pop);
                    return Ok(());
                };
                let (x, y) = if reverse { (b, a) } else { (a, b) };
                let (v, f) = float::arith(op, x, y, ctl);
                self.result(d, v, f | mem_denormal(f0, a, b), pop);
            }
            M::Fcom
            | M::Fcomp
            | M::Fcompp
            | M::Fucom
            | M::Fucomp
            | M::Fucompp
            | M::Ficom
            | M::Ficomp
            | M::Ftst => {
                let (b, f0) = if m == M::Ftst {
                    (Some(Ext::ZERO), 0)
                } else if mem {
                    let (v, f) = self.mem_value(io, ins)?;
                    (Some(v), f)
                } else if ins.op_count() == 2 {
                    (self.get(reg(1)), 0)
                } else {
                    (self.get(1), 0)
                };
                let pops = match m {
                    M::Fcomp | M::Fucomp | M::Ficomp => 1,
                    M::Fcompp | M::Fucompp => 2,
                    _ => 0,
                };
                let quiet = matches!(m, M::Fucom | M::Fucomp | M::Fucompp);
                let Some((a, b)) = self.get(0).zip(b) else {
                    // Unordered even if the exception is unmasked (then without the pop).
                    let masked = self.stack_fault(false);
                    self.compare_cc(None);
                    if masked {
                        self.pops(pops);
                    }
                    return Ok(());
                };
                let (ord, f) = float::compare(a, b, quiet);
                // The condition codes are set even if an unmasked exception stops the pop.
                let stop = self.raise(f | mem_denormal(f0, a, b));
                self.compare_cc(ord);
                if !stop {
                    self.pops(pops);
                }
            }
            M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip => {
                let pop = matches!(m, M::Fcomip | M::Fucomip);
                let Some((a, b)) = self.get(0).zip(self.get(reg(1))) else {
                    let masked = self.stack_fault(false);
                    self.flags.set_arith(ZF | PF | CF);
                    if masked {
                        self.pops(pop as usize);
                    }
                    return Ok(());
                };
                let (ord, f) = float::compare(a, b, matches!(m, M::Fucomi | M::Fucomip));
                let stop = self.raise(f);
                use std::cmp::Ordering::*;
                self.flags.set_arith(match ord {
                    None => ZF | PF | CF,
                    Some(Less) => CF,
                    Some(Equal) => ZF,
                    Some(Greater) => 0,
                });
                if !stop {
                    self.pops(pop as usize);
                }
            }
            M::Fxam => {
                let v = self.raw(0);
                let cc = if self.is_empty(0) {
                    C3 | C0
                } else {
                    match v.class() {
                        Class::Unsupported => 0,
                        Class::QNan | Class::SNan => C0,
                        Class::Normal => C2,
                        Class::Inf => C2 | C0,
                        Class::Zero => C3,
                        Class::Denormal => C3 | C2,
                    }
                };
                let c1 = if v.neg() { C1 } else { 0 };
                self.set_cc(C0 | C1 | C2 | C3, cc | c1);
            }
            _ => return self.x87_functions(ins),
        }
        Ok(())
    }

    fn pops(&mut self, n: usize) {
        for _ in 0..n {
            self.fpop();
        }
    }

    /// FST/FSTP to memory or a register.
    fn fst(&mut self, io: &mut dyn Platform, ins: &Instruction, mem: bool, pop: bool) -> R<()> {
        let rc = float::rounding(self.fpu.fcw);
        if !mem {
            let i = Self::st_index(ins.op0_register());
            match self.get(0) {
                Some(v) => {
                    self.set_cc(C1, 0);
                    self.put(i, v);
                    if pop {
                        self.fpop();
                    }
                }
                None => self.underflow_into(i, pop),
            }
            return Ok(());
        }
        let size = ins.memory_size().size();
        let (bytes, f): (Vec<u8>, Conv) = match self.get(0) {
            None => {
                let v = match size {
                    4 => 0xffc0_0000u32.to_le_bytes().to_vec(),
                    8 => 0xfff8_0000_0000_0000u64.to_le_bytes().to_vec(),
                    _ => Ext::INDEFINITE.to_bytes().to_vec(),
                };
                (v, Conv::Underflow)
            }
            Some(v) => {
                // Unmasked, underflow is reported for any tiny result, exact or not.
                let tiny = |min_exp: i32| {
                    let finite = matches!(v.class(), Class::Normal | Class::Denormal);
                    let ue = self.fpu.fcw & float::UE == 0;
                    if ue && finite && float::normalize(v).1 < min_exp {
                        float::UE
                    } else {
                        0
                    }
                };
                match size {
                    4 => {
                        let (b, f) = v.to_f32(rc);
                        (b.to_le_bytes().to_vec(), Conv::Flags(f | tiny(-126)))
                    }
                    8 => {
                        let (b, f) = v.to_f64(rc);
                        (b.to_le_bytes().to_vec(), Conv::Flags(f | tiny(-1022)))
                    }
                    _ => (v.to_bytes().to_vec(), Conv::Flags(0)),
                }
            }
        };
        self.store_result(io, ins, &bytes, f, pop)
    }

    /// Completes a store to memory of `bytes` (the converted value, or the indefinite after
    /// a stack underflow). Unmasked invalid, overflow or underflow exceptions suppress the
    /// store.
    fn store_result(
        &mut self,
        io: &mut dyn Platform,
        ins: &Instruction,
        bytes: &[u8],
        conv: Conv,
        pop: bool,
    ) -> R<()> {
        use float::{OE, SF, UE};
        let (mut f, under) = match conv {
            Conv::Underflow => (IE | SF, true),
            Conv::Flags(f) => (f, false),
        };
        let blocked = f & (IE | OE | UE) & !self.fpu.fcw != 0;
        if blocked {
            // Nothing is stored, so nothing is inexact either.
            f &= !(float::PE | C1);
        } else {
            self.write_mem(io, ins, bytes)?;
        }
        let stop = self.raise(f);
        self.set_cc(C1, if under || stop { 0 } else { f & C1 });
        if !blocked && pop {
            self.fpop();
        }
        Ok(())
    }

    /// FIST/FISTP/FISTTP/FBSTP.
    fn fist(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let size = ins.memory_size().size();
        let rc = if m == M::Fisttp {
            Round::TowardZero
        } else {
            float::rounding(self.fpu.fcw)
        };
        let bcd = m == M::Fbstp;
        let limit: i128 = if bcd {
            1_000_000_000_000_000_000
        } else {
            1 << (size * 8 - 1)
        };
        let (val, f) = match self.get(0) {
            None => (None, Conv::Underflow),
            Some(v) => {
                let (val, f) = v.to_int(rc, limit);
                (val, Conv::Flags(f))
            }
        };
        let bytes = if bcd {
            bcd_bytes(val, self.raw(0).neg()).to_vec()
        } else {
            let iv = val.map_or(1u64 << (size * 8 - 1), |v| v as u64);
            iv.to_le_bytes()[..size].to_vec()
        };
        self.store_result(io, ins, &bytes, f, m != M::Fist)
    }

    fn read_bcd(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<Ext> {
        let mut b = [0u8; 10];
        let lin = self.mem_lin(ins);
        let user = self.user();
        self.read_bytes(io, lin, &mut b, user)?;
        let mut v: i64 = 0;
        for &byte in b[..9].iter().rev() {
            v = v * 100 + (byte >> 4) as i64 * 10 + (byte & 15) as i64;
        }
        Ok(Ext::from_i64(v).with_sign(b[9] & 0x80 != 0))
    }
}

/// The DE flag of a denormal m32/m64 operand counts only if no operand is a NaN or
/// unsupported (those decide the result first).
fn mem_denormal(f: u16, a: Ext, b: Ext) -> u16 {
    let special = |v: Ext| matches!(v.class(), Class::QNan | Class::SNan | Class::Unsupported);
    if special(a) || special(b) {
        0
    } else {
        f
    }
}

/// The packed-BCD image of FBSTP: 18 digits and the sign byte, or the BCD indefinite.
fn bcd_bytes(v: Option<i128>, neg: bool) -> [u8; 10] {
    let mut b = [0u8; 10];
    let Some(v) = v else {
        b[7] = 0xc0;
        b[8] = 0xff;
        b[9] = 0xff;
        return b;
    };
    let mut a = v.unsigned_abs();
    for byte in b.iter_mut().take(9) {
        let lo = (a % 10) as u8;
        a /= 10;
        let hi = (a % 10) as u8;
        a /= 10;
        *byte = (hi << 4) | lo;
    }
    b[9] = if neg { 0x80 } else { 0 };
    b
}
