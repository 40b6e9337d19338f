//! Pre-classified fast paths for the most frequent instruction forms (measured on a Linux
//! boot: mov, alu, jcc, call/ret, push/pop, lea with 32/64-bit registers). The class is
//! computed once when a block is decoded; everything else goes through the generic
//! dispatcher in `exec/mod.rs`. The differential tests exercise both paths.

use iced_x86::{ConditionCode, Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::Cpu;
use crate::exceptions::R;
use crate::exec::shift::shift_op;
use crate::flags::{mask, szp, LazyOp, AF, CF, OF};
use crate::platform::Platform;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    Add,
    /// add with carry (reads CF)
    Adc,
    Sub,
    /// subtract with borrow (reads CF)
    Sbb,
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
    /// shl/shr/sar/rol/ror r32/r64, imm (count already masked, nonzero). `flags` is false
    /// when the next instruction of the block overwrites all arithmetic flags without
    /// reading them and cannot fault (see `drop_dead_flags`), so they need not be computed.
    ShiftRI {
        op: ShiftOp,
        d: u8,
        size: u8,
        count: u8,
        flags: bool,
    },
    /// not r32/r64
    NotR {
        d: u8,
        size: u8,
    },
    /// movzx/movsx/movsxd r32/r64, register (any width; AH..BH included)
    ExtendR {
        d: u8,
        size: u8,
        signed: bool,
    },
    /// movsx/movsxd r32/r64, [mem]
    LoadSx {
        d: u8,
        size: u8,
        src: u8,
    },
    /// mov [mem], r8/r16
    StoreNarrow {
        size: u8,
    },
    /// setcc r8
    SetccR(ConditionCode),
    /// cmovcc r32/r64, r32/r64
    CmovRR {
        cc: ConditionCode,
        d: u8,
        s: u8,
        size: u8,
    },
    /// imul r32/r64, r32/r64 (two operands)
    ImulRR {
        d: u8,
        s: u8,
        size: u8,
    },
}

/// "No register" in [`Operands`] base/index fields.
pub const NO_REG: u8 = 0xff;

/// The operands of one instruction that the fast paths use, decoded once per block so
/// execution does not go back to iced's accessors for every run: the immediate (or the
/// near-branch target) and the memory operand's address form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operands {
    /// Immediate of operand 1, or the near-branch target of a branch.
    pub imm: u64,
    /// Displacement; the absolute address for RIP-relative operands.
    pub disp: u64,
    /// GPR index (0..16) of the base register, or [`NO_REG`].
    pub base: u8,
    /// GPR index (0..16) of the index register, or [`NO_REG`].
    pub index: u8,
    /// log2 of the index scale.
    pub shift: u8,
    /// Segment register index (ES..GS) of the memory operand.
    pub seg: u8,
    /// Address size in bytes (2, 4 or 8).
    pub asize: u8,
    /// Whether the memory operand (if any) fits this form; fast memory kinds need it.
    pub mem_ok: bool,
}

/// GPR index of a 16/32/64-bit general-purpose register (as an address register).
fn addr_gpr(r: Register) -> Option<u8> {
    let n = r as usize;
    match n {
        21..=36 => Some((n - 21) as u8),
        37..=52 => Some((n - 37) as u8),
        53..=68 => Some((n - 53) as u8),
        _ => None,
    }
}

/// Decodes the operands of `ins` (decoded in `bitness`-bit code) for the fast paths; the
/// address computation reproduces `Cpu::ea` and `Cpu::mem_lin`.
pub fn operands(ins: &Instruction, bitness: u32) -> Operands {
    let imm = match ins.op0_kind() {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
            ins.near_branch_target()
        }
        _ if ins.op_count() > 1 => ins.try_immediate(1).unwrap_or(0),
        _ => 0,
    };
    let mut o = Operands {
        imm,
        disp: 0,
        base: NO_REG,
        index: NO_REG,
        shift: 0,
        seg: 0,
        asize: 8,
        mem_ok: false,
    };
    let has_mem = (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory);
    if !has_mem {
        return o;
    }
    let seg = (ins.memory_segment() as usize).saturating_sub(Register::ES as usize);
    o.seg = seg.min(5) as u8;
    o.disp = ins.memory_displacement64();
    let base = ins.memory_base();
    let index = ins.memory_index();
    if base == Register::RIP || base == Register::EIP {
        if index != Register::None {
            return o;
        }
        o.asize = if base == Register::RIP { 8 } else { 4 };
        o.mem_ok = true;
        return o;
    }
    let asize = if base != Register::None {
        let Some(b) = addr_gpr(base) else { return o };
        o.base = b;
        base.size()
    } else if index != Register::None {
        index.size()
    } else {
        match ins.memory_displ_size() {
            8 => 8,
            4 => 4,
            2 => 2,
            _ => (bitness / 8) as usize,
        }
    };
    if index != Register::None {
        let Some(i) = addr_gpr(index) else { return o };
        o.index = i;
        o.shift = match ins.memory_index_scale() {
            1 => 0,
            2 => 1,
            4 => 2,
            8 => 3,
            _ => return o,
        };
    }
    if !matches!(asize, 2 | 4 | 8) {
        return o;
    }
    o.asize = asize as u8;
    o.mem_ok = true;
    o
}

impl Kind {
    /// Whether this fast path addresses memory through [`Operands`].
    pub fn uses_mem_form(&self) -> bool {
        matches!(
            self,
            Kind::Load { .. }
                | Kind::Store { .. }
                | Kind::LoadZx { .. }
                | Kind::Lea { .. }
                | Kind::AluRM { .. }
                | Kind::CmpTestM { .. }
                | Kind::StoreImm { .. }
                | Kind::LoadSx { .. }
                | Kind::StoreNarrow { .. }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShiftOp {
    Shl,
    Shr,
    Sar,
    Rol,
    Ror,
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
        M::Adc => AluOp::Adc,
        M::Sub => AluOp::Sub,
        M::Sbb => AluOp::Sbb,
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
        // PAUSE is not a plain NOP: it tells the platform the vCPU is spinning.
        M::Nop | M::Endbr64 => Kind::Nop,
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
            None if ins.op1_register().is_gpr8() || ins.op1_register().is_gpr16() => {
                Kind::StoreNarrow {
                    size: ins.op1_register().size() as u8,
                }
            }
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
        M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror
            if k0 == OpKind::Register && k1 == OpKind::Immediate8 =>
        {
            let Some((d, size)) = gpr(ins.op0_register()) else {
                return Kind::Generic;
            };
            let count = (ins.immediate8() as u32 & if size == 8 { 0x3f } else { 0x1f }) as u8;
            if count == 0 {
                return Kind::Generic;
            }
            let op = match m {
                M::Shl | M::Sal => ShiftOp::Shl,
                M::Shr => ShiftOp::Shr,
                M::Sar => ShiftOp::Sar,
                M::Rol => ShiftOp::Rol,
                _ => ShiftOp::Ror,
            };
            Kind::ShiftRI {
                op,
                d,
                size,
                count,
                flags: true,
            }
        }
        M::Not if k0 == OpKind::Register => match gpr(ins.op0_register()) {
            Some((d, size)) => Kind::NotR { d, size },
            None => Kind::Generic,
        },
        M::Movzx | M::Movsx | M::Movsxd if k1 == OpKind::Register => {
            match gpr(ins.op0_register()) {
                Some((d, size)) if ins.op1_register().is_gpr() => Kind::ExtendR {
                    d,
                    size,
                    signed: m != M::Movzx,
                },
                _ => Kind::Generic,
            }
        }
        M::Movsx | M::Movsxd if k1 == OpKind::Memory => match gpr(ins.op0_register()) {
            Some((d, size)) if matches!(ins.memory_size().size(), 1 | 2 | 4) => Kind::LoadSx {
                d,
                size,
                src: ins.memory_size().size() as u8,
            },
            _ => Kind::Generic,
        },
        M::Imul if ins.op_count() == 2 && k0 == OpKind::Register && k1 == OpKind::Register => {
            match (gpr(ins.op0_register()), gpr(ins.op1_register())) {
                (Some((d, size)), Some((s, ss))) if size == ss => Kind::ImulRR { d, s, size },
                _ => Kind::Generic,
            }
        }
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
            if cc != ConditionCode::None && k0 == OpKind::Register {
                let r0 = ins.op0_register();
                if ins.op_count() == 1 && r0.is_gpr8() {
                    return Kind::SetccR(cc);
                }
                if ins.op_count() == 2 && k1 == OpKind::Register {
                    return match (gpr(r0), gpr(ins.op1_register())) {
                        (Some((d, size)), Some((s, ss))) if size == ss => {
                            Kind::CmovRR { cc, d, s, size }
                        }
                        _ => Kind::Generic,
                    };
                }
            }
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
            AluOp::Adc => {
                let cin = self.flags.cf();
                let lazy = if cin != 0 { LazyOp::Adc1 } else { LazyOp::Add };
                (a.wrapping_add(b).wrapping_add(cin) & mk, lazy, true)
            }
            AluOp::Sub => (a.wrapping_sub(b) & mk, LazyOp::Sub, true),
            AluOp::Sbb => {
                let cin = self.flags.cf();
                let lazy = if cin != 0 { LazyOp::Sbb1 } else { LazyOp::Sub };
                (a.wrapping_sub(b).wrapping_sub(cin) & mk, lazy, true)
            }
            AluOp::Cmp => (a.wrapping_sub(b) & mk, LazyOp::Sub, false),
            AluOp::And => (a & b, LazyOp::Logic, true),
            AluOp::Test => (a & b, LazyOp::Logic, false),
            AluOp::Or => (a | b, LazyOp::Logic, true),
            AluOp::Xor => (a ^ b, LazyOp::Logic, true),
        };
        self.flags.op = lazy;
        self.flags.size = u32::from(size);
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
        o: &Operands,
    ) -> R<()> {
        match kind {
            Kind::Generic => self.exec(io, ins),
            Kind::Nop => Ok(()),
            Kind::Jcc(cc) => {
                if self.flags.cond(cc) {
                    self.next_rip = o.imm;
                }
                Ok(())
            }
            Kind::Jmp => {
                self.next_rip = o.imm;
                Ok(())
            }
            Kind::Call64 => {
                let ret = self.next_rip;
                self.push(io, ret, 8)?;
                self.next_rip = o.imm;
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
                put(self, d, size, o.imm);
                Ok(())
            }
            Kind::Load { d, size } => {
                let lin = self.lin_of(o);
                let user = self.user();
                let v = self.read_lin(io, lin, size as usize, user)?;
                put(self, d, size, v);
                Ok(())
            }
            Kind::Store { s, size } => {
                let lin = self.lin_of(o);
                let user = self.user();
                let v = self.gpr[s as usize];
                self.write_lin(io, lin, size as usize, v, user)
            }
            Kind::LoadZx { d, src } => {
                let lin = self.lin_of(o);
                let user = self.user();
                let v = self.read_lin(io, lin, src as usize, user)?;
                put(self, d, 4, v);
                Ok(())
            }
            Kind::Lea { d, size } => {
                let v = self.ea_of(o);
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
                let b = o.imm & mk;
                if let Some(r) = self.alu(op, size, a, b) {
                    put(self, d, size, r);
                }
                Ok(())
            }
            Kind::AluRM { op, d, size } => {
                let mk = mask(size as usize);
                let lin = self.lin_of(o);
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
                let lin = self.lin_of(o);
                let user = self.user();
                let a = self.read_lin(io, lin, size as usize, user)? & mk;
                let b = if imm {
                    o.imm
                } else {
                    self.reg_read(ins.op1_register())
                } & mk;
                self.alu(op, size, a, b);
                Ok(())
            }
            Kind::StoreImm { size } => {
                let lin = self.lin_of(o);
                let user = self.user();
                let v = o.imm & mask(size as usize);
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
            Kind::ShiftRI {
                op,
                d,
                size,
                count,
                flags,
            } => {
                if flags {
                    self.shift_ri(op, d, size, count);
                } else {
                    self.shift_ri_no_flags(op, d, size, count);
                }
                Ok(())
            }
            Kind::NotR { d, size } => {
                let v = !self.gpr[d as usize];
                put(self, d, size, v);
                Ok(())
            }
            Kind::ExtendR { d, size, signed } => {
                let r = ins.op1_register();
                let v = self.reg_read(r);
                let v = if signed { sign_extend(v, r.size()) } else { v };
                put(self, d, size, v);
                Ok(())
            }
            Kind::LoadSx { d, size, src } => {
                let lin = self.lin_of(o);
                let user = self.user();
                let v = self.read_lin(io, lin, src as usize, user)?;
                put(self, d, size, sign_extend(v, src as usize));
                Ok(())
            }
            Kind::StoreNarrow { size } => {
                let lin = self.lin_of(o);
                let user = self.user();
                let v = self.reg_read(ins.op1_register());
                self.write_lin(io, lin, size as usize, v, user)
            }
            Kind::SetccR(cc) => {
                let t = self.flags.cond(cc);
                self.reg_write(ins.op0_register(), t as u64);
                Ok(())
            }
            Kind::CmovRR { cc, d, s, size } => {
                // A 32-bit destination is zero-extended even when the move is not done.
                let v = if self.flags.cond(cc) {
                    self.gpr[s as usize]
                } else {
                    self.gpr[d as usize]
                };
                put(self, d, size, v);
                Ok(())
            }
            Kind::ImulRR { d, s, size } => {
                let sz = size as usize;
                let (a, b) = (self.gpr[d as usize], self.gpr[s as usize]);
                let full =
                    i128::from(sign_extend(a, sz) as i64) * i128::from(sign_extend(b, sz) as i64);
                let res = (full as u64) & mask(sz);
                let of = i128::from(sign_extend(res, sz) as i64) != full;
                put(self, d, size, res);
                self.flags
                    .set_arith(szp(res, sz) | if of { CF | OF } else { 0 });
                Ok(())
            }
        }
    }

    /// Effective address of a memory operand in precomputed form (as `Cpu::ea`).
    #[inline(always)]
    fn ea_of(&self, o: &Operands) -> u64 {
        let mut a = o.disp;
        if o.base != NO_REG {
            a = a.wrapping_add(self.gpr[o.base as usize & 15]);
        }
        if o.index != NO_REG {
            a = a.wrapping_add(self.gpr[o.index as usize & 15] << o.shift);
        }
        a & mask(o.asize as usize)
    }

    /// Linear address of a memory operand in precomputed form (as `Cpu::mem_lin`).
    #[inline(always)]
    fn lin_of(&self, o: &Operands) -> u64 {
        self.seg_lin(o.seg as usize, self.ea_of(o))
    }

    /// A shift or rotate of a 32/64-bit register by a nonzero immediate count, with the
    /// flags the generic path (`shift.rs`) computes.
    #[inline(always)]
    fn shift_ri(&mut self, op: ShiftOp, d: u8, size: u8, count: u8) {
        let s = size as usize;
        let a = self.gpr[d as usize] & mask(s);
        let c = u32::from(count);
        let (res, f) = match op {
            ShiftOp::Shl => shift_op(M::Shl, s, a, c, 0),
            ShiftOp::Shr => shift_op(M::Shr, s, a, c, 0),
            ShiftOp::Sar => shift_op(M::Sar, s, a, c, 0),
            ShiftOp::Rol | ShiftOp::Ror => {
                // Rotates keep SF/ZF/PF/AF: the old flags are needed.
                let old = self.flags.get();
                let m = if op == ShiftOp::Rol { M::Rol } else { M::Ror };
                let (res, f) = shift_op(m, s, a, c, old);
                put(self, d, size, res);
                self.flags.set_arith(f);
                return;
            }
        };
        put(self, d, size, res);
        // Shifts leave AF undefined (hardware clears it).
        self.flags.set_arith(f & !AF);
    }
}

impl Cpu {
    /// `shift_ri` without the flags (they are dead: see `drop_dead_flags`).
    #[inline(always)]
    fn shift_ri_no_flags(&mut self, op: ShiftOp, d: u8, size: u8, count: u8) {
        let a = self.gpr[d as usize] & mask(size as usize);
        let c = u32::from(count);
        let res = match (op, size) {
            (ShiftOp::Shl, _) => a << c,
            (ShiftOp::Shr, _) => a >> c,
            (ShiftOp::Sar, 8) => ((a as i64) >> c) as u64,
            (ShiftOp::Sar, _) => ((a as u32 as i32) >> c) as u32 as u64,
            (ShiftOp::Rol, 8) => a.rotate_left(c),
            (ShiftOp::Rol, _) => (a as u32).rotate_left(c) as u64,
            (ShiftOp::Ror, 8) => a.rotate_right(c),
            (ShiftOp::Ror, _) => (a as u32).rotate_right(c) as u64,
        };
        put(self, d, size, res);
    }
}

/// Whether an instruction of this kind writes all six arithmetic flags without reading
/// any, and cannot fault (register operands only).
fn kills_flags(k: &Kind) -> bool {
    match k {
        Kind::AluRR { op, .. } | Kind::AluRI { op, .. } => !matches!(op, AluOp::Adc | AluOp::Sbb),
        Kind::ShiftRI { op, .. } => matches!(op, ShiftOp::Shl | ShiftOp::Shr | ShiftOp::Sar),
        _ => false,
    }
}

/// Marks shifts whose flags the next instruction of the block overwrites before anything
/// can observe them. Nothing can come between two instructions of a block when the
/// second cannot fault (interrupts are taken between blocks; single-stepping runs the
/// generic path), so skipping those flags is exact.
pub fn drop_dead_flags(kinds: &mut [Kind]) {
    for i in 1..kinds.len() {
        if kills_flags(&kinds[i]) {
            if let Kind::ShiftRI { flags, .. } = &mut kinds[i - 1] {
                *flags = false;
            }
        }
    }
}

/// Sign-extends the low `size` bytes of `v` to 64 bits.
#[inline(always)]
fn sign_extend(v: u64, size: usize) -> u64 {
    let sh = 64 - size * 8;
    (((v << sh) as i64) >> sh) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn kind_of(bytes: &[u8]) -> Kind {
        let ins = Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE).decode();
        classify(&ins, 64)
    }

    /// The differential tests run every form through `classify`; this pins down which
    /// forms take the fast paths, so a change that silently sends them back to the
    /// generic dispatcher (or a wrong form into a fast path) is caught.
    #[test]
    fn shifts_extends_and_narrow_stores_take_fast_paths() {
        let ror = Kind::ShiftRI {
            op: ShiftOp::Ror,
            d: 0,
            size: 4,
            count: 3,
            flags: true,
        };
        assert_eq!(kind_of(&[0xc1, 0xc8, 0x03]), ror); // ror eax, 3
        let shl1 = Kind::ShiftRI {
            op: ShiftOp::Shl,
            d: 0,
            size: 8,
            count: 1,
            flags: true,
        };
        assert_eq!(kind_of(&[0x48, 0xd1, 0xe0]), shl1); // shl rax, 1
                                                        // The count is masked to 5 bits for 32-bit operands: 33 -> 1.
        let sar = Kind::ShiftRI {
            op: ShiftOp::Sar,
            d: 1,
            size: 4,
            count: 1,
            flags: true,
        };
        assert_eq!(kind_of(&[0xc1, 0xf9, 0x21]), sar); // sar ecx, 33
        assert_eq!(kind_of(&[0xc1, 0xe0, 0x00]), Kind::Generic); // shl eax, 0: no flags
        assert_eq!(kind_of(&[0xc1, 0xd0, 0x03]), Kind::Generic); // rcl eax, 3
        assert_eq!(kind_of(&[0xd3, 0xe0]), Kind::Generic); // shl eax, cl
        assert_eq!(kind_of(&[0xc1, 0x20, 0x03]), Kind::Generic); // shl dword [rax], 3
        assert_eq!(kind_of(&[0xf7, 0xd1]), Kind::NotR { d: 1, size: 4 }); // not ecx
        let movzx_ah = Kind::ExtendR {
            d: 0,
            size: 4,
            signed: false,
        };
        assert_eq!(kind_of(&[0x0f, 0xb6, 0xc4]), movzx_ah); // movzx eax, ah
        let movsxd = Kind::LoadSx {
            d: 0,
            size: 8,
            src: 4,
        };
        assert_eq!(kind_of(&[0x48, 0x63, 0x03]), movsxd); // movsxd rax, [rbx]
        assert_eq!(
            kind_of(&[0x88, 0x23]), // mov [rbx], ah
            Kind::StoreNarrow { size: 1 }
        );
        assert_eq!(
            kind_of(&[0x66, 0x89, 0x03]), // mov [rbx], ax
            Kind::StoreNarrow { size: 2 }
        );
    }

    /// The pre-decoded address forms compute the same effective and linear addresses as
    /// the generic `ea`/`mem_lin` in every code size, with 16/32-bit address-size
    /// overrides, RIP-relative operands, segment overrides and every scale.
    #[test]
    fn operand_forms_compute_the_same_addresses_as_the_generic_path() {
        use crate::cpu::FS;
        let mem =
            vm_memory::GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 4096)]).unwrap();
        let mut cpu = Cpu::new(&mem);
        let cases: &[(u32, &[u8])] = &[
            (64, &[0x48, 0x8b, 0x04, 0xcf]),             // mov rax, [rdi+rcx*8]
            (64, &[0x48, 0x8b, 0x5c, 0x8f, 0x08]),       // mov rbx, [rdi+rcx*4+8]
            (64, &[0x48, 0x8b, 0x05, 0x10, 0, 0, 0]),    // mov rax, [rip+0x10]
            (64, &[0x67, 0x8b, 0x05, 0x10, 0, 0, 0]),    // mov eax, [eip+0x10]
            (64, &[0x67, 0x48, 0x8b, 0x44, 0x48, 0xf0]), // mov rax, [eax+ecx*2-0x10]
            (64, &[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0]), // mov rax, fs:[0x28]
            (64, &[0x4a, 0x8d, 0x04, 0x6d, 0, 0, 0, 0]), // lea rax, [r13*2+0]
            (64, &[0x48, 0x8d, 0x44, 0x24, 0x80]),       // lea rax, [rsp-0x80]
            (64, &[0x8a, 0x84, 0x11, 0x78, 0x56, 0x34, 0x92]), // mov al, [rcx+rdx-...]
            (32, &[0x8b, 0x44, 0x8b, 0xfc]),             // mov eax, [ebx+ecx*4-4]
            (32, &[0x8b, 0x05, 0xf0, 0xff, 0xff, 0xff]), // mov eax, [0xfffffff0]
            (32, &[0x64, 0x8b, 0x03]),                   // mov eax, fs:[ebx]
            (32, &[0x67, 0x8b, 0x47, 0x10]),             // mov eax, [bx+0x10]
            (16, &[0x8b, 0x40, 0xfe]),                   // mov ax, [bx+si-2]
            (16, &[0x8b, 0x06, 0x34, 0x12]),             // mov ax, [0x1234]
            (16, &[0x66, 0x67, 0x8b, 0x04, 0x4b]),       // mov eax, [ebx+ecx*2]
        ];
        let values = [
            0u64,
            0x10,
            0xffff_fff0,
            0xffff_ffff_ffff_fff8,
            0x0000_7fff_1234_5678,
            0x8000_0000_0000_0000,
        ];
        for &(bitness, bytes) in cases {
            let ins = Decoder::with_ip(bitness, bytes, 0xfff8, DecoderOptions::NONE).decode();
            let o = operands(&ins, bitness);
            assert!(o.mem_ok, "{bytes:02x?}");
            cpu.bitness = bitness;
            cpu.seg[FS].base = 0x1_0000;
            for (i, v) in values.iter().enumerate() {
                for n in 0..16 {
                    cpu.gpr[n] = v.wrapping_add((n as u64) << (i * 4)).rotate_left(n as u32);
                }
                assert_eq!(cpu.ea_of(&o), cpu.ea(&ins), "{bitness} {bytes:02x?}");
                assert_eq!(cpu.lin_of(&o), cpu.mem_lin(&ins), "{bitness} {bytes:02x?}");
            }
        }
        // No memory operand: nothing to compute, and memory kinds would go generic.
        let ins = Decoder::with_ip(64, &[0x01, 0xd8], 0, DecoderOptions::NONE).decode();
        assert!(!operands(&ins, 64).mem_ok);
    }

    fn shift_flags(k: &Kind) -> Option<bool> {
        match k {
            Kind::ShiftRI { flags, .. } => Some(*flags),
            _ => None,
        }
    }

    #[test]
    fn flags_of_a_shift_are_dropped_only_before_an_instruction_that_overwrites_them() {
        let ror = kind_of(&[0xc1, 0xc8, 0x03]); // ror eax, 3
        let xor = kind_of(&[0x31, 0xd8]); // xor eax, ebx
        let adc = kind_of(&[0x11, 0xd8]); // adc eax, ebx: reads CF
        let inc = kind_of(&[0xff, 0xc0]); // inc eax: keeps CF
        let xor_mem = kind_of(&[0x33, 0x03]); // xor eax, [rbx]: may fault
        let mut kinds = vec![ror, xor, ror, adc, ror, inc, ror, xor_mem, ror, ror, ror];
        drop_dead_flags(&mut kinds);
        let got: Vec<Option<bool>> = kinds.iter().map(shift_flags).collect();
        let (t, f) = (Some(true), Some(false));
        let want = vec![f, None, t, None, t, None, t, None, t, t, t];
        assert_eq!(got, want);
        let shr = kind_of(&[0xc1, 0xe8, 0x02]); // shr eax, 2: writes all flags
        let mut kinds = vec![ror, shr];
        drop_dead_flags(&mut kinds);
        assert_eq!(shift_flags(&kinds[0]), Some(false));
    }

    #[test]
    fn shifts_without_flags_compute_the_same_results() {
        let mem =
            vm_memory::GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 4096)]).unwrap();
        let mut cpu = Cpu::new(&mem);
        let ops = [
            ShiftOp::Shl,
            ShiftOp::Shr,
            ShiftOp::Sar,
            ShiftOp::Rol,
            ShiftOp::Ror,
        ];
        let values = [
            0u64,
            1,
            0x8000_0000,
            0xffff_ffff,
            0x8000_0000_0000_0001,
            0x0123_4567_89ab_cdef,
            0xfedc_ba98_7654_3210,
        ];
        for op in ops {
            for size in [4u8, 8] {
                for count in 1..(size * 8) {
                    for v in values {
                        cpu.gpr[3] = v;
                        cpu.shift_ri(op, 3, size, count);
                        let with_flags = cpu.gpr[3];
                        cpu.gpr[3] = v;
                        cpu.shift_ri_no_flags(op, 3, size, count);
                        assert_eq!(
                            cpu.gpr[3], with_flags,
                            "{op:?} size {size} count {count} value {v:#x}"
                        );
                    }
                }
            }
        }
    }
}
