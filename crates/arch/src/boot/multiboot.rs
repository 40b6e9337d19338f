//! Multiboot v1: header detection, image loading and the `multiboot_info` structure.
//!
//! No maintained crate loads Multiboot kernels, so this is written from the Multiboot 0.6.96
//! specification. Supported: ELF images (ELF32 or ELF64 program headers, loaded at their
//! physical addresses) and the a.out kludge (header flag 16: load, bss and entry addresses
//! in the header). The info structure carries mem_lower/mem_upper, the full memory map,
//! the command line, the boot loader name and the initrd as the single module.
//! Video mode requests (flag 2) are ignored: there is no framebuffer.

use super::elf::ElfInfo;
use super::{guest_write, BootData, BootError, LoadedKernel};
use crate::e820::mem_lower_upper_kib;
use crate::layout::{
    BOOT_GDT_START, BOOT_INFO_SIZE, BOOT_INFO_START, CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START,
    HIGH_RAM_START,
};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const HEADER_MAGIC: u32 = 0x1bad_b002;
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// The header must lie entirely in the first 8 KiB, 4-byte aligned.
const SEARCH_LIMIT: usize = 8192;
const FLAG_PAGE_ALIGN: u32 = 1 << 0;
const FLAG_MEMORY_INFO: u32 = 1 << 1;
const FLAG_VIDEO_MODE: u32 = 1 << 2;
const FLAG_ADDRESS_FIELDS: u32 = 1 << 16;
const KNOWN_REQUIRED_FLAGS: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE;

const INFO_MEMORY: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MODS: u32 = 1 << 3;
const INFO_MEM_MAP: u32 = 1 << 6;
const INFO_BOOT_LOADER_NAME: u32 = 1 << 9;

/// Layout of the boot-info page.
const INFO_SIZE: u64 = 0x80;
const MODS_OFFSET: u64 = 0x80;
const LOADER_NAME_OFFSET: u64 = 0xa0;
const MODULE_STRING_OFFSET: u64 = 0xb0;
const MMAP_OFFSET: u64 = 0xc0;
const MMAP_ENTRY_SIZE: u64 = 24;
const LOADER_NAME: &[u8] = b"wirt\0";
const MODULE_STRING: &[u8] = b"initrd\0";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MultibootError {
    #[error("header requires unsupported features (flags {0:#010x})")]
    UnsupportedFlags(u32),
    #[error("the image is not ELF and its header has no address fields (flag 16)")]
    NoAddressFields,
    #[error("bad address fields: {0}")]
    BadAddressFields(String),
    #[error(
        "segment {start:#x}..{end:#x} overlaps the {table} wirt places at {table_start:#x}..{table_end:#x}"
    )]
    OverlapsBootTables {
        start: u64,
        end: u64,
        table: &'static str,
        table_start: u64,
        table_end: u64,
    },
    #[error("segment {start:#x}..{end:#x} is outside guest RAM [{low:#x}, {high:#x})")]
    OutsideRam {
        start: u64,
        end: u64,
        low: u64,
        high: u64,
    },
}

/// The address fields of a header with flag 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressFields {
    pub header_addr: u32,
    pub load_addr: u32,
    pub load_end_addr: u32,
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

/// A Multiboot header found in an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// File offset of the magic.
    pub offset: usize,
    pub flags: u32,
    pub address: Option<AddressFields>,
}

impl Header {
    pub fn uses_address_fields(&self) -> bool {
        self.address.is_some()
    }
}

fn u32_at(image: &[u8], at: usize) -> Option<u32> {
    let b = image.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Finds a valid Multiboot header (magic + flags + checksum == 0) in the first 8 KiB.
pub fn find_header(image: &[u8]) -> Option<Header> {
    let limit = image.len().min(SEARCH_LIMIT);
    (0..limit.saturating_sub(11)).step_by(4).find_map(|off| {
        if u32_at(image, off)? != HEADER_MAGIC {
            return None;
        }
        let flags = u32_at(image, off + 4)?;
        let checksum = u32_at(image, off + 8)?;
        if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) != 0 {
            return None;
        }
        let address = if flags & FLAG_ADDRESS_FIELDS != 0 {
            Some(AddressFields {
                header_addr: u32_at(image, off + 12)?,
                load_addr: u32_at(image, off + 16)?,
                load_end_addr: u32_at(image, off + 20)?,
                bss_end_addr: u32_at(image, off + 24)?,
                entry_addr: u32_at(image, off + 28)?,
            })
        } else {
            None
        };
        Some(Header {
            offset: off,
            flags,
            address,
        })
    })
}

/// What the loader itself writes below 1 MiB for a Multiboot kernel, and the legacy
/// area (EBDA, VGA, firmware tables); a kernel segment may go anywhere else in RAM, as
/// with QEMU's loader (kvm-unit-tests' `realmode` loads at 0x8000).
const RESERVED_LOW: [(u64, u64, &str); 4] = [
    (BOOT_GDT_START, BOOT_GDT_START + 0x100, "boot GDT and IDT"),
    (
        BOOT_INFO_START,
        BOOT_INFO_START + BOOT_INFO_SIZE,
        "Multiboot information",
    ),
    (
        CMDLINE_START,
        CMDLINE_START + CMDLINE_MAX_SIZE as u64,
        "kernel command line",
    ),
    (
        EBDA_START,
        HIGH_RAM_START,
        "EBDA, legacy and firmware-table area",
    ),
];

/// Writes `bytes` then `zeros` zero bytes at `addr`, checking the range lies in RAM and
/// clear of the loader's own tables.
fn place(
    mem: &GuestMemoryMmap,
    addr: u64,
    bytes: &[u8],
    zeros: u64,
    low_end: u64,
) -> Result<(), BootError> {
    let end = addr
        .checked_add(bytes.len() as u64)
        .and_then(|e| e.checked_add(zeros));
    match end {
        Some(end) if end <= low_end => {
            if let Some(&(table_start, table_end, table)) =
                RESERVED_LOW.iter().find(|(s, e, _)| addr < *e && end > *s)
            {
                return Err(MultibootError::OverlapsBootTables {
                    start: addr,
                    end,
                    table,
                    table_start,
                    table_end,
                }
                .into());
            }
        }
        _ => {
            return Err(MultibootError::OutsideRam {
                start: addr,
                end: end.unwrap_or(u64::MAX),
                low: 0,
                high: low_end,
            }
            .into())
        }
    }
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(guest_write(addr))?;
    if zeros > 0 {
        let at = addr + bytes.len() as u64;
        mem.write_slice(&vec![0u8; zeros as usize], GuestAddress(at))
            .map_err(guest_write(at))?;
    }
    Ok(())
}

/// Loads a Multiboot kernel: through the address fields if flag 16 is set, else as ELF.
pub(super) fn load(
    mem: &GuestMemoryMmap,
    image: &[u8],
    header: &Header,
    elf: Option<&ElfInfo>,
    low_end: u64,
) -> Result<LoadedKernel, BootError> {
    let unknown_required = header.flags & 0xffff & !KNOWN_REQUIRED_FLAGS;
    if unknown_required != 0 {
        return Err(MultibootError::UnsupportedFlags(header.flags).into());
    }
    let (entry, start, end) = match (header.address, elf) {
        (Some(a), _) => load_with_address_fields(mem, image, header.offset, &a, low_end)?,
        (None, Some(info)) => {
            let mut start = u64::MAX;
            let mut end = 0;
            for s in &info.segments {
                // The parser checked offset + filesz against the file length.
                let data = &image[s.offset as usize..(s.offset + s.filesz) as usize];
                place(mem, s.paddr, data, s.memsz - s.filesz, low_end)?;
                start = start.min(s.paddr);
                end = end.max(s.paddr + s.memsz);
            }
            if info.segments.is_empty() {
                return Err(
                    MultibootError::BadAddressFields("ELF has no loadable segment".into()).into(),
                );
            }
            (info.entry, start, end)
        }
        (None, None) => return Err(MultibootError::NoAddressFields.into()),
    };
    Ok(LoadedKernel {
        entry,
        start,
        end,
        setup_header: None,
        initrd_addr_max: u64::from(u32::MAX),
        cmdline_max: CMDLINE_MAX_SIZE - 1,
    })
}

fn load_with_address_fields(
    mem: &GuestMemoryMmap,
    image: &[u8],
    header_offset: usize,
    a: &AddressFields,
    low_end: u64,
) -> Result<(u64, u64, u64), BootError> {
    let bad = |m: &str| BootError::from(MultibootError::BadAddressFields(m.into()));
    // The file offset that corresponds to load_addr.
    let delta = a
        .header_addr
        .checked_sub(a.load_addr)
        .ok_or_else(|| bad("header_addr below load_addr"))?;
    let file_start = (header_offset as u64)
        .checked_sub(u64::from(delta))
        .ok_or_else(|| bad("load_addr lies before the start of the file"))?
        as usize;
    let available = (image.len() - file_start) as u64;
    let load_len = if a.load_end_addr == 0 {
        available
    } else {
        u64::from(
            a.load_end_addr
                .checked_sub(a.load_addr)
                .ok_or_else(|| bad("load_end_addr below load_addr"))?,
        )
    };
    if load_len > available {
        return Err(bad("load_end_addr beyond the end of the file"));
    }
    let load_end = u64::from(a.load_addr) + load_len;
    let bss_end = if a.bss_end_addr == 0 {
        load_end
    } else {
        u64::from(a.bss_end_addr)
    };
    if bss_end < load_end {
        return Err(bad("bss_end_addr below load_end_addr"));
    }
    let data = &image[file_start..file_start + load_len as usize];
    place(
        mem,
        u64::from(a.load_addr),
        data,
        bss_end - load_end,
        low_end,
    )?;
    let entry = u64::from(a.entry_addr);
    if entry < u64::from(a.load_addr) || entry >= bss_end.max(load_end) {
        return Err(bad("entry_addr outside the loaded image"));
    }
    Ok((entry, u64::from(a.load_addr), bss_end))
}

/// Writes `multiboot_info` and what it points to; returns its address (for EBX).
pub(super) fn write_info(mem: &GuestMemoryMmap, data: &BootData) -> Result<u64, BootError> {
    let base = BOOT_INFO_START;
    let mut info = [0u8; INFO_SIZE as usize];
    let mut put = |at: usize, v: u32| info[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let (lower, upper) = mem_lower_upper_kib(data.mem_size);
    let mut flags = INFO_MEMORY | INFO_CMDLINE | INFO_MEM_MAP | INFO_BOOT_LOADER_NAME;
    put(4, lower);
    put(8, upper);
    put(16, data.cmdline_addr as u32);

    if let Some((addr, size)) = data.initrd {
        flags |= INFO_MODS;
        put(20, 1);
        put(24, (base + MODS_OFFSET) as u32);
        let mut m = [0u8; 16];
        m[0..4].copy_from_slice(&(addr as u32).to_le_bytes());
        m[4..8].copy_from_slice(&((addr + size) as u32).to_le_bytes());
        m[8..12].copy_from_slice(&((base + MODULE_STRING_OFFSET) as u32).to_le_bytes());
        let at = base + MODS_OFFSET;
        mem.write_slice(&m, GuestAddress(at))
            .map_err(guest_write(at))?;
    }

    let max_entries = ((BOOT_INFO_SIZE - MMAP_OFFSET) / MMAP_ENTRY_SIZE) as usize;
    let mut mmap = Vec::new();
    for e in data.e820.iter().take(max_entries) {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&e.addr.to_le_bytes());
        mmap.extend_from_slice(&e.size.to_le_bytes());
        mmap.extend_from_slice(&e.type_.to_le_bytes());
    }
    put(44, mmap.len() as u32);
    put(48, (base + MMAP_OFFSET) as u32);
    put(64, (base + LOADER_NAME_OFFSET) as u32);
    put(0, flags);

    let writes: [(u64, &[u8]); 4] = [
        (base + MMAP_OFFSET, &mmap),
        (base + LOADER_NAME_OFFSET, LOADER_NAME),
        (base + MODULE_STRING_OFFSET, MODULE_STRING),
        (base, &info),
    ];
    for (at, bytes) in writes {
        mem.write_slice(bytes, GuestAddress(at))
            .map_err(guest_write(at))?;
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u32, fields: &[u32]) -> Vec<u8> {
        let mut h = Vec::new();
        for v in [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags),
        ] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        for v in fields {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h
    }

    #[test]
    fn finds_aligned_header_with_valid_checksum() {
        let mut img = vec![0u8; 64];
        img.extend(header(
            FLAG_ADDRESS_FIELDS,
            &[0x10_0040, 0x10_0000, 0, 0x10_1000, 0x10_0060],
        ));
        img.resize(0x200, 0x90);
        let h = find_header(&img).unwrap();
        assert_eq!(h.offset, 64);
        assert_eq!(h.address.unwrap().entry_addr, 0x10_0060);
    }

    #[test]
    fn ignores_bad_checksum_misaligned_and_late_headers() {
        let mut bad = header(0, &[]);
        bad[8] ^= 1;
        assert_eq!(find_header(&bad), None);
        let mut mis = vec![0u8; 2];
        mis.extend(header(0, &[]));
        assert_eq!(find_header(&mis), None);
        let mut late = vec![0u8; 8192];
        late.extend(header(0, &[]));
        assert_eq!(find_header(&late), None);
        assert_eq!(find_header(&[]), None);
    }
}
