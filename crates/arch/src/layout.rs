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
/// PCI configuration mechanism #1: CONFIG_ADDRESS at 0xcf8, CONFIG_DATA at 0xcfc. One
/// chipset device owns the 8 ports, [`RESET_CONTROL`] included.
pub const PCI_CONFIG_PORTS: u16 = 0xcf8;
pub const PCI_CONFIG_PORTS_LEN: u8 = 8;
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
/// The PCI host bridge's memory window, where the guest places PCI BARs: the bottom of the
/// 32-bit MMIO hole, below [`MMIO_DEVICES_START`].
pub const PCI_MMIO_START: u64 = MMIO_HOLE_START;
pub const PCI_MMIO_SIZE: u64 = MMIO_DEVICES_START - PCI_MMIO_START;
/// PCI Express enhanced configuration space (ECAM, the MCFG table's window) for bus 0
/// only: 32 devices x 8 functions x 4 KiB. Above the virtio-mmio devices, below the IOAPIC.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
pub const PCI_ECAM_BUSES: u16 = 1;
pub const PCI_ECAM_SIZE: u64 = (PCI_ECAM_BUSES as u64) << 20;
/// PCI INTx lines use the IOAPIC pins above the ISA IRQs, GSI 16..23, level-triggered.
pub const PCI_INTX_GSI_BASE: u32 = 16;
pub const PCI_INTX_GSI_COUNT: u32 = 8;

/// The GSI of interrupt pin `pin` (0 = INTA# .. 3 = INTD#) of the device in PCI slot `slot`
/// of bus 0: the usual swizzle over the eight PCI GSIs, so the INTA# lines of slots 1..8
/// are all different. The DSDT's `_PRT` says the same.
pub const fn pci_intx_gsi(slot: u8, pin: u8) -> u32 {
    PCI_INTX_GSI_BASE + (slot as u32 + pin as u32) % PCI_INTX_GSI_COUNT
}

// ---- low memory used by the loader (all below the EBDA) ----
//
// 0x0000_0500  boot GDT (4 entries)            0x0000_0520  boot IDT (empty, limit 0)
// 0x0000_6000  boot info page: PVH hvm_start_info or Multiboot info, with their memory
//              map and module list
// 0x0000_7000  Linux zero page (boot_params)
// 0x0000_8000  boot stack (grows down from BOOT_STACK_POINTER)
// 0x0000_9000  PML4, 0xa000 PDPT, 0xb000..0xf000 four page directories (2 MiB pages)
// 0x0002_0000  kernel command line (up to CMDLINE_MAX_SIZE bytes)
// 0x0009_fc00  EBDA (reserved in e820)
// 0x000e_0000  ACPI: RSDP first, then XSDT, FADT, MADT, DSDT
// 0x000f_0000  MP floating pointer and MP configuration table
// 0x0010_0000  kernel (HIGH_RAM_START)

/// Boot GDT: null, null, 64-bit code (0x10), data (0x18), TSS placeholder.
pub const BOOT_GDT_START: u64 = 0x500;
/// Boot IDT (empty; the kernel installs its own).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH start info or Multiboot info, plus their memory maps and module lists (one page).
pub const BOOT_INFO_START: u64 = 0x6000;
pub const BOOT_INFO_SIZE: u64 = 0x1000;
/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for entries that want one (top of 0x8000..0x9000).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables: PML4, PDPT, then `BOOT_PD_COUNT` page directories.
pub const PML4_START: u64 = 0x9000;
pub const PDPT_START: u64 = 0xa000;
pub const PD_START: u64 = 0xb000;
/// Page directories of 2 MiB pages: 4 map the first 4 GiB.
pub const BOOT_PD_COUNT: u64 = 4;
/// Kernel command line and its maximum length including the terminating NUL.
pub const CMDLINE_START: u64 = 0x20000;
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Extended BIOS data area; from here to 1 MiB is reserved.
pub const EBDA_START: u64 = 0x9fc00;
/// Legacy VGA/BIOS area reserved in e820.
pub const LEGACY_RESERVED_START: u64 = 0xa0000;
/// ACPI tables area (RSDP at its start) and its size.
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_SIZE: u64 = 0x10000;
/// MP floating pointer and configuration table.
pub const MPTABLE_START: u64 = 0xf0000;
pub const MPTABLE_SIZE: u64 = 0x10000;
/// First byte above the legacy area; kernels load here or higher.
pub const HIGH_RAM_START: u64 = 0x10_0000;

// ---- guest memory size limits ----
/// Smallest guest: 16 MiB (room for the low tables, a kernel and an initrd).
pub const MIN_MEM_SIZE: u64 = 16 << 20;
/// Largest guest: 1 TiB, well inside the 46 address bits of common hosts and of the
/// software engine's physical address width.
pub const MAX_MEM_SIZE: u64 = 1 << 40;
