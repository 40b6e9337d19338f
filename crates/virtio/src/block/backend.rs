//! The image behind a virtio-blk device: a raw file (positioned reads and writes, `fdatasync`,
//! hole punching / zeroing with `fallocate`, optionally O_DIRECT) or a qcow2 image ([`Disk`]).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Memory alignment O_DIRECT transfers get (a page: enough for every Linux file system).
pub const DIRECT_MEM_ALIGN: usize = 4096;
/// File offset and length alignment O_DIRECT transfers need (a sector; on a device with
/// larger logical blocks the kernel refuses and the transfer falls back to the page cache).
const DIRECT_IO_ALIGN: u64 = 512;

/// A raw disk image.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    /// The same file opened with O_DIRECT (`direct=on`): aligned transfers use it.
    direct: Option<File>,
    len: u64,
    readonly: bool,
}

impl RawFile {
    pub fn open(path: &Path, readonly: bool, direct: bool) -> std::io::Result<Self> {
        let file = OpenOptions::new().read(true).write(!readonly).open(path)?;
        let direct = if direct {
            let f = OpenOptions::new()
                .read(true)
                .write(!readonly)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::EINVAL) => std::io::Error::new(
                        e.kind(),
                        "this file system does not support O_DIRECT (drop direct=on)",
                    ),
                    _ => e,
                })?;
            Some(f)
        } else {
            None
        };
        let len = file.metadata()?.len();
        Ok(RawFile {
            file,
            direct,
            len,
            readonly,
        })
    }

    /// The O_DIRECT file if this transfer meets its alignment.
    fn direct_for(&self, buf: &[u8], offset: u64) -> Option<&File> {
        let aligned = (buf.as_ptr() as usize).is_multiple_of(DIRECT_MEM_ALIGN)
            && (buf.len() as u64).is_multiple_of(DIRECT_IO_ALIGN)
            && offset.is_multiple_of(DIRECT_IO_ALIGN);
        self.direct.as_ref().filter(|_| aligned)
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

    /// Reads through O_DIRECT when `direct=on` and the transfer is aligned; otherwise, or
    /// when the kernel refuses it (EINVAL: a device with larger blocks, a short read at the
    /// end of the file), through the page cache.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if let Some(d) = self.direct_for(buf, offset) {
            match d.read_exact_at(buf, offset) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                done => return done,
            }
        }
        self.file.read_exact_at(buf, offset)
    }

    /// Writes like [`RawFile::read_exact_at`] reads.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if let Some(d) = self.direct_for(buf, offset) {
            match d.write_all_at(buf, offset) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                done => return done,
            }
        }
        self.file.write_all_at(buf, offset)
    }

    /// Make every completed write durable on the host disk (`fdatasync` covers the
    /// O_DIRECT descriptor's writes too: it is the same file).
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
    /// `direct` applies to raw images (the configuration refuses it for qcow2).
    pub fn open(
        path: &Path,
        format: crate::config::DiskFormat,
        readonly: bool,
        direct: bool,
    ) -> std::io::Result<Self> {
        Ok(match format {
            crate::config::DiskFormat::Raw => Disk::Raw(RawFile::open(path, readonly, direct)?),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The open flags of `f`, from /proc/self/fdinfo.
    fn open_flags(f: &File) -> u32 {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd())).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .unwrap()
            .trim();
        u32::from_str_radix(flags, 8).unwrap()
    }

    #[test]
    fn direct_uses_o_direct_for_aligned_transfers_and_the_page_cache_otherwise() {
        let path = std::env::temp_dir().join(format!("wirt-direct-{}.img", std::process::id()));
        std::fs::write(&path, vec![0u8; 64 * 1024]).unwrap();
        let raw = match RawFile::open(&path, false, true) {
            Ok(r) => r,
            Err(e) if e.to_string().contains("does not support O_DIRECT") => {
                println!("skipped: {e}");
                let _ = std::fs::remove_file(&path);
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let direct = raw.direct.as_ref().expect("an O_DIRECT descriptor");
        assert_ne!(open_flags(direct) & libc::O_DIRECT as u32, 0);
        assert_eq!(open_flags(&raw.file) & libc::O_DIRECT as u32, 0);

        // An aligned window of a larger buffer goes through O_DIRECT.
        let mut backing = vec![0u8; 3 * DIRECT_MEM_ALIGN];
        let skip = backing.as_ptr().align_offset(DIRECT_MEM_ALIGN);
        let aligned = &mut backing[skip..skip + DIRECT_MEM_ALIGN];
        aligned.fill(0xa5);
        assert!(raw.direct_for(aligned, 4096).is_some());
        raw.write_all_at(aligned, 4096).unwrap();
        // Unaligned memory, length or offset take the page cache; both see the same file.
        let odd = &backing[skip + 1..skip + 1 + 512];
        assert!(raw.direct_for(odd, 0).is_none());
        assert!(raw.direct_for(&backing[skip..skip + 100], 0).is_none());
        raw.write_all_at(&[7u8; 100], 8192 + 3).unwrap();
        raw.flush().unwrap();

        let mut back = vec![0u8; 3 * DIRECT_MEM_ALIGN];
        let skip = back.as_ptr().align_offset(DIRECT_MEM_ALIGN);
        raw.read_exact_at(&mut back[skip..skip + 2 * DIRECT_MEM_ALIGN], 4096)
            .unwrap();
        assert!(back[skip..skip + 4096].iter().all(|&b| b == 0xa5));
        assert_eq!(&back[skip + 4096 + 3..skip + 4096 + 103], &[7u8; 100][..]);
        let on_disk = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(on_disk[4096..8192].iter().all(|&b| b == 0xa5));
        assert_eq!(&on_disk[8195..8295], &[7u8; 100][..]);
    }
}
