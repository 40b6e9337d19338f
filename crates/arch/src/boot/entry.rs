//! The register state a boot protocol hands control over with.
//!
//! Two shapes: 64-bit long mode with identity paging (Linux 64-bit boot protocol) and
//! flat 32-bit protected mode with paging off (PVH and Multiboot). Segment caches come
//! from the boot GDT actually written to guest memory.

use crate::gdt::BootSegments;
use crate::layout::{BOOT_IDT_START, BOOT_STACK_POINTER};
use crate::msr::{apic_base, boot_msrs, MSR_IA32_APICBASE};
use crate::regs::{cr0, cr4, efer, CpuState, DescriptorTable, Segment, RFLAGS_RESERVED, RSP};

fn base_state(segs: &BootSegments, entry: u64) -> CpuState {
    let mut msrs = boot_msrs();
    msrs.push((MSR_IA32_APICBASE, apic_base(0)));
    let mut s = CpuState {
        rip: entry,
        rflags: RFLAGS_RESERVED,
        cs: segs.code,
        ds: segs.data,
        es: segs.data,
        fs: segs.data,
        gs: segs.data,
        ss: segs.data,
        tr: segs.tss,
        ldt: Segment {
            type_: 2,
            present: true,
            limit: 0xffff,
            unusable: true,
            ..Default::default()
        },
        gdt: segs.gdtr,
        idt: DescriptorTable {
            base: BOOT_IDT_START,
            limit: 0,
        },
        msrs,
        ..Default::default()
    };
    s.gpr[RSP] = BOOT_STACK_POINTER;
    s
}

/// Long mode, paging on with `cr3`, at `entry`.
pub fn long_mode(segs: &BootSegments, cr3: u64, entry: u64) -> CpuState {
    let mut s = base_state(segs, entry);
    s.cr0 = cr0::PE | cr0::ET | cr0::NE | cr0::PG;
    s.cr3 = cr3;
    s.cr4 = cr4::PAE;
    s.efer = efer::LME | efer::LMA;
    s
}

/// 32-bit protected mode, paging off, at `entry`.
pub fn protected_mode(segs: &BootSegments, entry: u64) -> CpuState {
    let mut s = base_state(segs, entry);
    s.cr0 = cr0::PE | cr0::ET | cr0::NE;
    s
}
