//! ELF vmlinux loading (through linux-loader) and the zero page for the Linux 64-bit boot
//! protocol, which bzImage kernels share.

use super::elf::ElfInfo;
use super::{guest_write, BootData, BootError, LoadedKernel};
use crate::layout::{CMDLINE_MAX_SIZE, HIGH_RAM_START, ZERO_PAGE_START};
use crate::zero_page::{self, ZeroPageParams};
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{Elf, KernelLoader};
use std::io::Cursor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Highest initrd address for an ELF kernel, which brings no `initrd_addr_max`: the
/// 32-bit `ramdisk_image` field's limit.
const ELF_INITRD_ADDR_MAX: u64 = 0xffff_ffff;

/// Loads an ELF64 vmlinux at its physical addresses.
pub(super) fn load_elf(
    mem: &GuestMemoryMmap,
    image: &[u8],
    info: &ElfInfo,
    low_end: u64,
) -> Result<LoadedKernel, BootError> {
    for s in &info.segments {
        let end = s.paddr.checked_add(s.memsz);
        if s.paddr < HIGH_RAM_START || end.is_none_or(|e| e > low_end) {
            return Err(BootError::Elf(super::ElfError::Unsupported(format!(
                "segment at {:#x} (+{:#x}) is outside guest RAM [{HIGH_RAM_START:#x}, {low_end:#x})",
                s.paddr, s.memsz
            ))));
        }
    }
    let res = Elf::load(
        mem,
        None,
        &mut Cursor::new(image),
        Some(GuestAddress(HIGH_RAM_START)),
    )?;
    // linux-loader copies p_filesz bytes; clear the rest of each segment (bss).
    for s in &info.segments {
        let bss = (s.memsz - s.filesz) as usize;
        if bss > 0 {
            mem.write_slice(&vec![0u8; bss], GuestAddress(s.paddr + s.filesz))
                .map_err(guest_write(s.paddr + s.filesz))?;
        }
    }
    let start = info
        .segments
        .iter()
        .map(|s| s.paddr)
        .min()
        .unwrap_or(res.kernel_load.0);
    // Include segments linux-loader skips (p_filesz == 0, pure bss).
    let end = info
        .segments
        .iter()
        .map(|s| s.paddr + s.memsz)
        .max()
        .unwrap_or(0)
        .max(res.kernel_end);
    Ok(LoadedKernel {
        entry: res.kernel_load.0,
        start,
        end,
        setup_header: None,
        initrd_addr_max: ELF_INITRD_ADDR_MAX,
        cmdline_max: CMDLINE_MAX_SIZE - 1,
    })
}

/// Writes boot_params at [`ZERO_PAGE_START`] and returns its address.
pub(super) fn write_zero_page(
    mem: &GuestMemoryMmap,
    hdr: Option<setup_header>,
    data: &BootData,
) -> Result<u64, BootError> {
    let params = zero_page::build(
        hdr,
        &ZeroPageParams {
            e820: data.e820,
            cmdline_addr: data.cmdline_addr,
            cmdline_len: data.cmdline_len as u32,
            initrd: data.initrd,
            rsdp_addr: data.rsdp_addr,
        },
    );
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(guest_write(ZERO_PAGE_START))?;
    Ok(ZERO_PAGE_START)
}
