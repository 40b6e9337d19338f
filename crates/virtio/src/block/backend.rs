//! The raw-image file behind a virtio-blk device: positioned reads and writes, `fdatasync`,
//! and hole punching / zeroing with `fallocate`.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A raw disk image.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    len: u64,
    readonly: bool,
}

impl RawFile {
    pub fn open(path: &Path, readonly: bool) -> std::io::Result<Self> {
        let file = OpenOptions::new().read(true).write(!readonly).open(path)?;
        let len = file.metadata()?.len();
        Ok(RawFile {
            file,
            len,
            readonly,
        })
    }

    /// Size of the image in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn readonly(&self) -> bool {
        self.readonly
    }

    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    /// Make every completed write durable on the host disk.
    pub fn flush(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> std::io::Result<()> {
        let (Ok(off), Ok(l)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        };
        // SAFETY: fallocate takes no pointers; the fd is owned by `self.file` and open.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, l) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Deallocate `[offset, offset + len)`; it reads as zeroes afterwards.
    pub fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        match self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.write_zeroes_by_hand(offset, len)
            }
            r => r,
        }
    }

    /// Make `[offset, offset + len)` read as zeroes, keeping it allocated.
    pub fn zero_range(&self, offset: u64, len: u64) -> std::io::Result<()> {
        match self.fallocate(
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.write_zeroes_by_hand(offset, len)
            }
            r => r,
        }
    }

    fn write_zeroes_by_hand(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let zeroes = vec![0u8; 64 * 1024];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64) as usize;
            self.file.write_all_at(&zeroes[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}
