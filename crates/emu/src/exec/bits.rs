//! Bit instructions: bt/bts/btr/btc (with bit-string addressing for memory operands),
//! bsf/bsr, popcnt. tzcnt/lzcnt execute as bsf/bsr, as on CPUs without BMI1/ABM (CPUID
//! does not advertise them, and their encodings are REP BSF / REP BSR there).

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::cpu::Cpu;
use crate::exceptions::R;
use crate::flags::{mask, ARITH, CF, ZF};
use crate::platform::Platform;

impl Cpu {
    pub(super) fn bit_test(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let size = self.op_size(ins, 0);
        let bits = (size * 8) as u64;
        let off = self.rd(io, ins, 1, size)?;
        let user = self.user();
        let (bit, lin) = if ins.op0_kind() == OpKind::Memory {
            if ins.op1_kind() == OpKind::Register {
                // Bit-string addressing: the signed offset may reach outside the operand.
                let sh = 64 - bits;
                let soff = ((off << sh) as i64) >> sh;
                let delta = (soff >> bits.trailing_zeros()) * size as i64;
                let ea = self.ea(ins).wrapping_add(delta as u64);
                let seg =
                    (ins.memory_segment() as usize).saturating_sub(iced_x86::Register::ES as usize);
                (off & (bits - 1), Some(self.seg_lin(seg.min(5), ea)))
            } else {
                (off & (bits - 1), Some(self.mem_lin(ins)))
            }
        } else {
            (off & (bits - 1), None)
        };
        let f = move |v: u64| -> u64 {
            match m {
                M::Bts => v | 1 << bit,
                M::Btr => v & !(1 << bit),
                M::Btc => v ^ 1 << bit,
                _ => v,
            }
        };
        let old = match lin {
            None => {
                let r = ins.op0_register();
                let v = self.reg_read(r);
                if m != M::Bt {
                    self.reg_write(r, f(v));
                }
                v
            }
            Some(lin) => {
                if m == M::Bt {
                    self.read_lin(io, lin, size, user)?
                } else {
                    self.rmw_lin(io, lin, size, user, ins.has_lock_prefix(), |v| Some(f(v)))?
                }
            }
        };
        self.flags.set_masked(CF, (old >> bit) & 1);
        Ok(())
    }

    pub(super) fn bit_scan(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let d = ins.op0_register();
        let size = d.size();
        let v = self.rd(io, ins, 1, size)? & mask(size);
        match m {
            M::Popcnt => {
                self.reg_write(d, v.count_ones() as u64);
                self.flags.set_arith(if v == 0 { ZF } else { 0 });
            }
            M::Bsf | M::Tzcnt | M::Bsr | M::Lzcnt => {
                let old = self.flags.get();
                if v == 0 {
                    self.flags.set_arith((old & ARITH & !ZF) | ZF);
                } else {
                    let idx = if matches!(m, M::Bsf | M::Tzcnt) {
                        v.trailing_zeros()
                    } else {
                        63 - v.leading_zeros()
                    };
                    self.reg_write(d, idx as u64);
                    self.flags.set_arith(old & ARITH & !ZF);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
