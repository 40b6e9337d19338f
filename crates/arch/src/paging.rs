//! Identity-mapped page tables for entering a guest directly in long mode.
//!
//! Maps the first 4 GiB with 2 MiB pages (PML4 → one PDPT → four page directories), the
//! minimum the Linux 64-bit boot protocol asks for. 2 MiB pages rather than 1 GiB pages
//! because every x86-64 CPU and our software engine support them.

use crate::layout::{BOOT_PD_COUNT, PDPT_START, PD_START, PML4_START};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

const PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// Writes the tables and returns the CR3 value that uses them.
pub fn write_identity_tables(mem: &GuestMemoryMmap) -> Result<u64, GuestMemoryError> {
    mem.write_obj(PDPT_START | PRESENT_RW, GuestAddress(PML4_START))?;
    for pd in 0..BOOT_PD_COUNT {
        let pd_addr = PD_START + pd * 0x1000;
        mem.write_obj(pd_addr | PRESENT_RW, GuestAddress(PDPT_START + pd * 8))?;
        let mut entries = [0u8; 4096];
        for (i, chunk) in entries.chunks_exact_mut(8).enumerate() {
            let phys = ((pd << 9) + i as u64) << 21;
            chunk.copy_from_slice(&(phys | PRESENT_RW | PAGE_SIZE_2M).to_le_bytes());
        }
        mem.write_slice(&entries, GuestAddress(pd_addr))?;
    }
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables in guest memory the way the MMU would.
    fn translate(mem: &GuestMemoryMmap, cr3: u64, va: u64) -> Option<u64> {
        let pml4e: u64 = mem
            .read_obj(GuestAddress(cr3 + ((va >> 39) & 0x1ff) * 8))
            .unwrap();
        if pml4e & 1 == 0 {
            return None;
        }
        let pdpte: u64 = mem
            .read_obj(GuestAddress((pml4e & !0xfff) + ((va >> 30) & 0x1ff) * 8))
            .unwrap();
        if pdpte & 1 == 0 {
            return None;
        }
        let pde: u64 = mem
            .read_obj(GuestAddress((pdpte & !0xfff) + ((va >> 21) & 0x1ff) * 8))
            .unwrap();
        if pde & 1 == 0 || pde & PAGE_SIZE_2M == 0 {
            return None;
        }
        Some((pde & !0x1f_ffff) | (va & 0x1f_ffff))
    }

    #[test]
    fn identity_maps_first_4g() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let cr3 = write_identity_tables(&mem).unwrap();
        assert_eq!(cr3, PML4_START);
        for va in [
            0u64,
            0x1000,
            0x20_1234,
            0x1_0000_0000 - 1,
            0xfee0_0000,
            0x8000_0000,
        ] {
            assert_eq!(translate(&mem, cr3, va), Some(va), "va {va:#x}");
        }
        assert_eq!(translate(&mem, cr3, 0x1_0000_0000), None);
    }
}
