//! The CPUID a vCPU sees: KVM's supported set, adjusted per vCPU.
//!
//! A local, minimal policy until `arch::cpuid` provides the platform's full one: each vCPU
//! gets its own APIC ID (leaf 1 EBX[31:24], leaf 0xB EDX), the topology counts match the
//! VM's vCPU count, the hypervisor bit is set, and leaf 0x4000_0000 announces KVM so Linux
//! uses its paravirtual features. (On PVM hosts the guest sees the host's CPUID anyway.)

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Leaf 1 ECX bit 31: running under a hypervisor.
const HYPERVISOR_BIT: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: EBX[23:16] holds the logical processor count.
const HTT_BIT: u32 = 1 << 28;
/// The hypervisor signature leaf and "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
const HV_LEAF: u32 = 0x4000_0000;
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// The highest leaf KVM defines in the hypervisor range (features in 0x4000_0001).
const KVM_FEATURES_LEAF: u32 = 0x4000_0001;

/// Bits needed to number `n` things (ceil(log2(n))).
fn id_bits(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Adjust `entries` (from `KVM_GET_SUPPORTED_CPUID`) for the vCPU with `apic_id` in a VM of
/// `cpus` single-threaded cores in one package.
pub fn adjust(entries: &mut Vec<kvm_cpuid_entry2>, apic_id: u32, cpus: u32) {
    let cpus = cpus.max(1);
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x00ff_ffff) | ((apic_id & 0xff) << 24);
                e.ebx = (e.ebx & 0xff00_ffff) | ((cpus.min(255)) << 16);
                e.ecx |= HYPERVISOR_BIT;
                if cpus > 1 {
                    e.edx |= HTT_BIT;
                }
            }
            0xb | 0x1f => {
                // Level 0: SMT (one thread per core); level 1: core (all vCPUs); then invalid.
                e.edx = apic_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        e.eax = id_bits(cpus);
                        e.ebx = cpus;
                        e.ecx = (2 << 8) | 1;
                    }
                    i => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = i & 0xff;
                    }
                }
            }
            HV_LEAF => {
                e.eax = e.eax.max(KVM_FEATURES_LEAF);
                [e.ebx, e.ecx, e.edx] = KVM_SIGNATURE;
            }
            _ => {}
        }
    }
    if !entries.iter().any(|e| e.function == HV_LEAF) {
        entries.push(kvm_cpuid_entry2 {
            function: HV_LEAF,
            index: 0,
            flags: 0,
            eax: HV_LEAF,
            ebx: KVM_SIGNATURE[0],
            ecx: KVM_SIGNATURE[1],
            edx: KVM_SIGNATURE[2],
            ..Default::default()
        });
    }
    // Leaf 0xB is indexed by ECX; make sure KVM treats it so even if the list lacked the flag.
    for e in entries
        .iter_mut()
        .filter(|e| e.function == 0xb || e.function == 0x1f)
    {
        e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    }
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
    fn apic_id_topology_and_signature() {
        let mut v = vec![entry(1, 0), entry(0xb, 0), entry(0xb, 1), entry(0xb, 2)];
        adjust(&mut v, 3, 4);
        assert_eq!(v[0].ebx >> 24, 3, "APIC ID in leaf 1 EBX[31:24]");
        assert_eq!((v[0].ebx >> 16) & 0xff, 4, "logical processor count");
        assert_eq!(v[0].ebx & 0xffff, 0x0c0d, "other EBX bits kept");
        assert_ne!(v[0].ecx & HYPERVISOR_BIT, 0);
        assert_ne!(v[0].edx & HTT_BIT, 0);
        assert!(v[1..4].iter().all(|e| e.edx == 3), "x2APIC ID in leaf 0xB");
        assert_eq!((v[2].eax, v[2].ebx), (2, 4), "4 cores need 2 ID bits");
        assert_eq!(v[3].ecx >> 8 & 0xff, 0, "level 2 is invalid");
        let hv = v.iter().find(|e| e.function == HV_LEAF).unwrap();
        let mut sig = Vec::new();
        for r in [hv.ebx, hv.ecx, hv.edx] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&sig[..9], b"KVMKVMKVM");
    }

    #[test]
    fn existing_signature_leaf_is_rewritten_not_duplicated() {
        let mut v = vec![entry(HV_LEAF, 0)];
        adjust(&mut v, 0, 1);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].ebx, KVM_SIGNATURE[0]);
        assert_eq!(v[0].eax, KVM_FEATURES_LEAF);
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!([1, 2, 3, 4, 5, 8, 9].map(id_bits), [0, 1, 2, 2, 3, 3, 4]);
    }
}
