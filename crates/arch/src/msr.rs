//! Model-specific register indices Linux uses, and the values a vCPU starts with.
//!
//! Both engines set [`boot_msrs`] on every vCPU before it runs (they are part of
//! [`CpuState::msrs`](crate::regs::CpuState)): the values a PC's firmware leaves behind,
//! which Linux reads but does not itself initialise.

pub const MSR_IA32_TSC: u32 = 0x10;
pub const MSR_IA32_APICBASE: u32 = 0x1b;
pub const MSR_IA32_FEATURE_CONTROL: u32 = 0x3a;
pub const MSR_IA32_TSC_ADJUST: u32 = 0x3b;
pub const MSR_IA32_SPEC_CTRL: u32 = 0x48;
pub const MSR_IA32_UCODE_REV: u32 = 0x8b;
pub const MSR_MTRRCAP: u32 = 0xfe;
pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
pub const MSR_IA32_MCG_CAP: u32 = 0x179;
pub const MSR_IA32_MCG_STATUS: u32 = 0x17a;
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
/// MTRR variable ranges: base/mask pairs from 0x200.
pub const MSR_MTRR_PHYS_BASE0: u32 = 0x200;
pub const MSR_MTRR_PHYS_MASK0: u32 = 0x201;
pub const MSR_MTRR_FIX64K_00000: u32 = 0x250;
pub const MSR_MTRR_FIX16K_80000: u32 = 0x258;
pub const MSR_MTRR_FIX16K_A0000: u32 = 0x259;
pub const MSR_MTRR_FIX4K_C0000: u32 = 0x268;
pub const MSR_MTRR_FIX4K_F8000: u32 = 0x26f;
pub const MSR_IA32_CR_PAT: u32 = 0x277;
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// x2APIC registers: 0x800 + (xAPIC offset >> 4).
pub const MSR_X2APIC_BASE: u32 = 0x800;
pub const MSR_X2APIC_END: u32 = 0x8ff;
pub const MSR_EFER: u32 = 0xc000_0080;
pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_CSTAR: u32 = 0xc000_0083;
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
pub const MSR_FS_BASE: u32 = 0xc000_0100;
pub const MSR_GS_BASE: u32 = 0xc000_0101;
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const MSR_TSC_AUX: u32 = 0xc000_0103;

// KVM paravirtual MSRs (the "new" range advertised by KVM_FEATURE_CLOCKSOURCE2 and
// friends).
pub const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
pub const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
pub const MSR_KVM_ASYNC_PF_EN: u32 = 0x4b56_4d02;
pub const MSR_KVM_STEAL_TIME: u32 = 0x4b56_4d03;
pub const MSR_KVM_PV_EOI_EN: u32 = 0x4b56_4d04;
pub const MSR_KVM_POLL_CONTROL: u32 = 0x4b56_4d05;
pub const MSR_KVM_ASYNC_PF_INT: u32 = 0x4b56_4d06;
pub const MSR_KVM_ASYNC_PF_ACK: u32 = 0x4b56_4d07;
/// Legacy kvmclock MSRs.
pub const MSR_KVM_WALL_CLOCK: u32 = 0x11;
pub const MSR_KVM_SYSTEM_TIME: u32 = 0x12;

/// IA32_MISC_ENABLE bit 0: fast string operations.
pub const MISC_ENABLE_FAST_STRING: u64 = 1 << 0;
/// IA32_APIC_BASE: this CPU is the bootstrap processor.
pub const APICBASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE: xAPIC globally enabled.
pub const APICBASE_ENABLE: u64 = 1 << 11;
/// PAT after power-on: WB, WT, UC-, UC repeated.
pub const PAT_POWER_ON: u64 = 0x0007_0406_0007_0406;
/// MTRR default type register: MTRRs enabled, default type write-back.
pub const MTRR_DEF_TYPE_ENABLED_WB: u64 = (1 << 11) | 6;

/// The IA32_APIC_BASE value for vCPU `id` (the BSP is vCPU 0).
pub fn apic_base(id: u32) -> u64 {
    let bsp = if id == 0 { APICBASE_BSP } else { 0 };
    crate::layout::LAPIC_BASE | APICBASE_ENABLE | bsp
}

/// The MSR values every vCPU starts with, as (index, value) pairs.
///
/// The syscall MSRs and FS/GS bases start at 0 and are listed so a restored snapshot and
/// a fresh boot set the same registers. MTRRs are enabled with write-back as default type
/// so Linux does not map all of RAM uncached.
pub fn boot_msrs() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_IA32_CR_PAT, PAT_POWER_ON),
        (MSR_MTRR_DEF_TYPE, MTRR_DEF_TYPE_ENABLED_WB),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_msrs_have_firmware_defaults() {
        let m = boot_msrs();
        let get = |i| m.iter().find(|(k, _)| *k == i).map(|(_, v)| *v);
        assert_eq!(get(MSR_IA32_MISC_ENABLE), Some(1));
        assert_eq!(get(MSR_IA32_CR_PAT), Some(0x0007_0406_0007_0406));
        assert_eq!(get(MSR_MTRR_DEF_TYPE), Some(0x806));
        // No duplicates.
        let mut idx: Vec<u32> = m.iter().map(|(k, _)| *k).collect();
        idx.sort();
        idx.dedup();
        assert_eq!(idx.len(), m.len());
    }

    #[test]
    fn apic_base_marks_only_the_bsp() {
        assert_eq!(apic_base(0), 0xfee0_0900);
        assert_eq!(apic_base(1), 0xfee0_0800);
    }
}
