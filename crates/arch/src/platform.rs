//! Whole-platform setup for the VMM: firmware tables plus the kernel, in one call.
//!
//! Order matters only in that the ACPI tables are written first, so the loader can put
//! the RSDP address into the zero page or the PVH start info.

use crate::acpi::{self, AcpiError, DsdtDevice};
use crate::boot::{self, BootError, BootInfo, BootOptions, BootProtocol, ReadSeek};
use crate::memory::{validate_mem_size, MemoryError};
use crate::mptable::{self, MpTableError};
use crate::msr::{apic_base, boot_msrs, MSR_IA32_APICBASE};
use crate::regs::CpuState;
use thiserror::Error;
use vm_memory::GuestMemoryMmap;

/// What the platform needs to know about the VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformConfig {
    /// Number of vCPUs (1..=254).
    pub cpus: u8,
    /// Guest RAM in bytes; must equal the size of `mem`.
    pub mem_size: u64,
    pub cmdline: String,
    /// The kernel's file name (see [`BootOptions::kernel_name`]).
    pub kernel_name: Option<String>,
    pub protocol: BootProtocol,
    /// Devices to describe in the DSDT besides the fixed legacy ones.
    pub dsdt_devices: Vec<DsdtDevice>,
}

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("guest memory holds {actual} bytes but the configuration says {configured}")]
    MemorySizeMismatch { actual: u64, configured: u64 },
    #[error("MP table: {0}")]
    MpTable(#[from] MpTableError),
    #[error("ACPI tables: {0}")]
    Acpi(#[from] AcpiError),
    #[error(transparent)]
    Boot(#[from] BootError),
}

/// Writes the MP table and ACPI tables, loads the kernel and initrd, and returns the
/// BSP's boot state.
pub fn setup(
    mem: &GuestMemoryMmap,
    cfg: &PlatformConfig,
    kernel: &mut dyn ReadSeek,
    initrd: Option<&mut dyn ReadSeek>,
) -> Result<BootInfo, Error> {
    validate_mem_size(cfg.mem_size)?;
    let actual = boot::guest_mem_size(mem);
    if actual != cfg.mem_size {
        return Err(Error::MemorySizeMismatch {
            actual,
            configured: cfg.mem_size,
        });
    }
    mptable::write(mem, cfg.cpus)?;
    let rsdp = acpi::write(mem, cfg.cpus, &cfg.dsdt_devices)?;
    let opts = BootOptions {
        protocol: cfg.protocol,
        rsdp_addr: Some(rsdp),
        kernel_name: cfg.kernel_name.clone(),
    };
    Ok(boot::load(mem, kernel, initrd, &cfg.cmdline, &opts)?)
}

/// The state of application processor `id` (>= 1): the architectural RESET state, waiting
/// for INIT/SIPI, with the boot MSRs and its APIC base.
pub fn ap_state(id: u8) -> CpuState {
    let mut s = CpuState::reset();
    s.msrs = boot_msrs();
    s.msrs.push((MSR_IA32_APICBASE, apic_base(u32::from(id))));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::EntryProtocol;
    use crate::layout::ZERO_PAGE_START;
    use crate::memory::ram_ranges;
    use linux_loader::loader::bootparam::boot_params;
    use std::io::Cursor;
    use vm_memory::{Bytes, GuestAddress};

    /// ELF64 vmlinux with one segment at 16 MiB (see boot::elf tests).
    fn kernel() -> Vec<u8> {
        crate::boot::elf::tests::build_elf(true, 0x100_0000, 0x100_0000, &[0xf4; 4], None)
    }

    #[test]
    fn setup_writes_tables_and_points_the_zero_page_at_the_rsdp() {
        let size = 128 << 20;
        let mem = GuestMemoryMmap::from_ranges(&ram_ranges(size).unwrap()).unwrap();
        let cfg = PlatformConfig {
            cpus: 2,
            mem_size: size,
            cmdline: "console=ttyS0".into(),
            kernel_name: Some("/k/vmlinux".into()),
            protocol: BootProtocol::Auto,
            dsdt_devices: vec![DsdtDevice::virtio_mmio(0, 0xd000_0000, 0x200, 5)],
        };
        let b = setup(&mem, &cfg, &mut Cursor::new(kernel()), None).unwrap();
        assert_eq!(b.protocol, EntryProtocol::Linux64);
        let zp: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let rsdp = zp.acpi_rsdp_addr;
        let mut sig = [0u8; 8];
        mem.read_slice(&mut sig, GuestAddress(rsdp)).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
        let mut mp = [0u8; 4];
        mem.read_slice(&mut mp, GuestAddress(crate::layout::MPTABLE_START))
            .unwrap();
        assert_eq!(&mp, b"_MP_");
    }

    #[test]
    fn setup_checks_the_memory_size() {
        let mem = GuestMemoryMmap::from_ranges(&ram_ranges(64 << 20).unwrap()).unwrap();
        let cfg = PlatformConfig {
            cpus: 1,
            mem_size: 128 << 20,
            ..Default::default()
        };
        assert!(matches!(
            setup(&mem, &cfg, &mut Cursor::new(kernel()), None),
            Err(Error::MemorySizeMismatch { .. })
        ));
        let cfg = PlatformConfig {
            cpus: 0,
            mem_size: 64 << 20,
            ..Default::default()
        };
        assert!(matches!(
            setup(&mem, &cfg, &mut Cursor::new(kernel()), None),
            Err(Error::MpTable(_))
        ));
    }

    #[test]
    fn aps_start_in_reset_state() {
        let s = ap_state(3);
        assert_eq!(s.rip, 0xfff0);
        assert_eq!(s.cs.selector, 0xf000);
        let base = s
            .msrs
            .iter()
            .find(|(i, _)| *i == MSR_IA32_APICBASE)
            .unwrap()
            .1;
        assert_eq!(base & crate::msr::APICBASE_BSP, 0);
        assert_ne!(base & crate::msr::APICBASE_ENABLE, 0);
    }
}
