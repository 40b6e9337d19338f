//! Paging-control instructions: MOV to CR3 with PCIDs, INVPCID, STAC/CLAC (SMAP),
//! RDPKRU/WRPKRU (protection keys), and the UMIP check of the store-descriptor-table
//! instructions.
//!
//! The TLB is not tagged by PCID: it only ever holds translations of the current
//! address space (plus global ones), so every CR3 write drops the non-global entries even
//! with the no-flush bit, and INVPCID invalidates at least what it must. Flushing more
//! than asked is always allowed; the cost is refills after a PCID switch.

use iced_x86::Instruction;

use crate::cpu::*;
use crate::exceptions::{gp0, ud, R};
use crate::flags::AC;
use crate::platform::Platform;
use crate::protect::{CR4_PCIDE, CR4_PKE, CR4_UMIP};

/// MOV to CR3 with CR4.PCIDE = 1: keep the TLB entries of the new PCID.
const CR3_NOFLUSH: u64 = 1 << 63;

/// The INVPCID invalidation types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InvpcidType {
    Address,
    SingleContext,
    AllWithGlobals,
    AllButGlobals,
}

impl InvpcidType {
    fn from_reg(v: u64) -> Option<Self> {
        Some(match v {
            0 => Self::Address,
            1 => Self::SingleContext,
            2 => Self::AllWithGlobals,
            3 => Self::AllButGlobals,
            _ => return None,
        })
    }
}

fn canonical(v: u64) -> bool {
    let top = (v as i64) >> 47;
    top == 0 || top == -1
}

impl Cpu {
    /// MOV to CR3: #GP on a reserved bit in long mode (above MAXPHYADDR; bit 63 is the
    /// no-flush hint with CR4.PCIDE and is not stored).
    pub(crate) fn write_cr3(&mut self, v: u64) -> R<()> {
        let pcide = self.cr4 & CR4_PCIDE != 0;
        let v = if pcide { v & !CR3_NOFLUSH } else { v };
        if self.efer & EFER_LMA != 0 {
            let reserved = !((1u64 << self.feat.phys_bits) - 1);
            if v & reserved != 0 {
                return Err(gp0());
            }
        }
        self.cr3 = v;
        self.tlb.flush_non_global();
        Ok(())
    }

    /// The CR4 rules beyond the reserved bits: PCIDE only in IA-32e mode with
    /// CR3[11:0] = 0.
    pub(crate) fn check_cr4_pcide(&self, v: u64) -> R<()> {
        if v & CR4_PCIDE != 0
            && self.cr4 & CR4_PCIDE == 0
            && (self.efer & EFER_LMA == 0 || self.cr3 & 0xfff != 0)
        {
            return Err(gp0());
        }
        Ok(())
    }

    /// SGDT/SIDT/SLDT/SMSW/STR: #GP(0) at CPL > 0 with CR4.UMIP.
    pub(crate) fn check_umip(&self) -> R<()> {
        if self.cr4 & CR4_UMIP != 0 && self.cpl > 0 {
            return Err(gp0());
        }
        Ok(())
    }

    /// INVPCID type, [m128 descriptor: PCID in bits 11:0, linear address in 127:64].
    pub(super) fn invpcid(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        if !self.feat.invpcid {
            return Err(ud());
        }
        if self.cpl != 0 {
            return Err(gp0());
        }
        let ty = self.reg_read(ins.op0_register());
        let lin = self.mem_lin(ins);
        let mut desc = [0u8; 16];
        self.read_bytes(io, lin, &mut desc, false)?;
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&desc[..8]);
        hi.copy_from_slice(&desc[8..]);
        let (lo, addr) = (u64::from_le_bytes(lo), u64::from_le_bytes(hi));
        let ty = InvpcidType::from_reg(ty).ok_or_else(gp0)?;
        if lo >> 12 != 0 {
            return Err(gp0());
        }
        let pcid = lo & 0xfff;
        let pcide = self.cr4 & CR4_PCIDE != 0;
        if matches!(ty, InvpcidType::Address | InvpcidType::SingleContext) && pcid != 0 && !pcide {
            return Err(gp0());
        }
        match ty {
            InvpcidType::Address => {
                if !canonical(addr) {
                    return Err(gp0());
                }
                self.tlb.flush_page(addr);
            }
            InvpcidType::SingleContext | InvpcidType::AllButGlobals => self.tlb.flush_non_global(),
            InvpcidType::AllWithGlobals => self.tlb.flush_all(),
        }
        self.block_end = true;
        Ok(())
    }

    /// STAC/CLAC: set/clear EFLAGS.AC (#UD without SMAP or at CPL > 0).
    pub(super) fn stac_clac(&mut self, set: bool) -> R<()> {
        if !self.feat.smap || self.cpl != 0 {
            return Err(ud());
        }
        self.flags.set_masked(AC, if set { AC } else { 0 });
        Ok(())
    }

    /// RDPKRU: EAX = PKRU, EDX = 0 (#UD with CR4.PKE = 0, #GP when ECX != 0).
    pub(super) fn rdpkru(&mut self) -> R<()> {
        if self.cr4 & CR4_PKE == 0 {
            return Err(ud());
        }
        if self.gpr[1] as u32 != 0 {
            return Err(gp0());
        }
        self.gpr[0] = u64::from(self.keys.pkru);
        self.gpr[2] = 0;
        Ok(())
    }

    /// WRPKRU: PKRU = EAX (#UD with CR4.PKE = 0, #GP when ECX or EDX != 0). The TLB
    /// holds permissions computed with the old PKRU, so it is flushed.
    pub(super) fn wrpkru(&mut self) -> R<()> {
        if self.cr4 & CR4_PKE == 0 {
            return Err(ud());
        }
        if self.gpr[1] as u32 != 0 || self.gpr[2] as u32 != 0 {
            return Err(gp0());
        }
        let v = self.gpr[0] as u32;
        if v != self.keys.pkru {
            self.keys.pkru = v;
            self.tlb.flush_all();
        }
        Ok(())
    }

    /// CPUID leaf 7 ECX bit 4 (OSPKE) mirrors CR4.PKE.
    pub(super) fn cpuid_ospke(&self, leaf: u32, sub: u32, ecx: u32) -> u32 {
        const OSPKE: u32 = 1 << 4;
        if leaf == 7 && sub == 0 {
            if self.cr4 & CR4_PKE != 0 {
                ecx | OSPKE
            } else {
                ecx & !OSPKE
            }
        } else {
            ecx
        }
    }
}
