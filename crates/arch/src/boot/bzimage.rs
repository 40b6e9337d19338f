//! bzImage kernels (Linux boot protocol 2.x) entered through their 64-bit entry point.
//!
//! linux-loader copies the protected-mode kernel to `code32_start` and hands back the
//! setup header; the zero page is built from that header. The 64-bit entry
//! (`startup_64` of the decompressor) sits 0x200 bytes into the protected-mode kernel and
//! needs boot protocol 2.12+ with `XLF_KERNEL_64`.

use super::{BootError, LoadedKernel};
use crate::zero_page::HDRS_MAGIC;
use linux_loader::loader::{BzImage, KernelLoader};
use std::io::Cursor;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Offset of the 64-bit entry point in the protected-mode kernel.
pub const STARTUP_64_OFFSET: u64 = 0x200;
/// `xloadflags` bit: the kernel has the 64-bit entry at +0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// initrd_addr_max for protocols before 2.03.
const OLD_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
/// Command-line limit before protocol 2.06.
const OLD_CMDLINE_MAX: usize = 255;

/// True if the image carries the `HdrS` setup-header magic at 0x202.
pub fn is_bzimage(image: &[u8]) -> bool {
    image.get(0x202..0x206) == Some(&HDRS_MAGIC.to_le_bytes()[..])
}

pub(super) fn load(mem: &GuestMemoryMmap, image: &[u8]) -> Result<LoadedKernel, BootError> {
    let res = BzImage::load(
        mem,
        None,
        &mut Cursor::new(image),
        Some(GuestAddress(crate::layout::HIGH_RAM_START)),
    )?;
    let hdr = res
        .setup_header
        .ok_or_else(|| BootError::BzImage("linux-loader returned no setup header".into()))?;
    let version = hdr.version;
    let xloadflags = hdr.xloadflags;
    if version < 0x020c || xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BootError::BzImage(format!(
            "boot protocol {}.{:02} without a 64-bit entry point (needs 2.12+ and XLF_KERNEL_64)",
            version >> 8,
            version & 0xff
        )));
    }
    let load = res.kernel_load.0;
    let init_size = u64::from(hdr.init_size);
    let initrd_addr_max = if version >= 0x0203 {
        u64::from(hdr.initrd_addr_max)
    } else {
        OLD_INITRD_ADDR_MAX
    };
    let cmdline_max = if version >= 0x0206 {
        hdr.cmdline_size as usize
    } else {
        OLD_CMDLINE_MAX
    };
    // A relocatable kernel decompresses to its load address rounded up to
    // kernel_alignment, but never below pref_address (LOAD_PHYSICAL_ADDR, usually
    // 16 MiB); it needs init_size bytes from there. Keep the initrd out of that range.
    let align = u64::from(hdr.kernel_alignment).max(1);
    let aligned_load = load.div_ceil(align).saturating_mul(align);
    let decompress_base = if version >= 0x020a {
        aligned_load.max(hdr.pref_address)
    } else {
        load
    };
    Ok(LoadedKernel {
        entry: load + STARTUP_64_OFFSET,
        start: load,
        end: res
            .kernel_end
            .max(decompress_base.saturating_add(init_size)),
        setup_header: Some(hdr),
        initrd_addr_max,
        cmdline_max,
    })
}
