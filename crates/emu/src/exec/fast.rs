//! Pre-classified fast paths for the most frequent instruction forms (measured on a Linux
//! boot: mov, alu, jcc, call/ret, push/pop, lea with 32/64-bit registers). The class is
//! computed once when a block is decoded; everything else goes through the generic
//! dispatcher in `exec/mod.rs`. The differential tests exercise both paths.

use iced_x86::{ConditionCode, Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::Cpu;
use crate::exceptions::R;
use crate::flags::{mask, LazyOp};
use crate::platform::Platform;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    Add,
    Sub,
    And,
    Or,
    Xor,
    Cmp,
    Test,
}

/// How to execute one decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Generic,
    Nop,
    Jcc(ConditionCode),
    Jmp,
    /// Direct near call in 64-bit mode.
    Call64,
    /// Near return without immediate in 64-bit mode.
    Ret64,
    Push64(u8),
    Pop64(u8),
    /// mov r32/r64, r32/r64
    MovRR {
        d: u8,
        s: u8,
        size: u8,
    },
    /// mov r32/r64, imm
    MovRI {
        d: u8,
        size: u8,
    },
    /// mov r32/r64, [mem]
    Load {
        d: u8,
        size: u8,
    },
    /// mov [mem], r32/r64
    Store {
        s: u8,
        size: u8,
    },
    /// movzx r32/r64, byte/word [mem]
    LoadZx {
        d: u8,
        src: u8,
    },
    Lea {
        d: u8,
        size: u8,
    },
    AluRR {
        op: AluOp,
        d: u8,
        s: u8,
        size: u8,
    },
    /// op r32/r64, [mem]
    AluRM {
        op: AluOp,
        d: u8,
        size: u8,
    },
    /// cmp/test [mem], reg-or-imm (any size; nothing written)
    CmpTestM {
        op: AluOp,
        size: u8,
        imm: bool,
    },
    /// mov [mem], imm (any size)
    StoreImm {
        size: u8,
    },
    AluRI {
        op: AluOp,
        d: u8,
        size: u8,
    },
    IncDec {
        inc: bool,
        d: u8,
        size: u8,
    },
}

/// Index 0..16 of a 32/64-bit GPR, or None.
fn gpr(r: Register) -> Option<(u8, u8)> {
    let n = r as usize;
    match n {
        37..=52 => Some(((n - 37) as u8, 4)),
        53..=68 => Some(((n - 53) as u8, 8)),
        _ => None,
    }
}

fn alu_op(m: M) -> Option<AluOp> {
    Some(match m {
        M::Add => AluOp::Add,
        M::Sub => AluOp::Sub,
        M::And => AluOp::And,
        M::Or => AluOp::Or,
        M::Xor => AluOp::Xor,
        M::Cmp => AluOp::Cmp,
        M::Test => AluOp::Test,
        _ => return None,
    })
}

/// Chooses the execution path for `ins` decoded in `bitness`-bit code.
pub fn classify(ins: &Instruction, bitness: u32) -> Kind {
    let m = ins.mnemonic();
    let k0 = ins.op0_kind();
    let k1 = ins.op1_kind();
    let lock = ins.has_lock_prefix();
    match m {
        M::Nop | M::Pause | M::Endbr64 => Kind::Nop,
        M::Jmp
            if k0 == OpKind::NearBranch64
                || k0 == OpKind::NearBranch32
                || k0 == OpKind::NearBranch16 =>
        {
            Kind::Jmp
        }
        M::Call if bitness == 64 && k0 == OpKind::NearBranch64 => Kind::Call64,
        M::Ret if bitness == 64 && ins.op_count() == 0 && ins.code() == iced_x86::Code::Retnq => {
            Kind::Ret64
        }
        M::Push if bitness == 64 && k0 == OpKind::Register => match gpr(ins.op0_register()) {
            Some((n, 8)) if n != 4 => Kind::Push64(n),
            _ => Kind::Generic,
        },
        M::Pop if bitness == 64 && k0 == OpKind::Register => match gpr(ins.op0_register()) {
            Some((n, 8)) if n != 4 => Kind::Pop64(n),
            _ => Kind::Generic,
        },
        M::Mov if k0 == OpKind::Register => {
            let Some((d, size)) = gpr(ins.op0_register()) else {
                return Kind::Generic;
            };
            match k1 {
                OpKind::Register => match gpr(ins.op1_register()) {
                    Some((s, ss)) if ss == size => Kind::MovRR { d, s, size },
                    _ => Kind::Generic,
                },
                OpKind::Memory => Kind::Load { d, size },
                OpKind::Immediate32 | OpKind::Immediate64 | OpKind::Immediate32to64 => {
                    Kind::MovRI { d, size }
                }
                _ => Kind::Generic,
            }
        }
        M::Mov
            if k0 == OpKind::Memory
                && matches!(
                    k1,
                    OpKind::Immediate8
                        | OpKind::Immediate16
                        | OpKind::Immediate32
                        | OpKind::Immediate32to64
                ) =>
        {
            Kind::StoreImm {
                size: ins.memory_size().size() as u8,
            }
        }
        M::Mov if k0 == OpKind::Memory && k1 == OpKind::Register => match gpr(ins.op1_register()) {
            Some((s, size)) => Kind::Store { s, size },
            None => Kind::Generic,
        },
        M::Movzx if k1 == OpKind::Memory => match gpr(ins.op0_register()) {
            Some((d, _)) => Kind::LoadZx {
                d,
                src: ins.memory_size().size() as u8,
            },
            None => Kind::Generic,
        },
        M::Lea => match gpr(ins.op0_register()) {
            Some((d, size)) => Kind::Lea { d, size },
            None => Kind::Generic,
        },
        M::Inc | M::Dec if k0 == OpKind::Register && !lock => match gpr(ins.op0_register()) {
            Some((d, size)) => Kind::IncDec {
                inc: m == M::Inc,
                d,
                size,
            },
            None => Kind::Generic,
        },
        _ => {
            if let Some(op) = alu_op(m) {
                if k0 == OpKind::Memory && matches!(op, AluOp::Cmp | AluOp::Test) {
                    let size = ins.memory_size().size();
                    let ok_src = match k1 {
                        OpKind::Register => ins.op1_register().size() == size,
                        OpKind::Immediate8
                        | OpKind::Immediate16
                        | OpKind::Immediate32
                        | OpKind::Immediate8to16
                        | OpKind::Immediate8to32
                        | OpKind::Immediate8to64
                        | OpKind::Immediate32to64 => true,
                        _ => false,
                    };
                    if ok_src && matches!(size, 1 | 2 | 4 | 8) {
                        return Kind::CmpTestM {
                            op,
                            size: size as u8,
                            imm: k1 != OpKind::Register,
                        };
                    }
                    return Kind::Generic;
                }
                if k0 != OpKind::Register {
                    return Kind::Generic;
                }
                let Some((d, size)) = gpr(ins.op0_register()) else {
                    return Kind::Generic;
                };
                return match k1 {
                    OpKind::Register => match gpr(ins.op1_register()) {
                        Some((s, ss)) if ss == size => Kind::AluRR { op, d, s, size },
                        _ => Kind::Generic,
                    },
                    OpKind::Immediate8to32
                    | OpKind::Immediate8to64
                    | OpKind::Immediate32
                    | OpKind::Immediate32to64 => Kind::AluRI { op, d, size },
                    OpKind::Memory if ins.memory_size().size() == size as usize => {
                        Kind::AluRM { op, d, size }
                    }
                    _ => Kind::Generic,
                };
            }
            let cc = ins.condition_code();
            if cc != ConditionCode::None
                && matches!(
                    k0,
                    OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
                )
                && ins.flow_control() == iced_x86::FlowControl::ConditionalBranch
                && !matches!(m, M::Loop | M::Loope | M::Loopne)
            {
                return Kind::Jcc(cc);
            }
            Kind::Generic
        }
    }
}

#[inline(always)]
fn put(cpu: &mut Cpu, d: u8, size: u8, v: u64) {
    cpu.gpr[d as usize] = if size == 8 { v } else { v & 0xffff_ffff };
}

impl Cpu {
    #[inline(always)]
    fn alu(&mut self, op: AluOp, size: u8, a: u64, b: u64) -> Option<u64> {
        let s = size as usize;
        let mk = mask(s);
        let (res, lazy, write) = match op {
            AluOp::Add => (a.wrapping_add(b) & mk, LazyOp::Add, true),
            AluOp::Sub => (a.wrapping_sub(b) & mk, LazyOp::Sub, true),
            AluOp::Cmp => (a.wrapping_sub(b) & mk, LazyOp::Sub, false),
            AluOp::And => (a & b, LazyOp::Logic, true),
            AluOp::Test => (a & b, LazyOp::Logic, false),
            AluOp::Or => (a | b, LazyOp::Logic, true),
            AluOp::Xor => (a ^ b, LazyOp::Logic, true),
        };
        self.flags.op = lazy;
        self.flags.size = size;
        self.flags.a = a;
        self.flags.b = b;
        self.flags.res = res;
        if write {
            Some(res)
        } else {
            None
        }
    }

    /// Executes one instruction through its fast path, or the generic dispatcher.
    #[inline(always)]
    pub(crate) fn exec_kind(
        &mut self,
        io: &mut dyn Platform,
        ins: &Instruction,
        kind: Kind,
    ) -> R<()> {
        match kind {
            Kind::Generic => self.exec(io, ins),
            Kind::Nop => Ok(()),
            Kind::Jcc(cc) => {
                if self.flags.cond(cc) {
                    self.next_rip = ins.near_branch_target();
                }
                Ok(())
            }
            Kind::Jmp => {
                self.next_rip = ins.near_branch_target();
                Ok(())
            }
            Kind::Call64 => {
                let ret = self.next_rip;
                self.push(io, ret, 8)?;
                self.next_rip = ins.near_branch_target();
                Ok(())
            }
            Kind::Ret64 => {
                let t = self.pop(io, 8)?;
                let top = (t as i64) >> 47;
                if top != 0 && top != -1 {
                    self.gpr[4] = self.gpr[4].wrapping_sub(8);
                    return Err(crate::exceptions::gp0());
                }
                self.next_rip = t;
                Ok(())
            }
            Kind::Push64(n) => {
                let v = self.gpr[n as usize];
                self.push(io, v, 8)
            }
            Kind::Pop64(n) => {
                let v = self.pop(io, 8)?;
                self.gpr[n as usize] = v;
                Ok(())
            }
            Kind::MovRR { d, s, size } => {
                let v = self.gpr[s as usize];
                put(self, d, size, v);
                Ok(())
            }
            Kind::MovRI { d, size } => {
                put(self, d, size, ins.try_immediate(1).unwrap_or(0));
                Ok(())
            }
            Kind::Load { d, size } => {
                let lin = self.mem_lin(ins);
                let user = self.user();
                let v = self.read_lin(io, lin, size as usize, user)?;
                put(self, d, size, v);
                Ok(())
            }
            Kind::Store { s, size } => {
                let lin = self.mem_lin(ins);
                let user = self.user();
                let v = self.gpr[s as usize];
                self.write_lin(io, lin, size as usize, v, user)
            }
            Kind::LoadZx { d, src } => {
                let lin = self.mem_lin(ins);
                let user = self.user();
                let v = self.read_lin(io, lin, src as usize, user)?;
                put(self, d, 4, v);
                Ok(())
            }
            Kind::Lea { d, size } => {
                let v = self.ea(ins);
                put(self, d, size, v);
                Ok(())
            }
            Kind::AluRR { op, d, s, size } => {
                let mk = mask(size as usize);
                let a = self.gpr[d as usize] & mk;
                let b = self.gpr[s as usize] & mk;
                if let Some(r) = self.alu(op, size, a, b) {
                    put(self, d, size, r);
                }
                Ok(())
            }
            Kind::AluRI { op, d, size } => {
                let mk = mask(size as usize);
                let a = self.gpr[d as usize] & mk;
                let b = ins.try_immediate(1).unwrap_or(0) & mk;
                if let Some(r) = self.alu(op, size, a, b) {
                    put(self, d, size, r);
                }
                Ok(())
            }
            Kind::AluRM { op, d, size } => {
                let mk = mask(size as usize);
                let lin = self.mem_lin(ins);
                let user = self.user();
                let b = self.read_lin(io, lin, size as usize, user)? & mk;
                let a = self.gpr[d as usize] & mk;
                if let Some(r) = self.alu(op, size, a, b) {
                    put(self, d, size, r);
                }
                Ok(())
            }
            Kind::CmpTestM { op, size, imm } => {
                let mk = mask(size as usize);
                let lin = self.mem_lin(ins);
                let user = self.user();
                let a = self.read_lin(io, lin, size as usize, user)? & mk;
                let b = if imm {
                    ins.try_immediate(1).unwrap_or(0)
                } else {
                    self.reg_read(ins.op1_register())
                } & mk;
                self.alu(op, size, a, b);
                Ok(())
            }
            Kind::StoreImm { size } => {
                let lin = self.mem_lin(ins);
                let user = self.user();
                let v = ins.try_immediate(1).unwrap_or(0) & mask(size as usize);
                self.write_lin(io, lin, size as usize, v, user)
            }
            Kind::IncDec { inc, d, size } => {
                let mk = mask(size as usize);
                let a = self.gpr[d as usize] & mk;
                let r = if inc {
                    a.wrapping_add(1)
                } else {
                    a.wrapping_sub(1)
                } & mk;
                self.flags.set_lazy(
                    if inc { LazyOp::Inc } else { LazyOp::Dec },
                    size as usize,
                    a,
                    1,
                    r,
                );
                put(self, d, size, r);
                Ok(())
            }
        }
    }
}
