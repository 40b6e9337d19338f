//! Integer arithmetic and logic: add/adc/sub/sbb/cmp/and/or/xor/test, inc/dec/not/neg,
//! xchg/xadd/cmpxchg(8b/16b), mov, the sign-extension conversions and flag instructions.

use iced_x86::{Code, Instruction, Mnemonic as M, OpKind};

use crate::cpu::Cpu;
use crate::exceptions::{gp0, R};
use crate::flags::{self, mask, LazyOp};
use crate::platform::Platform;

impl Cpu {
    pub(super) fn mov(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let k0 = ins.op0_kind();
        if k0 == OpKind::Register {
            let d = ins.op0_register();
            if d.is_cr() || d.is_dr() {
                return self.mov_to_cr_dr(io, ins);
            }
            if d.is_segment_register() {
                let v = self.rd(io, ins, 1, 2)? as u16;
                let idx = d as usize - iced_x86::Register::ES as usize;
                if idx == crate::cpu::CS {
                    return Err(crate::exceptions::ud());
                }
                return self.load_seg(io, idx, v);
            }
            if ins.op1_kind() == OpKind::Register {
                let s = ins.op1_register();
                if s.is_cr() || s.is_dr() {
                    return self.mov_from_cr_dr(io, ins);
                }
            }
            let size = d.size();
            let v = match ins.op1_kind() {
                OpKind::Register => self.reg_read(ins.op1_register()),
                OpKind::Memory => {
                    let lin = self.mem_lin(ins);
                    let user = self.user();
                    self.read_lin(io, lin, size, user)?
                }
                _ => ins.immediate(1),
            };
            self.reg_write(d, v);
            return Ok(());
        }
        // Memory destination.
        let size = if ins.op1_kind() == OpKind::Register {
            let s = ins.op1_register();
            if s.is_segment_register() {
                2
            } else {
                s.size()
            }
        } else {
            ins.memory_size().size()
        };
        let v = self.rd(io, ins, 1, size)?;
        self.wr(io, ins, 0, size, v)
    }

    pub(super) fn alu2(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let size = self.op_size(ins, 0);
        let b = self.rd(io, ins, 1, size)? & mask(size);
        let mk = mask(size);
        let cin = if matches!(m, M::Adc | M::Sbb) {
            self.flags.cf()
        } else {
            0
        };
        let f = move |a: u64| -> u64 {
            (match m {
                M::Add => a.wrapping_add(b),
                M::Adc => a.wrapping_add(b).wrapping_add(cin),
                M::Sub | M::Cmp => a.wrapping_sub(b),
                M::Sbb => a.wrapping_sub(b).wrapping_sub(cin),
                M::And | M::Test => a & b,
                M::Or => a | b,
                _ => a ^ b,
            }) & mk
        };
        let a = if matches!(m, M::Cmp | M::Test) {
            self.rd(io, ins, 0, size)?
        } else {
            self.rmw0(io, ins, size, f)?
        } & mk;
        let res = f(a);
        let op = match m {
            M::Add => LazyOp::Add,
            M::Adc => {
                if cin != 0 {
                    LazyOp::Adc1
                } else {
                    LazyOp::Add
                }
            }
            M::Sub | M::Cmp => LazyOp::Sub,
            M::Sbb => {
                if cin != 0 {
                    LazyOp::Sbb1
                } else {
                    LazyOp::Sub
                }
            }
            _ => LazyOp::Logic,
        };
        self.flags.set_lazy(op, size, a, b, res);
        Ok(())
    }

    pub(super) fn alu1(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let size = self.op_size(ins, 0);
        let mk = mask(size);
        let f = move |a: u64| -> u64 {
            (match m {
                M::Inc => a.wrapping_add(1),
                M::Dec => a.wrapping_sub(1),
                M::Not => !a,
                _ => 0u64.wrapping_sub(a),
            }) & mk
        };
        let a = self.rmw0(io, ins, size, f)? & mk;
        let res = f(a);
        match m {
            M::Inc => self.flags.set_lazy(LazyOp::Inc, size, a, 1, res),
            M::Dec => self.flags.set_lazy(LazyOp::Dec, size, a, 1, res),
            M::Neg => self.flags.set_lazy(LazyOp::Sub, size, 0, a, res),
            _ => {}
        }
        Ok(())
    }

    pub(super) fn xchg(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let size = self.op_size(ins, 0);
        if ins.op0_kind() == OpKind::Register && ins.op1_kind() == OpKind::Register {
            let (r0, r1) = (ins.op0_register(), ins.op1_register());
            let (a, b) = (self.reg_read(r0), self.reg_read(r1));
            self.reg_write(r0, b);
            self.reg_write(r1, a);
            return Ok(());
        }
        // One operand is memory: always locked.
        let (reg, _memop) = if ins.op0_kind() == OpKind::Register {
            (ins.op0_register(), 1)
        } else {
            (ins.op1_register(), 0)
        };
        let v = self.reg_read(reg);
        let lin = self.mem_lin(ins);
        let user = self.user();
        let old = self.rmw_lin(io, lin, size, user, true, |_| Some(v))?;
        self.reg_write(reg, old);
        Ok(())
    }

    pub(super) fn xadd(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let size = self.op_size(ins, 0);
        let mk = mask(size);
        let src = ins.op1_register();
        let b = self.reg_read(src);
        let a = self.rmw0(io, ins, size, move |a| a.wrapping_add(b) & mk)? & mk;
        let res = a.wrapping_add(b) & mk;
        self.reg_write(src, a);
        if ins.op0_kind() == OpKind::Register {
            // When both operands are registers, the destination write wins.
            self.reg_write(ins.op0_register(), res);
        }
        self.flags.set_lazy(LazyOp::Add, size, a, b, res);
        Ok(())
    }

    pub(super) fn cmpxchg(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let size = self.op_size(ins, 0);
        let mk = mask(size);
        let acc = self.gpr[0] & mk;
        let src = self.reg_read(ins.op1_register());
        let old = if ins.op0_kind() == OpKind::Register {
            let r = ins.op0_register();
            let old = self.reg_read(r);
            if old == acc {
                self.reg_write(r, src);
            }
            old
        } else {
            let lin = self.mem_lin(ins);
            let user = self.user();
            self.rmw_lin(io, lin, size, user, ins.has_lock_prefix(), |cur| {
                if cur & mk == acc {
                    Some(src)
                } else {
                    None
                }
            })?
        } & mk;
        self.flags
            .set_lazy(LazyOp::Sub, size, acc, old, acc.wrapping_sub(old) & mk);
        if old != acc {
            self.set_gpr_sized(0, size, old);
        }
        Ok(())
    }

    pub(super) fn cmpxchg_wide(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let lin = self.mem_lin(ins);
        let user = self.user();
        if ins.code() == Code::Cmpxchg16b_m128 {
            if lin & 15 != 0 {
                return Err(gp0());
            }
            let expect = (self.gpr[2] as u128) << 64 | self.gpr[0] as u128;
            let new = (self.gpr[1] as u128) << 64 | self.gpr[3] as u128;
            let e = self.translate(lin, crate::tlb::Access::Write, user)?;
            let cur = if e.host.is_null() {
                let mut b = [0u8; 16];
                self.read_bytes(io, lin, &mut b, user)?;
                let cur = u128::from_le_bytes(b);
                if cur == expect {
                    self.write_bytes(io, lin, &new.to_le_bytes(), user)?;
                }
                cur
            } else {
                // SAFETY: 16-byte aligned access inside one RAM page.
                let p = unsafe { e.host.add((lin & 0xfff) as usize) };
                // SAFETY: p is 16-byte aligned guest RAM.
                let cur = unsafe { crate::memory::cmpxchg16b(p, expect, new) };
                if self.ram.versions().note_write_page(e.vidx()) {
                    self.block_end = true;
                }
                cur
            };
            if cur == expect {
                self.flags.set_masked(flags::ZF, flags::ZF);
            } else {
                self.flags.set_masked(flags::ZF, 0);
                self.gpr[0] = cur as u64;
                self.gpr[2] = (cur >> 64) as u64;
            }
            return Ok(());
        }
        let expect = (self.gpr[2] & 0xffff_ffff) << 32 | (self.gpr[0] & 0xffff_ffff);
        let new = (self.gpr[1] & 0xffff_ffff) << 32 | (self.gpr[3] & 0xffff_ffff);
        let cur = self.rmw_lin(io, lin, 8, user, true, |c| {
            if c == expect {
                Some(new)
            } else {
                None
            }
        })?;
        if cur == expect {
            self.flags.set_masked(flags::ZF, flags::ZF);
        } else {
            self.flags.set_masked(flags::ZF, 0);
            self.gpr[0] = cur & 0xffff_ffff;
            self.gpr[2] = cur >> 32;
        }
        Ok(())
    }

    pub(super) fn convert(&mut self, ins: &Instruction) {
        let sx = |v: u64, bits: u32| -> u64 { (((v << (64 - bits)) as i64) >> (64 - bits)) as u64 };
        match ins.mnemonic() {
            M::Cbw => self.set_gpr_sized(0, 2, sx(self.gpr[0], 8)),
            M::Cwde => self.set_gpr_sized(0, 4, sx(self.gpr[0], 16)),
            M::Cdqe => self.gpr[0] = sx(self.gpr[0], 32),
            M::Cwd => {
                let v = sx(self.gpr[0], 16) >> 16;
                self.set_gpr_sized(2, 2, v);
            }
            M::Cdq => {
                let v = sx(self.gpr[0], 32) >> 32;
                self.set_gpr_sized(2, 4, v);
            }
            _ => self.gpr[2] = ((self.gpr[0] as i64) >> 63) as u64,
        }
    }

    pub(super) fn flag_op(&mut self, ins: &Instruction) -> R<()> {
        use crate::flags::*;
        match ins.mnemonic() {
            M::Lahf => {
                let f = self.flags.get();
                self.gpr[0] = (self.gpr[0] & !0xff00) | ((f & 0xd5 | 2) << 8);
            }
            M::Sahf => {
                let v = (self.gpr[0] >> 8) & 0xd5;
                self.flags.set_masked(0xd5, v);
            }
            M::Clc => self.flags.set_masked(CF, 0),
            M::Stc => self.flags.set_masked(CF, CF),
            M::Cmc => {
                let c = self.flags.cf();
                self.flags.set_masked(CF, c ^ 1);
            }
            M::Cld => self.flags.bits &= !DF,
            M::Std => self.flags.bits |= DF,
            M::Cli | M::Sti => {
                if !self.real_mode() {
                    let iopl = ((self.flags.bits & IOPL) >> 12) as u8;
                    if self.cpl > iopl {
                        return Err(gp0());
                    }
                }
                if ins.mnemonic() == M::Cli {
                    self.flags.bits &= !IF;
                } else if self.flags.bits & IF == 0 {
                    self.flags.bits |= IF;
                    self.shadow = true;
                    self.block_end = true;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
