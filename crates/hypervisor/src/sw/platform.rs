//! What one emulated vCPU sees around it: the irqchip for interrupts and NMIs, its local
//! APIC (the MMIO page in xAPIC mode, wherever `IA32_APIC_BASE` puts it; MSRs 0x800..0x8ff
//! in x2APIC mode; the TPR as CR8) and the IOAPIC, the PIC/PIT ports and time, and the
//! VMM's device buses for everything else. Every access is counted under the exit reason it
//! would have on KVM.

use arch::layout;
use arch::msr::{MSR_X2APIC_BASE, MSR_X2APIC_END};
use devices::irqchip::SwIrqChip;

use crate::{ExitCounters, ExitReason, IoHandler};

/// The emulator's view of the machine during one `run` slice.
pub struct SwPlatform<'a> {
    pub io: &'a dyn IoHandler,
    pub chip: &'a SwIrqChip,
    pub cpu: usize,
    pub counters: &'a ExitCounters,
    /// Set when an access reached the VMM's devices (which may have asked to stop the VM).
    pub device_io: bool,
}

const MSR_APIC_BASE: u32 = 0x1b;
const MSR_TSC_DEADLINE: u32 = 0x6e0;

fn in_range(addr: u64, base: u64, size: u64) -> Option<u64> {
    addr.checked_sub(base).filter(|&off| off < size)
}

impl emu::Platform for SwPlatform<'_> {
    fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        self.counters.count(ExitReason::PioRead);
        if !self.chip.pio_read(port, data) {
            self.io.pio_read(port, data);
            self.device_io = true;
        }
    }

    fn pio_write(&mut self, port: u16, data: &[u8]) {
        self.counters.count(ExitReason::PioWrite);
        if !self.chip.pio_write(port, data) {
            self.io.pio_write(port, data);
            self.device_io = true;
        }
    }

    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]) {
        self.counters.count(ExitReason::MmioRead);
        if let Some(off) = self.chip.lapic_mmio_offset(self.cpu, gpa) {
            self.chip.lapic_read(self.cpu, off, data);
        } else if let Some(off) = in_range(gpa, layout::IOAPIC_BASE, layout::IOAPIC_SIZE) {
            self.chip.ioapic_read(off, data);
        } else {
            self.io.mmio_read(gpa, data);
            self.device_io = true;
        }
    }

    fn mmio_write(&mut self, gpa: u64, data: &[u8]) {
        self.counters.count(ExitReason::MmioWrite);
        if let Some(off) = self.chip.lapic_mmio_offset(self.cpu, gpa) {
            self.chip.lapic_write(self.cpu, off, data);
        } else if let Some(off) = in_range(gpa, layout::IOAPIC_BASE, layout::IOAPIC_SIZE) {
            self.chip.ioapic_write(off, data);
        } else {
            self.io.mmio_write(gpa, data);
            self.device_io = true;
        }
    }

    fn interrupt_pending(&mut self) -> bool {
        self.chip.interrupt_pending(self.cpu)
    }

    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        self.chip.acknowledge(self.cpu)
    }

    fn tsc(&mut self) -> u64 {
        self.chip.tsc_now()
    }

    fn nmi_pending(&mut self) -> bool {
        self.chip.nmi_pending(self.cpu)
    }

    fn take_nmi(&mut self) -> bool {
        self.chip.take_nmi(self.cpu)
    }

    fn cr8(&mut self) -> u64 {
        self.chip.cr8(self.cpu)
    }

    fn set_cr8(&mut self, value: u64) {
        self.chip.set_cr8(self.cpu, value);
    }

    fn apic_base_written(&mut self, value: u64) -> bool {
        self.chip.set_apic_base(self.cpu, value)
    }

    fn pause(&mut self) {
        // Give the host CPU to another thread (another vCPU this one waits for, when
        // there are more vCPUs than host CPUs), like pause-loop exiting on hardware.
        // A spinning guest often waits for time itself (`mdelay`, Linux's timer check at
        // boot): the yield may take long on a busy host, so due timers fire here rather
        // than only between slices.
        std::thread::yield_now();
        self.chip.poll_timers(self.cpu);
    }

    fn tsc_deadline_written(&mut self, deadline: u64) {
        self.chip.set_tsc_deadline(self.cpu, deadline);
    }

    fn rdmsr(&mut self, index: u32) -> Option<u64> {
        match index {
            MSR_APIC_BASE => Some(self.chip.apic_base(self.cpu)),
            MSR_TSC_DEADLINE => Some(self.chip.tsc_deadline(self.cpu)),
            MSR_X2APIC_BASE..=MSR_X2APIC_END => self.chip.lapic_msr_read(self.cpu, index),
            _ => None,
        }
    }

    fn wrmsr(&mut self, index: u32, value: u64) -> bool {
        match index {
            MSR_APIC_BASE => self.chip.set_apic_base(self.cpu, value),
            MSR_TSC_DEADLINE => {
                self.chip.set_tsc_deadline(self.cpu, value);
                true
            }
            MSR_X2APIC_BASE..=MSR_X2APIC_END => self.chip.lapic_msr_write(self.cpu, index, value),
            _ => false,
        }
    }
}
