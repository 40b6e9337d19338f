//! push/pop (registers, memory, immediates, segment registers), pushf/popf, enter/leave,
//! pusha/popa.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::{Cpu, CS, SS};
use crate::exceptions::{gp0, R};
use crate::flags::{mask, IOPL, RF, VM};
use crate::platform::Platform;

impl Cpu {
    pub(super) fn stack_op(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let inc = ins.stack_pointer_increment();
        match m {
            M::Push => {
                let size = (-inc) as usize;
                let v = match ins.op0_kind() {
                    OpKind::Register => {
                        let r = ins.op0_register();
                        if r == Register::RSP || r == Register::ESP || r == Register::SP {
                            self.gpr[4]
                        } else {
                            self.reg_read(r)
                        }
                    }
                    OpKind::Memory => {
                        let lin = self.mem_lin(ins);
                        let user = self.user();
                        self.read_lin(io, lin, size, user)?
                    }
                    _ => ins.immediate(0),
                };
                self.push(io, v & mask(size), size)
            }
            M::Pop => {
                let size = inc as usize;
                let r0 = ins.op0_register();
                if ins.op0_kind() == OpKind::Register && r0.is_segment_register() {
                    let sp = self.gpr[4];
                    let v = self.pop(io, size)?;
                    let idx = r0 as usize - Register::ES as usize;
                    if let Err(e) = self.load_seg(io, idx, v as u16) {
                        self.gpr[4] = sp;
                        return Err(e);
                    }
                    return Ok(());
                }
                if ins.op0_kind() == OpKind::Memory {
                    // The address is computed after RSP is incremented.
                    let sp = self.gpr[4];
                    let v = self.pop(io, size)?;
                    if let Err(e) = self.wr(io, ins, 0, size, v) {
                        self.gpr[4] = sp;
                        return Err(e);
                    }
                    return Ok(());
                }
                let v = self.pop(io, size)?;
                self.reg_write(r0, v);
                Ok(())
            }
            M::Pushf | M::Pushfd | M::Pushfq => {
                let size = (-inc) as usize;
                let f = self.flags.get() & !(RF | VM);
                self.push(io, f & mask(size), size)
            }
            M::Popf | M::Popfd | M::Popfq => {
                let size = inc as usize;
                if self.flags.bits & VM != 0 && (self.flags.bits & IOPL) != IOPL {
                    return Err(gp0());
                }
                let v = self.pop(io, size)?;
                self.write_flags_checked(v, size, false);
                Ok(())
            }
            M::Leave => {
                let s = self.stack_addr_size();
                let size = match ins.code() {
                    iced_x86::Code::Leavew => 2,
                    iced_x86::Code::Leaved => 4,
                    _ => 8,
                };
                let bp = self.gpr[5] & mask(s);
                let lin = self.seg_lin(SS, bp);
                let user = self.user();
                let v = self.read_lin(io, lin, size, user)?;
                self.set_gpr_sized(4, s, bp.wrapping_add(size as u64));
                self.set_gpr_sized(5, size, v);
                Ok(())
            }
            M::Enter => {
                let alloc = ins.immediate(0) & 0xffff;
                let level = ins.immediate(1) & 0x1f;
                let osz = match ins.code() {
                    iced_x86::Code::Enterw_imm16_imm8 => 2,
                    iced_x86::Code::Enterd_imm16_imm8 => 4,
                    _ => 8,
                };
                let s = self.stack_addr_size();
                let sp0 = self.gpr[4];
                let bp0 = self.gpr[5];
                let res = (|| -> R<()> {
                    self.push(io, self.gpr[5] & mask(osz), osz)?;
                    let frame = self.gpr[4] & mask(s);
                    let mut bp = self.gpr[5];
                    for _ in 1..level {
                        bp = bp.wrapping_sub(osz as u64) & mask(s);
                        let lin = self.seg_lin(SS, bp);
                        let user = self.user();
                        let v = self.read_lin(io, lin, osz, user)?;
                        self.push(io, v, osz)?;
                    }
                    if level > 0 {
                        self.push(io, frame, osz)?;
                    }
                    self.set_gpr_sized(5, osz, frame);
                    let sp = (self.gpr[4] & mask(s)).wrapping_sub(alloc);
                    self.set_gpr_sized(4, s, sp);
                    Ok(())
                })();
                if res.is_err() {
                    self.gpr[4] = sp0;
                    self.gpr[5] = bp0;
                }
                res
            }
            M::Pusha | M::Pushad => {
                let size = if m == M::Pusha { 2 } else { 4 };
                let sp0 = self.gpr[4];
                for i in 0..8 {
                    let v = if i == 4 { sp0 } else { self.gpr[i] };
                    if let Err(e) = self.push(io, v & mask(size), size) {
                        self.gpr[4] = sp0;
                        return Err(e);
                    }
                }
                Ok(())
            }
            M::Popa | M::Popad => {
                let size = if m == M::Popa { 2 } else { 4 };
                let sp0 = self.gpr[4];
                let mut vals = [0u64; 8];
                for i in (0..8).rev() {
                    match self.pop(io, size) {
                        Ok(v) => vals[i] = v,
                        Err(e) => {
                            self.gpr[4] = sp0;
                            return Err(e);
                        }
                    }
                }
                for (i, v) in vals.iter().enumerate() {
                    if i != 4 {
                        self.set_gpr_sized(i, size, *v);
                    }
                }
                Ok(())
            }
            _ => Err(self.unimplemented(ins)),
        }
    }

    /// Far pointer loads: LSS/LFS/LGS/LDS/LES r, m16:sz.
    pub(super) fn load_far_pointer(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let d = ins.op0_register();
        let size = d.size();
        let lin = self.mem_lin(ins);
        let user = self.user();
        let off = self.read_lin(io, lin, size, user)?;
        let sel = self.read_lin(io, lin.wrapping_add(size as u64), 2, user)? as u16;
        let idx = match ins.mnemonic() {
            M::Lss => SS,
            M::Lfs => crate::cpu::FS,
            M::Lgs => crate::cpu::GS,
            M::Lds => crate::cpu::DS,
            _ => crate::cpu::ES,
        };
        let _ = CS;
        self.load_seg(io, idx, sel)?;
        self.reg_write(d, off);
        Ok(())
    }
}
