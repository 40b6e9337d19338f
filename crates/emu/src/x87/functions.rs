//! FCHS, FABS, FSQRT, FRNDINT, FSCALE, FXTRACT, FPREM, FPREM1 and the transcendental
//! instructions: the operations on ST0 (and ST1), with their stack checks and condition
//! codes.

use iced_x86::{Instruction, Mnemonic as M};

use super::float::{self, Ctl, Ext, C0, C1, C2, C3};
use super::transcendental::{self as tr, Trig, TrigOp};
use crate::cpu::Cpu;
use crate::exceptions::R;

impl Cpu {
    /// The instructions on ST0 (and ST1): FCHS, FABS, FSQRT, FRNDINT, FSCALE, FXTRACT,
    /// FPREM, FPREM1 and the transcendental functions.
    pub(super) fn x87_functions(&mut self, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let ctl = Ctl::from_fcw(self.fpu.fcw);
        let full = ctl.full();
        // Operands: ST0, and ST1 for the two-operand functions.
        let two = matches!(
            m,
            M::Fscale | M::Fprem | M::Fprem1 | M::Fyl2x | M::Fyl2xp1 | M::Fpatan
        );
        let a = self.get(0);
        let b = if two { self.get(1) } else { Some(Ext::ZERO) };
        let (Some(a), Some(b)) = (a, b) else {
            // Stack underflow: the results become the indefinite.
            let dest = if matches!(m, M::Fyl2x | M::Fyl2xp1 | M::Fpatan) {
                1
            } else {
                0
            };
            let pop = dest == 1;
            if matches!(m, M::Fptan | M::Fsincos | M::Fxtract) {
                if m != M::Fxtract {
                    self.set_cc(C2, 0);
                }
                if self.stack_fault(false) {
                    self.put(0, Ext::INDEFINITE);
                    self.fpush(Ext::INDEFINITE);
                }
                return Ok(());
            }
            if matches!(m, M::Fprem | M::Fprem1 | M::Fsin | M::Fcos) {
                self.set_cc(C2, 0);
            }
            self.underflow_into(dest, pop);
            return Ok(());
        };
        match m {
            M::Fchs | M::Fabs => {
                let neg = if m == M::Fchs { !a.neg() } else { false };
                self.set_cc(C1, 0);
                self.put(0, a.with_sign(neg));
            }
            M::Fsqrt => {
                let (v, f) = float::sqrt(a, ctl);
                self.result(0, v, f, false);
            }
            M::Frndint => {
                let (v, f) = float::round_int(a, ctl.rc);
                self.result(0, v, f, false);
            }
            M::Fscale => {
                let (v, f) = float::scale(a, b, full);
                self.result(0, v, f, false);
            }
            M::F2xm1 => {
                let (v, f) = tr::f2xm1(a, ctl);
                self.result(0, v, f, false);
            }
            M::Fyl2x | M::Fyl2xp1 | M::Fpatan => {
                let (v, f) = match m {
                    M::Fyl2x => tr::fyl2x(a, b, ctl),
                    M::Fyl2xp1 => tr::fyl2xp1(a, b, ctl),
                    _ => tr::fpatan(a, b, ctl),
                };
                self.result(1, v, f, true);
            }
            M::Fprem | M::Fprem1 => {
                let r = float::rem(a, b, m == M::Fprem1, ctl);
                if self.raise(r.flags) {
                    // Stopped by an unmasked exception: as for NaN operands.
                    self.set_cc(C1 | C2, 0);
                    return Ok(());
                }
                match r.quotient {
                    // A partial remainder clears the quotient bits.
                    Some(_) if r.partial => self.set_cc(C0 | C1 | C2 | C3, C2),
                    Some(q) => {
                        let cc = if q & 4 != 0 { C0 } else { 0 }
                            | if q & 2 != 0 { C3 } else { 0 }
                            | if q & 1 != 0 { C1 } else { 0 };
                        self.set_cc(C0 | C1 | C2 | C3, cc);
                    }
                    None => self.set_cc(C1 | C2, 0),
                }
                self.put(0, r.value);
            }
            M::Fxtract => {
                if !self.is_empty(7) {
                    if self.stack_fault(true) {
                        self.put(0, Ext::INDEFINITE);
                        self.fpush(Ext::INDEFINITE);
                    }
                    return Ok(());
                }
                let (e, s, f) = float::extract(a);
                self.set_cc(C1, 0);
                if self.raise(f) {
                    return Ok(());
                }
                self.put(0, e);
                self.fpush(s);
            }
            M::Fsin | M::Fcos | M::Fsincos | M::Fptan => {
                let what = match m {
                    M::Fsin => TrigOp::Sin,
                    M::Fcos => TrigOp::Cos,
                    M::Fsincos => TrigOp::SinCos,
                    _ => TrigOp::Tan,
                };
                let pushes = matches!(what, TrigOp::SinCos | TrigOp::Tan);
                if pushes && !self.is_empty(7) {
                    self.set_cc(C2, 0);
                    if self.stack_fault(true) {
                        self.put(0, Ext::INDEFINITE);
                        self.fpush(Ext::INDEFINITE);
                    }
                    return Ok(());
                }
                match tr::trig(a, what, ctl) {
                    Trig::OutOfRange => self.set_cc(C1 | C2, C2),
                    Trig::Special(v, f) => {
                        self.set_cc(C1 | C2, 0);
                        if self.raise(f) {
                            return Ok(());
                        }
                        self.put(0, v);
                        if pushes {
                            self.fpush(v);
                        }
                    }
                    Trig::Done(x, y, f) => {
                        self.set_cc(C1 | C2, f & C1);
                        if self.raise(f) {
                            return Ok(());
                        }
                        if what == TrigOp::SinCos {
                            // ST0 = cos on top of ST1 = sin.
                            self.put(0, x);
                            self.fpush(y);
                        } else {
                            self.put(0, x);
                            if pushes {
                                self.fpush(y);
                            }
                        }
                    }
                }
            }
            _ => return Err(self.unimplemented(ins)),
        }
        Ok(())
    }
}
