//! Where things are in the guest's physical address space and I/O port space.
//!
//! One table for the whole platform: the loader, the ACPI/MP tables and the VMM's device
//! placement all read these constants, so the guest's firmware tables always describe the
//! devices that are really there.

// ---- I/O ports ----
/// 8259 PIC master command/data, slave command/data.
pub const PIC_MASTER: u16 = 0x20;
pub const PIC_SLAVE: u16 = 0xa0;
/// 8259 edge/level control registers (ELCR), two bytes.
pub const PIC_ELCR: u16 = 0x4d0;
/// 8254 PIT channels 0..2 and mode register.
pub const PIT_BASE: u16 = 0x40;
/// NMI status and control / speaker gate (PIT channel 2 gate and output).
pub const PORT_61: u16 = 0x61;
/// i8042 keyboard controller data and command ports (reset via command 0xfe).
pub const I8042_DATA: u16 = 0x60;
pub const I8042_COMMAND: u16 = 0x64;
/// CMOS RTC index and data.
pub const RTC_INDEX: u16 = 0x70;
/// POST code port; Linux writes it for I/O delays. Accepted and ignored.
pub const POST_CODE: u16 = 0x80;
/// QEMU-compatible isa-debug-exit: writing V ends the VM with status (V << 1) | 1.
pub const DEBUG_EXIT: u16 = 0xf4;
/// wirt boot-timer port: the guest's first write marks "guest ready".
pub const BOOT_TIMER: u16 = 0x440;
/// ACPI PM1a event block (status, enable: 2 bytes each).
pub const ACPI_PM1A_EVT: u16 = 0x600;
pub const ACPI_PM1A_EVT_LEN: u8 = 4;
/// ACPI PM1a control block (2 bytes): SLP_TYP in bits 10..12, SLP_EN bit 13.
pub const ACPI_PM1A_CNT: u16 = 0x604;
pub const ACPI_PM1A_CNT_LEN: u8 = 2;
/// ACPI PM timer (3.579545 MHz, 32-bit).
pub const ACPI_PM_TMR: u16 = 0x608;
pub const ACPI_PM_TMR_LEN: u8 = 4;
/// The SLP_TYP value that means S5 (soft off) in our DSDT's \_S5 package.
pub const ACPI_S5_SLP_TYP: u8 = 5;
/// ACPI SCI interrupt (ISA IRQ).
pub const ACPI_SCI_IRQ: u8 = 9;
/// Reset control register (FADT RESET_REG); writing 0x06 resets.
pub const RESET_CONTROL: u16 = 0xcf9;
pub const RESET_VALUE: u8 = 0x06;
/// COM1..COM4.
pub const COM1: u16 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
pub const I8042_IRQ: u32 = 1;
pub const RTC_IRQ: u32 = 8;
pub const PIT_IRQ: u32 = 0;

// ---- guest-physical addresses ----
/// Start of the 32-bit MMIO hole; RAM beyond this goes above 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// IOAPIC registers.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Local APIC registers (each vCPU sees its own).
pub const LAPIC_BASE: u64 = 0xfee0_0000;
pub const LAPIC_SIZE: u64 = 0x1000;
/// Where virtio-mmio and other MMIO devices are placed.
pub const MMIO_DEVICES_START: u64 = 0xd000_0000;
