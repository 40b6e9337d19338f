//! The XSAVE feature set: XCR0 (XGETBV/XSETBV), XSAVE, XSAVEOPT and XRSTOR in the
//! standard (non-compacted) format, for the x87, SSE and AVX state components, and the
//! values CPUID leaf 0xD reports for them.
//!
//! Not implemented (and not advertised): the compacted format (XSAVEC, XSAVES/XRSTORS,
//! XCOMP_BV bit 63 — XRSTOR raises #GP for it), XGETBV with ECX = 1 and supervisor
//! components. XSAVEOPT applies the init optimization only: a component in its initial
//! configuration is not written and its XSTATE_BV bit is cleared; the modified
//! optimization is not used (every other component is written).
//!
//! XINUSE (which components are not in their initial configuration) is computed from the
//! register values when needed: x87 is in use unless FCW = 37FH and all other x87
//! fields and registers are zero, SSE unless every XMM register is zero and MXCSR = 1F80H,
//! AVX unless every upper YMM half is zero. (Reporting a component as in use is always
//! allowed; an initialized one is reported as such.)

use iced_x86::{Instruction, Mnemonic as M};

use crate::cpu::{Cpu, CR0_TS, CR4_OSXSAVE};
use crate::exceptions::{gp0, ud, Fault, NM, R};
use crate::platform::Platform;
use crate::state::FpuState;

/// XCR0 / XSTATE_BV bits of the state components.
pub const X87: u64 = 1 << 0;
pub const SSE: u64 = 1 << 1;
pub const AVX: u64 = 1 << 2;
/// Every component the engine implements.
pub const SUPPORTED: u64 = X87 | SSE | AVX;

/// Standard-format layout: legacy region (512 bytes), header (64), AVX component.
const HEADER: usize = 512;
pub const AVX_OFFSET: usize = 576;
pub const AVX_SIZE: usize = 256;
pub const MAX_SIZE: usize = AVX_OFFSET + AVX_SIZE;

/// Size of the standard-format XSAVE area for the components enabled in `xcr0`
/// (CPUID leaf 0xD subleaf 0 EBX).
pub fn area_size(xcr0: u64) -> u32 {
    if xcr0 & AVX != 0 {
        MAX_SIZE as u32
    } else {
        AVX_OFFSET as u32
    }
}

/// CPUID leaf 0xD subleaf `sub` as the engine reports it with XCR0 at its reset value
/// (EBX of subleaf 0 follows XCR0 at run time, see `Cpu::cpuid_dynamic`).
pub fn cpuid_leaf(sub: u32) -> (u32, u32, u32, u32) {
    match sub {
        // Supported XCR0 bits, size for XCR0, size for all supported components.
        0 => (SUPPORTED as u32, area_size(X87), MAX_SIZE as u32, 0),
        // XSAVEOPT only (no XSAVEC, XGETBV ECX=1, XSAVES).
        1 => (1, 0, 0, 0),
        // AVX: 256 bytes at offset 576, user component, not 64-byte aligned when compacted.
        2 => (AVX_SIZE as u32, AVX_OFFSET as u32, 0, 0),
        _ => (0, 0, 0, 0),
    }
}

/// The components of `f` that are not in their initial configuration.
fn in_use(f: &FpuState) -> u64 {
    let x87 = f.fcw != 0x37f
        || f.fsw != 0
        || f.ftw != 0
        || f.fop != 0
        || f.fip != 0
        || f.fdp != 0
        || f.st.iter().any(|r| r.iter().any(|&b| b != 0));
    let sse = f.mxcsr != 0x1f80 || f.xmm.iter().any(|&x| x != 0);
    let avx = f.ymm_hi.iter().any(|&x| x != 0);
    [(x87, X87), (sse, SSE), (avx, AVX)]
        .iter()
        .filter(|(used, _)| *used)
        .fold(0, |acc, (_, bit)| acc | bit)
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}

fn u128_at(b: &[u8], o: usize) -> u128 {
    let mut x = [0u8; 16];
    x.copy_from_slice(&b[o..o + 16]);
    u128::from_le_bytes(x)
}

impl Cpu {
    /// The supported XCR0 bits of this vCPU's CPUID table (leaf 0xD subleaf 0 EDX:EAX),
    /// limited to what the engine implements.
    fn xcr0_supported(&self) -> u64 {
        let (eax, _, _, edx) = crate::cpuid::lookup(&self.cpuid, 0xd, 0);
        (((edx as u64) << 32) | eax as u64) & SUPPORTED | X87
    }

    /// Whether this vCPU's CPUID table offers XSAVE (leaf 1 ECX bit 26).
    pub(crate) fn offers_xsave(&self) -> bool {
        let (_, _, ecx, _) = crate::cpuid::lookup(&self.cpuid, 1, 0);
        ecx & (1 << 26) != 0
    }

    pub(crate) fn xsave_op(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        if self.cr4 & CR4_OSXSAVE == 0 {
            return Err(ud());
        }
        let m = ins.mnemonic();
        match m {
            M::Xgetbv => {
                if self.gpr[1] as u32 != 0 {
                    return Err(gp0());
                }
                let v = self.fpu.xcr0;
                self.gpr[0] = v & 0xffff_ffff;
                self.gpr[2] = v >> 32;
                Ok(())
            }
            M::Xsetbv => {
                let v = (self.gpr[2] << 32) | (self.gpr[0] & 0xffff_ffff);
                if self.cpl != 0
                    || self.gpr[1] as u32 != 0
                    || v & X87 == 0
                    || v & AVX != 0 && v & SSE == 0
                    || v & !self.xcr0_supported() != 0
                {
                    return Err(gp0());
                }
                self.fpu.xcr0 = v;
                self.block_end = true;
                Ok(())
            }
            _ => {
                if self.cr0 & CR0_TS != 0 {
                    return Err(Fault::new(NM));
                }
                let lin = self.mem_lin(ins);
                if lin & 63 != 0 {
                    return Err(gp0());
                }
                let rfbm = self.fpu.xcr0 & ((self.gpr[2] << 32) | (self.gpr[0] & 0xffff_ffff));
                match m {
                    M::Xsave | M::Xsave64 => self.xsave(io, lin, rfbm, m == M::Xsave64, false),
                    M::Xsaveopt | M::Xsaveopt64 => {
                        self.xsave(io, lin, rfbm, m == M::Xsaveopt64, true)
                    }
                    M::Xrstor | M::Xrstor64 => self.xrstor(io, lin, rfbm, m == M::Xrstor64),
                    _ => Err(self.unimplemented(ins)),
                }
            }
        }
    }

    /// XSAVE (and XSAVEOPT with `opt`): writes the components in `rfbm` (XSAVEOPT: those
    /// in use) and updates their XSTATE_BV bits; the rest of the area is left alone.
    fn xsave(
        &mut self,
        io: &mut dyn Platform,
        lin: u64,
        rfbm: u64,
        wide: bool,
        opt: bool,
    ) -> R<()> {
        let user = self.user();
        let inuse = in_use(&self.fpu);
        let write = if opt { rfbm & inuse } else { rfbm };
        let mut hdr = [0u8; 8];
        self.read_bytes(io, lin + HEADER as u64, &mut hdr, user)?;
        let bv = (u64::from_le_bytes(hdr) & !rfbm) | (inuse & rfbm);
        let img = self.fxsave_image(wide);
        let regs = if self.long64() { 16 } else { 8 };
        if write & X87 != 0 {
            self.write_bytes(io, lin, &img[..24], user)?;
            self.write_bytes(io, lin + 32, &img[32..160], user)?;
        }
        if rfbm & (SSE | AVX) != 0 {
            self.write_bytes(io, lin + 24, &img[24..32], user)?;
        }
        if write & SSE != 0 {
            self.write_bytes(io, lin + 160, &img[160..160 + 16 * regs], user)?;
        }
        if write & AVX != 0 {
            let mut hi = [0u8; AVX_SIZE];
            for (i, c) in hi.chunks_mut(16).take(regs).enumerate() {
                c.copy_from_slice(&self.fpu.ymm_hi[i].to_le_bytes());
            }
            self.write_bytes(io, lin + AVX_OFFSET as u64, &hi[..16 * regs], user)?;
        }
        self.write_bytes(io, lin + HEADER as u64, &bv.to_le_bytes(), user)
    }

    /// XRSTOR, standard form: components in `rfbm` are loaded where XSTATE_BV says so and
    /// initialized otherwise; MXCSR is loaded whenever `rfbm` has SSE or AVX. Every check
    /// happens before any state changes.
    fn xrstor(&mut self, io: &mut dyn Platform, lin: u64, rfbm: u64, wide: bool) -> R<()> {
        let user = self.user();
        let mut area = [0u8; MAX_SIZE];
        self.read_bytes(io, lin, &mut area[..AVX_OFFSET], user)?;
        let bv = u64_at(&area, HEADER);
        let comp = u64_at(&area, HEADER + 8);
        let reserved = u64_at(&area, HEADER + 16);
        // XCOMP_BV bit 63 asks for the compacted form (no XSAVEC); bytes 23:8 of the
        // header must be zero in the standard form.
        if comp != 0 || reserved != 0 || bv & !self.fpu.xcr0 != 0 {
            return Err(gp0());
        }
        let load = rfbm & bv;
        if load & AVX != 0 {
            self.read_bytes(io, lin + AVX_OFFSET as u64, &mut area[AVX_OFFSET..], user)?;
        }
        let mxcsr = u32::from_le_bytes([area[24], area[25], area[26], area[27]]);
        if rfbm & (SSE | AVX) != 0 && mxcsr & !crate::x87::MXCSR_MASK != 0 {
            return Err(gp0());
        }
        let regs = if self.long64() { 16 } else { 8 };
        let f = &mut self.fpu;
        if rfbm & X87 != 0 {
            if load & X87 != 0 {
                f.fcw = u16::from_le_bytes([area[0], area[1]]);
                f.fsw = u16::from_le_bytes([area[2], area[3]]);
                f.ftw = area[4];
                // As FXRSTOR: FOP has 11 bits, FIP is made canonical, ST registers are
                // 10 bytes.
                f.fop = u16::from_le_bytes([area[6], area[7]]) & 0x7ff;
                if wide {
                    f.fip = ((u64_at(&area, 8) << 16) as i64 >> 16) as u64;
                    f.fdp = u64_at(&area, 16);
                } else {
                    f.fip = u64_at(&area, 8) & 0xffff_ffff;
                    f.fdp = u64_at(&area, 16) & 0xffff_ffff;
                }
                for (i, st) in f.st.iter_mut().enumerate() {
                    *st = [0; 16];
                    st[..10].copy_from_slice(&area[32 + i * 16..42 + i * 16]);
                }
            } else {
                let init = FpuState::default();
                f.fcw = init.fcw;
                f.fsw = 0;
                f.ftw = 0;
                f.fop = 0;
                f.fip = 0;
                f.fdp = 0;
                f.st = init.st;
            }
        }
        if rfbm & (SSE | AVX) != 0 {
            f.mxcsr = mxcsr;
        }
        if rfbm & SSE != 0 {
            for (i, x) in f.xmm.iter_mut().take(regs).enumerate() {
                *x = if load & SSE != 0 {
                    u128_at(&area, 160 + 16 * i)
                } else {
                    0
                };
            }
        }
        if rfbm & AVX != 0 {
            for (i, x) in f.ymm_hi.iter_mut().take(regs).enumerate() {
                *x = if load & AVX != 0 {
                    u128_at(&area, AVX_OFFSET + 16 * i)
                } else {
                    0
                };
            }
        }
        Ok(())
    }
}
