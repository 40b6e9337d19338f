//! The interpreter: operand access shared by all instruction groups, and the dispatcher
//! from iced-x86 mnemonics to the group modules.

mod alu;
mod bits;
mod bmi;
mod control;
pub(crate) mod fast;
mod io;
mod muldiv;
mod paging;
pub(crate) mod shift;
mod stack;
mod string;
mod system;

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::{Cpu, SS};
use crate::exceptions::R;
use crate::flags::mask;
use crate::platform::Platform;

impl Cpu {
    /// Effective address (offset within the segment) of the memory operand.
    #[inline(always)]
    pub(crate) fn ea(&self, ins: &Instruction) -> u64 {
        let base = ins.memory_base();
        let index = ins.memory_index();
        let mut a = ins.memory_displacement64();
        let asize = if base != Register::None {
            if base == Register::RIP {
                return a;
            }
            if base == Register::EIP {
                return a & 0xffff_ffff;
            }
            a = a.wrapping_add(self.addr_reg(base));
            base.size()
        } else if index != Register::None {
            index.size()
        } else {
            match ins.memory_displ_size() {
                8 => 8,
                4 => 4,
                2 => 2,
                _ => (self.bitness / 8) as usize,
            }
        };
        if index != Register::None {
            a = a.wrapping_add(
                self.addr_reg(index)
                    .wrapping_mul(ins.memory_index_scale() as u64),
            );
        }
        a & mask(asize)
    }

    /// An address register's value: 64-bit GPRs (almost every base and index in 64-bit
    /// code) without going through `reg_read`'s dispatch on the register kind.
    #[inline(always)]
    fn addr_reg(&self, r: Register) -> u64 {
        let n = (r as usize).wrapping_sub(Register::RAX as usize);
        if n < 16 {
            self.gpr[n]
        } else {
            self.reg_read(r)
        }
    }

    /// Linear address of the memory operand.
    #[inline(always)]
    pub(crate) fn mem_lin(&self, ins: &Instruction) -> u64 {
        let seg = (ins.memory_segment() as usize).saturating_sub(Register::ES as usize);
        self.seg_lin(seg.min(5), self.ea(ins))
    }

    /// Size in bytes of operand `i` (registers by their width, memory by its size).
    #[inline(always)]
    pub(crate) fn op_size(&self, ins: &Instruction, i: u32) -> usize {
        match ins.op_kind(i) {
            OpKind::Register => ins.op_register(i).size(),
            _ => ins.memory_size().size(),
        }
    }

    /// Reads operand `i` as a `size`-byte value.
    #[inline(always)]
    pub(crate) fn rd(
        &mut self,
        io: &mut dyn Platform,
        ins: &Instruction,
        i: u32,
        size: usize,
    ) -> R<u64> {
        match ins.op_kind(i) {
            OpKind::Register => Ok(self.reg_read(ins.op_register(i))),
            OpKind::Memory => {
                let lin = self.mem_lin(ins);
                let user = self.user();
                self.read_lin(io, lin, size, user)
            }
            _ => Ok(ins.try_immediate(i).unwrap_or(0) & mask(size)),
        }
    }

    /// Writes operand `i` (register or memory) with a `size`-byte value.
    #[inline(always)]
    pub(crate) fn wr(
        &mut self,
        io: &mut dyn Platform,
        ins: &Instruction,
        i: u32,
        size: usize,
        v: u64,
    ) -> R<()> {
        match ins.op_kind(i) {
            OpKind::Register => {
                self.reg_write(ins.op_register(i), v);
                Ok(())
            }
            _ => {
                let lin = self.mem_lin(ins);
                let user = self.user();
                self.write_lin(io, lin, size, v, user)
            }
        }
    }

    /// Read-modify-write of operand 0: `f(old) -> new`. Returns the old value. Memory
    /// destinations with a LOCK prefix are updated atomically.
    #[inline(always)]
    pub(crate) fn rmw0(
        &mut self,
        io: &mut dyn Platform,
        ins: &Instruction,
        size: usize,
        f: impl Fn(u64) -> u64,
    ) -> R<u64> {
        if ins.op0_kind() == OpKind::Register {
            let r = ins.op0_register();
            let old = self.reg_read(r);
            self.reg_write(r, f(old));
            return Ok(old);
        }
        let lin = self.mem_lin(ins);
        let user = self.user();
        let m = mask(size);
        self.rmw_lin(io, lin, size, user, ins.has_lock_prefix(), |a| {
            Some(f(a) & m)
        })
    }

    /// Stack pointer width in bytes.
    #[inline(always)]
    pub(crate) fn stack_addr_size(&self) -> usize {
        if self.bitness == 64 {
            8
        } else if self.seg[SS].db {
            4
        } else {
            2
        }
    }

    #[inline(always)]
    pub(crate) fn set_sp(&mut self, v: u64) {
        let s = self.stack_addr_size();
        self.set_gpr_sized(4, s, v);
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, io: &mut dyn Platform, v: u64, size: usize) -> R<()> {
        let s = self.stack_addr_size();
        let sp = self.gpr[4].wrapping_sub(size as u64) & mask(s);
        let lin = self.seg_lin(SS, sp);
        let user = self.user();
        self.write_lin(io, lin, size, v, user)?;
        self.set_gpr_sized(4, s, sp);
        Ok(())
    }

    #[inline(always)]
    pub(crate) fn pop(&mut self, io: &mut dyn Platform, size: usize) -> R<u64> {
        let s = self.stack_addr_size();
        let sp = self.gpr[4] & mask(s);
        let lin = self.seg_lin(SS, sp);
        let user = self.user();
        let v = self.read_lin(io, lin, size, user)?;
        self.set_gpr_sized(4, s, sp.wrapping_add(size as u64));
        Ok(v)
    }

    /// Executes one decoded instruction.
    pub(crate) fn exec(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        match ins.mnemonic() {
            M::Mov => self.mov(io, ins),
            M::Movzx => {
                let s = self.op_size(ins, 1);
                let v = self.rd(io, ins, 1, s)?;
                self.reg_write(ins.op0_register(), v);
                Ok(())
            }
            M::Movsx | M::Movsxd => {
                let s = self.op_size(ins, 1);
                let v = self.rd(io, ins, 1, s)?;
                let sh = 64 - s * 8;
                let v = (((v << sh) as i64) >> sh) as u64;
                let d = ins.op0_register();
                self.reg_write(d, v & mask(d.size()));
                Ok(())
            }
            M::Lea => {
                let d = ins.op0_register();
                let v = self.ea(ins);
                self.reg_write(d, v & mask(d.size()));
                Ok(())
            }
            M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test => {
                self.alu2(io, ins)
            }
            M::Inc | M::Dec | M::Not | M::Neg => self.alu1(io, ins),
            M::Xchg => self.xchg(io, ins),
            M::Xadd => self.xadd(io, ins),
            M::Cmpxchg => self.cmpxchg(io, ins),
            M::Cmpxchg8b | M::Cmpxchg16b => self.cmpxchg_wide(io, ins),
            M::Bswap => {
                let r = ins.op0_register();
                let v = self.reg_read(r);
                let n = if r.size() == 8 {
                    v.swap_bytes()
                } else if r.size() == 4 {
                    (v as u32).swap_bytes() as u64
                } else {
                    0 // bswap r16 is undefined; hardware gives 0
                };
                self.reg_write(r, n);
                Ok(())
            }
            M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr => {
                self.shift(io, ins)
            }
            M::Shld | M::Shrd => self.shift_double(io, ins),
            M::Mul | M::Imul | M::Div | M::Idiv => self.muldiv(io, ins),
            M::Bt | M::Bts | M::Btr | M::Btc => self.bit_test(io, ins),
            M::Bsf | M::Bsr | M::Tzcnt | M::Lzcnt | M::Popcnt => self.bit_scan(io, ins),
            M::Crc32 => self.crc32(io, ins),
            M::Movbe => self.movbe(io, ins),
            M::Andn
            | M::Bextr
            | M::Blsi
            | M::Blsmsk
            | M::Blsr
            | M::Bzhi
            | M::Mulx
            | M::Pdep
            | M::Pext
            | M::Rorx
            | M::Sarx
            | M::Shlx
            | M::Shrx => self.bmi(io, ins),
            M::Cbw | M::Cwde | M::Cdqe | M::Cwd | M::Cdq | M::Cqo => {
                self.convert(ins);
                Ok(())
            }
            M::Lahf | M::Sahf | M::Clc | M::Stc | M::Cmc | M::Cld | M::Std | M::Cli | M::Sti => {
                self.flag_op(ins)
            }
            M::Pause => {
                // A spin-wait hint: end the block and let the platform give the host
                // CPU to another vCPU (pause-loop exiting, as VMX/SVM hosts do).
                self.block_end = true;
                io.pause();
                Ok(())
            }
            M::Nop
            | M::Endbr64
            | M::Endbr32
            | M::Lfence
            | M::Mfence
            | M::Sfence
            | M::Prefetchnta
            | M::Prefetcht0
            | M::Prefetcht1
            | M::Prefetcht2
            | M::Prefetchw
            | M::Prefetch
            | M::Clflush
            | M::Clflushopt => Ok(()),
            M::Xlatb => {
                let a = self.ea(ins);
                let seg = (ins.memory_segment() as usize).saturating_sub(Register::ES as usize);
                let lin = self.seg_lin(seg.min(5), a);
                let v = self.read_lin(io, lin, 1, self.user())?;
                self.set_gpr_sized(0, 1, v);
                Ok(())
            }
            M::Push
            | M::Pop
            | M::Pushf
            | M::Pushfd
            | M::Pushfq
            | M::Popf
            | M::Popfd
            | M::Popfq
            | M::Enter
            | M::Leave
            | M::Pusha
            | M::Pushad
            | M::Popa
            | M::Popad => self.stack_op(io, ins),
            M::Jmp
            | M::Call
            | M::Ret
            | M::Retf
            | M::Loop
            | M::Loope
            | M::Loopne
            | M::Jcxz
            | M::Jecxz
            | M::Jrcxz => self.control(io, ins),
            M::Int | M::Int3 | M::Into | M::Int1 => self.soft_int(io, ins),
            M::Iret | M::Iretd | M::Iretq => {
                let size = match ins.mnemonic() {
                    M::Iret => 2,
                    M::Iretd => 4,
                    _ => 8,
                };
                self.iret(io, size)
            }
            M::Movsb
            | M::Movsw
            | M::Movsq
            | M::Stosb
            | M::Stosw
            | M::Stosd
            | M::Stosq
            | M::Lodsb
            | M::Lodsw
            | M::Lodsd
            | M::Lodsq
            | M::Cmpsb
            | M::Cmpsw
            | M::Cmpsq
            | M::Scasb
            | M::Scasw
            | M::Scasd
            | M::Scasq
            | M::Insb
            | M::Insw
            | M::Insd
            | M::Outsb
            | M::Outsw
            | M::Outsd => self.string_op(io, ins),
            M::Movsd | M::Cmpsd
                if ins.op0_kind() != OpKind::Register && ins.op1_kind() != OpKind::Register =>
            {
                self.string_op(io, ins)
            }
            M::In | M::Out => self.port_io(io, ins),
            M::Lss | M::Lfs | M::Lgs | M::Lds | M::Les => self.load_far_pointer(io, ins),
            M::Xgetbv
            | M::Xsetbv
            | M::Xsave
            | M::Xsave64
            | M::Xsaveopt
            | M::Xsaveopt64
            | M::Xrstor
            | M::Xrstor64 => self.xsave_op(io, ins),
            _ if ins.encoding() == iced_x86::EncodingKind::VEX => self.avx(io, ins),
            m if crate::x87::handles(m) => self.x87(io, ins),
            m if crate::sse::handles(m) => self.sse(io, ins),
            _ => {
                if let Some(cc) = Self::cc_of(ins) {
                    return self.conditional(io, ins, cc);
                }
                self.system(io, ins)
            }
        }
    }

    fn cc_of(ins: &Instruction) -> Option<iced_x86::ConditionCode> {
        let cc = ins.condition_code();
        if cc == iced_x86::ConditionCode::None {
            None
        } else {
            Some(cc)
        }
    }

    fn conditional(
        &mut self,
        io: &mut dyn Platform,
        ins: &Instruction,
        cc: iced_x86::ConditionCode,
    ) -> R<()> {
        let t = self.flags.cond(cc);
        if ins.op_count() == 1
            && ins.op0_kind() != OpKind::NearBranch16
            && ins.op0_kind() != OpKind::NearBranch32
            && ins.op0_kind() != OpKind::NearBranch64
        {
            return self.wr(io, ins, 0, 1, t as u64);
        }
        if ins.op_count() == 2 {
            let d = ins.op0_register();
            let s = d.size();
            let v = self.rd(io, ins, 1, s)?;
            if t {
                self.reg_write(d, v);
            } else if s == 4 {
                // cmov with a 32-bit destination zero-extends even when not taken.
                let cur = self.reg_read(d);
                self.reg_write(d, cur);
            }
            return Ok(());
        }
        // jcc
        if t {
            self.next_rip = ins.near_branch_target();
        }
        Ok(())
    }
}
