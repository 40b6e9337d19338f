//! The BIOS-style memory map (e820) every boot protocol hands the guest.
//!
//! Usable: `[0, EBDA)`, `[1 MiB, end of low RAM)` and the RAM above 4 GiB. Reserved: the
//! EBDA plus the legacy VGA/BIOS area `[EBDA, 1 MiB)` (where the MP and ACPI tables live),
//! and the IOAPIC and local APIC pages. The low boot structures (GDT, page tables, zero
//! page, command line) sit in usable RAM below the EBDA: the kernel copies what it needs
//! before it reuses that memory, as on every PC firmware.

use crate::layout::{
    EBDA_START, HIGH_RAM_START, IOAPIC_BASE, IOAPIC_SIZE, LAPIC_BASE, LAPIC_SIZE, MMIO_HOLE_END,
};
use crate::memory::{low_ram_end, ram_regions, MemoryError};
use serde::{Deserialize, Serialize};

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;
pub const E820_ACPI: u32 = 3;

/// One e820 entry, as in `struct boot_e820_entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub type_: u32,
}

/// The e820 map of a guest with `mem_size` bytes of RAM, sorted by address.
pub fn e820_map(mem_size: u64) -> Result<Vec<E820Entry>, MemoryError> {
    let regions = ram_regions(mem_size)?;
    let low_end = low_ram_end(mem_size);
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            type_: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIGH_RAM_START - EBDA_START,
            type_: E820_RESERVED,
        },
        E820Entry {
            addr: HIGH_RAM_START,
            size: low_end - HIGH_RAM_START,
            type_: E820_RAM,
        },
        E820Entry {
            addr: IOAPIC_BASE,
            size: IOAPIC_SIZE,
            type_: E820_RESERVED,
        },
        E820Entry {
            addr: LAPIC_BASE,
            size: LAPIC_SIZE,
            type_: E820_RESERVED,
        },
    ];
    for r in regions.iter().filter(|r| r.start >= MMIO_HOLE_END) {
        map.push(E820Entry {
            addr: r.start,
            size: r.size,
            type_: E820_RAM,
        });
    }
    Ok(map)
}

/// Usable RAM in KiB below 640 KiB and between 1 MiB and the first hole, as Multiboot's
/// `mem_lower`/`mem_upper` want them.
pub fn mem_lower_upper_kib(mem_size: u64) -> (u32, u32) {
    let lower = (EBDA_START / 1024) as u32;
    let upper = ((low_ram_end(mem_size).saturating_sub(HIGH_RAM_START)) / 1024) as u32;
    (lower, upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram_total(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.type_ == E820_RAM)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn small_map_has_low_ram_and_reserved_areas() {
        let map = e820_map(128 << 20).unwrap();
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: 0x9fc00,
                type_: E820_RAM
            }
        );
        assert_eq!(map[1].addr, 0x9fc00);
        assert_eq!(map[1].addr + map[1].size, 0x10_0000);
        assert_eq!(map[1].type_, E820_RESERVED);
        assert_eq!(map[2].addr + map[2].size, 128 << 20);
        assert!(map
            .iter()
            .any(|e| e.addr == LAPIC_BASE && e.type_ == E820_RESERVED));
        assert!(map
            .iter()
            .any(|e| e.addr == IOAPIC_BASE && e.type_ == E820_RESERVED));
        // Everything but the 0x9fc00..0x100000 window is usable.
        assert_eq!(ram_total(&map), (128 << 20) - (0x10_0000 - 0x9fc00));
    }

    #[test]
    fn big_map_continues_above_4g() {
        let map = e820_map(6 << 30).unwrap();
        let high = map.last().unwrap();
        assert_eq!(high.addr, 1 << 32);
        assert_eq!(high.size, (6 << 30) - crate::layout::MMIO_HOLE_START);
        // Sorted and non-overlapping.
        for w in map.windows(2) {
            assert!(w[0].addr + w[0].size <= w[1].addr);
        }
    }

    #[test]
    fn multiboot_sizes() {
        assert_eq!(mem_lower_upper_kib(64 << 20), (639, (63 << 20) / 1024));
    }
}
