//! Model-specific registers the engine implements itself.
//!
//! The policy, one row per MSR (or range) the CPU model has; every other index goes to
//! `Platform::rdmsr/wrmsr` (the local APIC's x2APIC range) and raises #GP if that
//! declines too, as hardware does for an MSR it does not have.
//!
//! | MSR | read | write |
//! |---|---|---|
//! | TSC 0x10 | host TSC + offset | sets the offset |
//! | PLATFORM_ID 0x17, MCG_CAP 0x179, MTRR_CAP 0xfe | 0 / 0 / 0x508 | #GP (read-only) |
//! | APIC_BASE 0x1b | kept here | kept, forwarded to the local APIC |
//! | UCODE_REV 0x8b | 0 | ignored |
//! | SYSENTER_CS/ESP/EIP 0x174-0x176 | kept | kept |
//! | MCG_STATUS 0x17a | 0 | ignored |
//! | MISC_ENABLE 0x1a0 | kept | kept |
//! | PAT 0x277 | kept | kept; #GP on a reserved memory type |
//! | MTRRs (variable pairs, fixed, DEF_TYPE 0x2ff) | kept (DEF_TYPE 0x806 at reset) | kept, no effect on caching |
//! | TSC_DEADLINE 0x6e0 | kept | kept, forwarded to the local APIC timer |
//! | EFER 0xc000_0080 | kept | SCE, LME, NXE writable; #GP on reserved bits or LME change with paging on |
//! | STAR, LSTAR, CSTAR, SFMASK 0xc000_0081-84 | kept | kept; #GP on a non-canonical LSTAR/CSTAR |
//! | FS/GS/KERNEL_GS base 0xc000_0100-02 | kept | kept; #GP when non-canonical |
//! | TSC_AUX 0xc000_0103 | kept | low 32 bits kept |
//! | PKRS 0x6e1 (when CPUID offers PKS) | kept | kept; #GP on bits 63:32; flushes the TLB |
//! | AMD PERF_CTL0-3 0xc001_0000-03 | kept | kept; #GP on reserved bits |
//! | AMD PERF_CTR0-3 0xc001_0004-07 | kept | low 48 bits kept (the counters do not count) |
//! | AMD SYSCFG 0xc001_0010, HWCR 0xc001_0015, INT_PENDING_MSG 0xc001_0055 | 0 | ignored |
//!
//! The four legacy AMD performance counters exist on every family-15 AMD CPU (the model
//! CPUID reports), so guests write them unconditionally; the core-performance range
//! 0xc001_0200 is absent because CPUID does not announce it. RDPMC reads the same four
//! counters (#GP for other indices, or at CPL > 0 without CR4.PCE).

use std::collections::BTreeMap;

use crate::cpu::*;
use crate::exceptions::{gp0, R};
use crate::platform::Platform;

pub const TSC: u32 = 0x10;
pub const PLATFORM_ID: u32 = 0x17;
pub const APIC_BASE: u32 = 0x1b;
/// `IA32_APIC_BASE` bit 8: this is the bootstrap processor (read-only).
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// `IA32_APIC_BASE` bit 11: the local APIC is globally enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
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
/// AMD legacy performance event selects (PERF_CTL0-3) and counters (PERF_CTR0-3).
pub const AMD_PERF_CTL0: u32 = 0xc001_0000;
pub const AMD_PERF_CTR0: u32 = 0xc001_0004;
pub const AMD_PERF_COUNTERS: u32 = 4;
/// Width of the AMD performance counters.
pub const AMD_PERF_CTR_MASK: u64 = (1 << 48) - 1;
/// Bits of PERF_CTL that must be zero (reserved; HostOnly/GuestOnly at 40/41 allowed).
const AMD_PERF_CTL_RESERVED: u64 = 0xffff_fcf0_0028_0000;

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
    /// AMD PERF_CTL0-3 then PERF_CTR0-3.
    pub amd_perf: [u64; 8],
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
            amd_perf: [0; 8],
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
        v.extend((0..8).map(|i| (AMD_PERF_CTL0 + i, self.amd_perf[i as usize])));
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
                i if is_amd_perf(i) => self.amd_perf[(i - AMD_PERF_CTL0) as usize] = v,
                _ => {}
            }
        }
    }
}

fn is_amd_perf(i: u32) -> bool {
    (AMD_PERF_CTL0..AMD_PERF_CTL0 + 2 * AMD_PERF_COUNTERS).contains(&i)
}

fn canonical(v: u64) -> bool {
    let top = (v as i64) >> 47;
    top == 0 || top == -1
}

impl Cpu {
    /// RDPMC: the AMD legacy counters by index in ECX.
    pub(crate) fn rdpmc(&mut self) -> R<()> {
        const CR4_PCE: u64 = 1 << 8;
        let idx = self.gpr[1] as u32;
        if (self.cpl != 0 && self.cr4 & CR4_PCE == 0) || idx >= AMD_PERF_COUNTERS {
            return Err(gp0());
        }
        let v = self.msr.amd_perf[(AMD_PERF_CTR0 - AMD_PERF_CTL0 + idx) as usize];
        self.gpr[0] = v & 0xffff_ffff;
        self.gpr[2] = v >> 32;
        Ok(())
    }

    pub(crate) fn rdmsr(&mut self, io: &mut dyn Platform, i: u32) -> R<u64> {
        let m = &self.msr;
        Ok(match i {
            TSC => io.tsc().wrapping_add(m.tsc_offset),
            TSC_AUX => m.tsc_aux,
            PLATFORM_ID | UCODE_REV | MCG_CAP | MCG_STATUS | HWCR | SYSCFG | INT_PENDING_MSG => 0,
            MTRR_DEF_TYPE => m.mtrr.get(&i).copied().unwrap_or(0x806),
            APIC_BASE => m.apic_base,
            // The platform's timer clears it when it fires.
            TSC_DEADLINE => io.rdmsr(TSC_DEADLINE).unwrap_or(m.tsc_deadline),
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
            crate::protect::MSR_PKRS if self.feat.pks => u64::from(self.keys.pkrs),
            i if is_mtrr(i) => m.mtrr.get(&i).copied().unwrap_or(0),
            i if is_amd_perf(i) => m.amd_perf[(i - AMD_PERF_CTL0) as usize],
            _ => return io.rdmsr(i).ok_or_else(gp0),
        })
    }

    pub(crate) fn wrmsr(&mut self, io: &mut dyn Platform, i: u32, v: u64) -> R<()> {
        match i {
            TSC => self.msr.tsc_offset = v.wrapping_sub(io.tsc()),
            TSC_AUX => self.msr.tsc_aux = v & 0xffff_ffff,
            UCODE_REV | HWCR | SYSCFG | INT_PENDING_MSG => {}
            APIC_BASE => {
                // The platform's APIC decides what is valid (reserved bits, mode changes).
                if !io.apic_base_written(v) {
                    return Err(gp0());
                }
                self.msr.apic_base = (v & !APIC_BASE_BSP) | (self.msr.apic_base & APIC_BASE_BSP);
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
            crate::protect::MSR_PKRS if self.feat.pks => {
                let v = u32::try_from(v).map_err(|_| gp0())?;
                if v != self.keys.pkrs {
                    self.keys.pkrs = v;
                    self.tlb.flush_all();
                }
            }
            MTRR_CAP | MCG_CAP | PLATFORM_ID => return Err(gp0()),
            MCG_STATUS => {}
            i if is_mtrr(i) => {
                self.msr.mtrr.insert(i, v);
            }
            i if is_amd_perf(i) => {
                let n = (i - AMD_PERF_CTL0) as usize;
                if n < AMD_PERF_COUNTERS as usize {
                    if v & AMD_PERF_CTL_RESERVED != 0 {
                        return Err(gp0());
                    }
                    self.msr.amd_perf[n] = v;
                } else {
                    self.msr.amd_perf[n] = v & AMD_PERF_CTR_MASK;
                }
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
