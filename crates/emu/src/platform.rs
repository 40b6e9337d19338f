//! The interface through which the CPU reaches everything that is not itself or RAM:
//! port I/O, MMIO, the interrupt controller (including the TPR behind CR8) and time.

/// What a vCPU needs from the machine around it. One per vCPU thread, used with `&mut`.
pub trait Platform {
    /// Port input; `data.len()` is 1, 2 or 4.
    fn pio_read(&mut self, port: u16, data: &mut [u8]);
    /// Port output; `data.len()` is 1, 2 or 4.
    fn pio_write(&mut self, port: u16, data: &[u8]);
    /// Read from a guest-physical address outside RAM; `data.len()` is 1..=8 (wider
    /// guest accesses are split into 8-byte pieces, page-crossing ones at the boundary).
    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]);
    /// Write to a guest-physical address outside RAM; `data.len()` is 1..=8.
    fn mmio_write(&mut self, gpa: u64, data: &[u8]);
    /// Whether the INTR line is asserted (LAPIC or PIC has a deliverable interrupt). Called
    /// at block boundaries while RFLAGS.IF=1, so it must be cheap.
    fn interrupt_pending(&mut self) -> bool;
    /// INTA: the CPU takes the highest-priority pending interrupt; None if it went away.
    fn acknowledge_interrupt(&mut self) -> Option<u8>;
    /// Guest TSC value now (must be monotonic; the engine adds the guest's TSC offset).
    fn tsc(&mut self) -> u64;
    /// The guest writes IA32_APIC_BASE (0x1b); `false` refuses the value (#GP). The engine
    /// keeps the accepted value (CPUID.1:EDX.APIC follows its enable bit).
    fn apic_base_written(&mut self, _value: u64) -> bool {
        true
    }
    /// Whether an NMI waits (checked at every block boundary, whatever RFLAGS.IF: cheap).
    fn nmi_pending(&mut self) -> bool {
        false
    }
    /// The CPU takes one waiting NMI; false if none waited.
    fn take_nmi(&mut self) -> bool {
        false
    }
    /// CR8: the local APIC's task priority class (TPR[7:4]), which the platform owns.
    fn cr8(&mut self) -> u64 {
        0
    }
    /// MOV to CR8 with `value` in 0..=15 (the engine raised #GP for larger values).
    fn set_cr8(&mut self, _value: u64) {}
    /// The guest wrote IA32_TSC_DEADLINE (0x6e0) with a guest-TSC value (0 disarms).
    fn tsc_deadline_written(&mut self, _deadline: u64) {}

    /// The guest executed PAUSE (it is spinning on something another vCPU will change).
    fn pause(&mut self) {}
    /// An MSR the engine does not implement itself (e.g. x2APIC range). `None` = #GP.
    fn rdmsr(&mut self, _index: u32) -> Option<u64> {
        None
    }
    /// An MSR write the engine does not implement itself. `false` = #GP.
    fn wrmsr(&mut self, _index: u32, _value: u64) -> bool {
        false
    }
}
