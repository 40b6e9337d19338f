//! qcow2 images through the `imago` crate (its synchronous interface), behind the same
//! operations as a raw file.

use std::path::Path;
use std::sync::RwLock;

use imago::file::File;
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate};

/// An open qcow2 image.
pub struct Qcow2File {
    /// Discards need `&mut`; reads and writes share the lock.
    access: RwLock<FormatAccess<File>>,
    len: u64,
    readonly: bool,
}

impl std::fmt::Debug for Qcow2File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2File")
            .field("len", &self.len)
            .field("readonly", &self.readonly)
            .finish()
    }
}

impl Qcow2File {
    /// Open `path`; backing files named in the image are opened too (read-only).
    pub fn open(path: &Path, readonly: bool) -> std::io::Result<Self> {
        let qcow2 = Qcow2::<File>::builder_path(path)
            .write(!readonly)
            .open(PermissiveImplicitOpenGate::default())?;
        let access = FormatAccess::new(qcow2);
        let len = access.size();
        Ok(Qcow2File {
            access: RwLock::new(access),
            len,
            readonly,
        })
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, FormatAccess<File>> {
        self.access.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Virtual size in bytes.
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
        self.read_lock().read(buf, offset)
    }

    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.read_lock().write(buf, offset)
    }

    /// Write out cached metadata, then make everything durable.
    pub fn flush(&self) -> std::io::Result<()> {
        let a = self.read_lock();
        a.flush()?;
        a.sync()
    }

    pub fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.access
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .discard_to_zero(offset, len)
    }

    pub fn zero_range(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.read_lock().write_zeroes(offset, len)
    }
}
