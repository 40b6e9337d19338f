//! Placing and copying the initial ramdisk.
//!
//! The initrd goes as high as it can: page aligned, ending at or below the lowest of the
//! top of RAM below 4 GiB and the kernel's own limit (`initrd_addr_max`), and starting
//! above everything the kernel occupies (including room it needs to decompress).

use super::{BootError, ReadSeek};
use std::io::SeekFrom;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const PAGE: u64 = 0x1000;
const CHUNK: usize = 1 << 20;

/// Where an initrd of `size` bytes goes: the highest page-aligned address with
/// `addr >= lowest` and `addr + size <= highest`.
pub fn place(size: u64, lowest: u64, highest: u64) -> Result<u64, BootError> {
    let err = || BootError::InitrdDoesNotFit {
        size,
        lowest,
        highest,
    };
    let lowest = lowest
        .checked_add(PAGE - 1)
        .map(|v| v & !(PAGE - 1))
        .ok_or_else(err)?;
    let top = highest.checked_sub(size).ok_or_else(err)? & !(PAGE - 1);
    if top < lowest {
        return Err(err());
    }
    Ok(top)
}

/// Copies the initrd into guest memory; returns (address, size).
pub fn load(
    mem: &GuestMemoryMmap,
    initrd: &mut dyn ReadSeek,
    lowest: u64,
    highest: u64,
) -> Result<(u64, u64), BootError> {
    let size = initrd
        .seek(SeekFrom::End(0))
        .map_err(BootError::ReadInitrd)?;
    initrd.rewind().map_err(BootError::ReadInitrd)?;
    let addr = place(size, lowest, highest)?;
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < size {
        let n = ((size - done) as usize).min(CHUNK);
        initrd
            .read_exact(&mut buf[..n])
            .map_err(BootError::ReadInitrd)?;
        mem.write_slice(&buf[..n], GuestAddress(addr + done))
            .map_err(|e| BootError::GuestWrite {
                addr: addr + done,
                reason: e.to_string(),
            })?;
        done += n as u64;
    }
    Ok((addr, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_high_and_aligned() {
        assert_eq!(
            place(0x1800, 0x20_0000, 0x400_0000).unwrap(),
            0x400_0000 - 0x2000
        );
        assert_eq!(place(0x1000, 0, 0x1000).unwrap(), 0);
    }

    #[test]
    fn too_big_is_an_error() {
        assert!(matches!(
            place(0x400_0000, 0x20_0000, 0x400_0000),
            Err(BootError::InitrdDoesNotFit { .. })
        ));
        assert!(place(u64::MAX, 0, 0x1000).is_err());
        assert!(place(1, u64::MAX, u64::MAX).is_err());
    }
}
