//! End-to-end loader tests on images built byte by byte.

use super::elf::tests::build_elf;
use super::*;
use crate::layout::{BOOT_INFO_START, ZERO_PAGE_START};
use crate::memory::ram_ranges;
use crate::regs::RSP;
use linux_loader::loader::bootparam::boot_params;
use std::io::Cursor;

const MEM: u64 = 64 << 20;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&ram_ranges(MEM).unwrap()).unwrap()
}

fn read_u32(m: &GuestMemoryMmap, a: u64) -> u32 {
    m.read_obj(GuestAddress(a)).unwrap()
}
fn read_u64(m: &GuestMemoryMmap, a: u64) -> u64 {
    m.read_obj(GuestAddress(a)).unwrap()
}
fn read_bytes(m: &GuestMemoryMmap, a: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    m.read_slice(&mut v, GuestAddress(a)).unwrap();
    v
}

fn boot(
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    protocol: BootProtocol,
) -> (GuestMemoryMmap, Result<BootInfo, BootError>) {
    let m = mem();
    let mut k = Cursor::new(image.to_vec());
    let mut i = initrd.map(|b| Cursor::new(b.to_vec()));
    let r = load(
        &m,
        &mut k,
        i.as_mut().map(|c| c as &mut dyn ReadSeek),
        cmdline,
        &BootOptions {
            protocol,
            rsdp_addr: Some(0xe0000),
            kernel_name: None,
        },
    );
    (m, r)
}

/// The command line the kernel finds at `CMDLINE_START` when loaded as `name`.
fn cmdline_seen(image: &[u8], cmdline: &str, name: &str) -> String {
    let m = mem();
    load(
        &m,
        &mut Cursor::new(image.to_vec()),
        None,
        cmdline,
        &BootOptions {
            protocol: BootProtocol::Auto,
            rsdp_addr: None,
            kernel_name: Some(name.into()),
        },
    )
    .unwrap();
    let bytes = read_bytes(&m, CMDLINE_START, 64);
    let end = bytes.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(bytes[..end].to_vec()).unwrap()
}

#[test]
fn a_multiboot_command_line_starts_with_the_kernel_name_like_qemu() {
    let mut code = mb_header(0x3, &[]);
    code.extend_from_slice(&CODE);
    let mb = build_elf(false, 0x40_0000, 0x40_000c, &code, None);
    assert_eq!(cmdline_seen(&mb, "a b", "/t/x.flat"), "/t/x.flat a b");
    assert_eq!(cmdline_seen(&mb, "", "/t/x.flat"), "/t/x.flat");
    // A Linux kernel gets the command line as given.
    let linux = build_elf(true, 0x100_0000, 0x100_0000, &CODE, None);
    assert_eq!(
        cmdline_seen(&linux, "console=ttyS0", "/t/vmlinux"),
        "console=ttyS0"
    );
}

const CODE: [u8; 8] = [0xf4, 0xeb, 0xfd, 0x90, 0x11, 0x22, 0x33, 0x44];

#[test]
fn elf64_without_pvh_boots_linux_64bit() {
    let img = build_elf(true, 0x100_0000, 0x100_0000, &CODE, None);
    let initrd = vec![0xabu8; 5000];
    let (m, r) = boot(&img, Some(&initrd), "console=ttyS0", BootProtocol::Auto);
    let b = r.unwrap();
    assert_eq!(b.format, KernelFormat::Elf);
    assert_eq!(b.protocol, EntryProtocol::Linux64);
    let c = &b.cpu;
    assert_eq!(c.rip, 0x100_0000);
    assert_eq!(c.gpr[RSI], ZERO_PAGE_START);
    assert_eq!(c.cs.selector, 0x10);
    assert!(c.cs.l);
    assert_eq!(c.ds.selector, 0x18);
    assert_ne!(c.cr0 & crate::regs::cr0::PG, 0);
    assert_ne!(c.cr4 & crate::regs::cr4::PAE, 0);
    assert_eq!(c.efer & 0x500, 0x500);
    assert_eq!(c.cr3, crate::layout::PML4_START);
    assert!(c.gpr[RSP] > 0);
    // Code loaded, bss zeroed.
    assert_eq!(read_bytes(&m, 0x100_0000, 8), CODE);
    assert_eq!(read_bytes(&m, 0x100_0008, 0x100), vec![0u8; 0x100]);
    // Zero page.
    let zp: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
    let hdr = zp.hdr;
    assert_eq!({ hdr.type_of_loader }, 0xff);
    assert_eq!({ hdr.cmd_line_ptr } as u64, CMDLINE_START);
    assert_eq!(read_bytes(&m, CMDLINE_START, 14), b"console=ttyS0\0");
    assert_eq!({ zp.acpi_rsdp_addr }, 0xe0000);
    assert!(zp.e820_entries >= 4);
    let (ia, is) = b.initrd.unwrap();
    assert_eq!(is, 5000);
    assert_eq!(ia % 4096, 0);
    assert!(ia + is <= MEM && ia >= b.kernel_end);
    assert_eq!({ hdr.ramdisk_image } as u64, ia);
    assert_eq!({ hdr.ramdisk_size }, 5000);
    assert_eq!(read_bytes(&m, ia, 5000), initrd);
    // GDT in memory matches the selectors.
    let code_desc = read_u64(&m, c.gdt.base + 0x10);
    assert_eq!(crate::gdt::segment_from_entry(code_desc, 0x10), c.cs);
}

#[test]
fn elf64_with_pvh_note_boots_pvh_by_default() {
    let img = build_elf(true, 0x100_0000, 0x100_0000, &CODE, Some(0x100_0004));
    let (m, r) = boot(&img, Some(&[1, 2, 3]), "quiet", BootProtocol::Auto);
    let b = r.unwrap();
    assert_eq!(b.protocol, EntryProtocol::Pvh);
    let c = &b.cpu;
    assert_eq!(c.rip, 0x100_0004);
    assert_eq!(c.gpr[RBX], BOOT_INFO_START);
    assert_eq!(c.cr0 & crate::regs::cr0::PG, 0);
    assert_ne!(c.cr0 & crate::regs::cr0::PE, 0);
    assert!(c.cs.db && !c.cs.l);
    assert_eq!(c.efer, 0);
    assert_eq!(
        read_u32(&m, BOOT_INFO_START),
        pvh::XEN_HVM_START_MAGIC_VALUE
    );
    assert_eq!(read_u32(&m, BOOT_INFO_START + 4), 1); // version
    assert_eq!(read_u32(&m, BOOT_INFO_START + 12), 1); // nr_modules
    let modlist = read_u64(&m, BOOT_INFO_START + 16);
    assert_eq!(read_u64(&m, modlist), b.initrd.unwrap().0);
    assert_eq!(read_u64(&m, modlist + 8), 3);
    assert_eq!(read_u64(&m, BOOT_INFO_START + 24), CMDLINE_START);
    assert_eq!(read_u64(&m, BOOT_INFO_START + 32), 0xe0000); // rsdp
    let memmap = read_u64(&m, BOOT_INFO_START + 40);
    let entries = read_u32(&m, BOOT_INFO_START + 48);
    assert_eq!(entries as usize, crate::e820::e820_map(MEM).unwrap().len());
    // Third entry: RAM from 1 MiB to the end.
    assert_eq!(read_u64(&m, memmap + 48), 0x10_0000);
    assert_eq!(read_u64(&m, memmap + 56), MEM - 0x10_0000);
    assert_eq!(read_u32(&m, memmap + 64), 1);
}

#[test]
fn pvh_capable_elf_can_be_forced_to_linux64_and_pvh_needs_a_note() {
    let img = build_elf(true, 0x100_0000, 0x100_0000, &CODE, Some(0x100_0004));
    let b = boot(&img, None, "", BootProtocol::Linux64).1.unwrap();
    assert_eq!(b.protocol, EntryProtocol::Linux64);
    assert_eq!(b.cpu.rip, 0x100_0000);
    let plain = build_elf(true, 0x100_0000, 0x100_0000, &CODE, None);
    assert!(matches!(
        boot(&plain, None, "", BootProtocol::Pvh).1,
        Err(BootError::NoPvhEntry)
    ));
}

fn mb_header(flags: u32, fields: &[u32]) -> Vec<u8> {
    let mut h = Vec::new();
    let magic = multiboot::HEADER_MAGIC;
    for v in [magic, flags, 0u32.wrapping_sub(magic).wrapping_sub(flags)] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    for v in fields {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

fn check_multiboot_info(m: &GuestMemoryMmap, b: &BootInfo, initrd_len: u64) {
    assert_eq!(b.protocol, EntryProtocol::Multiboot);
    assert_eq!(b.cpu.gpr[RAX], 0x2bad_b002);
    assert_eq!(b.cpu.gpr[RBX], BOOT_INFO_START);
    assert_eq!(b.cpu.cr0 & crate::regs::cr0::PG, 0);
    assert!(b.cpu.cs.db);
    let info = BOOT_INFO_START;
    let flags = read_u32(m, info);
    assert_eq!(flags & 0x24d, 0x24d);
    assert_eq!(read_u32(m, info + 4), 639);
    assert_eq!(read_u32(m, info + 8) as u64, (MEM - 0x10_0000) / 1024);
    assert_eq!(read_u32(m, info + 16) as u64, CMDLINE_START);
    assert_eq!(read_u32(m, info + 20), 1);
    let mods = read_u32(m, info + 24) as u64;
    let (ia, _) = b.initrd.unwrap();
    assert_eq!(read_u32(m, mods) as u64, ia);
    assert_eq!(read_u32(m, mods + 4) as u64, ia + initrd_len);
    let mmap_len = read_u32(m, info + 44) as u64;
    let mmap = read_u32(m, info + 48) as u64;
    assert_eq!(
        mmap_len,
        24 * crate::e820::e820_map(MEM).unwrap().len() as u64
    );
    assert_eq!(read_u32(m, mmap), 20);
    assert_eq!(read_u64(m, mmap + 4), 0);
    assert_eq!(read_u64(m, mmap + 12), 0x9fc00);
    assert_eq!(read_u32(m, mmap + 20), 1);
    let name = read_u32(m, info + 64) as u64;
    assert_eq!(read_bytes(m, name, 5), b"wirt\0");
}

#[test]
fn elf32_with_multiboot_header_boots_multiboot() {
    // Multiboot header at the start of the code (within the first 8 KiB of the file).
    let mut code = mb_header(0x3, &[]);
    code.extend_from_slice(&CODE);
    let img = build_elf(false, 0x40_0000, 0x40_000c, &code, None);
    let (m, r) = boot(&img, Some(&[7u8; 100]), "x.flat arg", BootProtocol::Auto);
    let b = r.unwrap();
    assert_eq!(b.format, KernelFormat::MultibootElf);
    assert_eq!(b.cpu.rip, 0x40_000c);
    assert_eq!(read_bytes(&m, 0x40_000c, 8), CODE);
    check_multiboot_info(&m, &b, 100);
}

#[test]
fn elf64_with_multiboot_header_and_no_pvh_note_boots_multiboot() {
    let mut code = mb_header(0, &[]);
    code.extend_from_slice(&CODE);
    let img = build_elf(true, 0x40_0000, 0x40_000c, &code, None);
    let b = boot(&img, Some(&[1]), "", BootProtocol::Auto).1.unwrap();
    assert_eq!(b.protocol, EntryProtocol::Multiboot);
    // With a PVH note it is a Linux kernel.
    let img = build_elf(true, 0x100_0000, 0x100_0000, &code, Some(0x100_0000));
    let b = boot(&img, None, "", BootProtocol::Auto).1.unwrap();
    assert_eq!(b.protocol, EntryProtocol::Pvh);
}

#[test]
fn aout_kludge_image_boots_multiboot() {
    // Flat binary loaded at 0x200000; header at file offset 16 => header_addr 0x200010.
    let load = 0x20_0000u32;
    let mut img = vec![0x90u8; 16];
    img.extend(mb_header(
        1 << 16,
        &[load + 16, load, 0, load + 0x2000, load + 48],
    ));
    img.resize(48, 0x90);
    img.extend_from_slice(&CODE);
    let (m, r) = boot(&img, Some(&[5u8; 10]), "", BootProtocol::Auto);
    let b = r.unwrap();
    assert_eq!(b.format, KernelFormat::MultibootAout);
    assert_eq!(b.cpu.rip, u64::from(load) + 48);
    assert_eq!(read_bytes(&m, u64::from(load) + 48, 8), CODE);
    assert_eq!(b.kernel_end, u64::from(load) + 0x2000);
    check_multiboot_info(&m, &b, 10);
}

#[test]
fn aout_kludge_with_bad_fields_is_an_error() {
    let load = 0x20_0000u32;
    let mut img = vec![0x90u8; 16];
    // header_addr below load_addr.
    img.extend(mb_header(1 << 16, &[load - 16, load, 0, 0, load]));
    img.resize(64, 0);
    assert!(matches!(
        boot(&img, None, "", BootProtocol::Auto).1,
        Err(BootError::Multiboot(MultibootError::BadAddressFields(_)))
    ));
    // A load address on the Multiboot information page the loader writes.
    let mut img = mb_header(1 << 16, &[0x6000, 0x6000, 0, 0, 0x6010]);
    img.resize(64, 0);
    assert!(matches!(
        boot(&img, None, "", BootProtocol::Auto).1,
        Err(BootError::Multiboot(MultibootError::OverlapsBootTables {
            table_start: 0x6000,
            ..
        }))
    ));
    // Beyond the end of RAM.
    let top = 0x4000_0000u32;
    let mut img = mb_header(1 << 16, &[top, top, 0, 0, top + 0x10]);
    img.resize(64, 0);
    assert!(matches!(
        boot(&img, None, "", BootProtocol::Auto).1,
        Err(BootError::Multiboot(MultibootError::OutsideRam { .. }))
    ));
}

#[test]
fn multiboot_kernel_below_1mib_loads_clear_of_the_loader_tables() {
    // kvm-unit-tests' realmode test links at 0x8000.
    let load = 0x8000u32;
    let mut img = mb_header(1 << 16, &[load, load, 0, load + 0x3000, load + 48]);
    img.resize(48, 0);
    img.extend_from_slice(&CODE);
    let (m, b) = boot(&img, None, "", BootProtocol::Auto);
    let b = b.unwrap();
    assert_eq!(b.cpu.rip, u64::from(load) + 48);
    assert_eq!(read_bytes(&m, u64::from(load) + 48, 8), CODE);
    assert_eq!(b.kernel_start, u64::from(load));
}

/// A minimal bzImage: 4 setup sectors after the boot sector, then the payload.
fn bzimage(version: u16, xloadflags: u16, payload: &[u8]) -> Vec<u8> {
    let mut img = vec![0u8; 5 * 512];
    img[0x1f1] = 4; // setup_sects
    img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&version.to_le_bytes());
    img[0x211] = 0x01; // loadflags: LOADED_HIGH
    img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    img[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes()); // initrd_addr_max
    img[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
    img[0x234] = 1; // relocatable
    img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
    img[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes()); // cmdline_size
    img[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes()); // pref_address
    img[0x260..0x264].copy_from_slice(&0x80_0000u32.to_le_bytes()); // init_size
    img.extend_from_slice(payload);
    img
}

#[test]
fn bzimage_boots_at_startup_64() {
    let payload: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
    let img = bzimage(0x020f, 0x1, &payload);
    let (m, r) = boot(
        &img,
        Some(&[9u8; 4096]),
        "root=/dev/vda",
        BootProtocol::Auto,
    );
    let b = r.unwrap();
    assert_eq!(b.format, KernelFormat::BzImage);
    assert_eq!(b.protocol, EntryProtocol::Linux64);
    assert_eq!(b.cpu.rip, 0x10_0200);
    assert_eq!(b.cpu.gpr[RSI], ZERO_PAGE_START);
    assert!(b.cpu.cs.l);
    assert_eq!(read_bytes(&m, 0x10_0000, 1024), payload);
    // Decompression room (init_size) is kept free of the initrd.
    // It decompresses at pref_address (16 MiB), so the room ends at 16 MiB + init_size.
    assert_eq!(b.kernel_end, 0x100_0000 + 0x80_0000);
    assert!(b.initrd.unwrap().0 >= b.kernel_end);
    let zp: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
    let hdr = zp.hdr;
    assert_eq!({ hdr.setup_sects }, 4);
    assert_eq!({ hdr.version }, 0x020f);
    assert_eq!({ hdr.type_of_loader }, 0xff);
    assert_eq!({ hdr.kernel_alignment }, 0x20_0000);
    assert_eq!({ hdr.ramdisk_size }, 4096);
    assert_eq!({ hdr.cmd_line_ptr } as u64, CMDLINE_START);
    assert_eq!(hdr.loadflags & 1, 1);
}

#[test]
fn bzimage_without_64bit_entry_is_refused() {
    let img = bzimage(0x020f, 0, &[0u8; 64]);
    assert!(matches!(
        boot(&img, None, "", BootProtocol::Auto).1,
        Err(BootError::BzImage(_))
    ));
    let img = bzimage(0x020b, 1, &[0u8; 64]);
    assert!(matches!(
        boot(&img, None, "", BootProtocol::Auto).1,
        Err(BootError::BzImage(_))
    ));
}

#[test]
fn bzimage_cmdline_limit_is_enforced() {
    let img = bzimage(0x020f, 1, &[0u8; 64]);
    let long = "x".repeat(3000);
    assert!(matches!(
        boot(&img, None, &long, BootProtocol::Auto).1,
        Err(BootError::CmdlineTooLong {
            len: 3000,
            max: 2048
        })
    ));
    assert!(matches!(
        boot(&img, None, "a\0b", BootProtocol::Auto).1,
        Err(BootError::CmdlineNul)
    ));
}

#[test]
fn unknown_format_names_the_first_bytes() {
    let e = boot(b"MZ\x90\x00garbage-garbage", None, "", BootProtocol::Auto)
        .1
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("not an ELF, bzImage or Multiboot kernel"),
        "{msg}"
    );
    assert!(msg.contains("4d 5a 90 00"), "{msg}");
    assert!(matches!(
        boot(&[], None, "", BootProtocol::Auto).1,
        Err(BootError::EmptyKernel)
    ));
}

#[test]
fn elf32_without_multiboot_is_refused() {
    let img = build_elf(false, 0x40_0000, 0x40_0000, &CODE, None);
    assert!(matches!(
        boot(&img, None, "", BootProtocol::Auto).1,
        Err(BootError::Elf(_))
    ));
}

#[test]
fn elf_segment_outside_ram_is_refused() {
    let img = build_elf(true, 0x1000_0000, 0x1000_0000, &CODE, None);
    assert!(matches!(
        boot(&img, None, "", BootProtocol::Auto).1,
        Err(BootError::Elf(_))
    ));
}

#[test]
fn initrd_that_does_not_fit_is_an_error() {
    let img = build_elf(true, 0x100_0000, 0x100_0000, &CODE, None);
    let big = vec![0u8; 63 << 20];
    assert!(matches!(
        boot(&img, Some(&big), "", BootProtocol::Auto).1,
        Err(BootError::InitrdDoesNotFit { .. })
    ));
}

/// Boots a real bzImage if one is around: `$WIRT_TEST_BZIMAGE`, else `/boot/vmlinuz-*`.
/// Skips (passes) when there is none.
#[test]
fn host_kernel_boots_if_present() {
    let from_env = std::env::var_os("WIRT_TEST_BZIMAGE").map(std::path::PathBuf::from);
    let from_boot = || {
        std::fs::read_dir("/boot").ok().and_then(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
        })
    };
    let Some(path) = from_env.or_else(from_boot) else {
        eprintln!("no kernel image; skipping");
        return;
    };
    let Ok(mut f) = std::fs::File::open(&path) else {
        eprintln!("{} not readable; skipping", path.display());
        return;
    };
    let m = GuestMemoryMmap::from_ranges(&ram_ranges(256 << 20).unwrap()).unwrap();
    let mut initrd = Cursor::new(vec![0x5au8; 3 << 20]);
    let b = load(
        &m,
        &mut f,
        Some(&mut initrd),
        "console=ttyS0",
        &BootOptions::default(),
    )
    .unwrap();
    assert_eq!(b.format, KernelFormat::BzImage);
    assert_eq!(b.cpu.rip, b.kernel_start + 0x200);
    let zp: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
    let hdr = zp.hdr;
    assert!({ hdr.version } >= 0x020c);
    assert_eq!({ hdr.type_of_loader }, 0xff);
    let (ia, _) = b.initrd.unwrap();
    assert!(ia >= b.kernel_end);
    let max = hdr.initrd_addr_max;
    assert!(ia + (3 << 20) <= u64::from(max) + 1);
}

#[test]
fn kernel_larger_than_memory_is_refused() {
    let img = vec![0u8; (MEM + 1) as usize];
    assert!(matches!(
        boot(&img, None, "", BootProtocol::Auto).1,
        Err(BootError::KernelTooLarge { .. })
    ));
}
