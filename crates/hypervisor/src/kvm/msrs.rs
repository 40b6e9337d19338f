//! Which MSRs a saved KVM vCPU state carries: every MSR the platform sets at boot
//! (`arch::msr::boot_msrs`, what a firmware leaves behind). FS/GS base and EFER are not
//! here: they are part of the segment and system registers.

/// The MSRs `Vcpu::state` reads (filtered by what KVM lists as supported).
pub fn state_msrs() -> Vec<u32> {
    arch::msr::boot_msrs()
        .into_iter()
        .map(|(index, _)| index)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_entry_points_are_saved() {
        let m = state_msrs();
        for index in [
            arch::msr::MSR_LSTAR,
            arch::msr::MSR_STAR,
            arch::msr::MSR_KERNEL_GS_BASE,
        ] {
            assert!(m.contains(&index), "{index:#x}");
        }
    }
}
