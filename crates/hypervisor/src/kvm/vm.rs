//! One KVM virtual machine: guest RAM in memory slots, the in-kernel irqchip and PIT, the
//! interrupt lines devices drive, and vCPU creation.

use std::sync::Arc;

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_msi, kvm_pit_config, kvm_userspace_memory_region, CpuId,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};

use super::vcpu::{write_msrs, KvmVcpu};
use super::{cpuid, eventfds, kick, kvm_err, lapic, state};
use crate::{EngineKind, Error, Vcpu, Vm};
use devices::InterruptSink;
use vmm_sys_util::eventfd::EventFd;

/// Where KVM puts the three pages of the real-mode TSS (VMX only), just below the BIOS.
const TSS_ADDRESS: usize = 0xfffb_d000;
/// Where KVM puts the identity page table for unpaged protected mode (VMX only).
const IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
/// GSIs the in-kernel IOAPIC has pins for (ISA 0..15 also reach the PIC).
const MAX_GSI: u32 = 24;

/// A VM running on KVM.
#[derive(Debug)]
pub struct KvmVm {
    fd: Arc<VmFd>,
    /// Keeps the memory mapped as long as KVM's slots point at it.
    mem: GuestMemoryMmap,
    cpus: u8,
    supported_cpuid: Vec<kvm_cpuid_entry2>,
    /// MSRs KVM can save and restore on this host.
    msr_index: Arc<[u32]>,
    pvm: bool,
    /// The user's CPU feature edits, applied to every vCPU's CPUID.
    cpu_features: Vec<arch::cpuid::FeatureEdit>,
    sink: Arc<KvmInterruptSink>,
}

impl KvmVm {
    pub(crate) fn new(
        fd: VmFd,
        mem: &GuestMemoryMmap,
        cpus: u8,
        supported_cpuid: Vec<kvm_cpuid_entry2>,
        msr_index: Vec<u32>,
        pvm: bool,
    ) -> Result<Self, Error> {
        for (slot, region) in mem.iter().enumerate() {
            let host = region
                .get_host_address(MemoryRegionAddress(0))
                .map_err(|e| Error::InvalidState(format!("guest memory region: {e}")))?;
            let slot = u32::try_from(slot)
                .map_err(|_| Error::InvalidState("too many memory regions".into()))?;
            let desc = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mapping of exactly `len` bytes, and `KvmVm` keeps a
            // clone of `mem` (sharing the mappings) for as long as the VM fd exists, so the
            // memory KVM points at stays mapped. Regions of a GuestMemoryMmap do not overlap.
            unsafe { fd.set_user_memory_region(desc) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        fd.set_tss_address(TSS_ADDRESS)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        fd.set_identity_map_address(IDENTITY_MAP_ADDRESS)
            .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
        fd.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        fd.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(kvm_err("KVM_CREATE_PIT2"))?;
        kick::install_handler()?;
        let msi = fd.check_extension(Cap::SignalMsi);
        let fd = Arc::new(fd);
        Ok(KvmVm {
            sink: Arc::new(KvmInterruptSink {
                vm: fd.clone(),
                msi,
            }),
            fd,
            mem: mem.clone(),
            cpus,
            supported_cpuid,
            msr_index: msr_index.into(),
            pvm,
            cpu_features: Vec::new(),
        })
    }

    /// The underlying KVM VM, for what the trait does not cover (irqfd, ioeventfd, GSI
    /// routing, clock and irqchip state for snapshots).
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// The CPUID policy of this VM's vCPUs.
    fn policy(&self) -> arch::cpuid::CpuidPolicy {
        let mut p = cpuid::policy(self.pvm);
        p.edits = self.cpu_features.clone();
        p
    }

    /// Sets the user's CPU feature edits, refused when one adds what this KVM cannot
    /// offer.
    pub fn set_cpu_features(&mut self, edits: &[arch::cpuid::FeatureEdit]) -> Result<(), Error> {
        let unedited = cpuid::arch_entries(&cpuid::for_vcpu(
            &self.supported_cpuid,
            0,
            u32::from(self.cpus),
            &cpuid::policy(self.pvm),
        ));
        arch::cpuid::check_edits(&unedited, edits, "KVM engine")?;
        self.cpu_features = edits.to_vec();
        Ok(())
    }

    /// The VM's vCPU count (the CPUID topology every vCPU sees).
    pub fn cpus(&self) -> u8 {
        self.cpus
    }

    /// Create vCPU `id` (its APIC ID) with CPUID, LAPIC LINT pins, MSRs and FPU set up as a
    /// firmware would leave them. Registers are KVM's reset state until `set_state`.
    pub fn create_kvm_vcpu(&self, id: u32) -> Result<KvmVcpu, Error> {
        if id >= u32::from(self.cpus) {
            return Err(Error::InvalidState(format!(
                "vCPU {id} requested, the VM has {} vCPUs",
                self.cpus
            )));
        }
        let fd = self
            .fd
            .create_vcpu(u64::from(id))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;

        let entries = cpuid::for_vcpu(
            &self.supported_cpuid,
            id,
            u32::from(self.cpus),
            &self.policy(),
        );
        let cpuid = CpuId::from_entries(&entries)
            .map_err(|e| Error::InvalidState(format!("CPUID table: {e:?}")))?;
        fd.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;

        let mut lapic_state = fd.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
        lapic::set_lint(&mut lapic_state);
        fd.set_lapic(&lapic_state)
            .map_err(kvm_err("KVM_SET_LAPIC"))?;

        let boot: Vec<(u32, u64)> = arch::msr::boot_msrs()
            .into_iter()
            .filter(|(index, _)| self.msr_index.contains(index))
            .collect();
        write_msrs(&fd, &boot)?;
        fd.set_fpu(&state::default_fpu())
            .map_err(kvm_err("KVM_SET_FPU"))?;

        Ok(KvmVcpu::new(
            id,
            fd,
            self.mem.clone(),
            self.msr_index.clone(),
            self.pvm,
        ))
    }
}

impl Vm for KvmVm {
    fn engine(&self) -> EngineKind {
        EngineKind::Kvm
    }

    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>, Error> {
        Ok(Box::new(self.create_kvm_vcpu(id)?))
    }

    fn interrupt_sink(&self) -> Arc<dyn InterruptSink> {
        self.sink.clone()
    }

    fn register_mmio_kick(
        &self,
        addr: u64,
        value: Option<u32>,
        kick: &EventFd,
    ) -> Result<bool, Error> {
        eventfds::register_mmio_kick(&self.fd, addr, value, kick)
    }

    fn unregister_mmio_kick(
        &self,
        addr: u64,
        value: Option<u32>,
        kick: &EventFd,
    ) -> Result<(), Error> {
        eventfds::unregister_mmio_kick(&self.fd, addr, value, kick)
    }

    fn register_level_irqfd(
        &self,
        gsi: u32,
        trigger: &EventFd,
        resample: &EventFd,
    ) -> Result<bool, Error> {
        eventfds::register_level_irqfd(&self.fd, gsi, trigger, resample)
    }
}

/// Interrupt lines into the in-kernel irqchip (`KVM_IRQ_LINE`). With KVM's default routing
/// GSIs 0..15 reach both the PIC and the IOAPIC, 16..23 the IOAPIC only. MSIs go straight to
/// the in-kernel local APICs (`KVM_SIGNAL_MSI`) where the host has that capability.
#[derive(Debug)]
pub struct KvmInterruptSink {
    vm: Arc<VmFd>,
    /// KVM_CAP_SIGNAL_MSI.
    msi: bool,
}

impl InterruptSink for KvmInterruptSink {
    fn set_level(&self, gsi: u32, level: bool) {
        if gsi < MAX_GSI {
            // KVM_IRQ_LINE only fails for a GSI without a route, which the bound excludes;
            // the trait has no error path, so a failure is dropped like an unrouted line.
            let _ = self.vm.set_irq_line(gsi, level);
        }
    }

    fn supports_msi(&self) -> bool {
        self.msi
    }

    fn send_msi(&self, addr: u64, data: u32) -> bool {
        if !self.msi {
            return false;
        }
        let msg = kvm_msi {
            address_lo: addr as u32,
            address_hi: (addr >> 32) as u32,
            data,
            ..Default::default()
        };
        // > 0: delivered; 0: blocked by the guest (e.g. its APIC is off), which is the
        // guest's business; an error means KVM found no destination for the message.
        self.vm.signal_msi(msg).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use crate::kvm::KvmHypervisor;
    use crate::Vm;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    /// KVM_SIGNAL_MSI reaches a vCPU's local APIC: the message is accepted with a vCPU to
    /// deliver to. (Skipped where /dev/kvm cannot be used.)
    #[test]
    fn msis_go_through_kvm_signal_msi() {
        let Ok(hv) = KvmHypervisor::new() else {
            println!("skipped: /dev/kvm not usable");
            return;
        };
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let vm = hv.create_vm(&mem, 1).unwrap();
        let sink = vm.interrupt_sink();
        if !sink.supports_msi() {
            println!("skipped: this KVM has no KVM_CAP_SIGNAL_MSI");
            return;
        }
        let _vcpu = vm.create_vcpu(0).unwrap();
        // Physical destination APIC 0, fixed delivery, vector 0x41.
        assert!(sink.send_msi(0xfee0_0000, 0x41));
    }
}
