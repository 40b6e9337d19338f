//! Loading a kernel into guest memory and building the state its boot protocol expects.
//!
//! One entry point, [`load`], recognises the image and picks the protocol:
//!
//! | image | protocol | vCPU starts in |
//! |---|---|---|
//! | bzImage (`HdrS` at 0x202) | Linux 64-bit boot protocol, entry at load address + 0x200 | long mode, RSI = zero page |
//! | ELF64 x86-64 with a Xen `PHYS32_ENTRY` note | PVH (default) | 32-bit protected mode, paging off, EBX = `hvm_start_info` |
//! | ELF64 x86-64 without that note | Linux 64-bit boot protocol at `e_entry` | long mode, RSI = zero page |
//! | anything with a valid Multiboot v1 header in its first 8 KiB that is not one of the above | Multiboot | 32-bit protected mode, paging off, EAX = 0x2BADB002, EBX = `multiboot_info` |
//!
//! Detection order: bzImage first (a bzImage never needs Multiboot); then ELF64 x86-64
//! images boot as Linux unless they carry a Multiboot header and no PVH note (a real
//! vmlinux has no Multiboot header); everything else with a Multiboot header (ELF32
//! kvm-unit-tests binaries, a.out-kludge flat images) boots as Multiboot.
//!
//! A PVH-capable ELF uses PVH by default because that is the entry point made for direct
//! kernel boot (it is what Firecracker and Cloud Hypervisor use); [`BootProtocol::Linux64`]
//! forces the 64-bit entry instead, [`BootProtocol::Pvh`] insists on PVH.

mod bzimage;
pub mod elf;
mod entry;
mod initrd;
mod linux64;
pub mod multiboot;
mod pvh;

use crate::e820::{e820_map, E820Entry};
use crate::gdt::{write_boot_gdt, CodeMode};
use crate::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIGH_RAM_START};
use crate::memory::{low_ram_end, MemoryError};
use crate::paging::write_identity_tables;
use crate::regs::{CpuState, RAX, RBX, RSI};
use linux_loader::loader::bootparam::setup_header;
use std::io::{Read, Seek};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

pub use elf::ElfError;
pub use multiboot::MultibootError;

/// A kernel or initrd source: a file, or a `Cursor` in tests.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek + ?Sized> ReadSeek for T {}

/// What kind of image the kernel file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KernelFormat {
    /// An ELF64 x86-64 vmlinux.
    Elf,
    /// A bzImage (Linux boot protocol 2.x).
    BzImage,
    /// A Multiboot v1 kernel in ELF form.
    MultibootElf,
    /// A Multiboot v1 kernel loaded through the header's address fields (a.out kludge).
    MultibootAout,
}

/// The protocol the caller wants for an ELF kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BootProtocol {
    /// PVH if the ELF has a PVH note, otherwise the Linux 64-bit protocol.
    #[default]
    Auto,
    /// Always the Linux 64-bit boot protocol (ignore a PVH note).
    Linux64,
    /// PVH; an error if the kernel has no PVH note.
    Pvh,
}

/// The protocol the kernel was actually entered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EntryProtocol {
    Linux64,
    Pvh,
    Multiboot,
}

/// Options for [`load`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootOptions {
    pub protocol: BootProtocol,
    /// Where the ACPI RSDP is, if tables were written (goes into the zero page or the PVH
    /// start info).
    pub rsdp_addr: Option<u64>,
    /// The kernel's file name. A Multiboot kernel's command line starts with it, as QEMU's
    /// loader does and conformance suites (kvm-unit-tests) expect: they read it as argv[0].
    pub kernel_name: Option<String>,
}

/// The result of loading: how the bootstrap processor starts, and what went where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// Complete register state of the BSP.
    pub cpu: CpuState,
    pub format: KernelFormat,
    pub protocol: EntryProtocol,
    pub entry: u64,
    /// Guest-physical range the kernel occupies (including bss / decompression room).
    pub kernel_start: u64,
    pub kernel_end: u64,
    pub cmdline_addr: u64,
    /// (address, size) of the initrd.
    pub initrd: Option<(u64, u64)>,
    /// The zero page, `hvm_start_info` or `multiboot_info`, whichever the protocol uses.
    pub boot_params_addr: u64,
}

#[derive(Debug, Error)]
pub enum BootError {
    #[error("cannot read the kernel image: {0}")]
    ReadKernel(#[source] std::io::Error),
    #[error("cannot read the initrd: {0}")]
    ReadInitrd(#[source] std::io::Error),
    #[error("the kernel image is empty")]
    EmptyKernel,
    #[error("the kernel image is larger than guest memory ({mem_size} bytes)")]
    KernelTooLarge { mem_size: u64 },
    #[error("not an ELF, bzImage or Multiboot kernel: first bytes {first_bytes}")]
    UnknownFormat { first_bytes: String },
    #[error("ELF kernel: {0}")]
    Elf(#[from] ElfError),
    #[error("loading the kernel: {0}")]
    Loader(#[from] linux_loader::loader::Error),
    #[error("bzImage: {0}")]
    BzImage(String),
    #[error("Multiboot kernel: {0}")]
    Multiboot(#[from] MultibootError),
    #[error(
        "PVH boot was requested but the kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"
    )]
    NoPvhEntry,
    #[error("the kernel command line is {len} bytes; at most {max} fit")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("an initrd of {size} bytes does not fit in guest memory between {lowest:#x} and {highest:#x}; give the guest more memory")]
    InitrdDoesNotFit {
        size: u64,
        lowest: u64,
        highest: u64,
    },
    #[error("guest memory: {0}")]
    Memory(#[from] MemoryError),
    #[error("writing boot data to guest memory at {addr:#x}: {reason}")]
    GuestWrite { addr: u64, reason: String },
}

pub(crate) fn guest_write(addr: u64) -> impl FnOnce(vm_memory::GuestMemoryError) -> BootError {
    move |e| BootError::GuestWrite {
        addr,
        reason: e.to_string(),
    }
}

/// A kernel in guest memory, before its protocol-specific boot data is written.
pub(crate) struct LoadedKernel {
    pub entry: u64,
    pub start: u64,
    pub end: u64,
    pub setup_header: Option<setup_header>,
    /// Highest address (inclusive) the initrd may reach.
    pub initrd_addr_max: u64,
    /// Longest command line the kernel accepts, without the NUL.
    pub cmdline_max: usize,
}

/// Everything the protocol writers need besides the kernel.
pub(crate) struct BootData<'a> {
    pub e820: &'a [E820Entry],
    pub mem_size: u64,
    pub cmdline_addr: u64,
    pub cmdline_len: usize,
    pub initrd: Option<(u64, u64)>,
    pub rsdp_addr: Option<u64>,
}

enum Detected {
    BzImage,
    Elf(elf::ElfInfo),
    Multiboot(multiboot::Header, Option<elf::ElfInfo>),
}

/// Total bytes of guest RAM.
pub fn guest_mem_size(mem: &GuestMemoryMmap) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}

fn read_image(kernel: &mut dyn ReadSeek, limit: u64) -> Result<Vec<u8>, BootError> {
    kernel.rewind().map_err(BootError::ReadKernel)?;
    let mut image = Vec::new();
    kernel
        .take(limit.saturating_add(1))
        .read_to_end(&mut image)
        .map_err(BootError::ReadKernel)?;
    if image.is_empty() {
        return Err(BootError::EmptyKernel);
    }
    if image.len() as u64 > limit {
        return Err(BootError::KernelTooLarge { mem_size: limit });
    }
    Ok(image)
}

fn detect(image: &[u8]) -> Result<Detected, BootError> {
    if bzimage::is_bzimage(image) {
        return Ok(Detected::BzImage);
    }
    let mb = multiboot::find_header(image);
    if elf::is_elf(image) {
        let info = elf::parse(image)?;
        let linux_elf = info.is_64 && info.machine == elf::EM_X86_64;
        return match mb {
            Some(h) if !(linux_elf && info.pvh_entry.is_some()) => {
                Ok(Detected::Multiboot(h, Some(info)))
            }
            _ if linux_elf => Ok(Detected::Elf(info)),
            _ => Err(ElfError::Unsupported(format!(
                "{}-bit ELF for machine {} without a Multiboot header; expected an x86-64 vmlinux",
                if info.is_64 { 64 } else { 32 },
                info.machine
            ))
            .into()),
        };
    }
    if let Some(h) = mb {
        return Ok(Detected::Multiboot(h, None));
    }
    let first_bytes = image
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    Err(BootError::UnknownFormat { first_bytes })
}

fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str, max: usize) -> Result<usize, BootError> {
    let bytes = cmdline.as_bytes();
    if bytes.contains(&0) {
        return Err(BootError::CmdlineNul);
    }
    let max = max.min(CMDLINE_MAX_SIZE - 1);
    if bytes.len() > max {
        return Err(BootError::CmdlineTooLong {
            len: bytes.len(),
            max,
        });
    }
    let mut buf = Vec::with_capacity(bytes.len() + 1);
    buf.extend_from_slice(bytes);
    buf.push(0);
    mem.write_slice(&buf, GuestAddress(CMDLINE_START))
        .map_err(guest_write(CMDLINE_START))?;
    Ok(bytes.len())
}

/// Loads `kernel` (and `initrd`) into `mem`, writes the boot protocol's data structures and
/// returns the BSP's starting state. `mem` must be laid out as
/// [`memory::ram_regions`](crate::memory::ram_regions) describes.
pub fn load(
    mem: &GuestMemoryMmap,
    kernel: &mut dyn ReadSeek,
    initrd: Option<&mut dyn ReadSeek>,
    cmdline: &str,
    opts: &BootOptions,
) -> Result<BootInfo, BootError> {
    let mem_size = guest_mem_size(mem);
    let e820 = e820_map(mem_size)?;
    let low_end = low_ram_end(mem_size);
    let image = read_image(kernel, mem_size)?;

    let (format, protocol, loaded) = match detect(&image)? {
        Detected::BzImage => (
            KernelFormat::BzImage,
            EntryProtocol::Linux64,
            bzimage::load(mem, &image)?,
        ),
        Detected::Elf(info) => {
            let protocol = match (opts.protocol, info.pvh_entry) {
                (BootProtocol::Linux64, _) | (BootProtocol::Auto, None) => EntryProtocol::Linux64,
                (BootProtocol::Auto | BootProtocol::Pvh, Some(_)) => EntryProtocol::Pvh,
                (BootProtocol::Pvh, None) => return Err(BootError::NoPvhEntry),
            };
            let mut loaded = linux64::load_elf(mem, &image, &info, low_end)?;
            if let (EntryProtocol::Pvh, Some(pvh)) = (protocol, info.pvh_entry) {
                loaded.entry = u64::from(pvh);
            }
            (KernelFormat::Elf, protocol, loaded)
        }
        Detected::Multiboot(header, elf_info) => {
            let format = if header.uses_address_fields() || elf_info.is_none() {
                KernelFormat::MultibootAout
            } else {
                KernelFormat::MultibootElf
            };
            let loaded = multiboot::load(mem, &image, &header, elf_info.as_ref(), low_end)?;
            (format, EntryProtocol::Multiboot, loaded)
        }
    };

    let cmdline = match (protocol, &opts.kernel_name) {
        (EntryProtocol::Multiboot, Some(name)) if cmdline.is_empty() => name.clone(),
        (EntryProtocol::Multiboot, Some(name)) => format!("{name} {cmdline}"),
        _ => cmdline.to_string(),
    };
    let cmdline_len = write_cmdline(mem, &cmdline, loaded.cmdline_max)?;
    let initrd = match initrd {
        Some(r) => {
            let highest = low_end.min(loaded.initrd_addr_max.saturating_add(1));
            let lowest = loaded.end.max(HIGH_RAM_START);
            Some(initrd::load(mem, r, lowest, highest)?)
        }
        None => None,
    };
    let data = BootData {
        e820: &e820,
        mem_size,
        cmdline_addr: CMDLINE_START,
        cmdline_len,
        initrd,
        rsdp_addr: opts.rsdp_addr,
    };

    let write_err = |e: vm_memory::GuestMemoryError| BootError::GuestWrite {
        addr: crate::layout::BOOT_GDT_START,
        reason: e.to_string(),
    };
    let (cpu, boot_params_addr) = match protocol {
        EntryProtocol::Linux64 => {
            let zp = linux64::write_zero_page(mem, loaded.setup_header, &data)?;
            let segs = write_boot_gdt(mem, CodeMode::Long).map_err(write_err)?;
            let cr3 = write_identity_tables(mem).map_err(write_err)?;
            let mut cpu = entry::long_mode(&segs, cr3, loaded.entry);
            cpu.gpr[RSI] = zp;
            (cpu, zp)
        }
        EntryProtocol::Pvh => {
            let info = pvh::write_start_info(mem, &data)?;
            let segs = write_boot_gdt(mem, CodeMode::Protected32).map_err(write_err)?;
            let mut cpu = entry::protected_mode(&segs, loaded.entry);
            cpu.gpr[RBX] = info;
            (cpu, info)
        }
        EntryProtocol::Multiboot => {
            let info = multiboot::write_info(mem, &data)?;
            let segs = write_boot_gdt(mem, CodeMode::Protected32).map_err(write_err)?;
            let mut cpu = entry::protected_mode(&segs, loaded.entry);
            cpu.gpr[RAX] = u64::from(multiboot::BOOTLOADER_MAGIC);
            cpu.gpr[RBX] = info;
            (cpu, info)
        }
    };

    Ok(BootInfo {
        cpu,
        format,
        protocol,
        entry: loaded.entry,
        kernel_start: loaded.start,
        kernel_end: loaded.end,
        cmdline_addr: CMDLINE_START,
        initrd,
        boot_params_addr,
    })
}

#[cfg(test)]
mod tests;
