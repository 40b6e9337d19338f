//! The stock kernel: Debian's cloud kernel image as packaged, plus the virtio modules the
//! initramfs must carry because that kernel has them as modules.

use std::fs;
use std::path::{Path, PathBuf};

use crate::debian::{self, Package};
use crate::error::{ImageError, IoContext};
use crate::modules::{self, Module};
use crate::recipe;

/// The unpacked stock kernel: its bzImage and the modules to load, dependencies first.
pub struct StockKernel {
    pub vmlinuz: PathBuf,
    pub modules: Vec<Module>,
}

/// The versioned kernel package Debian's cloud metapackage currently points at.
pub fn resolve() -> Result<Package, ImageError> {
    debian::resolve_dependency(
        recipe::CLOUD_KERNEL_METAPACKAGE,
        recipe::KERNEL_PACKAGE_PREFIX,
    )
}

/// Unpacks the kernel package's .deb into `scratch` and picks out the kernel and modules.
pub fn unpack(package: &Package, deb: &Path, scratch: &Path) -> Result<StockKernel, ImageError> {
    debian::unpack(deb, scratch)?;
    let not_found = |what: &str| ImageError::NotInPackage {
        package: package.name.clone(),
        what: what.to_string(),
    };
    let vmlinuz = single_entry(&scratch.join("boot"), "vmlinuz-")?
        .ok_or_else(|| not_found("boot/vmlinuz-*"))?;
    let modules_dir = single_entry(&scratch.join("lib/modules"), "")?
        .ok_or_else(|| not_found("lib/modules/<version>"))?;
    let modules = modules::resolve(&modules_dir, modules::VIRTIO_MODULES)?;
    Ok(StockKernel { vmlinuz, modules })
}

/// The one entry of `dir` whose name starts with `prefix`, if exactly one exists.
fn single_entry(dir: &Path, prefix: &str) -> Result<Option<PathBuf>, ImageError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).context(|| format!("reading {}", dir.display()))? {
        let entry = entry.context(|| format!("reading {}", dir.display()))?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            found.push(entry.path());
        }
    }
    Ok(if found.len() == 1 { found.pop() } else { None })
}
