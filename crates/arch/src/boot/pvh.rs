//! The PVH start info (`hvm_start_info`, version 1) with its memory map and module list.
//!
//! Layout inside the boot-info page: start info at +0, the initrd module entry at +0x40,
//! the memory map from +0x80.

use super::{guest_write, BootData, BootError};
use crate::layout::{BOOT_INFO_SIZE, BOOT_INFO_START};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
const MODLIST_OFFSET: u64 = 0x40;
const MEMMAP_OFFSET: u64 = 0x80;
const MEMMAP_ENTRY_SIZE: u64 = 24;

/// Writes the start info and returns its address (for EBX).
pub(super) fn write_start_info(mem: &GuestMemoryMmap, data: &BootData) -> Result<u64, BootError> {
    let max_entries = ((BOOT_INFO_SIZE - MEMMAP_OFFSET) / MEMMAP_ENTRY_SIZE) as usize;
    let e820 = &data.e820[..data.e820.len().min(max_entries)];
    let memmap = BOOT_INFO_START + MEMMAP_OFFSET;
    for (i, e) in e820.iter().enumerate() {
        let at = memmap + i as u64 * MEMMAP_ENTRY_SIZE;
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.type_,
            reserved: 0,
        };
        mem.write_obj(entry, GuestAddress(at))
            .map_err(guest_write(at))?;
    }
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: data.cmdline_addr,
        rsdp_paddr: data.rsdp_addr.unwrap_or(0),
        memmap_paddr: memmap,
        memmap_entries: e820.len() as u32,
        ..Default::default()
    };
    if let Some((addr, size)) = data.initrd {
        let at = BOOT_INFO_START + MODLIST_OFFSET;
        let module = hvm_modlist_entry {
            paddr: addr,
            size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(at))
            .map_err(guest_write(at))?;
        info.nr_modules = 1;
        info.modlist_paddr = at;
    }
    mem.write_obj(info, GuestAddress(BOOT_INFO_START))
        .map_err(guest_write(BOOT_INFO_START))?;
    Ok(BOOT_INFO_START)
}
