//! The boot GDT and the segment registers that match it.
//!
//! Linux's boot protocols want `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18, so entries 0
//! and 1 are null, 2 is the code segment (64-bit for long-mode entries, flat 32-bit for
//! PVH and Multiboot), 3 a flat data segment and 4 a TSS placeholder (KVM on VMX needs a
//! usable TR). The descriptor-cache values put into [`CpuState`](crate::regs::CpuState)
//! are decoded from the very same descriptors written to guest memory, so they agree.

use crate::layout::BOOT_GDT_START;
use crate::regs::{DescriptorTable, Segment};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

pub const CODE_SELECTOR: u16 = 0x10;
pub const DATA_SELECTOR: u16 = 0x18;
pub const TSS_SELECTOR: u16 = 0x20;

/// Which code segment the boot GDT carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeMode {
    /// 64-bit code (L=1), for the Linux 64-bit boot protocol.
    Long,
    /// Flat 32-bit code (D=1), for PVH and Multiboot.
    Protected32,
}

/// Encodes a descriptor. `flags` holds the access byte in bits 0..8 and G, D/B, L, AVL in
/// bits 15, 14, 13, 12; `limit` is the raw 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    (((base as u64) & 0xff00_0000) << 32)
        | (((flags as u64) & 0xf0ff) << 40)
        | (((limit as u64) & 0x000f_0000) << 32)
        | (((base as u64) & 0x00ff_ffff) << 16)
        | ((limit as u64) & 0x0000_ffff)
}

/// Decodes a descriptor into the hidden-cache form, with `selector`.
pub fn segment_from_entry(entry: u64, selector: u16) -> Segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = (entry >> 55) & 1 == 1;
    let limit = if g {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    Segment {
        selector,
        base,
        limit,
        type_: ((entry >> 40) & 0xf) as u8,
        s: (entry >> 44) & 1 == 1,
        dpl: ((entry >> 45) & 3) as u8,
        present: (entry >> 47) & 1 == 1,
        avl: (entry >> 52) & 1 == 1,
        l: (entry >> 53) & 1 == 1,
        db: (entry >> 54) & 1 == 1,
        g,
        unusable: false,
    }
}

/// The boot GDT's five entries for `mode`.
pub fn boot_gdt(mode: CodeMode) -> [u64; 5] {
    let code = match mode {
        CodeMode::Long => gdt_entry(0xa09b, 0, 0xfffff),
        CodeMode::Protected32 => gdt_entry(0xc09b, 0, 0xfffff),
    };
    [
        0,
        0,
        code,
        gdt_entry(0xc093, 0, 0xfffff),
        // Busy TSS (type 0xb), 104 bytes at address 0: a placeholder the kernel replaces.
        gdt_entry(0x008b, 0, 0x67),
    ]
}

/// Segment registers derived from a boot GDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootSegments {
    pub code: Segment,
    pub data: Segment,
    pub tss: Segment,
    pub gdtr: DescriptorTable,
}

/// Writes the boot GDT for `mode` at [`BOOT_GDT_START`] and returns the matching segments.
pub fn write_boot_gdt(
    mem: &GuestMemoryMmap,
    mode: CodeMode,
) -> Result<BootSegments, GuestMemoryError> {
    let gdt = boot_gdt(mode);
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + 8 * i as u64))?;
    }
    Ok(BootSegments {
        code: segment_from_entry(gdt[2], CODE_SELECTOR),
        data: segment_from_entry(gdt[3], DATA_SELECTOR),
        tss: segment_from_entry(gdt[4], TSS_SELECTOR),
        gdtr: DescriptorTable {
            base: BOOT_GDT_START,
            limit: (gdt.len() * 8 - 1) as u16,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_code_segment() {
        let s = segment_from_entry(boot_gdt(CodeMode::Long)[2], CODE_SELECTOR);
        assert!(s.l && !s.db && s.present && s.s && s.g);
        assert_eq!(s.type_, 0xb);
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!(s.base, 0);
    }

    #[test]
    fn protected_mode_code_and_data() {
        let gdt = boot_gdt(CodeMode::Protected32);
        let c = segment_from_entry(gdt[2], CODE_SELECTOR);
        assert!(!c.l && c.db && c.g);
        let d = segment_from_entry(gdt[3], DATA_SELECTOR);
        assert_eq!(d.type_, 3);
        assert!(d.db && d.present);
        assert_eq!(d.limit, 0xffff_ffff);
    }

    #[test]
    fn entry_roundtrip_with_base() {
        let e = gdt_entry(0x4093, 0x1234_5678, 0xabcde);
        let s = segment_from_entry(e, 8);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde);
        assert!(!s.g && s.db);
    }

    #[test]
    fn gdt_lands_in_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let segs = write_boot_gdt(&mem, CodeMode::Long).unwrap();
        let e: u64 = mem.read_obj(GuestAddress(BOOT_GDT_START + 0x10)).unwrap();
        assert_eq!(e, gdt_entry(0xa09b, 0, 0xfffff));
        assert_eq!(segs.gdtr.limit, 39);
        assert_eq!(segs.tss.type_, 0xb);
        assert!(!segs.tss.s);
    }
}
