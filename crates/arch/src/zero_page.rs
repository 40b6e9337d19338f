//! The Linux zero page (`struct boot_params`) for the 64-bit boot protocol.
//!
//! Used for both ELF vmlinux (header made up here) and bzImage (header copied from the
//! image, as the boot protocol asks). The layout comes from linux-loader's bindings.

use crate::e820::E820Entry;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};

/// `HdrS`.
pub const HDRS_MAGIC: u32 = 0x5372_6448;
pub const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// "Undefined" boot loader ID.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// loadflags: protected-mode code loaded at 1 MiB.
pub const LOADED_HIGH: u8 = 0x01;
/// loadflags: heap_end_ptr is valid.
pub const CAN_USE_HEAP: u8 = 0x80;
/// Alignment a relocatable kernel asks for when it has no header to say so.
pub const DEFAULT_KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// Boot protocol version claimed for ELF kernels that bring no header (2.15).
pub const ELF_PROTOCOL_VERSION: u16 = 0x020f;

/// What goes into the zero page besides the setup header.
#[derive(Clone, Debug, Default)]
pub struct ZeroPageParams<'a> {
    pub e820: &'a [E820Entry],
    pub cmdline_addr: u64,
    /// Length of the command line without its NUL.
    pub cmdline_len: u32,
    pub initrd: Option<(u64, u64)>,
    pub rsdp_addr: Option<u64>,
}

/// Builds boot_params. `hdr` is the bzImage's setup header, or `None` for an ELF kernel.
pub fn build(hdr: Option<setup_header>, p: &ZeroPageParams) -> boot_params {
    let mut params = boot_params::default();
    match hdr {
        Some(h) => {
            params.hdr = h;
            params.hdr.loadflags |= LOADED_HIGH;
        }
        None => {
            params.hdr.header = HDRS_MAGIC;
            params.hdr.version = ELF_PROTOCOL_VERSION;
            params.hdr.kernel_alignment = DEFAULT_KERNEL_ALIGNMENT;
            params.hdr.loadflags = LOADED_HIGH;
        }
    }
    params.hdr.boot_flag = BOOT_FLAG_MAGIC;
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr = p.cmdline_addr as u32;
    params.ext_cmd_line_ptr = (p.cmdline_addr >> 32) as u32;
    params.hdr.cmdline_size = p.cmdline_len;
    if let Some((addr, size)) = p.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    if let Some(rsdp) = p.rsdp_addr {
        params.acpi_rsdp_addr = rsdp;
    }
    let mut table = params.e820_table;
    let n = p.e820.len().min(table.len());
    for (slot, e) in table.iter_mut().zip(p.e820.iter()) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.type_,
        };
    }
    params.e820_table = table;
    params.e820_entries = n as u8;
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e820::e820_map;

    #[test]
    fn elf_zero_page_fields() {
        let map = e820_map(64 << 20).unwrap();
        let p = build(
            None,
            &ZeroPageParams {
                e820: &map,
                cmdline_addr: 0x20000,
                cmdline_len: 12,
                initrd: Some((0x300_0000, 0x1234)),
                rsdp_addr: Some(0xe0000),
            },
        );
        let hdr = p.hdr;
        assert_eq!({ hdr.header }, HDRS_MAGIC);
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.type_of_loader }, 0xff);
        assert_eq!({ hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ hdr.ramdisk_image }, 0x300_0000);
        assert_eq!({ hdr.ramdisk_size }, 0x1234);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(p.e820_entries as usize, map.len());
        let t = p.e820_table;
        assert_eq!({ t[2].addr }, 0x10_0000);
        assert_eq!({ t[2].r#type }, 1);
    }

    #[test]
    fn bzimage_header_is_kept_and_patched() {
        let h = setup_header {
            setup_sects: 27,
            version: 0x020f,
            header: HDRS_MAGIC,
            type_of_loader: 0,
            kernel_alignment: 0x20_0000,
            ..Default::default()
        };
        let p = build(Some(h), &ZeroPageParams::default());
        let hdr = p.hdr;
        assert_eq!({ hdr.setup_sects }, 27);
        assert_eq!({ hdr.kernel_alignment }, 0x20_0000);
        assert_eq!({ hdr.type_of_loader }, 0xff);
        assert_eq!(hdr.loadflags & LOADED_HIGH, LOADED_HIGH);
    }
}
