//! Control transfer: jmp/call/ret (near and far), loop/jcxz, int n/int3/into.

use iced_x86::{Code, Instruction, Mnemonic as M, OpKind};

use crate::cpu::{Cpu, CS};
use crate::exceptions::{gp0, R};
use crate::flags::mask;
use crate::platform::Platform;

impl Cpu {
    /// Masks a branch target to the current code size and checks canonicality.
    fn branch_to(&mut self, target: u64, osize: usize) -> R<()> {
        let t = match self.bitness {
            64 => {
                if osize == 2 {
                    target & 0xffff
                } else {
                    target
                }
            }
            _ => target & mask(osize),
        };
        if self.bitness == 64 {
            let top = (t as i64) >> 47;
            if top != 0 && top != -1 {
                return Err(gp0());
            }
        }
        self.next_rip = t;
        Ok(())
    }

    pub(super) fn control(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        match m {
            M::Jmp => match ins.op0_kind() {
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                    self.next_rip = ins.near_branch_target();
                    Ok(())
                }
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    let off = if ins.op0_kind() == OpKind::FarBranch16 {
                        ins.far_branch16() as u64
                    } else {
                        ins.far_branch32() as u64
                    };
                    self.far_jump(io, ins.far_branch_selector(), off, false, 0)
                }
                _ => {
                    if matches!(
                        ins.code(),
                        Code::Jmp_m1616 | Code::Jmp_m1632 | Code::Jmp_m1664
                    ) {
                        let (sel, off) = self.read_far_ptr(io, ins)?;
                        return self.far_jump(io, sel, off, false, 0);
                    }
                    let size = self.op_size(ins, 0);
                    let t = self.rd(io, ins, 0, size)?;
                    self.branch_to(t, size)
                }
            },
            M::Call => {
                let inc = (-ins.stack_pointer_increment()) as usize;
                match ins.op0_kind() {
                    OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                        let ret = self.next_rip;
                        self.push(io, ret, inc)?;
                        self.next_rip = ins.near_branch_target();
                        Ok(())
                    }
                    OpKind::FarBranch16 | OpKind::FarBranch32 => {
                        let off = if ins.op0_kind() == OpKind::FarBranch16 {
                            ins.far_branch16() as u64
                        } else {
                            ins.far_branch32() as u64
                        };
                        self.far_jump(io, ins.far_branch_selector(), off, true, inc / 2)
                    }
                    _ => {
                        if matches!(
                            ins.code(),
                            Code::Call_m1616 | Code::Call_m1632 | Code::Call_m1664
                        ) {
                            let (sel, off) = self.read_far_ptr(io, ins)?;
                            return self.far_jump(io, sel, off, true, inc / 2);
                        }
                        let size = self.op_size(ins, 0);
                        let t = self.rd(io, ins, 0, size)?;
                        let ret = self.next_rip;
                        let sp = self.gpr[4];
                        self.push(io, ret, inc)?;
                        if let Err(e) = self.branch_to(t, size) {
                            self.gpr[4] = sp;
                            return Err(e);
                        }
                        Ok(())
                    }
                }
            }
            M::Ret => {
                let size = match ins.code() {
                    Code::Retnw | Code::Retnw_imm16 => 2,
                    Code::Retnd | Code::Retnd_imm16 => 4,
                    _ => 8,
                };
                let sp = self.gpr[4];
                let t = self.pop(io, size)?;
                if ins.op_count() > 0 {
                    let s = self.stack_addr_size();
                    let n = (self.gpr[4] & mask(s)).wrapping_add(ins.immediate(0) & 0xffff);
                    self.set_gpr_sized(4, s, n);
                }
                if let Err(e) = self.branch_to(t, size) {
                    self.gpr[4] = sp;
                    return Err(e);
                }
                Ok(())
            }
            M::Retf => {
                let size = match ins.code() {
                    Code::Retfw | Code::Retfw_imm16 => 2,
                    Code::Retfd | Code::Retfd_imm16 => 4,
                    _ => 8,
                };
                self.far_return(io, ins, size)
            }
            _ => {
                // loop family and jcxz: the count register follows the address size.
                let asize = match ins.code() {
                    Code::Loop_rel8_16_CX
                    | Code::Loop_rel8_32_CX
                    | Code::Loope_rel8_16_CX
                    | Code::Loope_rel8_32_CX
                    | Code::Loopne_rel8_16_CX
                    | Code::Loopne_rel8_32_CX
                    | Code::Jcxz_rel8_16
                    | Code::Jcxz_rel8_32 => 2,
                    Code::Loop_rel8_16_ECX
                    | Code::Loop_rel8_32_ECX
                    | Code::Loop_rel8_64_ECX
                    | Code::Loope_rel8_16_ECX
                    | Code::Loope_rel8_32_ECX
                    | Code::Loope_rel8_64_ECX
                    | Code::Loopne_rel8_16_ECX
                    | Code::Loopne_rel8_32_ECX
                    | Code::Loopne_rel8_64_ECX
                    | Code::Jecxz_rel8_16
                    | Code::Jecxz_rel8_32
                    | Code::Jecxz_rel8_64 => 4,
                    _ => 8,
                };
                let taken = match m {
                    M::Jcxz | M::Jecxz | M::Jrcxz => self.gpr[1] & mask(asize) == 0,
                    _ => {
                        let c = (self.gpr[1] & mask(asize)).wrapping_sub(1) & mask(asize);
                        self.set_gpr_sized(1, asize, c);
                        c != 0
                            && match m {
                                M::Loope => self.flags.zf(),
                                M::Loopne => !self.flags.zf(),
                                _ => true,
                            }
                    }
                };
                if taken {
                    self.next_rip = ins.near_branch_target();
                }
                Ok(())
            }
        }
    }

    /// Reads an m16:16/32/64 far pointer operand: (selector, offset).
    fn read_far_ptr(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<(u16, u64)> {
        let osz = match ins.code() {
            Code::Jmp_m1616 | Code::Call_m1616 => 2,
            Code::Jmp_m1632 | Code::Call_m1632 => 4,
            _ => 8,
        };
        let lin = self.mem_lin(ins);
        let user = self.user();
        let off = self.read_lin(io, lin, osz, user)?;
        let sel = self.read_lin(io, lin.wrapping_add(osz as u64), 2, user)? as u16;
        Ok((sel, off))
    }

    /// Far JMP/CALL to sel:off; `push_size` is the operand size for CALL's pushes.
    fn far_jump(
        &mut self,
        io: &mut dyn Platform,
        sel: u16,
        off: u64,
        call: bool,
        push_size: usize,
    ) -> R<()> {
        let old_cs = self.seg[CS];
        let old_cpl = self.cpl;
        let old_bits = self.bitness;
        let ret_ip = self.next_rip;
        let sp = self.gpr[4];
        self.load_cs(io, sel, false)?;
        if call {
            let psize = if push_size == 0 {
                (old_bits / 8) as usize
            } else {
                push_size
            };
            let psize = psize.clamp(2, 8);
            let r = self
                .push(io, old_cs.selector as u64, psize)
                .and_then(|_| self.push(io, ret_ip, psize));
            if let Err(e) = r {
                self.seg[CS] = old_cs;
                self.cpl = old_cpl;
                self.update_mode();
                self.gpr[4] = sp;
                return Err(e);
            }
        }
        self.next_rip = off;
        self.block_end = true;
        Ok(())
    }

    fn far_return(&mut self, io: &mut dyn Platform, ins: &Instruction, size: usize) -> R<()> {
        let sp0 = self.gpr[4];
        let ip = self.pop(io, size)?;
        let sel = self.pop(io, size)? as u16;
        let imm = if ins.op_count() > 0 {
            ins.immediate(0) & 0xffff
        } else {
            0
        };
        let outer = !self.real_mode() && (sel & 3) as u8 > self.cpl;
        let (new_sp, new_ss) = if outer {
            let s = self.stack_addr_size();
            let sp = (self.gpr[4] & mask(s)).wrapping_add(imm);
            self.set_gpr_sized(4, s, sp);
            let nsp = self.pop(io, size)?;
            let nss = self.pop(io, size)? as u16;
            (Some(nsp), Some(nss))
        } else {
            (None, None)
        };
        if let Err(e) = self.load_cs(io, sel, true) {
            self.gpr[4] = sp0;
            return Err(e);
        }
        if let (Some(sp), Some(ss)) = (new_sp, new_ss) {
            self.load_seg(io, crate::cpu::SS, ss)?;
            self.set_sp(sp);
        }
        let s = self.stack_addr_size();
        let sp = (self.gpr[4] & mask(s)).wrapping_add(imm);
        self.set_gpr_sized(4, s, sp);
        self.next_rip = if size == 8 { ip } else { ip & mask(size) };
        self.block_end = true;
        Ok(())
    }

    pub(super) fn soft_int(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let next = self.next_rip;
        self.dbg.soft_int = true;
        match ins.mnemonic() {
            M::Int3 => self.deliver_software(io, crate::exceptions::BP, next),
            M::Int1 => {
                // ICEBP: a #DB trap without the gate's DPL check, DR6 untouched.
                self.dbg.icebp = true;
                self.deliver_exception(
                    io,
                    crate::exceptions::Fault::new(crate::exceptions::DB),
                    next,
                )?;
                self.next_rip = self.rip;
                Ok(())
            }
            M::Into => {
                if self.bitness == 64 {
                    return Err(crate::exceptions::ud());
                }
                if self.flags.of() {
                    self.deliver_software(io, crate::exceptions::OF, next)
                } else {
                    Ok(())
                }
            }
            _ => {
                let v = ins.immediate(0) as u8;
                if self.flags.bits & crate::flags::VM != 0 {
                    return Err(gp0());
                }
                self.deliver_software(io, v, next)
            }
        }
    }
}
