//! The CPUID a KVM vCPU sees: KVM's supported set filtered through the platform policy in
//! `arch::cpuid` (APIC IDs, topology, hypervisor leaves, hidden features). This module only
//! converts between KVM's entry type and the platform's.

use arch::cpuid::{guest_cpuid, kvm_feature, CpuidEntry, CpuidPolicy};
use kvm_bindings::kvm_cpuid_entry2;

fn to_arch(e: &kvm_cpuid_entry2) -> CpuidEntry {
    CpuidEntry {
        function: e.function,
        index: e.index,
        flags: e.flags,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
    }
}

fn to_kvm(e: &CpuidEntry) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function: e.function,
        index: e.index,
        flags: e.flags,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
        ..Default::default()
    }
}

/// The policy for KVM guests. On PVM hosts the PV send-IPI hypercall hangs SMP guests, so
/// it is not advertised there.
pub fn policy(pvm: bool) -> CpuidPolicy {
    let mut p = CpuidPolicy::kvm();
    if pvm {
        p.kvm_pv_features = p.kvm_pv_features.map(|f| f & !kvm_feature::PV_SEND_IPI);
    }
    p
}

/// KVM entries in the platform's type.
pub fn arch_entries(entries: &[kvm_cpuid_entry2]) -> Vec<CpuidEntry> {
    entries.iter().map(to_arch).collect()
}

/// The entries for the vCPU with `apic_id` in a VM of `cpus` vCPUs.
pub fn for_vcpu(
    supported: &[kvm_cpuid_entry2],
    apic_id: u32,
    cpus: u32,
    policy: &CpuidPolicy,
) -> Vec<kvm_cpuid_entry2> {
    let host: Vec<CpuidEntry> = supported.iter().map(to_arch).collect();
    guest_cpuid(&host, apic_id, cpus, policy)
        .iter()
        .map(to_kvm)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0x0a0b_0c0d,
            ..Default::default()
        }
    }

    #[test]
    fn each_vcpu_gets_its_apic_id_and_the_kvm_signature() {
        let host = vec![entry(0, 0), entry(1, 0), entry(0xb, 0), entry(0xb, 1)];
        let v = for_vcpu(&host, 3, 4, &policy(false));
        let leaf1 = v.iter().find(|e| e.function == 1).unwrap();
        assert_eq!(leaf1.ebx >> 24, 3, "APIC ID in leaf 1 EBX[31:24]");
        assert_ne!(leaf1.ecx & (1 << 31), 0, "hypervisor bit");
        let hv = v.iter().find(|e| e.function == 0x4000_0000).unwrap();
        let mut sig = Vec::new();
        for r in [hv.ebx, hv.ecx, hv.edx] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&sig[..9], b"KVMKVMKVM");
    }

    #[test]
    fn pvm_hosts_do_not_get_pv_send_ipi() {
        let host = vec![entry(0, 0), entry(1, 0)];
        let feat = |pvm| {
            for_vcpu(&host, 0, 2, &policy(pvm))
                .iter()
                .find(|e| e.function == 0x4000_0001)
                .map(|e| e.eax)
                .unwrap()
        };
        assert_ne!(feat(false) & kvm_feature::PV_SEND_IPI, 0);
        assert_eq!(feat(true) & kvm_feature::PV_SEND_IPI, 0);
    }
}
