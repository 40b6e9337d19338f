//! String instructions (movs/stos/lods/cmps/scas/ins/outs) in all sizes and address sizes,
//! with rep/repe/repne. A long REP is split into chunks: after `CHUNK` iterations the
//! instruction ends without advancing RIP, so interrupts and the budget are honoured and
//! the next execution continues where it stopped (as hardware does on interrupts). Every
//! iteration counts as one executed instruction (like QEMU's icount), so the run budget
//! bounds the work done.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::cpu::{Cpu, ES};
use crate::exceptions::R;
use crate::flags::{mask, LazyOp, DF};
use crate::platform::Platform;

const CHUNK: u64 = 1 << 14;

fn asize_of(am: u64) -> usize {
    match am {
        0xffff => 2,
        0xffff_ffff => 4,
        _ => 8,
    }
}

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
            self.check_io_permission(io, self.gpr[2] as u16, size)?;
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
                    self.icount += n - 1;
                    return Ok(());
                }
            }
            if rep && step == size as u64 {
                let done = self.rep_fast_chunk(io, m, size, am, src_seg, CHUNK - n)?;
                if done > 0 {
                    n += done;
                    continue;
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
                    if self.dbg.data {
                        self.note_io_access(self.gpr[2] as u16, size);
                    }
                    io.pio_read(self.gpr[2] as u16, &mut buf[..size]);
                    let v = u32::from_le_bytes(buf) as u64;
                    self.write_lin(io, dst, size, v, user)?;
                    self.set_gpr_sized(7, asize, di.wrapping_add(step));
                }
                M::Outsb | M::Outsw | M::Outsd => {
                    let v = self.read_lin(io, src, size, user)?;
                    if self.dbg.data {
                        self.note_io_access(self.gpr[2] as u16, size);
                    }
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
        self.icount += n.saturating_sub(1);
        Ok(())
    }

    /// REP MOVS/STOS forward within one page of RAM for source and destination: processes
    /// up to `limit` elements at once (returns how many; 0 = take the per-element path).
    fn rep_fast_chunk(
        &mut self,
        io: &mut dyn Platform,
        m: M,
        size: usize,
        am: u64,
        src_seg: usize,
        limit: u64,
    ) -> R<u64> {
        let is_movs = matches!(m, M::Movsb | M::Movsw | M::Movsd | M::Movsq);
        let is_stos = matches!(m, M::Stosb | M::Stosw | M::Stosd | M::Stosq);
        if !is_movs && !is_stos {
            return Ok(0);
        }
        let _ = io;
        let user = self.user();
        let sz = size as u64;
        let count = self.gpr[1] & am;
        let di = self.gpr[7] & am;
        let dst = self.seg_lin(ES, di);
        let mut k = count
            .min(limit)
            .min((4096 - (dst & 0xfff)) / sz)
            .min((am - di) / sz + 1);
        let si = self.gpr[6] & am;
        let src = self.seg_lin(src_seg, si);
        if is_movs {
            k = k.min((4096 - (src & 0xfff)) / sz).min((am - si) / sz + 1);
        }
        if k == 0 {
            return Ok(0);
        }
        let bytes = (k * sz) as usize;
        let src_host = if is_movs {
            let se = self.translate(src, crate::tlb::Access::Read, user)?;
            if se.host.is_null() {
                return Ok(0);
            }
            // SAFETY: src & 0xfff + bytes <= 4096 by the choice of k.
            Some(unsafe { se.host.add((src & 0xfff) as usize) })
        } else {
            None
        };
        let de = self.translate(dst, crate::tlb::Access::Write, user)?;
        if de.host.is_null() {
            return Ok(0);
        }
        // SAFETY: dst & 0xfff + bytes <= 4096 by the choice of k.
        let d = unsafe { de.host.add((dst & 0xfff) as usize) };
        match src_host {
            Some(s) => {
                let (sa, da) = (s as usize, d as usize);
                if da > sa && da < sa + bytes {
                    // Overlapping forward copy: must replicate element by element.
                    for i in 0..k as usize {
                        // SAFETY: both element addresses are inside their pages.
                        unsafe {
                            let v = crate::memory::load(s.add(i * size), size);
                            crate::memory::store(d.add(i * size), size, v);
                        }
                    }
                } else {
                    // SAFETY: both ranges lie inside RAM pages; memmove equals a forward
                    // copy when the destination is below the source.
                    unsafe { std::ptr::copy(s, d, bytes) };
                }
                self.set_gpr_sized(6, asize_of(am), si.wrapping_add(k * sz));
            }
            None => {
                let v = self.gpr[0] & mask(size);
                if size == 1 {
                    // SAFETY: `bytes` bytes at d are inside one RAM page.
                    unsafe { std::ptr::write_bytes(d, v as u8, bytes) };
                } else {
                    for i in 0..k as usize {
                        // SAFETY: each element is inside the page.
                        unsafe { crate::memory::store(d.add(i * size), size, v) };
                    }
                }
            }
        }
        if self.ram.versions().note_write_page(de.vidx()) {
            self.block_end = true;
        }
        let asz = asize_of(am);
        self.set_gpr_sized(7, asz, di.wrapping_add(k * sz));
        self.set_gpr_sized(1, asz, count - k);
        Ok(k)
    }
}
