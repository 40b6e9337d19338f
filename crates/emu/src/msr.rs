//! Model-specific registers the engine implements itself.
//!
//! Kept here: EFER, STAR/LSTAR/CSTAR/SFMASK, FS/GS/KERNEL_GS base, TSC (as an offset),
//! TSC_AUX, APIC_BASE (value kept here, writes also forwarded), TSC_DEADLINE (forwarded),
//! PAT, MTRRs (cap, default type, fixed and 8 variable pairs: stored, no effect),
//! MISC_ENABLE, SYSENTER_CS/ESP/EIP, UCODE_REV, PLATFORM_ID. Any other index goes to
//! `Platform::rdmsr/wrmsr` (e.g. x2APIC), and #GP if that declines, like hardware.

use std::collections::BTreeMap;

use crate::cpu::*;
use crate::exceptions::{gp0, R};
use crate::platform::Platform;

pub const TSC: u32 = 0x10;
pub const PLATFORM_ID: u32 = 0x17;
pub const APIC_BASE: u32 = 0x1b;
pub const UCODE_REV: u32 = 0x8b;
pub const MTRR_CAP: u32 = 0xfe;
pub const SYSENTER_CS: u32 = 0x174;
pub const SYSENTER_ESP: u32 = 0x175;
pub const SYSENTER_EIP: u32 = 0x176;
pub const MCG_CAP: u32 = 0x179;
pub const MCG_STATUS: u32 = 0x17a;
pub const MISC_ENABLE: u32 = 0x1a0;
pub const PAT: u32 = 0x277;
pub const MTRR_DEF_TYPE: u32 = 0x2ff;
pub const TSC_DEADLINE: u32 = 0x6e0;
pub const EFER: u32 = 0xc000_0080;
pub const STAR: u32 = 0xc000_0081;
pub const LSTAR: u32 = 0xc000_0082;
pub const CSTAR: u32 = 0xc000_0083;
pub const SFMASK: u32 = 0xc000_0084;
pub const FS_BASE: u32 = 0xc000_0100;
pub const GS_BASE: u32 = 0xc000_0101;
pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const TSC_AUX: u32 = 0xc000_0103;
/// AMD hardware configuration register (read as 0, writes ignored).
pub const HWCR: u32 = 0xc001_0015;
/// AMD system configuration (MTRR fixed-range DRAM bits); read as 0, writes ignored.
pub const SYSCFG: u32 = 0xc001_0010;
/// AMD interrupt-pending message register (read by the E400 idle routine); reads 0.
pub const INT_PENDING_MSG: u32 = 0xc001_0055;

fn is_mtrr(i: u32) -> bool {
    matches!(i, 0x200..=0x20f | 0x250 | 0x258 | 0x259 | 0x268..=0x26f | MTRR_DEF_TYPE)
}

#[derive(Clone, Debug)]
pub struct Msrs {
    /// Added to `Platform::tsc()` to give the guest's TSC.
    pub tsc_offset: u64,
    pub tsc_aux: u64,
    pub apic_base: u64,
    pub tsc_deadline: u64,
    pub pat: u64,
    pub misc_enable: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub mtrr: BTreeMap<u32, u64>,
    /// Initial APIC ID reported by CPUID (not an MSR; configuration). MTRRs default to
    /// "enabled, write-back" (0x806 in MTRR_DEF_TYPE) as firmware would leave them.
    pub apic_id: u32,
}

impl Default for Msrs {
    fn default() -> Self {
        Msrs {
            tsc_offset: 0,
            tsc_aux: 0,
            apic_base: 0xfee0_0000 | (1 << 11) | (1 << 8),
            tsc_deadline: 0,
            pat: 0x0007_0406_0007_0406,
            misc_enable: 1,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            kernel_gs_base: 0,
            mtrr: BTreeMap::new(),
            apic_id: 0,
        }
    }
}

impl Msrs {
    /// The MSRs to snapshot (the TSC is saved by the caller as an offset; see
    /// `Cpu::tsc_offset`).
    pub fn save(&self) -> Vec<(u32, u64)> {
        let mut v = vec![
            (TSC_AUX, self.tsc_aux),
            (APIC_BASE, self.apic_base),
            (TSC_DEADLINE, self.tsc_deadline),
            (PAT, self.pat),
            (MISC_ENABLE, self.misc_enable),
            (SYSENTER_CS, self.sysenter_cs),
            (SYSENTER_ESP, self.sysenter_esp),
            (SYSENTER_EIP, self.sysenter_eip),
            (STAR, self.star),
            (LSTAR, self.lstar),
            (CSTAR, self.cstar),
            (SFMASK, self.sfmask),
            (KERNEL_GS_BASE, self.kernel_gs_base),
        ];
        v.extend(self.mtrr.iter().map(|(k, v)| (*k, *v)));
        v
    }

    /// Loads saved MSRs; unknown indices are ignored.
    pub fn load(&mut self, list: &[(u32, u64)]) {
        for &(i, v) in list {
            match i {
                TSC_AUX => self.tsc_aux = v,
                APIC_BASE => self.apic_base = v,
                TSC_DEADLINE => self.tsc_deadline = v,
                PAT => self.pat = v,
                MISC_ENABLE => self.misc_enable = v,
                SYSENTER_CS => self.sysenter_cs = v,
                SYSENTER_ESP => self.sysenter_esp = v,
                SYSENTER_EIP => self.sysenter_eip = v,
                STAR => self.star = v,
                LSTAR => self.lstar = v,
                CSTAR => self.cstar = v,
                SFMASK => self.sfmask = v,
                KERNEL_GS_BASE => self.kernel_gs_base = v,
                i if is_mtrr(i) => {
                    self.mtrr.insert(i, v);
                }
                _ => {}
            }
        }
    }
}

fn canonical(v: u64) -> bool {
    let top = (v as i64) >> 47;
    top == 0 || top == -1
}

impl Cpu {
    pub(crate) fn rdmsr(&mut self, io: &mut dyn Platform, i: u32) -> R<u64> {
        let m = &self.msr;
        Ok(match i {
            TSC => io.tsc().wrapping_add(m.tsc_offset),
            TSC_AUX => m.tsc_aux,
            PLATFORM_ID | UCODE_REV | MCG_CAP | MCG_STATUS | HWCR | SYSCFG | INT_PENDING_MSG => 0,
            MTRR_DEF_TYPE => m.mtrr.get(&i).copied().unwrap_or(0x806),
            APIC_BASE => m.apic_base,
            TSC_DEADLINE => m.tsc_deadline,
            MTRR_CAP => 0x508, // WC supported, fixed ranges, 8 variable ranges
            PAT => m.pat,
            MISC_ENABLE => m.misc_enable,
            SYSENTER_CS => m.sysenter_cs,
            SYSENTER_ESP => m.sysenter_esp,
            SYSENTER_EIP => m.sysenter_eip,
            EFER => self.efer,
            STAR => m.star,
            LSTAR => m.lstar,
            CSTAR => m.cstar,
            SFMASK => m.sfmask,
            FS_BASE => self.seg[FS].base,
            GS_BASE => self.seg[GS].base,
            KERNEL_GS_BASE => m.kernel_gs_base,
            i if is_mtrr(i) => m.mtrr.get(&i).copied().unwrap_or(0),
            _ => return io.rdmsr(i).ok_or_else(gp0),
        })
    }

    pub(crate) fn wrmsr(&mut self, io: &mut dyn Platform, i: u32, v: u64) -> R<()> {
        match i {
            TSC => self.msr.tsc_offset = v.wrapping_sub(io.tsc()),
            TSC_AUX => self.msr.tsc_aux = v & 0xffff_ffff,
            UCODE_REV | HWCR | SYSCFG | INT_PENDING_MSG => {}
            APIC_BASE => {
                self.msr.apic_base = v;
                io.apic_base_written(v);
            }
            TSC_DEADLINE => {
                self.msr.tsc_deadline = v;
                io.tsc_deadline_written(v);
            }
            PAT => {
                for b in v.to_le_bytes() {
                    if matches!(b, 2 | 3) || b > 7 {
                        return Err(gp0());
                    }
                }
                self.msr.pat = v;
            }
            MISC_ENABLE => self.msr.misc_enable = v,
            SYSENTER_CS => self.msr.sysenter_cs = v,
            SYSENTER_ESP => self.msr.sysenter_esp = v,
            SYSENTER_EIP => self.msr.sysenter_eip = v,
            EFER => {
                const WRITABLE: u64 = EFER_SCE | EFER_LME | EFER_NXE;
                if v & !(WRITABLE | EFER_LMA) != 0 {
                    return Err(gp0());
                }
                if self.cr0 & CR0_PG != 0 && (v ^ self.efer) & EFER_LME != 0 {
                    return Err(gp0());
                }
                self.efer = (self.efer & EFER_LMA) | (v & WRITABLE);
                self.tlb.flush_all();
            }
            STAR => self.msr.star = v,
            LSTAR | CSTAR => {
                if !canonical(v) {
                    return Err(gp0());
                }
                if i == LSTAR {
                    self.msr.lstar = v;
                } else {
                    self.msr.cstar = v;
                }
            }
            SFMASK => self.msr.sfmask = v & 0xffff_ffff,
            FS_BASE | GS_BASE | KERNEL_GS_BASE => {
                if !canonical(v) {
                    return Err(gp0());
                }
                match i {
                    FS_BASE => self.seg[FS].base = v,
                    GS_BASE => self.seg[GS].base = v,
                    _ => self.msr.kernel_gs_base = v,
                }
            }
            MTRR_CAP | MCG_CAP | PLATFORM_ID => return Err(gp0()),
            MCG_STATUS => {}
            i if is_mtrr(i) => {
                self.msr.mtrr.insert(i, v);
            }
            _ => {
                if !io.wrmsr(i, v) {
                    return Err(gp0());
                }
            }
        }
        Ok(())
    }
}
