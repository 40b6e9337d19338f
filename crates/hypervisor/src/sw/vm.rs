//! [`SwVm`]: guest RAM shared by the emulated vCPUs, and the user-space irqchip.

use std::sync::Arc;

use arch::cpuid::{CpuidEntry, CpuidPolicy, FeatureEdit, FLAG_SIGNIFICANT_INDEX};
use devices::irqchip::{MonotonicClock, SwIrqChip};
use devices::InterruptSink;
use vm_memory::GuestMemoryMmap;

use super::vcpu::SwVcpu;
use crate::{EngineKind, Error, Vcpu, Vm};

/// The guest TSC frequency the software engine advertises (wall-clock based).
pub const TSC_HZ: u64 = 1_000_000_000;

/// How the engine is named in errors about CPU features.
const ENGINE: &str = "software engine";

/// A VM on the software engine.
pub struct SwVm {
    ram: emu::GuestRam,
    chip: Arc<SwIrqChip>,
    cpus: u8,
    policy: CpuidPolicy,
}

/// The platform policy for software vCPUs: the engine's CPUID offer, gated by what the
/// user-space irqchip implements, with the user's feature edits.
fn policy(edits: &[FeatureEdit]) -> CpuidPolicy {
    let mut p = CpuidPolicy::plain();
    p.tsc_deadline = true;
    p.x2apic = SwIrqChip::X2APIC;
    p.edits = edits.to_vec();
    p
}

fn to_arch(e: &emu::CpuidLeaf) -> CpuidEntry {
    CpuidEntry {
        function: e.function,
        index: e.index,
        flags: if e.significant_index {
            FLAG_SIGNIFICANT_INDEX
        } else {
            0
        },
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
    }
}

fn to_emu(e: &CpuidEntry) -> emu::CpuidLeaf {
    emu::CpuidLeaf {
        function: e.function,
        index: e.index,
        significant_index: e.flags & FLAG_SIGNIFICANT_INDEX != 0,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
    }
}

/// The platform-policy view of vCPU `id` of `cpus`: the engine's offer through `policy`.
fn guest_entries(id: u32, cpus: u32, policy: &CpuidPolicy) -> Vec<CpuidEntry> {
    let offer: Vec<CpuidEntry> = emu::cpuid::supported().iter().map(to_arch).collect();
    arch::cpuid::guest_cpuid(&offer, id, cpus, policy)
}

/// The CPUID table of software vCPU `id` of `cpus`.
pub fn vcpu_cpuid(id: u32, cpus: u32, policy: &CpuidPolicy) -> Vec<emu::CpuidLeaf> {
    guest_entries(id, cpus, policy).iter().map(to_emu).collect()
}

/// The CPUID table a software vCPU of a 1-vCPU VM gets with `cpu_features`: the CPU
/// model the software engine presents (documented in `docs/cpuid.md`).
pub fn cpuid_model(cpu_features: &[FeatureEdit]) -> Vec<CpuidEntry> {
    guest_entries(0, 1, &policy(cpu_features))
}

impl SwVm {
    /// A VM of `cpus` vCPUs; `cpu_features` edits the CPU model (refused when they add
    /// what the engine does not implement).
    pub fn new(
        mem: &GuestMemoryMmap,
        cpus: u8,
        cpu_features: &[FeatureEdit],
    ) -> Result<SwVm, Error> {
        let policy = policy(cpu_features);
        let mut unedited = policy.clone();
        unedited.edits.clear();
        let guest = guest_entries(0, u32::from(cpus), &unedited);
        arch::cpuid::check_edits(&guest, cpu_features, ENGINE)?;
        // IA32_APIC_BASE accepts what this CPU model offers: x2APIC mode only if CPUID
        // announces it after the user's edits, base bits up to the physical-address width.
        let edited = vcpu_cpuid(0, u32::from(cpus), &policy);
        let leaf = |f: u32| edited.iter().find(|l| l.function == f && l.index == 0);
        let x2apic = leaf(1).is_some_and(|l| l.ecx & arch::cpuid::leaf1::ECX_X2APIC != 0);
        let phys_bits =
            leaf(0x8000_0008).map_or(SwIrqChip::DEFAULT_PHYS_ADDR_BITS, |l| (l.eax & 0xff) as u8);
        let clock = Arc::new(MonotonicClock::new());
        let chip = SwIrqChip::new(usize::from(cpus), TSC_HZ, clock)
            .map_err(|e| Error::Sw(e.to_string()))?
            .with_apic_base_limits(x2apic, phys_bits);
        Ok(SwVm {
            ram: emu::GuestRam::new(mem),
            chip: Arc::new(chip),
            cpus,
            policy,
        })
    }

    /// The interrupt fabric (for devices that send MSIs, and for snapshots).
    pub fn irqchip(&self) -> &Arc<SwIrqChip> {
        &self.chip
    }
}

impl Vm for SwVm {
    fn engine(&self) -> EngineKind {
        EngineKind::Sw
    }

    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>, Error> {
        if id >= u32::from(self.cpus) {
            return Err(Error::InvalidState(format!(
                "vCPU {id} requested but the VM has {} vCPUs",
                self.cpus
            )));
        }
        let cpuid = vcpu_cpuid(id, u32::from(self.cpus), &self.policy);
        Ok(Box::new(SwVcpu::new(
            id,
            self.ram.clone(),
            self.chip.clone(),
            cpuid,
        )))
    }

    fn interrupt_sink(&self) -> Arc<dyn InterruptSink> {
        self.chip.clone()
    }

    fn note_guest_write(&self, gpa: u64, len: u64) {
        self.ram.note_external_write(gpa, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/cpuid.md` lists every named feature with whether the software engine offers
    /// it; the table must match the model the engine really presents.
    #[test]
    fn the_documented_cpuid_table_matches_the_model() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cpuid.md");
        let doc = std::fs::read_to_string(path).expect("docs/cpuid.md exists");
        let model = cpuid_model(&[]);
        let announced = arch::cpuid::announced(&model);
        let mut wrong = Vec::new();
        for f in arch::cpuid::FEATURES {
            let offered = announced.iter().any(|a| a.name == f.name);
            let row = doc
                .lines()
                .find(|l| l.split('|').nth(4).map(str::trim) == Some(&format!("`{}`", f.name)));
            let says = row.and_then(|r| r.split('|').nth(6)).map(str::trim);
            let want = if offered { "yes" } else { "no" };
            if says != Some(want) {
                wrong.push(format!(
                    "| {:#x}{} | {:?} | {} | `{}` | {} | {want} | |",
                    f.function,
                    if f.index != 0 {
                        format!(".{}", f.index)
                    } else {
                        String::new()
                    },
                    f.reg,
                    f.bit,
                    f.name,
                    f.linux
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "rows to fix in docs/cpuid.md:\n{}",
            wrong.join("\n")
        );
    }
}
