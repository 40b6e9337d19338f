//! A writer for the cpio "newc" format, the only archive format Linux unpacks as an
//! initramfs.
//!
//! Written here rather than by calling `cpio`, so building the image needs no extra tool,
//! runs without root (device nodes are just archive entries) and is byte-for-byte
//! reproducible: every entry has uid/gid 0 and mtime 0, and inode numbers count up in the
//! order entries are added. The layout follows the kernel's
//! Documentation/driver-api/early-userspace/buffer-format.rst.

use std::io::{self, Write};

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// The magic that starts every newc header (no checksum variant).
const MAGIC: &[u8; 6] = b"070701";
/// Fixed length of a header: the magic and 13 eight-digit hex fields.
pub const HEADER_LEN: usize = 6 + 13 * 8;
/// Name of the entry that ends the archive.
const TRAILER: &str = "TRAILER!!!";

/// Streams entries into a newc archive.
pub struct NewcWriter<W: Write> {
    out: W,
    next_inode: u32,
    written: u64,
}

impl<W: Write> NewcWriter<W> {
    /// Starts an empty archive.
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_inode: 1,
            written: 0,
        }
    }

    /// A directory. `path` is relative to the root ("bin", "etc/wirt"); parents must have
    /// been added before.
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])
    }

    /// A regular file with the given contents.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// A symbolic link pointing at `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node, e.g. `dev/console` (5, 1).
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 0, 1, 0, (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    /// True before the first entry.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let path = path.trim_start_matches('/');
        if path.is_empty() || path.contains('\0') || path == TRAILER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid initramfs path {path:?}"),
            ));
        }
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path}: newc entries are limited to 4 GiB"),
            )
        })?;
        let inode = self.next_inode;
        self.next_inode += 1;
        self.header(path, inode, mode, nlink, size, rdev)?;
        self.write_padded(data)
    }

    fn header(
        &mut self,
        name: &str,
        inode: u32,
        mode: u32,
        nlink: u32,
        size: u32,
        (rdev_major, rdev_minor): (u32, u32),
    ) -> io::Result<()> {
        let name_size = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path too long"))?;
        let fields = [
            inode, mode, 0, // uid
            0, // gid
            nlink, 0, // mtime
            size, 0, // devmajor
            0, // devminor
            rdev_major, rdev_minor, name_size, 0, // check
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        header.extend_from_slice(MAGIC);
        for field in fields {
            header.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        self.write_padded(&header)
    }

    /// Writes `bytes` and pads with NULs to the next multiple of four.
    fn write_padded(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        let pad = (4 - bytes.len() % 4) % 4;
        self.out.write_all(&[0u8; 3][..pad])?;
        self.written += (bytes.len() + pad) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed entry: name, mode, rdev, data.
    type Parsed = (String, u32, (u32, u32), Vec<u8>);

    /// A reader written from the format description, independent of the writer.
    fn parse(mut bytes: &[u8]) -> Vec<Parsed> {
        let mut entries = Vec::new();
        let mut offset = 0usize;
        loop {
            assert_eq!(&bytes[..6], b"070701", "magic at offset {offset}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&bytes[6 + i * 8..6 + (i + 1) * 8]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let mode = field(1);
            let size = field(6) as usize;
            let rdev = (field(9), field(10));
            let name_size = field(11) as usize;
            let name_end = HEADER_LEN + name_size;
            assert_eq!(bytes[name_end - 1], 0, "name is NUL-terminated");
            let name = std::str::from_utf8(&bytes[HEADER_LEN..name_end - 1])
                .unwrap()
                .to_string();
            let data_start = name_end.div_ceil(4) * 4;
            let data = bytes[data_start..data_start + size].to_vec();
            let next = (data_start + size).div_ceil(4) * 4;
            offset += next;
            bytes = &bytes[next..];
            if name == TRAILER {
                assert!(bytes.is_empty(), "nothing after the trailer");
                return entries;
            }
            entries.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn round_trips_every_entry_kind() {
        let mut w = NewcWriter::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("bin/hello", 0o755, b"hello world").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.dir("dev", 0o755).unwrap();
        w.char_device("/dev/console", 0o600, 5, 1).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = parse(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["bin", "bin/hello", "bin/sh", "dev", "dev/console"]);
        assert_eq!(entries[0].1, 0o040755);
        assert_eq!(entries[1].1, 0o100755);
        assert_eq!(entries[1].3, b"hello world");
        assert_eq!(entries[2].1, 0o120777);
        assert_eq!(entries[2].3, b"busybox");
        assert_eq!(entries[4].1, 0o020600);
        assert_eq!(entries[4].2, (5, 1));
    }

    #[test]
    fn header_layout_matches_the_format() {
        let mut w = NewcWriter::new(Vec::new());
        w.file("a", 0o644, b"xyz").unwrap();
        let bytes = w.finish().unwrap();
        let expected_header = concat!(
            "070701", "00000001", "000081a4", "00000000", "00000000", "00000001", "00000000",
            "00000003", "00000000", "00000000", "00000000", "00000000", "00000002", "00000000",
        );
        assert_eq!(&bytes[..HEADER_LEN], expected_header.as_bytes());
        // 110-byte header + "a\0" = 112, already aligned; data "xyz" + 1 pad byte.
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 2], b"a\0");
        assert_eq!(&bytes[112..116], b"xyz\0");
        assert_eq!(&bytes[116..122], b"070701");
    }

    #[test]
    fn output_is_reproducible() {
        let build = || {
            let mut w = NewcWriter::new(Vec::new());
            w.dir("etc", 0o755).unwrap();
            w.file("etc/x", 0o644, b"1").unwrap();
            w.finish().unwrap()
        };
        assert_eq!(build(), build());
    }

    #[test]
    fn rejects_bad_paths() {
        let mut w = NewcWriter::new(Vec::new());
        assert!(w.file("", 0o644, b"").is_err());
        assert!(w.file("a\0b", 0o644, b"").is_err());
        assert!(w.file("TRAILER!!!", 0o644, b"").is_err());
    }

    #[test]
    fn system_cpio_lists_the_archive() {
        let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("skipped: cpio is not installed");
            return;
        };
        let mut w = NewcWriter::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("bin/busybox", 0o755, &[0x7f; 1001]).unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        let bytes = w.finish().unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "bin\nbin/busybox\nbin/sh\n"
        );
    }
}
