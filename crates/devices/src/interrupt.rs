//! How a device raises an interrupt without knowing which engine runs the VM.
//!
//! On the KVM engine the sink is the in-kernel irqchip (`KVM_IRQ_LINE`); on the software
//! engine it is the user-space PIC/IOAPIC in this crate. Devices hold an
//! `Arc<dyn InterruptSink>` and never see the difference.

/// Something that accepts interrupt line changes, by global system interrupt number.
///
/// GSIs 0..15 are the ISA IRQs (routed to both the 8259 PIC and the IOAPIC, as on a PC);
/// GSIs 16..23 are the remaining IOAPIC pins.
pub trait InterruptSink: Send + Sync {
    /// Drive a level-triggered line high (`true`) or low (`false`).
    fn set_level(&self, gsi: u32, level: bool);

    /// An edge: the line goes high then low. The default is two `set_level` calls.
    fn pulse(&self, gsi: u32) {
        self.set_level(gsi, true);
        self.set_level(gsi, false);
    }

    /// Whether [`send_msi`](Self::send_msi) delivers: PCI devices offer MSI-X only then,
    /// and use their INTx line otherwise.
    fn supports_msi(&self) -> bool {
        false
    }

    /// Deliver a message-signalled interrupt: `addr` and `data` as a device writes them
    /// (the x86 format: 0xfeeX_XXXX with destination APIC ID, vector and delivery mode).
    /// Returns whether the message was accepted; the default engine has no MSI path.
    fn send_msi(&self, _addr: u64, _data: u32) -> bool {
        false
    }
}

/// A sink that drops every interrupt: for devices under test and for VMs without an irqchip.
#[derive(Debug, Default)]
pub struct NullInterruptSink;

impl InterruptSink for NullInterruptSink {
    fn set_level(&self, _gsi: u32, _level: bool) {}
}
