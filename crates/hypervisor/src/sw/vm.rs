//! [`SwVm`]: guest RAM shared by the emulated vCPUs, and the user-space irqchip.

use std::sync::Arc;

use devices::irqchip::{MonotonicClock, SwIrqChip};
use devices::InterruptSink;
use vm_memory::GuestMemoryMmap;

use super::vcpu::SwVcpu;
use crate::{EngineKind, Error, Vcpu, Vm};

/// The guest TSC frequency the software engine advertises (wall-clock based).
pub const TSC_HZ: u64 = 1_000_000_000;

/// A VM on the software engine.
pub struct SwVm {
    ram: emu::GuestRam,
    chip: Arc<SwIrqChip>,
    cpus: u8,
}

impl SwVm {
    pub fn new(mem: &GuestMemoryMmap, cpus: u8) -> Result<SwVm, Error> {
        let clock = Arc::new(MonotonicClock::new());
        let chip = SwIrqChip::new(usize::from(cpus), TSC_HZ, clock)
            .map_err(|e| Error::Sw(e.to_string()))?;
        Ok(SwVm {
            ram: emu::GuestRam::new(mem),
            chip: Arc::new(chip),
            cpus,
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
        Ok(Box::new(SwVcpu::new(
            id,
            self.ram.clone(),
            self.chip.clone(),
        )))
    }

    fn interrupt_sink(&self) -> Arc<dyn InterruptSink> {
        self.chip.clone()
    }

    fn note_guest_write(&self, gpa: u64, len: u64) {
        self.ram.note_external_write(gpa, len);
    }
}
