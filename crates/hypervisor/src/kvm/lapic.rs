//! Local APIC set-up a firmware would do: LINT0 delivers the 8259 PIC's interrupts (ExtINT),
//! LINT1 delivers NMIs.
//!
//! Without this the in-kernel PIC's output never reaches the BSP once the guest looks at its
//! LAPIC, and legacy timers (PIT through the PIC) stay silent.

use kvm_bindings::kvm_lapic_state;

/// Register offsets in the APIC page.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
/// Delivery mode field (bits 8..10) values and the mask bit.
const APIC_MODE_MASK: u32 = 0x700;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_LVT_MASKED: u32 = 1 << 16;

fn read_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = lapic.regs[offset + i] as u8;
    }
    u32::from_le_bytes(b)
}

fn write_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = byte as _;
    }
}

fn set_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !(APIC_MODE_MASK | APIC_LVT_MASKED)) | (mode << 8)
}

/// LINT0 = ExtINT and LINT1 = NMI, both unmasked; other bits kept.
pub fn set_lint(lapic: &mut kvm_lapic_state) {
    let lint0 = read_reg(lapic, APIC_LVT_LINT0);
    write_reg(
        lapic,
        APIC_LVT_LINT0,
        set_delivery_mode(lint0, APIC_MODE_EXTINT),
    );
    let lint1 = read_reg(lapic, APIC_LVT_LINT1);
    write_reg(
        lapic,
        APIC_LVT_LINT1,
        set_delivery_mode(lint1, APIC_MODE_NMI),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint0_extint_lint1_nmi_unmasked() {
        let mut l = kvm_lapic_state::default();
        write_reg(&mut l, APIC_LVT_LINT0, APIC_LVT_MASKED | 0x8000 | 0x31);
        write_reg(&mut l, APIC_LVT_LINT1, APIC_LVT_MASKED);
        set_lint(&mut l);
        assert_eq!(read_reg(&l, APIC_LVT_LINT0), 0x8000 | 0x700 | 0x31);
        assert_eq!(read_reg(&l, APIC_LVT_LINT1), 0x400);
        assert_eq!(read_reg(&l, 0x340), 0, "neighbours untouched");
    }
}
