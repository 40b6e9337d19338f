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
//! - **User edits** ([`CpuidPolicy::edits`], `--cpu-features +x2apic,-pcid`): a named
//!   feature ([`FEATURES`], QEMU's names) is removed, or kept only if the engine offers
//!   it: [`check_edits`] refuses to add what the engine cannot back.

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

/// A named CPU feature: where CPUID reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// QEMU's name for it (`-cpu qemu64,+name`); `_` and `-` are interchangeable.
    pub name: &'static str,
    /// Linux's name in `/proc/cpuinfo` flags; empty when the guest kernel (Debian's 6.1)
    /// shows no flag for it.
    pub linux: &'static str,
    pub function: u32,
    pub index: u32,
    pub reg: Reg,
    pub bit: u32,
}

const fn feat(
    name: &'static str,
    linux: &'static str,
    function: u32,
    reg: Reg,
    bit: u32,
) -> Feature {
    Feature {
        name,
        linux,
        function,
        index: 0,
        reg,
        bit,
    }
}

use Reg::{Ebx as B, Ecx as C, Edx as D};

/// The CPU features wirt knows by name: what `--cpu-features` can edit and what the
/// documentation's CPUID table (`docs/cpuid.md`) lists.
pub const FEATURES: &[Feature] = &[
    feat("fpu", "fpu", 1, D, 0),
    feat("vme", "vme", 1, D, 1),
    feat("de", "de", 1, D, 2),
    feat("pse", "pse", 1, D, 3),
    feat("tsc", "tsc", 1, D, 4),
    feat("msr", "msr", 1, D, 5),
    feat("pae", "pae", 1, D, 6),
    feat("mce", "mce", 1, D, 7),
    feat("cx8", "cx8", 1, D, 8),
    feat("apic", "apic", 1, D, 9),
    feat("sep", "sep", 1, D, 11),
    feat("mtrr", "mtrr", 1, D, 12),
    feat("pge", "pge", 1, D, 13),
    feat("mca", "mca", 1, D, 14),
    feat("cmov", "cmov", 1, D, 15),
    feat("pat", "pat", 1, D, 16),
    feat("pse36", "pse36", 1, D, 17),
    feat("clflush", "clflush", 1, D, 19),
    feat("mmx", "mmx", 1, D, 23),
    feat("fxsr", "fxsr", 1, D, 24),
    feat("sse", "sse", 1, D, 25),
    feat("sse2", "sse2", 1, D, 26),
    feat("ht", "ht", 1, D, 28),
    feat("sse3", "pni", 1, C, 0),
    feat("pclmulqdq", "pclmulqdq", 1, C, 1),
    feat("monitor", "monitor", 1, C, 3),
    feat("vmx", "vmx", 1, C, 5),
    feat("ssse3", "ssse3", 1, C, 9),
    feat("fma", "fma", 1, C, 12),
    feat("cx16", "cx16", 1, C, 13),
    feat("pcid", "pcid", 1, C, 17),
    feat("sse4.1", "sse4_1", 1, C, 19),
    feat("sse4.2", "sse4_2", 1, C, 20),
    feat("x2apic", "x2apic", 1, C, 21),
    feat("movbe", "movbe", 1, C, 22),
    feat("popcnt", "popcnt", 1, C, 23),
    feat("tsc-deadline", "tsc_deadline_timer", 1, C, 24),
    feat("aes", "aes", 1, C, 25),
    feat("xsave", "xsave", 1, C, 26),
    feat("avx", "avx", 1, C, 28),
    feat("f16c", "f16c", 1, C, 29),
    feat("rdrand", "rdrand", 1, C, 30),
    feat("hypervisor", "hypervisor", 1, C, 31),
    feat("fsgsbase", "fsgsbase", 7, B, 0),
    feat("tsc-adjust", "tsc_adjust", 7, B, 1),
    feat("bmi1", "bmi1", 7, B, 3),
    feat("avx2", "avx2", 7, B, 5),
    feat("smep", "smep", 7, B, 7),
    feat("bmi2", "bmi2", 7, B, 8),
    feat("erms", "erms", 7, B, 9),
    feat("invpcid", "invpcid", 7, B, 10),
    feat("smap", "smap", 7, B, 20),
    feat("umip", "umip", 7, C, 2),
    feat("pku", "pku", 7, C, 3),
    feat("la57", "la57", 7, C, 16),
    feat("rdpid", "rdpid", 7, C, 22),
    feat("pks", "", 7, C, 31), // Linux does not show it in /proc/cpuinfo
    feat("lahf-lm", "lahf_lm", 0x8000_0001, C, 0),
    feat("svm", "svm", 0x8000_0001, C, 2),
    feat("abm", "abm", 0x8000_0001, C, 5),
    feat("syscall", "syscall", 0x8000_0001, D, 11),
    feat("nx", "nx", 0x8000_0001, D, 20),
    feat("pdpe1gb", "pdpe1gb", 0x8000_0001, D, 26),
    feat("rdtscp", "rdtscp", 0x8000_0001, D, 27),
    feat("lm", "lm", 0x8000_0001, D, 29),
    feat("invtsc", "nonstop_tsc", 0x8000_0007, D, 8),
    feat("null-sel-clr-base", "", 0x8000_0021, Reg::Eax, 6),
    Feature {
        name: "xsaveopt",
        linux: "xsaveopt",
        function: 0xd,
        index: 1,
        reg: Reg::Eax,
        bit: 0,
    },
];

/// The named features a CPUID table announces.
pub fn announced(entries: &[CpuidEntry]) -> Vec<&'static Feature> {
    FEATURES.iter().filter(|f| has_bit(entries, f)).collect()
}

/// Looks a feature up by name (`tsc_deadline` and `tsc-deadline` are the same).
pub fn feature(name: &str) -> Option<&'static Feature> {
    let norm = name.replace('_', "-");
    FEATURES.iter().find(|f| f.name == norm)
}

/// Adding (`+name`) or removing (`-name`) one feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureEdit {
    pub feature: &'static str,
    pub enable: bool,
}

/// A feature edit that cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeatureError {
    #[error("CPU feature edit `{0}` must start with + or - (e.g. +x2apic,-pcid)")]
    NoSign(String),
    #[error("unknown CPU feature `{0}` (known: {known})", known = known_names())]
    Unknown(String),
    #[error("the {engine} cannot offer CPU feature `{feature}`")]
    Unsupported {
        feature: &'static str,
        engine: &'static str,
    },
}

fn known_names() -> String {
    FEATURES
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::str::FromStr for FeatureEdit {
    type Err = FeatureError;

    fn from_str(s: &str) -> Result<Self, FeatureError> {
        let s = s.trim();
        let (enable, name) = match (s.strip_prefix('+'), s.strip_prefix('-')) {
            (Some(n), _) => (true, n),
            (_, Some(n)) => (false, n),
            _ => return Err(FeatureError::NoSign(s.to_string())),
        };
        let f = feature(name).ok_or_else(|| FeatureError::Unknown(name.to_string()))?;
        Ok(FeatureEdit {
            feature: f.name,
            enable,
        })
    }
}

impl TryFrom<String> for FeatureEdit {
    type Error = FeatureError;
    fn try_from(s: String) -> Result<Self, FeatureError> {
        s.parse()
    }
}

impl std::fmt::Display for FeatureEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", if self.enable { '+' } else { '-' }, self.feature)
    }
}

/// Serialized as its text (`"+x2apic"`), the form the CLI and config files use.
impl Serialize for FeatureEdit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FeatureEdit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a comma-separated list such as `+x2apic,-pcid`.
pub fn parse_edits(list: &str) -> Result<Vec<FeatureEdit>, FeatureError> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(str::parse)
        .collect()
}

fn reg_mut(e: &mut CpuidEntry, r: Reg) -> &mut u32 {
    match r {
        Reg::Eax => &mut e.eax,
        Reg::Ebx => &mut e.ebx,
        Reg::Ecx => &mut e.ecx,
        Reg::Edx => &mut e.edx,
    }
}

fn has_bit(entries: &[CpuidEntry], f: &Feature) -> bool {
    find(entries, f.function, f.index).is_some_and(|e| {
        let mut e = *e;
        *reg_mut(&mut e, f.reg) & (1 << f.bit) != 0
    })
}

/// Checks that every `+feature` in `edits` is offered by `guest` (the entries
/// [`guest_cpuid`] computed with the edits left out): an engine is never made to claim
/// what it cannot do.
pub fn check_edits(
    guest: &[CpuidEntry],
    edits: &[FeatureEdit],
    engine: &'static str,
) -> Result<(), FeatureError> {
    for e in edits.iter().filter(|e| e.enable) {
        let f = feature(e.feature).ok_or_else(|| FeatureError::Unknown(e.feature.into()))?;
        if !has_bit(guest, f) {
            return Err(FeatureError::Unsupported {
                feature: f.name,
                engine,
            });
        }
    }
    Ok(())
}

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
    /// The user's feature edits: `-f` clears f's bit; `+f` keeps it (validated by
    /// [`check_edits`]; a feature the engine offers is on by default).
    #[serde(default)]
    pub edits: Vec<FeatureEdit>,
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
            edits: Vec::new(),
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
            edits: Vec::new(),
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
            // Hypervisor range: rebuilt below when KVM's leaves are advertised; an
            // engine's own signature passes through otherwise.
            0x4000_0000..=0x4fff_ffff if policy.kvm_pv_features.is_some() => continue,
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
    let removed = policy
        .edits
        .iter()
        .filter(|e| !e.enable)
        .filter_map(|e| feature(e.feature))
        .map(|f| CpuidMask {
            function: f.function,
            index: f.index,
            reg: f.reg,
            bits: 1 << f.bit,
        });
    for m in policy.clear.iter().copied().chain(removed) {
        for e in out
            .iter_mut()
            .filter(|e| e.function == m.function && e.index == m.index)
        {
            *reg_mut(e, m.reg) &= !m.bits;
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
        // The offer's own hypervisor leaves pass through untouched.
        assert_eq!(find(&g, HYPERVISOR_LEAF, 0).unwrap().ebx, 1);
        assert_eq!(find(&g, KVM_FEATURES_LEAF, 0).unwrap().eax, host()[10].eax);
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
    fn feature_edits_parse_remove_and_refuse_what_the_engine_lacks() {
        let edits = parse_edits("+tsc_deadline, -x2apic").unwrap();
        assert_eq!(
            edits,
            vec![
                FeatureEdit {
                    feature: "tsc-deadline",
                    enable: true
                },
                FeatureEdit {
                    feature: "x2apic",
                    enable: false
                }
            ]
        );
        assert!(matches!(
            parse_edits("x2apic"),
            Err(FeatureError::NoSign(_))
        ));
        assert!(matches!(
            parse_edits("+warp"),
            Err(FeatureError::Unknown(_))
        ));
        let mut p = CpuidPolicy::kvm();
        p.edits = edits;
        let g = guest_cpuid(&host(), 0, 1, &p);
        let l1 = find(&g, 1, 0).unwrap();
        assert_eq!(l1.ecx & leaf1::ECX_X2APIC, 0, "-x2apic clears the bit");
        assert_ne!(l1.ecx & leaf1::ECX_TSC_DEADLINE, 0);
        assert_eq!(check_edits(&g, &p.edits, "test engine"), Ok(()));
        let plus_x2apic = parse_edits("+x2apic").unwrap();
        assert_eq!(
            check_edits(&g, &plus_x2apic, "test engine"),
            Err(FeatureError::Unsupported {
                feature: "x2apic",
                engine: "test engine"
            })
        );
        let json = serde_json::to_string(&p.edits).unwrap();
        assert_eq!(json, r#"["+tsc-deadline","-x2apic"]"#);
        let back: Vec<FeatureEdit> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p.edits);
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
