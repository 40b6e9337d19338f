//! Port I/O: in/out with immediate or DX port (string forms live in `string.rs`), and the
//! protection check every port access goes through: IOPL, then the TSS I/O permission
//! bitmap (how Linux's `ioperm` lets one user program reach a few ports).

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::cpu::Cpu;
use crate::exceptions::{gp0, R};
use crate::flags::{IOPL, VM};
use crate::platform::Platform;

/// Offset of the I/O map base field in a 32-bit and a 64-bit TSS.
const TSS_IOMAP_BASE: u64 = 0x66;

impl Cpu {
    pub(super) fn port_io(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let (port_op, data_op) = if ins.mnemonic() == M::In {
            (1, 0)
        } else {
            (0, 1)
        };
        let port = if ins.op_kind(port_op) == OpKind::Register {
            self.gpr[2] as u16
        } else {
            ins.immediate(port_op) as u16
        };
        let size = ins.op_register(data_op).size();
        self.check_io_permission(io, port, size)?;
        if self.dbg.data {
            self.note_io_access(port, size);
        }
        if ins.mnemonic() == M::In {
            let mut buf = [0u8; 4];
            io.pio_read(port, &mut buf[..size]);
            self.set_gpr_sized(0, size, u32::from_le_bytes(buf) as u64);
        } else {
            let v = self.gpr[0] as u32;
            io.pio_write(port, &v.to_le_bytes()[..size]);
        }
        Ok(())
    }

    /// Whether an access of `size` bytes at `port` is allowed: always in real mode and at
    /// CPL <= IOPL (outside virtual-8086 mode); otherwise only if the TSS I/O permission
    /// bitmap has a clear bit for every byte of it. #GP(0) if not.
    pub(crate) fn check_io_permission(
        &mut self,
        io: &mut dyn Platform,
        port: u16,
        size: usize,
    ) -> R<()> {
        if self.real_mode() {
            return Ok(());
        }
        let iopl = ((self.flags.bits & IOPL) >> 12) as u8;
        if self.cpl <= iopl && self.flags.bits & VM == 0 {
            return Ok(());
        }
        if self.io_bitmap_allows(io, port, size)? {
            Ok(())
        } else {
            Err(gp0())
        }
    }

    /// Consults the I/O permission bitmap of the current (32- or 64-bit) TSS. Anything
    /// outside the TSS limit counts as a set bit (denied).
    fn io_bitmap_allows(&mut self, io: &mut dyn Platform, port: u16, size: usize) -> R<bool> {
        let tr = self.tr;
        // Only an available/busy 32/64-bit TSS (types 9 and 11) has a bitmap.
        if tr.unusable || !tr.present || tr.type_ & 0x9 != 0x9 || tr.s {
            return Ok(false);
        }
        let limit = u64::from(tr.limit);
        if TSS_IOMAP_BASE + 1 > limit {
            return Ok(false);
        }
        let base = self.read_sys(io, tr.base.wrapping_add(TSS_IOMAP_BASE), 2)?;
        // The bits for ports port..port+size-1 lie in two consecutive bytes at most.
        let byte = base + u64::from(port / 8);
        if byte + 1 > limit {
            return Ok(false);
        }
        let bits = self.read_sys(io, tr.base.wrapping_add(byte), 2)?;
        let want = ((1u64 << size) - 1) << (port & 7);
        Ok(bits & want == 0)
    }
}
