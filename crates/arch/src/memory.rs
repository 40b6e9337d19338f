//! Guest RAM regions for a given memory size.
//!
//! RAM starts at 0 and runs up to [`MMIO_HOLE_START`]; whatever does not fit below the
//! 32-bit MMIO hole continues at 4 GiB. The VMM allocates exactly these regions, and the
//! e820 map, the Multiboot/PVH memory maps and the ACPI tables are derived from the same
//! numbers.

use crate::layout::{MAX_MEM_SIZE, MIN_MEM_SIZE, MMIO_HOLE_END, MMIO_HOLE_START};
use thiserror::Error;
use vm_memory::GuestAddress;

/// A guest memory size that the platform cannot lay out.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MemoryError {
    #[error("guest memory of {size} bytes is too small: at least {min} bytes (16 MiB) are needed")]
    TooSmall { size: u64, min: u64 },
    #[error(
        "guest memory of {size} bytes is too large: at most {max} bytes (1 TiB) are supported"
    )]
    TooLarge { size: u64, max: u64 },
    #[error("guest memory size {size:#x} is not a multiple of the 4 KiB page size")]
    Unaligned { size: u64 },
}

/// Checks that `size` bytes of RAM can be laid out.
pub fn validate_mem_size(size: u64) -> Result<(), MemoryError> {
    if size < MIN_MEM_SIZE {
        return Err(MemoryError::TooSmall {
            size,
            min: MIN_MEM_SIZE,
        });
    }
    if size > MAX_MEM_SIZE {
        return Err(MemoryError::TooLarge {
            size,
            max: MAX_MEM_SIZE,
        });
    }
    if !size.is_multiple_of(0x1000) {
        return Err(MemoryError::Unaligned { size });
    }
    Ok(())
}

/// One contiguous range of guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRegion {
    pub start: u64,
    pub size: u64,
}

impl RamRegion {
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// The RAM regions of a guest with `size` bytes of memory: `[0, min(size, hole))` and,
/// if needed, `[4 GiB, 4 GiB + rest)`.
pub fn ram_regions(size: u64) -> Result<Vec<RamRegion>, MemoryError> {
    validate_mem_size(size)?;
    let low = size.min(MMIO_HOLE_START);
    let mut regions = vec![RamRegion {
        start: 0,
        size: low,
    }];
    if size > low {
        regions.push(RamRegion {
            start: MMIO_HOLE_END,
            size: size - low,
        });
    }
    Ok(regions)
}

/// The same regions in the form `GuestMemoryMmap::from_ranges` takes.
pub fn ram_ranges(size: u64) -> Result<Vec<(GuestAddress, usize)>, MemoryError> {
    ram_regions(size)?
        .into_iter()
        .map(|r| {
            let len = usize::try_from(r.size).map_err(|_| MemoryError::TooLarge {
                size,
                max: MAX_MEM_SIZE,
            })?;
            Ok((GuestAddress(r.start), len))
        })
        .collect()
}

/// End of RAM below 4 GiB (exclusive).
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_HOLE_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_region() {
        let r = ram_regions(256 << 20).unwrap();
        assert_eq!(
            r,
            vec![RamRegion {
                start: 0,
                size: 256 << 20
            }]
        );
    }

    #[test]
    fn large_guest_splits_around_the_hole() {
        let r = ram_regions(4 << 30).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].end(), MMIO_HOLE_START);
        assert_eq!(r[1].start, 1 << 32);
        assert_eq!(r[0].size + r[1].size, 4 << 30);
        let ranges = ram_ranges(4 << 30).unwrap();
        assert_eq!(ranges[1], (GuestAddress(1 << 32), (1usize << 30)));
    }

    #[test]
    fn exactly_the_hole_start_is_one_region() {
        assert_eq!(ram_regions(MMIO_HOLE_START).unwrap().len(), 1);
    }

    #[test]
    fn limits_are_typed_errors() {
        assert!(matches!(
            ram_regions(8 << 20),
            Err(MemoryError::TooSmall { .. })
        ));
        assert!(matches!(
            ram_regions(2 << 40),
            Err(MemoryError::TooLarge { .. })
        ));
        assert!(matches!(
            ram_regions((16 << 20) + 1),
            Err(MemoryError::Unaligned { .. })
        ));
        assert!(validate_mem_size(MIN_MEM_SIZE).is_ok());
        assert!(validate_mem_size(MAX_MEM_SIZE).is_ok());
    }
}
