//! The CPUID policy: what a guest vCPU sees, derived from what the host (or the engine)
//! supports.
//!
//! Input is the list `KVM_GET_SUPPORTED_CPUID` returns (or the software engine's own list);
//! output is the list for vCPU `id` of `n`. The policy:
//!
//! - **Identity**: leaf 1 ECX bit 31 (hypervisor present) is set; leaf 1 EBX[31:24] and the
//!   x2APIC IDs in leaves 0xB/0x1F (EDX) are the vCPU id, which is also its APIC ID in the
//!   MADT and MP table.
//! - **Topology**: one socket, one core per vCPU, one thread per core. Leaf 1 EBX[23:16]
//!   = n with HTT (EDX bit 28) when n > 1; leaf 4 EAX[31:26] = n - 1 with L1/L2 private
//!   and L3 shared by all; leaf 0xB/0x1F: SMT level (1 thread, shift 0) and core level
//!   (n cores, shift ceil(log2 n)).
//! - **Hidden**: VMX/SMX (no nested virtualization), MONITOR/MWAIT (idle goes through
//!   HLT), thermal and power-management features (EIST, TM, TM2, ACPI thermal, PDCM),
//!   DCA, and the architectural PMU (leaf 0xA) unless [`CpuidPolicy::pmu`] is set.
//!   TSC-deadline only if the interrupt controller implements it
//!   ([`CpuidPolicy::tsc_deadline`]); x2APIC only if [`CpuidPolicy::x2apic`].
//!   [`CpuidPolicy::clear`] removes further bits (the software engine hides what its
//!   decoder does not execute).
//! - **Paravirtualization** (KVM engine): leaf 0x4000_0000 says "KVMKVMKVM\0\0\0" with
//!   max leaf 0x4000_0001; leaf 0x4000_0001 EAX lists the KVM PV features in
//!   [`CpuidPolicy::kvm_pv_features`], intersected with what the host offers. Without
//!   them (software engine) the hypervisor leaves are absent.

use serde::{Deserialize, Serialize};

/// One CPUID entry, as in `kvm_cpuid_entry2`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`: the entry depends on ECX (`index`).
pub const FLAG_SIGNIFICANT_INDEX: u32 = 1;

/// A register of a CPUID entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// Bits to clear in one leaf/subleaf register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidMask {
    pub function: u32,
    pub index: u32,
    pub reg: Reg,
    pub bits: u32,
}

pub mod leaf1 {
    pub const ECX_MONITOR: u32 = 1 << 3;
    pub const ECX_DS_CPL: u32 = 1 << 4;
    pub const ECX_VMX: u32 = 1 << 5;
    pub const ECX_SMX: u32 = 1 << 6;
    pub const ECX_EIST: u32 = 1 << 7;
    pub const ECX_TM2: u32 = 1 << 8;
    pub const ECX_PDCM: u32 = 1 << 15;
    pub const ECX_DCA: u32 = 1 << 18;
    pub const ECX_X2APIC: u32 = 1 << 21;
    pub const ECX_TSC_DEADLINE: u32 = 1 << 24;
    pub const ECX_HYPERVISOR: u32 = 1 << 31;
    pub const EDX_ACPI: u32 = 1 << 22;
    pub const EDX_HTT: u32 = 1 << 28;
    pub const EDX_TM: u32 = 1 << 29;
}

/// KVM paravirtual feature bits (leaf 0x4000_0001 EAX).
pub mod kvm_feature {
    pub const CLOCKSOURCE: u32 = 1 << 0;
    pub const NOP_IO_DELAY: u32 = 1 << 1;
    pub const CLOCKSOURCE2: u32 = 1 << 3;
    pub const ASYNC_PF: u32 = 1 << 4;
    pub const STEAL_TIME: u32 = 1 << 5;
    pub const PV_EOI: u32 = 1 << 6;
    pub const PV_UNHALT: u32 = 1 << 7;
    pub const PV_TLB_FLUSH: u32 = 1 << 9;
    pub const PV_SEND_IPI: u32 = 1 << 11;
    pub const CLOCKSOURCE_STABLE_BIT: u32 = 1 << 24;
    /// What wirt's KVM engine advertises by default.
    pub const DEFAULT: u32 = CLOCKSOURCE2
        | NOP_IO_DELAY
        | PV_EOI
        | PV_UNHALT
        | STEAL_TIME
        | PV_TLB_FLUSH
        | PV_SEND_IPI
        | CLOCKSOURCE_STABLE_BIT;
}

pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;
pub const KVM_FEATURES_LEAF: u32 = 0x4000_0001;
/// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
pub const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

/// What the engine and interrupt controller can back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidPolicy {
    /// KVM PV features to advertise; `None` leaves out the hypervisor leaves.
    pub kvm_pv_features: Option<u32>,
    /// The local APIC timer implements TSC-deadline mode.
    pub tsc_deadline: bool,
    /// The local APIC implements x2APIC mode.
    pub x2apic: bool,
    /// Expose the architectural PMU (leaf 0xA).
    pub pmu: bool,
    /// Further bits to clear.
    pub clear: Vec<CpuidMask>,
}

impl CpuidPolicy {
    /// The KVM engine with the in-kernel irqchip.
    pub fn kvm() -> Self {
        CpuidPolicy {
            kvm_pv_features: Some(kvm_feature::DEFAULT),
            tsc_deadline: true,
            x2apic: true,
            pmu: false,
            clear: Vec::new(),
        }
    }

    /// An engine without paravirtual features (the software engine's base).
    pub fn plain() -> Self {
        CpuidPolicy {
            kvm_pv_features: None,
            tsc_deadline: false,
            x2apic: false,
            pmu: false,
            clear: Vec::new(),
        }
    }
}

/// Bits needed to number `n` items (ceil(log2 n)).
fn id_bits(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

fn topology_entry(function: u32, index: u32, id: u32, n: u32) -> CpuidEntry {
    let (eax, ebx, ecx) = match index {
        // SMT level: one thread per core.
        0 => (0, 1, 1 << 8),
        // Core level: n cores in the package.
        1 => (id_bits(n), n, 1 | (2 << 8)),
        _ => (0, 0, index),
    };
    CpuidEntry {
        function,
        index,
        flags: FLAG_SIGNIFICANT_INDEX,
        eax,
        ebx,
        ecx,
        edx: id,
    }
}

/// The guest's CPUID entries for vCPU `id` of `n`.
pub fn guest_cpuid(host: &[CpuidEntry], id: u32, n: u32, policy: &CpuidPolicy) -> Vec<CpuidEntry> {
    let n = n.max(1);
    let host_pv = host
        .iter()
        .find(|e| e.function == KVM_FEATURES_LEAF)
        .map(|e| e.eax);
    let mut out: Vec<CpuidEntry> = Vec::with_capacity(host.len() + 4);
    for e in host {
        let mut e = *e;
        match e.function {
            // Hypervisor range: rebuilt below.
            0x4000_0000..=0x4fff_ffff => continue,
            // Topology leaves: rebuilt with our topology, for subleaves 0..=2.
            0xb | 0x1f => {
                if !out.iter().any(|o| o.function == e.function) {
                    for index in 0..=2 {
                        out.push(topology_entry(e.function, index, id, n));
                    }
                }
                continue;
            }
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (id << 24) | ((n & 0xff) << 16);
                if n > 1 {
                    e.edx |= leaf1::EDX_HTT;
                } else {
                    e.edx &= !leaf1::EDX_HTT;
                }
                e.ecx |= leaf1::ECX_HYPERVISOR;
                e.ecx &= !(leaf1::ECX_MONITOR
                    | leaf1::ECX_DS_CPL
                    | leaf1::ECX_VMX
                    | leaf1::ECX_SMX
                    | leaf1::ECX_EIST
                    | leaf1::ECX_TM2
                    | leaf1::ECX_PDCM
                    | leaf1::ECX_DCA);
                if !policy.tsc_deadline {
                    e.ecx &= !leaf1::ECX_TSC_DEADLINE;
                }
                if !policy.x2apic {
                    e.ecx &= !leaf1::ECX_X2APIC;
                }
                e.edx &= !(leaf1::EDX_ACPI | leaf1::EDX_TM);
            }
            0x4 => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { n - 1 } else { 0 };
                let cores = (n - 1).min(63);
                e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (cores << 26);
            }
            // MONITOR/MWAIT leaf: hidden together with the feature bit.
            0x5 => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xa if !policy.pmu => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {}
        }
        out.push(e);
    }
    if let Some(wanted) = policy.kvm_pv_features {
        out.push(CpuidEntry {
            function: HYPERVISOR_LEAF,
            eax: KVM_FEATURES_LEAF,
            ebx: KVM_SIGNATURE[0],
            ecx: KVM_SIGNATURE[1],
            edx: KVM_SIGNATURE[2],
            ..Default::default()
        });
        out.push(CpuidEntry {
            function: KVM_FEATURES_LEAF,
            eax: wanted & host_pv.unwrap_or(wanted),
            ..Default::default()
        });
    }
    for m in &policy.clear {
        for e in out
            .iter_mut()
            .filter(|e| e.function == m.function && e.index == m.index)
        {
            let r = match m.reg {
                Reg::Eax => &mut e.eax,
                Reg::Ebx => &mut e.ebx,
                Reg::Ecx => &mut e.ecx,
                Reg::Edx => &mut e.edx,
            };
            *r &= !m.bits;
        }
    }
    out
}

/// Looks up a leaf/subleaf the way the CPU would (index ignored unless significant).
pub fn find(entries: &[CpuidEntry], function: u32, index: u32) -> Option<&CpuidEntry> {
    entries.iter().find(|e| {
        e.function == function && (e.flags & FLAG_SIGNIFICANT_INDEX == 0 || e.index == index)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<CpuidEntry> {
        let e = |function, index, flags, eax, ebx, ecx, edx| CpuidEntry {
            function,
            index,
            flags,
            eax,
            ebx,
            ecx,
            edx,
        };
        vec![
            e(0, 0, 0, 0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            // Leaf 1 with VMX, MONITOR, x2APIC, TSC-deadline set; APIC id 7 from the host.
            e(1, 0, 0, 0x906ea, 0x0710_0800, !(1 << 31), 0xbfeb_fbff),
            e(4, 0, 1, 0x1c00_4121, 0, 0, 0),
            e(4, 3, 1, 0x1c03_c163, 0, 0, 0),
            e(5, 0, 0, 0x40, 0x40, 3, 0x1120),
            e(0xa, 0, 0, 0x0760_3305, 0, 0, 0x603),
            e(0xb, 0, 1, 1, 2, 0x100, 7),
            e(0xb, 1, 1, 4, 8, 0x201, 7),
            e(0xb, 5, 1, 0, 0, 5, 7),
            e(0x4000_0000, 0, 0, 0x4000_0001, 1, 2, 3),
            e(
                0x4000_0001,
                0,
                0,
                kvm_feature::DEFAULT & !kvm_feature::PV_SEND_IPI,
                0,
                0,
                0,
            ),
            e(0x8000_0000, 0, 0, 0x8000_0008, 0, 0, 0),
        ]
    }

    #[test]
    fn leaf1_identity_and_hidden_features() {
        let g = guest_cpuid(&host(), 3, 4, &CpuidPolicy::kvm());
        let l1 = find(&g, 1, 0).unwrap();
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800);
        assert_ne!(l1.ecx & leaf1::ECX_HYPERVISOR, 0);
        assert_eq!(l1.ecx & leaf1::ECX_VMX, 0);
        assert_eq!(l1.ecx & leaf1::ECX_MONITOR, 0);
        assert_ne!(l1.ecx & leaf1::ECX_X2APIC, 0);
        assert_ne!(l1.ecx & leaf1::ECX_TSC_DEADLINE, 0);
        assert_ne!(l1.edx & leaf1::EDX_HTT, 0);
        assert_eq!(find(&g, 5, 0).unwrap().eax, 0);
        assert_eq!(find(&g, 0xa, 0).unwrap().eax, 0);
    }

    #[test]
    fn plain_policy_hides_tsc_deadline_x2apic_and_pv_leaves() {
        let g = guest_cpuid(&host(), 0, 1, &CpuidPolicy::plain());
        let l1 = find(&g, 1, 0).unwrap();
        assert_eq!(l1.ecx & leaf1::ECX_TSC_DEADLINE, 0);
        assert_eq!(l1.ecx & leaf1::ECX_X2APIC, 0);
        assert_eq!(l1.edx & leaf1::EDX_HTT, 0);
        assert_eq!(l1.ebx >> 24, 0);
        assert!(find(&g, HYPERVISOR_LEAF, 0).is_none());
        assert!(find(&g, KVM_FEATURES_LEAF, 0).is_none());
    }

    #[test]
    fn kvm_signature_and_features_intersect_host() {
        let g = guest_cpuid(&host(), 0, 2, &CpuidPolicy::kvm());
        let sig = find(&g, HYPERVISOR_LEAF, 0).unwrap();
        assert_eq!(sig.eax, KVM_FEATURES_LEAF);
        let mut name = Vec::new();
        for r in [sig.ebx, sig.ecx, sig.edx] {
            name.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&name, b"KVMKVMKVM\0\0\0");
        let f = find(&g, KVM_FEATURES_LEAF, 0).unwrap().eax;
        assert_ne!(f & kvm_feature::CLOCKSOURCE2, 0);
        assert_ne!(f & kvm_feature::PV_EOI, 0);
        assert_ne!(f & kvm_feature::PV_UNHALT, 0);
        assert_ne!(f & kvm_feature::STEAL_TIME, 0);
        assert_ne!(f & kvm_feature::PV_TLB_FLUSH, 0);
        assert_ne!(f & kvm_feature::NOP_IO_DELAY, 0);
        // The host does not offer PV IPIs in this fixture.
        assert_eq!(f & kvm_feature::PV_SEND_IPI, 0);
        // Exactly one of each hypervisor leaf.
        assert_eq!(
            g.iter().filter(|e| e.function == HYPERVISOR_LEAF).count(),
            1
        );
    }

    #[test]
    fn topology_leaves() {
        let g = guest_cpuid(&host(), 5, 6, &CpuidPolicy::kvm());
        let smt = find(&g, 0xb, 0).unwrap();
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 5));
        let core = find(&g, 0xb, 1).unwrap();
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (3, 6, 0x201, 5));
        let end = find(&g, 0xb, 2).unwrap();
        assert_eq!((end.ebx, end.ecx & 0xff00, end.edx), (0, 0, 5));
        // Host subleaf 5 is dropped rather than passed through.
        assert!(g.iter().all(|e| !(e.function == 0xb && e.index == 5)));
        let l1d = find(&g, 4, 0).unwrap();
        assert_eq!(l1d.eax >> 26, 5);
        assert_eq!((l1d.eax >> 14) & 0xfff, 0);
        let l3 = find(&g, 4, 3).unwrap();
        assert_eq!((l3.eax >> 14) & 0xfff, 5);
        assert_eq!(l3.eax & 0x3fff, 0x1c03_c163 & 0x3fff);
    }

    #[test]
    fn id_bits_values() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(4), 2);
        assert_eq!(id_bits(5), 3);
        assert_eq!(id_bits(255), 8);
    }

    #[test]
    fn extra_masks_apply() {
        let mut p = CpuidPolicy::kvm();
        p.clear.push(CpuidMask {
            function: 1,
            index: 0,
            reg: Reg::Edx,
            bits: 1 << 25,
        });
        let g = guest_cpuid(&host(), 0, 1, &p);
        assert_eq!(find(&g, 1, 0).unwrap().edx & (1 << 25), 0);
    }
}
