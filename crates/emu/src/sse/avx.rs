//! VEX-encoded vector instructions: the checks every VEX form makes, YMM operand access,
//! and the VEX.128/VEX.256 forms of the SSE instructions.
//!
//! A VEX form of an SSE instruction (VADDPS → ADDPS) runs the legacy instruction's lane
//! function (`compute::lane`) with the VEX operands: the first source is the VEX.vvvv
//! register instead of the destination, the blend mask the is4 register instead of XMM0,
//! and a VEX.256 form runs it once per 128-bit lane (with the immediate bits of the upper
//! lane where the instruction defines them). VEX.128 forms zero bits 255:128 of the
//! destination register. The forms whose destination is a general register, memory or the
//! flags (VCOMISS, VPEXTRB, VMOVD r32, ...) have the legacy operand layout and run the
//! legacy code. A few VEX.256 forms cross lanes (VCVTPS2PD, VCVTPD2PS, VPMOVSX/ZX ...)
//! and the AVX-only instructions are in `avx_ops`.
//!
//! Checks, in the order the SDM gives them: #UD in real and virtual-8086 mode, with
//! CR4.OSXSAVE clear or XCR0 lacking SSE or AVX, or when the vCPU's CPUID does not offer
//! every feature the form needs (iced's `cpuid_features`: AVX, AVX2, FMA, F16C, AES,
//! PCLMULQDQ); then #NM with CR0.TS set. VEX.L=1 on forms that have no 256-bit version,
//! and VEX prefixes after 66/F2/F3/REX, are #UD through the decoder (iced decodes them as
//! invalid). Only the explicitly aligned moves (VMOVAPS, VMOVDQA, VMOVNT*, ...) check
//! alignment (16 or 32 bytes).

use std::collections::HashMap;
use std::sync::OnceLock;

use iced_x86::{CpuidFeature, Instruction, Mnemonic as M, OpKind, Register};

use super::compute::{self, Env};
use super::sign_extend;
use crate::cpu::{Cpu, CR0_PE, CR0_TS, CR4_OSXSAVE};
use crate::exceptions::{gp0, ud, Fault, NM, R};
use crate::flags::VM;
use crate::platform::Platform;
use crate::xsave;

/// A YMM value as its two 128-bit lanes (low, high).
pub(super) type Ymm = [u128; 2];

/// The CPUID features VEX instructions may need, as a vCPU's CPUID table offers them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VexOffer {
    avx: bool,
    avx2: bool,
    fma: bool,
    f16c: bool,
    aes: bool,
    pclmulqdq: bool,
}

impl VexOffer {
    pub(crate) fn of(table: &[crate::cpuid::CpuidLeaf]) -> Self {
        let (_, _, ecx1, _) = crate::cpuid::lookup(table, 1, 0);
        let (_, ebx7, _, _) = crate::cpuid::lookup(table, 7, 0);
        let bit = |r: u32, b: u32| r & (1 << b) != 0;
        VexOffer {
            avx: bit(ecx1, 28),
            avx2: bit(ebx7, 5),
            fma: bit(ecx1, 12),
            f16c: bit(ecx1, 29),
            aes: bit(ecx1, 25),
            pclmulqdq: bit(ecx1, 1),
        }
    }

    /// Whether `f` is offered (features no VEX form the engine runs needs are not).
    fn offers(&self, f: CpuidFeature) -> bool {
        match f {
            CpuidFeature::AVX => self.avx,
            CpuidFeature::AVX2 => self.avx2,
            CpuidFeature::FMA => self.fma,
            CpuidFeature::F16C => self.f16c,
            CpuidFeature::AES => self.aes,
            CpuidFeature::PCLMULQDQ => self.pclmulqdq,
            _ => false,
        }
    }
}

/// The VEX moves that require an aligned memory operand (to their size).
pub(super) fn aligned_move(m: M) -> bool {
    matches!(
        m,
        M::Vmovaps
            | M::Vmovapd
            | M::Vmovdqa
            | M::Vmovntps
            | M::Vmovntpd
            | M::Vmovntdq
            | M::Vmovntdqa
    )
}

/// The legacy SSE mnemonic of a VEX mnemonic (VADDPS → ADDPS), if there is one.
fn legacy(m: M) -> Option<M> {
    static MAP: OnceLock<HashMap<M, M>> = OnceLock::new();
    MAP.get_or_init(|| {
        let by_name: HashMap<String, M> = M::values().map(|m| (format!("{m:?}"), m)).collect();
        M::values()
            .filter_map(|v| {
                let name = format!("{v:?}");
                let rest = name.strip_prefix('V')?;
                let mut chars = rest.chars();
                let first = chars.next()?.to_ascii_uppercase();
                let l = by_name.get(&format!("{first}{}", chars.as_str()))?;
                Some((v, *l))
            })
            .collect()
    })
    .get(&m)
    .copied()
}

/// The element shifts, whose second source is a count.
fn is_shift(m: M) -> bool {
    use M::*;
    matches!(
        m,
        Psllw | Pslld | Psllq | Psrlw | Psrld | Psrlq | Psraw | Psrad | Pslldq | Psrldq
    )
}

/// The immediate as lane `lane` of a VEX.256 form sees it: the instructions with
/// per-element immediate bits give the upper lane the next ones.
fn lane_imm(m: M, imm: u8, lane: usize) -> u8 {
    let shift = match m {
        M::Shufpd | M::Blendpd => 2,
        M::Blendps => 4,
        M::Mpsadbw => 3,
        _ => 0,
    };
    imm >> (shift * lane)
}

/// Whether a vector register operand is 256 bits wide.
fn is_ymm(ins: &Instruction, i: u32) -> bool {
    ins.op_kind(i) == OpKind::Register && ins.op_register(i).is_ymm()
}

impl Cpu {
    /// Index 0-15 of an XMM or YMM register.
    pub(super) fn vreg(r: Register) -> Option<usize> {
        let n = if r.is_xmm() {
            r as usize - Register::XMM0 as usize
        } else if r.is_ymm() {
            r as usize - Register::YMM0 as usize
        } else {
            return None;
        };
        (n < 16).then_some(n)
    }

    pub(super) fn ymm(&self, n: usize) -> Ymm {
        [self.fpu.xmm[n], self.fpu.ymm_hi[n]]
    }

    pub(super) fn set_ymm(&mut self, n: usize, v: Ymm) {
        self.fpu.xmm[n] = v[0];
        self.fpu.ymm_hi[n] = v[1];
    }

    /// The #UD and #NM checks of every VEX vector instruction.
    fn vex_check(&self, ins: &Instruction) -> R<()> {
        if self.cr0 & CR0_PE == 0 || self.flags.bits & VM != 0 {
            return Err(ud());
        }
        let both = xsave::SSE | xsave::AVX;
        if self.cr4 & CR4_OSXSAVE == 0 || self.fpu.xcr0 & both != both {
            return Err(ud());
        }
        if !ins
            .cpuid_features()
            .iter()
            .all(|&f| self.vex_offer.offers(f))
        {
            return Err(ud());
        }
        if self.cr0 & CR0_TS != 0 {
            return Err(Fault::new(NM));
        }
        Ok(())
    }

    /// Reads operand `i`: a vector register (both halves), a general register, memory of
    /// the operand's size (up to 32 bytes, zero-extended) or the immediate.
    pub(super) fn vsrc(&mut self, io: &mut dyn Platform, ins: &Instruction, i: u32) -> R<Ymm> {
        match ins.op_kind(i) {
            OpKind::Register => {
                let r = ins.op_register(i);
                match Self::vreg(r) {
                    Some(n) => Ok(self.ymm(n)),
                    None if r.is_gpr() => Ok([self.reg_read(r) as u128, 0]),
                    None => Err(self.unimplemented(ins)),
                }
            }
            OpKind::Memory => {
                let size = ins.memory_size().size().min(32);
                let lin = self.vmem_lin(ins, size)?;
                let user = self.user();
                let mut b = [0u8; 32];
                self.read_bytes(io, lin, &mut b[..size], user)?;
                Ok(ymm_from_bytes(&b))
            }
            _ => Ok([ins.immediate8() as u128, 0]),
        }
    }

    /// The memory operand's linear address, checked for alignment where required.
    fn vmem_lin(&self, ins: &Instruction, size: usize) -> R<u64> {
        let lin = self.mem_lin(ins);
        if aligned_move(ins.mnemonic()) && !lin.is_multiple_of(size.max(1) as u64) {
            return Err(gp0());
        }
        Ok(lin)
    }

    /// Writes operand 0: a 128-bit register gets `v[0]` with bits 255:128 zeroed, a
    /// 256-bit register both halves, memory the operand's size.
    pub(super) fn vdst(&mut self, io: &mut dyn Platform, ins: &Instruction, v: Ymm) -> R<()> {
        if ins.op0_kind() == OpKind::Register {
            let r = ins.op0_register();
            let Some(n) = Self::vreg(r) else {
                return Err(self.unimplemented(ins));
            };
            self.set_ymm(n, if r.is_ymm() { v } else { [v[0], 0] });
            return Ok(());
        }
        let size = ins.memory_size().size().min(32);
        let lin = self.vmem_lin(ins, size)?;
        let user = self.user();
        self.write_bytes(io, lin, &ymm_bytes(v)[..size], user)
    }

    /// Executes a VEX-encoded vector instruction.
    pub(crate) fn avx(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        self.vex_check(ins)?;
        let m = ins.mnemonic();
        if let Some(r) = self.avx_op(io, ins, m) {
            return r;
        }
        let Some(l) = legacy(m).filter(|&l| super::handles(l)) else {
            return Err(self.unimplemented(ins));
        };
        let op0_vec =
            ins.op0_kind() == OpKind::Register && Self::vreg(ins.op0_register()).is_some();
        let full_move = matches!(
            l,
            M::Movaps
                | M::Movups
                | M::Movapd
                | M::Movupd
                | M::Movdqa
                | M::Movdqu
                | M::Movntps
                | M::Movntpd
                | M::Movntdq
        );
        if compute::is_lane_op(l) && (op0_vec || ins.op0_kind() == OpKind::Memory && full_move) {
            return self.vex_lanes(io, ins, l);
        }
        // The legacy operand layout (destination a general register, memory or flags; an
        // XMM operand 0 is only read).
        self.sse_op(io, ins, l)?;
        if matches!(l, M::Pcmpestrm | M::Pcmpestrm64 | M::Pcmpistrm) {
            self.fpu.ymm_hi[0] = 0;
        }
        Ok(())
    }

    /// The VEX form of the lane operation `l`.
    fn vex_lanes(&mut self, io: &mut dyn Platform, ins: &Instruction, l: M) -> R<()> {
        use M::*;
        if ins.op0_kind() == OpKind::Memory {
            let v = self.vsrc(io, ins, 1)?;
            return self.vdst(io, ins, v);
        }
        let n = ins.op_count();
        let imm = ins.immediate8();
        let zero = [0u128; 2];
        let last_imm = n > 1 && ins.op_kind(n - 1) == OpKind::Immediate8;
        // (first source, second source, blend mask, index of the second source)
        let (a, mut b, mask, bi) = match (n, last_imm) {
            (4, _) => {
                let mask = if ins.op_kind(3) == OpKind::Register {
                    self.vsrc(io, ins, 3)?
                } else {
                    zero
                };
                (self.vsrc(io, ins, 1)?, self.vsrc(io, ins, 2)?, mask, 2)
            }
            (3, true) if is_shift(l) => (self.vsrc(io, ins, 1)?, [imm as u128; 2], zero, 2),
            (3, true) => (zero, self.vsrc(io, ins, 1)?, zero, 1),
            (3, false) => (self.vsrc(io, ins, 1)?, self.vsrc(io, ins, 2)?, zero, 2),
            _ => (zero, self.vsrc(io, ins, 1)?, zero, 1),
        };
        if is_shift(l) && !last_imm {
            // A register or memory count: its low quadword, for both lanes.
            b = [b[0] as u64 as u128; 2];
        }
        if matches!(l, Cvtsi2sd | Cvtsi2ss) {
            b[0] = sign_extend(b[0], self.op_size(ins, bi));
        }
        let src_mem = ins.op_kind(bi) == OpKind::Memory;
        let mxcsr = self.fpu.mxcsr;
        let mut raised = 0;
        let mut lane = |l: M, a: u128, b: u128, imm: u8, mask: u128| {
            let mut env = Env::new(mxcsr, mask, src_mem, true);
            let r = compute::lane(l, a, b, imm, &mut env);
            raised |= env.raised;
            r
        };
        let wide_src =
            is_ymm(ins, bi) || ins.op_kind(bi) == OpKind::Memory && ins.memory_size().size() == 32;
        let out = match l {
            // VEX.256: a 128-bit source widened to 256 bits.
            Cvtps2pd | Cvtdq2pd if is_ymm(ins, 0) => {
                [lane(l, 0, b[0], imm, 0), lane(l, 0, b[0] >> 64, imm, 0)]
            }
            Pmovsxbw | Pmovsxbd | Pmovsxbq | Pmovsxwd | Pmovsxwq | Pmovsxdq | Pmovzxbw
            | Pmovzxbd | Pmovzxbq | Pmovzxwd | Pmovzxwq | Pmovzxdq
                if is_ymm(ins, 0) =>
            {
                let half = 8 * super::int::extension_input(l).unwrap_or(8);
                [lane(l, 0, b[0], imm, 0), lane(l, 0, b[0] >> half, imm, 0)]
            }
            // VEX.256: a 256-bit source narrowed to 128 bits.
            Cvtpd2ps | Cvtpd2dq | Cvttpd2dq if wide_src => {
                let lo = lane(l, 0, b[0], imm, 0);
                let hi = lane(l, 0, b[1], imm, 0);
                [
                    lo.zip(hi)
                        .map(|(lo, hi)| lo as u64 as u128 | (hi as u64 as u128) << 64),
                    Some(0),
                ]
            }
            _ if is_ymm(ins, 0) => [
                lane(l, a[0], b[0], lane_imm(l, imm, 0), mask[0]),
                lane(l, a[1], b[1], lane_imm(l, imm, 1), mask[1]),
            ],
            _ => [lane(l, a[0], b[0], imm, mask[0]), Some(0)],
        };
        let [Some(lo), Some(hi)] = out else {
            return Err(self.unimplemented(ins));
        };
        self.fpu.mxcsr |= raised;
        self.vdst(io, ins, [lo, hi])
    }
}

pub(super) fn ymm_from_bytes(b: &[u8; 32]) -> Ymm {
    let mut lo = [0u8; 16];
    let mut hi = [0u8; 16];
    lo.copy_from_slice(&b[..16]);
    hi.copy_from_slice(&b[16..]);
    [u128::from_le_bytes(lo), u128::from_le_bytes(hi)]
}

pub(super) fn ymm_bytes(v: Ymm) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&v[0].to_le_bytes());
    b[16..].copy_from_slice(&v[1].to_le_bytes());
    b
}
