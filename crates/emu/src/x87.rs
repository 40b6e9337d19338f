//! The x87 FPU as Linux and busybox use it: control/status word handling (fninit,
//! fnstcw, fldcw, fnstsw, fnclex, fwait), and FXSAVE/FXRSTOR of the whole x87+SSE state.
//! Arithmetic x87 instructions are not implemented (the kernel does not use them; 64-bit
//! user code uses SSE for floating point) and raise #UD, logged once.

use iced_x86::{Code, Instruction, Mnemonic as M};

use crate::cpu::{Cpu, CR0_EM, CR0_TS};
use crate::exceptions::{gp0, Fault, NM, R};
use crate::platform::Platform;

pub fn handles(m: M) -> bool {
    matches!(
        m,
        M::Fninit
            | M::Finit
            | M::Fnstcw
            | M::Fstcw
            | M::Fldcw
            | M::Fnstsw
            | M::Fstsw
            | M::Fnclex
            | M::Fclex
            | M::Wait
            | M::Fxsave
            | M::Fxsave64
            | M::Fxrstor
            | M::Fxrstor64
            | M::Emms
    )
}

impl Cpu {
    pub(crate) fn x87(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        if m == M::Wait {
            if self.cr0 & CR0_TS != 0 && self.cr0 & crate::cpu::CR0_MP != 0 {
                return Err(Fault::new(NM));
            }
            return Ok(());
        }
        if self.cr0 & CR0_EM != 0
            && !matches!(m, M::Fxsave | M::Fxsave64 | M::Fxrstor | M::Fxrstor64)
        {
            return Err(Fault::new(NM));
        }
        if self.cr0 & CR0_TS != 0 {
            return Err(Fault::new(NM));
        }
        let user = self.user();
        match m {
            M::Fninit | M::Finit => {
                self.fpu.fcw = 0x37f;
                self.fpu.fsw = 0;
                self.fpu.ftw = 0;
                self.fpu.fop = 0;
                self.fpu.fip = 0;
                self.fpu.fdp = 0;
            }
            M::Fnstcw | M::Fstcw => {
                let lin = self.mem_lin(ins);
                self.write_lin(io, lin, 2, self.fpu.fcw as u64, user)?;
            }
            M::Fldcw => {
                let lin = self.mem_lin(ins);
                self.fpu.fcw = self.read_lin(io, lin, 2, user)? as u16;
            }
            M::Fnstsw | M::Fstsw => {
                if ins.code() == Code::Fnstsw_AX || ins.code() == Code::Fstsw_AX {
                    self.set_gpr_sized(0, 2, self.fpu.fsw as u64);
                } else {
                    let lin = self.mem_lin(ins);
                    self.write_lin(io, lin, 2, self.fpu.fsw as u64, user)?;
                }
            }
            M::Fnclex | M::Fclex => self.fpu.fsw &= 0x7f00,
            M::Emms => self.fpu.ftw = 0,
            M::Fxsave | M::Fxsave64 => {
                let lin = self.mem_lin(ins);
                if lin & 15 != 0 {
                    return Err(gp0());
                }
                let img = self.fxsave_image(m == M::Fxsave64);
                self.write_bytes(io, lin, &img, user)?;
            }
            M::Fxrstor | M::Fxrstor64 => {
                let lin = self.mem_lin(ins);
                if lin & 15 != 0 {
                    return Err(gp0());
                }
                let mut img = [0u8; 512];
                self.read_bytes(io, lin, &mut img, user)?;
                self.fxrstor_image(&img, m == M::Fxrstor64)?;
            }
            _ => return Err(self.unimplemented(ins)),
        }
        Ok(())
    }

    fn fxsave_image(&self, wide: bool) -> [u8; 512] {
        let f = &self.fpu;
        let mut b = [0u8; 512];
        b[0..2].copy_from_slice(&f.fcw.to_le_bytes());
        b[2..4].copy_from_slice(&f.fsw.to_le_bytes());
        b[4] = f.ftw;
        b[6..8].copy_from_slice(&f.fop.to_le_bytes());
        if wide {
            b[8..16].copy_from_slice(&f.fip.to_le_bytes());
            b[16..24].copy_from_slice(&f.fdp.to_le_bytes());
        } else {
            b[8..12].copy_from_slice(&(f.fip as u32).to_le_bytes());
            b[16..20].copy_from_slice(&(f.fdp as u32).to_le_bytes());
        }
        b[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
        b[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
        for i in 0..8 {
            b[32 + i * 16..48 + i * 16].copy_from_slice(&f.st[i]);
        }
        let nregs = if self.long64() { 16 } else { 8 };
        for i in 0..nregs {
            b[160 + i * 16..176 + i * 16].copy_from_slice(&f.xmm[i].to_le_bytes());
        }
        b
    }

    fn fxrstor_image(&mut self, b: &[u8; 512], wide: bool) -> R<()> {
        let mxcsr = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
        if mxcsr & !MXCSR_MASK != 0 {
            return Err(gp0());
        }
        let f = &mut self.fpu;
        f.fcw = u16::from_le_bytes([b[0], b[1]]);
        f.fsw = u16::from_le_bytes([b[2], b[3]]);
        f.ftw = b[4];
        f.fop = u16::from_le_bytes([b[6], b[7]]);
        let u64at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(x)
        };
        if wide {
            f.fip = u64at(8);
            f.fdp = u64at(16);
        } else {
            f.fip = u64at(8) & 0xffff_ffff;
            f.fdp = u64at(16) & 0xffff_ffff;
        }
        f.mxcsr = mxcsr;
        for i in 0..8 {
            f.st[i].copy_from_slice(&b[32 + i * 16..48 + i * 16]);
        }
        let nregs = if self.bitness == 64 { 16 } else { 8 };
        for i in 0..nregs {
            let mut x = [0u8; 16];
            x.copy_from_slice(&b[160 + i * 16..176 + i * 16]);
            self.fpu.xmm[i] = u128::from_le_bytes(x);
        }
        Ok(())
    }
}

/// MXCSR bits that may be set (no DAZ).
pub const MXCSR_MASK: u32 = 0xffbf;
