//! Saving and loading the x87 environment and state: FNSTENV/FLDENV (14- and 28-byte
//! formats, real and protected mode layouts; 64-bit mode uses the 28-byte protected-mode
//! layout), FNSAVE/FRSTOR (environment plus the eight registers in stack order) and
//! FXSAVE/FXRSTOR (the 512-byte image with the abridged tag byte).
//!
//! The last instruction and operand pointers (FIP, FDP, FOP; see `mod.rs` for when they
//! change) are stored with zero selectors (FCS/FDS are deprecated on current CPUs).

use iced_x86::{Instruction, MemorySize};

use super::MXCSR_MASK;
use crate::cpu::{Cpu, CR0_PE};
use crate::exceptions::{gp0, R};
use crate::platform::Platform;

impl Cpu {
    fn real_or_v86(&self) -> bool {
        self.cr0 & CR0_PE == 0 || self.flags.get() & (1 << 17) != 0
    }

    /// The environment image (14 or 28 bytes).
    fn env_image(&self, small: bool) -> Vec<u8> {
        let f = &self.fpu;
        let tag = self.full_tag();
        let words: Vec<u32> = if self.real_or_v86() {
            let (ip, dp) = (f.fip as u32, f.fdp as u32);
            let fop = (f.fop & 0x7ff) as u32;
            if small {
                vec![
                    f.fcw as u32,
                    f.fsw as u32,
                    tag as u32,
                    ip & 0xffff,
                    ((ip >> 4) & 0xf000) | fop,
                    dp & 0xffff,
                    (dp >> 4) & 0xf000,
                ]
            } else {
                vec![
                    0xffff_0000 | f.fcw as u32,
                    0xffff_0000 | f.fsw as u32,
                    0xffff_0000 | tag as u32,
                    0xffff_0000 | (ip & 0xffff),
                    ((ip >> 4) & 0x0fff_f000) | fop,
                    0xffff_0000 | (dp & 0xffff),
                    (dp >> 4) & 0x0fff_f000,
                ]
            }
        } else if small {
            vec![
                f.fcw as u32,
                f.fsw as u32,
                tag as u32,
                f.fip as u32 & 0xffff,
                0,
                f.fdp as u32 & 0xffff,
                0,
            ]
        } else {
            vec![
                0xffff_0000 | f.fcw as u32,
                0xffff_0000 | f.fsw as u32,
                0xffff_0000 | tag as u32,
                f.fip as u32,
                ((f.fop & 0x7ff) as u32) << 16,
                f.fdp as u32,
                0xffff_0000,
            ]
        };
        let mut out = Vec::with_capacity(28);
        for w in words {
            if small {
                out.extend_from_slice(&(w as u16).to_le_bytes());
            } else {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// Loads an environment image (FCW, FSW, tags; the pointers are kept).
    fn load_env(&mut self, b: &[u8], small: bool) {
        let w = |i: usize| -> u32 {
            if small {
                u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u32
            } else {
                u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
            }
        };
        let real = self.real_or_v86();
        self.fpu.fcw = w(0) as u16;
        let fsw = w(1) as u16;
        self.move_top(((fsw >> 11) & 7) as usize);
        self.fpu.fsw = fsw;
        let tag = w(2) as u16;
        self.fpu.ftw = (0..8).fold(0u8, |t, p| {
            if (tag >> (2 * p)) & 3 != 3 {
                t | (1 << p)
            } else {
                t
            }
        });
        if real {
            let hi = |v: u32| ((v >> 12) & if small { 0xf } else { 0xffff }) as u64;
            self.fpu.fip = (w(3) & 0xffff) as u64 | (hi(w(4)) << 16);
            self.fpu.fop = (w(4) & 0x7ff) as u16;
            self.fpu.fdp = (w(5) & 0xffff) as u64 | (hi(w(6)) << 16);
        } else {
            self.fpu.fip = w(3) as u64;
            self.fpu.fop = if small {
                0
            } else {
                ((w(4) >> 16) & 0x7ff) as u16
            };
            self.fpu.fdp = w(5) as u64;
        }
        self.update_es();
    }

    fn env_small(ins: &Instruction) -> bool {
        matches!(
            ins.memory_size(),
            MemorySize::FpuEnv14 | MemorySize::FpuState94
        )
    }

    /// FNSTENV: stores the environment, then masks all exceptions.
    pub(super) fn fnstenv(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let img = self.env_image(Self::env_small(ins));
        let (lin, user) = (self.mem_lin(ins), self.user());
        self.write_bytes(io, lin, &img, user)?;
        self.fpu.fcw |= 0x3f;
        self.update_es();
        Ok(())
    }

    pub(super) fn fldenv(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let small = Self::env_small(ins);
        let mut b = vec![0u8; if small { 14 } else { 28 }];
        let (lin, user) = (self.mem_lin(ins), self.user());
        self.read_bytes(io, lin, &mut b, user)?;
        self.load_env(&b, small);
        Ok(())
    }

    /// FNSAVE: environment and registers, then FNINIT.
    pub(super) fn fnsave(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let mut img = self.env_image(Self::env_small(ins));
        for i in 0..8 {
            img.extend_from_slice(&self.fpu.st[i][..10]);
        }
        let (lin, user) = (self.mem_lin(ins), self.user());
        self.write_bytes(io, lin, &img, user)?;
        self.fninit();
        Ok(())
    }

    pub(super) fn frstor(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let small = Self::env_small(ins);
        let n = if small { 14 } else { 28 };
        let mut b = vec![0u8; n + 80];
        let (lin, user) = (self.mem_lin(ins), self.user());
        self.read_bytes(io, lin, &mut b, user)?;
        // The environment first: its TOP decides which registers the image's ST0.. are.
        self.load_env(&b[..n], small);
        for i in 0..8 {
            let mut r = [0u8; 16];
            r[..10].copy_from_slice(&b[n + 10 * i..n + 10 * i + 10]);
            self.fpu.st[i] = r;
        }
        Ok(())
    }

    pub(super) fn fninit(&mut self) {
        self.move_top(0);
        self.fpu.fcw = 0x37f;
        self.fpu.fsw = 0;
        self.fpu.ftw = 0;
        self.fpu.fop = 0;
        self.fpu.fip = 0;
        self.fpu.fdp = 0;
    }

    pub(super) fn fxsave(&mut self, io: &mut dyn Platform, ins: &Instruction, wide: bool) -> R<()> {
        let lin = self.mem_lin(ins);
        if lin & 15 != 0 {
            return Err(gp0());
        }
        let img = self.fxsave_image(wide);
        let user = self.user();
        // Bytes 416..511 (and XMM8-15 outside 64-bit mode) are not written: software
        // may keep data there (Linux's signal frames do).
        let len = if self.long64() { 416 } else { 288 };
        self.write_bytes(io, lin, &img[..len], user)
    }

    pub(super) fn fxrstor(
        &mut self,
        io: &mut dyn Platform,
        ins: &Instruction,
        wide: bool,
    ) -> R<()> {
        let lin = self.mem_lin(ins);
        if lin & 15 != 0 {
            return Err(gp0());
        }
        let mut img = [0u8; 512];
        let user = self.user();
        self.read_bytes(io, lin, &mut img, user)?;
        self.fxrstor_image(&img, wide)
    }

    pub(crate) fn fxsave_image(&self, wide: bool) -> [u8; 512] {
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
        f.fop = u16::from_le_bytes([b[6], b[7]]) & 0x7ff;
        let u64at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(x)
        };
        if wide {
            // FIP is an instruction address: canonical (48 linear-address bits, CPUID
            // 0x80000008); FDP is kept as stored.
            f.fip = ((u64at(8) << 16) as i64 >> 16) as u64;
            f.fdp = u64at(16);
        } else {
            f.fip = u64at(8) & 0xffff_ffff;
            f.fdp = u64at(16) & 0xffff_ffff;
        }
        f.mxcsr = mxcsr;
        for i in 0..8 {
            f.st[i] = [0; 16];
            f.st[i][..10].copy_from_slice(&b[32 + i * 16..42 + i * 16]);
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
