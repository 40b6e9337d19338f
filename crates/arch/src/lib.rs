//! The x86-64 platform wirt presents to a guest, independent of the engine that runs it:
//! the guest-physical memory map, boot protocols (Linux 64-bit, PVH, bzImage, Multiboot),
//! GDT and identity page tables, the CPUID and MSR policy, and the MP and ACPI tables.
//!
//! Everything here writes into guest memory or returns plain data; nothing here talks to
//! KVM or to the software engine. Both engines start a vCPU from a [`regs::CpuState`];
//! [`platform::setup`] does the whole job for the VMM.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod e820;
pub mod gdt;
pub mod layout;
pub mod memory;
pub mod mptable;
pub mod msr;
pub mod paging;
pub mod platform;
pub mod regs;
pub mod zero_page;
