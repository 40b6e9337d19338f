//! String instructions (movs/stos/lods/cmps/scas/ins/outs) in all sizes and address sizes,
//! with rep/repe/repne. A long REP is split into chunks: after `CHUNK` iterations the
//! instruction ends without advancing RIP, so interrupts and the budget are honoured and
//! the next execution continues where it stopped (as hardware does on interrupts).

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::{Cpu, ES};
use crate::exceptions::{gp0, R};
use crate::flags::{mask, LazyOp, DF};
use crate::platform::Platform;

const CHUNK: u64 = 1 << 16;

impl Cpu {
    pub(super) fn string_op(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let size: usize = match m {
            M::Movsb | M::Stosb | M::Lodsb | M::Cmpsb | M::Scasb | M::Insb | M::Outsb => 1,
            M::Movsw | M::Stosw | M::Lodsw | M::Cmpsw | M::Scasw | M::Insw | M::Outsw => 2,
            M::Movsd | M::Stosd | M::Lodsd | M::Cmpsd | M::Scasd | M::Insd | M::Outsd => 4,
            _ => 8,
        };
        // Address size from the string operand kind.
        let kinds = [ins.op0_kind(), ins.op1_kind()];
        let asize = kinds
            .iter()
            .find_map(|k| match k {
                OpKind::MemorySegSI | OpKind::MemoryESDI | OpKind::MemorySegDI => Some(2),
                OpKind::MemorySegESI | OpKind::MemoryESEDI | OpKind::MemorySegEDI => Some(4),
                OpKind::MemorySegRSI | OpKind::MemoryESRDI | OpKind::MemorySegRDI => Some(8),
                _ => None,
            })
            .unwrap_or((self.bitness / 8) as usize);
        let am = mask(asize);
        let src_seg = (ins.memory_segment() as usize)
            .saturating_sub(Register::ES as usize)
            .min(5);
        let rep = ins.has_rep_prefix() || ins.has_repne_prefix();
        let step = if self.flags.bits & DF != 0 {
            (size as u64).wrapping_neg()
        } else {
            size as u64
        };
        let user = self.user();
        if matches!(
            m,
            M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd
        ) {
            self.check_io_privilege()?;
        }
        let mut n = 0u64;
        loop {
            if rep {
                if self.gpr[1] & am == 0 {
                    break;
                }
                if n == CHUNK {
                    // Resume later at the same instruction.
                    self.next_rip = self.rip;
                    self.block_end = true;
                    return Ok(());
                }
            }
            let si = self.gpr[6] & am;
            let di = self.gpr[7] & am;
            let src = self.seg_lin(src_seg, si);
            let dst = self.seg_lin(ES, di);
            let mut stop = false;
            match m {
                M::Movsb | M::Movsw | M::Movsd | M::Movsq => {
                    let v = self.read_lin(io, src, size, user)?;
                    self.write_lin(io, dst, size, v, user)?;
                    self.set_gpr_sized(6, asize, si.wrapping_add(step));
                    self.set_gpr_sized(7, asize, di.wrapping_add(step));
                }
                M::Stosb | M::Stosw | M::Stosd | M::Stosq => {
                    self.write_lin(io, dst, size, self.gpr[0] & mask(size), user)?;
                    self.set_gpr_sized(7, asize, di.wrapping_add(step));
                }
                M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => {
                    let v = self.read_lin(io, src, size, user)?;
                    self.set_gpr_sized(0, size, v);
                    self.set_gpr_sized(6, asize, si.wrapping_add(step));
                }
                M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq => {
                    let a = self.read_lin(io, src, size, user)?;
                    let b = self.read_lin(io, dst, size, user)?;
                    self.flags
                        .set_lazy(LazyOp::Sub, size, a, b, a.wrapping_sub(b) & mask(size));
                    self.set_gpr_sized(6, asize, si.wrapping_add(step));
                    self.set_gpr_sized(7, asize, di.wrapping_add(step));
                    stop = true;
                }
                M::Scasb | M::Scasw | M::Scasd | M::Scasq => {
                    let a = self.gpr[0] & mask(size);
                    let b = self.read_lin(io, dst, size, user)?;
                    self.flags
                        .set_lazy(LazyOp::Sub, size, a, b, a.wrapping_sub(b) & mask(size));
                    self.set_gpr_sized(7, asize, di.wrapping_add(step));
                    stop = true;
                }
                M::Insb | M::Insw | M::Insd => {
                    // Probe the destination first so a fault does not lose port data.
                    self.translate(dst, crate::tlb::Access::Write, user)?;
                    let mut buf = [0u8; 4];
                    io.pio_read(self.gpr[2] as u16, &mut buf[..size]);
                    let v = u32::from_le_bytes(buf) as u64;
                    self.write_lin(io, dst, size, v, user)?;
                    self.set_gpr_sized(7, asize, di.wrapping_add(step));
                }
                M::Outsb | M::Outsw | M::Outsd => {
                    let v = self.read_lin(io, src, size, user)?;
                    io.pio_write(self.gpr[2] as u16, &(v as u32).to_le_bytes()[..size]);
                    self.set_gpr_sized(6, asize, si.wrapping_add(step));
                }
                _ => return Err(self.unimplemented(ins)),
            }
            n += 1;
            if !rep {
                break;
            }
            let c = (self.gpr[1] & am).wrapping_sub(1) & am;
            self.set_gpr_sized(1, asize, c);
            if stop {
                let zf = self.flags.zf();
                if ins.has_repe_prefix() && !zf || ins.has_repne_prefix() && zf {
                    break;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn check_io_privilege(&self) -> R<()> {
        if !self.real_mode() {
            let iopl = ((self.flags.bits & crate::flags::IOPL) >> 12) as u8;
            if self.cpl > iopl || self.flags.bits & crate::flags::VM != 0 {
                // The TSS I/O permission bitmap is not consulted.
                return Err(gp0());
            }
        }
        Ok(())
    }
}
