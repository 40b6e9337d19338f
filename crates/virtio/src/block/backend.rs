//! The image behind a virtio-blk device: a raw file (positioned reads and writes, `fdatasync`,
//! hole punching / zeroing with `fallocate`) or a qcow2 image ([`Disk`]).

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

/// A disk image of any supported format.
#[derive(Debug)]
pub enum Disk {
    Raw(RawFile),
    Qcow2(crate::block::qcow2::Qcow2File),
}

macro_rules! each {
    ($self:ident, $d:ident => $e:expr) => {
        match $self {
            Disk::Raw($d) => $e,
            Disk::Qcow2($d) => $e,
        }
    };
}

impl Disk {
    pub fn open(
        path: &Path,
        format: crate::config::DiskFormat,
        readonly: bool,
    ) -> std::io::Result<Self> {
        Ok(match format {
            crate::config::DiskFormat::Raw => Disk::Raw(RawFile::open(path, readonly)?),
            crate::config::DiskFormat::Qcow2 => {
                Disk::Qcow2(crate::block::qcow2::Qcow2File::open(path, readonly)?)
            }
        })
    }

    /// Virtual size in bytes.
    pub fn len(&self) -> u64 {
        each!(self, d => d.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn readonly(&self) -> bool {
        each!(self, d => d.readonly())
    }

    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        each!(self, d => d.read_exact_at(buf, offset))
    }

    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        each!(self, d => d.write_all_at(buf, offset))
    }

    pub fn flush(&self) -> std::io::Result<()> {
        each!(self, d => d.flush())
    }

    pub fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        each!(self, d => d.punch_hole(offset, len))
    }

    pub fn zero_range(&self, offset: u64, len: u64) -> std::io::Result<()> {
        each!(self, d => d.zero_range(offset, len))
    }
}
