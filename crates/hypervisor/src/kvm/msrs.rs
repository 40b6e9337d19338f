//! The MSRs a vCPU starts with and the ones its saved state carries.
//!
//! A local list until `arch` provides the platform's MSR policy. The boot values are what a
//! firmware leaves behind (fast strings on, MTRRs enabled with write-back as the default
//! type); everything else starts at zero. FS/GS base and EFER are not here: they are part of
//! the segment and system registers.

pub const IA32_TSC: u32 = 0x10;
pub const IA32_SYSENTER_CS: u32 = 0x174;
pub const IA32_SYSENTER_ESP: u32 = 0x175;
pub const IA32_SYSENTER_EIP: u32 = 0x176;
pub const IA32_MISC_ENABLE: u32 = 0x1a0;
pub const IA32_PAT: u32 = 0x277;
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
pub const STAR: u32 = 0xc000_0081;
pub const LSTAR: u32 = 0xc000_0082;
pub const CSTAR: u32 = 0xc000_0083;
pub const SYSCALL_MASK: u32 = 0xc000_0084;
pub const KERNEL_GS_BASE: u32 = 0xc000_0102;

/// IA32_MISC_ENABLE bit 0: fast string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled (bit 11), default memory type write-back (6).
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;
/// The PAT after reset: WB, WT, UC-, UC repeated.
const PAT_RESET: u64 = 0x0007_0406_0007_0406;

/// (index, value) for every MSR a fresh vCPU gets.
pub fn boot_msrs() -> Vec<(u32, u64)> {
    vec![
        (IA32_SYSENTER_CS, 0),
        (IA32_SYSENTER_ESP, 0),
        (IA32_SYSENTER_EIP, 0),
        (STAR, 0),
        (CSTAR, 0),
        (KERNEL_GS_BASE, 0),
        (SYSCALL_MASK, 0),
        (LSTAR, 0),
        (IA32_TSC, 0),
        (IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (IA32_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
        (IA32_PAT, PAT_RESET),
    ]
}

/// The MSRs `Vcpu::state` reads (those KVM also lists as supported).
pub const STATE_MSRS: [u32; 12] = [
    IA32_SYSENTER_CS,
    IA32_SYSENTER_ESP,
    IA32_SYSENTER_EIP,
    STAR,
    LSTAR,
    CSTAR,
    SYSCALL_MASK,
    KERNEL_GS_BASE,
    IA32_TSC,
    IA32_MISC_ENABLE,
    IA32_MTRR_DEF_TYPE,
    IA32_PAT,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_boot_msr_is_saved_in_state() {
        for (index, _) in boot_msrs() {
            assert!(STATE_MSRS.contains(&index), "{index:#x}");
        }
    }
}
