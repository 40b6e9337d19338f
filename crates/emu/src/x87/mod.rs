//! The x87 FPU: every D8–DF instruction (plus FWAIT and FXSAVE/FXRSTOR) on the 80-bit
//! register format. The MMX instructions (`sse/mmx.rs`, EMMS included) alias the
//! registers through `stack.rs`'s `mm`, `set_mm`, `mmx_enter` and `mmx_empty`.
//!
//! * `ext.rs`: the register format, its classes and NaN rules, conversions, and the
//!   rounding: `rustc_apfloat` rounds a wide-exponent intermediate (rounded to odd) to the
//!   24/53/64-bit precision of FCW.PC with FCW.RC.
//! * `float.rs`: correctly rounded add, subtract, multiply, divide, square root,
//!   round-to-integer, scale, compare, and the exact remainder (FPREM/FPREM1, including
//!   the partial remainder) and FXTRACT; exact parts (FPREM, FSQRT's root, BCD) use
//!   integer arithmetic.
//! * `transcendental.rs`: F2XM1, FYL2X, FYL2XP1, FSIN, FCOS, FSINCOS, FPTAN, FPATAN by
//!   series in binary128 (see there for the accuracy and the 66-bit π reduction).
//! * `stack.rs`: TOP, tags, push/pop, stack faults, exception flags and ES/B.
//! * `arith.rs`: loads, stores, exchanges, arithmetic and comparisons on the stack;
//!   `functions.rs`: the operations on ST0 (and ST1). One definition per instruction.
//! * `env.rs`: FNSTENV/FLDENV, FNSAVE/FRSTOR, FXSAVE/FXRSTOR.
//!
//! Exceptions: flags (IE, DE, ZE, OE, UE, PE, SF) and C0–C3 are set as the SDM defines
//! per instruction, and where it leaves them undefined, as this host's Intel FPU does (the
//! differential test in `tests/diff.rs` pins that down). Masked exceptions give the SDM's
//! default results. An unmasked one sets ES and B; IE, DE and ZE leave the destination
//! and TOP unchanged (a load still happens with an unmasked DE), OE and UE store the
//! result scaled by 2^∓24576 into range (memory destinations are not written). The next
//! waiting x87 instruction (or FWAIT) then raises #MF if CR0.NE = 1; with CR0.NE = 0 (the
//! legacy FERR# interrupt, not modelled) the exception just stays pending in FSW.
//!
//! Known differences from hardware: masked underflow is detected after rounding with the
//! bounded exponent (apfloat's rule) rather than Intel's unbounded one, which differs only
//! for results that round up to the smallest normal; transcendental results may differ by
//! 1 ulp (and in C1); the results of F2XM1 and FYL2XP1 outside their defined operand range
//! follow the host only where the differential test saw them; with CR0.NE = 0 and an
//! exception already pending, a second unmasked exception does not update FOP/FDP.

mod arith;
mod env;
mod ext;
pub(crate) mod float;
mod functions;
mod stack;
mod transcendental;

use iced_x86::{Code, Instruction, Mnemonic as M};

use crate::cpu::{Cpu, CR0_EM, CR0_MP, CR0_TS};
use crate::exceptions::{Fault, MF, NM, R};
use crate::platform::Platform;
use float::ES;

/// MXCSR bits that may be set (no DAZ).
pub const MXCSR_MASK: u32 = 0xffbf;

/// CR0.NE: native x87 error reporting (#MF).
const CR0_NE: u64 = 1 << 5;

/// Control instructions: they leave FIP/FOP/FDP alone.
fn control(m: M) -> bool {
    use M::*;
    matches!(
        m,
        Fninit
            | Finit
            | Fnclex
            | Fclex
            | Fldcw
            | Fnstcw
            | Fstcw
            | Fnstsw
            | Fstsw
            | Fnstenv
            | Fstenv
            | Fldenv
            | Fnsave
            | Fsave
            | Frstor
            | Fneni
            | Feni
            | Fndisi
            | Fdisi
            | Fnsetpm
            | Fsetpm
    )
}

pub fn handles(m: M) -> bool {
    use M::*;
    matches!(
        m,
        Fninit
            | Finit
            | Fnstcw
            | Fstcw
            | Fldcw
            | Fnstsw
            | Fstsw
            | Fnclex
            | Fclex
            | Wait
            | Fxsave
            | Fxsave64
            | Fxrstor
            | Fxrstor64
            | Fnstenv
            | Fstenv
            | Fldenv
            | Fnsave
            | Fsave
            | Frstor
            | Fnop
            | Fneni
            | Feni
            | Fndisi
            | Fdisi
            | Fnsetpm
            | Fsetpm
            | Fdecstp
            | Fincstp
            | Ffree
            | Ffreep
    ) || arith::handles(m)
}

impl Cpu {
    pub(crate) fn x87(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        if m == M::Wait {
            if self.cr0 & CR0_TS != 0 && self.cr0 & CR0_MP != 0 {
                return Err(Fault::new(NM));
            }
            return self.pending_mf();
        }
        let fx = matches!(m, M::Fxsave | M::Fxsave64 | M::Fxrstor | M::Fxrstor64);
        if self.cr0 & CR0_EM != 0 && !fx {
            return Err(Fault::new(NM));
        }
        if self.cr0 & CR0_TS != 0 {
            return Err(Fault::new(NM));
        }
        // Everything but the no-wait control instructions first reports a pending
        // unmasked exception.
        let no_wait = fx
            || matches!(
                m,
                M::Fninit
                    | M::Fnclex
                    | M::Fnstcw
                    | M::Fnstsw
                    | M::Fnstenv
                    | M::Fnsave
                    | M::Fneni
                    | M::Fndisi
                    | M::Fnsetpm
            );
        if !no_wait {
            self.pending_mf()?;
        }
        let es_before = self.fpu.fsw & ES;
        self.x87_dispatch(io, ins)?;
        if !fx && !control(m) {
            self.last_instruction(ins, es_before);
        }
        Ok(())
    }

    /// FIP, FOP and FDP after a non-control instruction, as this host's Intel FPU keeps
    /// them: FIP always (the instruction's offset, FCS/FDS deprecated and zero), FOP and FDP
    /// (FDP_EXCPTN_ONLY) only when the instruction raised an unmasked exception.
    fn last_instruction(&mut self, ins: &Instruction, es_before: u16) {
        self.fpu.fip = self.rip;
        if es_before != 0 || self.fpu.fsw & ES == 0 {
            return;
        }
        // FOP: the low three bits of the D8-DF opcode byte and the ModR/M byte.
        let lin = self.seg[crate::cpu::CS].base.wrapping_add(self.rip);
        let n = ins.len() as u64;
        let bytes: Vec<u8> = (0..n)
            .filter_map(|i| self.peek_code_byte(lin.wrapping_add(i)))
            .collect();
        if let Some(p) = bytes.iter().position(|b| b & 0xf8 == 0xd8) {
            let modrm = bytes.get(p + 1).copied().unwrap_or(0);
            self.fpu.fop = (((bytes[p] & 7) as u16) << 8) | modrm as u16;
        }
        if ins.op_count() > 0 && ins.op0_kind() == iced_x86::OpKind::Memory {
            self.fpu.fdp = self.ea(ins);
        }
    }

    fn x87_dispatch(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let user = self.user();
        match m {
            M::Fninit | M::Finit => self.fninit(),
            M::Fnstcw | M::Fstcw => {
                let lin = self.mem_lin(ins);
                self.write_lin(io, lin, 2, self.fpu.fcw as u64, user)?;
            }
            M::Fldcw => {
                let lin = self.mem_lin(ins);
                self.fpu.fcw = self.read_lin(io, lin, 2, user)? as u16;
                self.update_es();
            }
            M::Fnstsw | M::Fstsw => {
                if matches!(ins.code(), Code::Fnstsw_AX | Code::Fstsw_AX) {
                    self.set_gpr_sized(0, 2, self.fpu.fsw as u64);
                } else {
                    let lin = self.mem_lin(ins);
                    self.write_lin(io, lin, 2, self.fpu.fsw as u64, user)?;
                }
            }
            M::Fnclex | M::Fclex => self.fpu.fsw &= 0x7f00,
            M::Fxsave | M::Fxsave64 => self.fxsave(io, ins, m == M::Fxsave64)?,
            M::Fxrstor | M::Fxrstor64 => self.fxrstor(io, ins, m == M::Fxrstor64)?,
            M::Fnstenv | M::Fstenv => self.fnstenv(io, ins)?,
            M::Fldenv => self.fldenv(io, ins)?,
            M::Fnsave | M::Fsave => self.fnsave(io, ins)?,
            M::Frstor => self.frstor(io, ins)?,
            // FNOP, and the 8087/287 controls that are no-ops since the 387.
            M::Fnop | M::Fneni | M::Feni | M::Fndisi | M::Fdisi | M::Fnsetpm | M::Fsetpm => {}
            M::Fdecstp | M::Fincstp => {
                let t = self.top();
                self.move_top((if m == M::Fdecstp { t + 7 } else { t + 1 }) & 7);
                self.set_cc(float::C1, 0);
            }
            M::Ffree | M::Ffreep => {
                let i = Self::st_index(ins.op0_register());
                let p = self.phys(i);
                self.fpu.ftw &= !(1 << p);
                self.set_cc(float::C1, 0);
                if m == M::Ffreep {
                    self.fpop();
                }
            }
            _ => return self.x87_stack(io, ins),
        }
        Ok(())
    }

    /// #MF for a pending unmasked exception (CR0.NE = 1).
    pub(crate) fn pending_mf(&self) -> R<()> {
        if self.fpu.fsw & ES != 0 && self.cr0 & CR0_NE != 0 {
            return Err(Fault::new(MF));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::float::Ext;

    #[test]
    fn extended_format_round_trips() {
        let one = Ext::ONE.to_bytes();
        assert_eq!(one, [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]);
        assert_eq!(Ext::from_bytes(&one), Ext::ONE);
    }
}
