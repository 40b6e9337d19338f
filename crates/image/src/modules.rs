//! Kernel modules for the stock kernel: Debian's cloud kernel has every virtio driver as a
//! module, so the initramfs carries them and /init loads them with `insmod` in dependency
//! order.
//!
//! The .deb ships no `modules.dep`, so dependencies are read from each module's own
//! `.modinfo` ELF section (its `depends=` entry), the same field `depmod` reads.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

use crate::error::{ImageError, IoContext};

/// The modules wirt's devices need (virtio over PCI and MMIO, and every virtio device wirt
/// emulates); their dependencies are added automatically.
pub const VIRTIO_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_rng",
    "virtio_console",
    "virtio_balloon",
    "vmw_vsock_virtio_transport",
];

/// A module to put into the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Module name as the kernel knows it (underscores).
    pub name: String,
    /// The .ko file in the unpacked package.
    pub path: PathBuf,
}

/// Finds `wanted` and everything they depend on under `modules_dir`
/// (`lib/modules/<version>`), ordered so each module comes after its dependencies.
pub fn resolve(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<Module>, ImageError> {
    let index = index(modules_dir)?;
    let mut ordered = Vec::new();
    let mut done = HashSet::new();
    for name in wanted {
        visit(name, &index, &mut done, &mut Vec::new(), &mut ordered)?;
    }
    Ok(ordered)
}

/// Module name → .ko path for every module under `dir`.
fn index(dir: &Path) -> Result<BTreeMap<String, PathBuf>, ImageError> {
    let mut index = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).context(|| format!("reading {}", dir.display()))? {
            let path = entry
                .context(|| format!("reading {}", dir.display()))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                index.insert(normalize(stem), path);
            }
        }
    }
    Ok(index)
}

/// Depth-first, dependencies first; `stack` detects cycles.
fn visit(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    done: &mut HashSet<String>,
    stack: &mut Vec<String>,
    ordered: &mut Vec<Module>,
) -> Result<(), ImageError> {
    let name = normalize(name);
    if done.contains(&name) {
        return Ok(());
    }
    if stack.contains(&name) {
        return Err(ImageError::Module {
            module: name,
            detail: format!("dependency cycle through {}", stack.join(" -> ")),
        });
    }
    let path = index.get(&name).ok_or_else(|| ImageError::Module {
        module: name.clone(),
        detail: match stack.last() {
            Some(parent) => format!("needed by {parent} but not in the kernel package"),
            None => "not in the kernel package (built in, renamed or compressed?)".to_string(),
        },
    })?;
    let data = fs::read(path).context(|| format!("reading {}", path.display()))?;
    stack.push(name.clone());
    for dependency in depends(&data).map_err(|detail| ImageError::Module {
        module: name.clone(),
        detail,
    })? {
        visit(&dependency, index, done, stack, ordered)?;
    }
    stack.pop();
    done.insert(name.clone());
    ordered.push(Module {
        name,
        path: path.clone(),
    });
    Ok(())
}

/// The `depends=` list from a module's `.modinfo` section.
pub fn depends(ko: &[u8]) -> Result<Vec<String>, String> {
    let file = object::File::parse(ko).map_err(|e| format!("not an ELF module: {e}"))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or("no .modinfo section")?;
    let data = section
        .data()
        .map_err(|e| format!("unreadable .modinfo: {e}"))?;
    Ok(modinfo_depends(data))
}

/// Parses the NUL-separated `key=value` strings of `.modinfo`.
fn modinfo_depends(modinfo: &[u8]) -> Vec<String> {
    modinfo
        .split(|&b| b == 0)
        .filter_map(|entry| entry.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(normalize)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The kernel treats `-` and `_` in module names alike; we use `_`.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_depends_from_modinfo() {
        let modinfo = b"license=GPL\0depends=virtio,virtio_ring,net-failover\0intree=Y\0\0";
        assert_eq!(
            modinfo_depends(modinfo),
            ["virtio", "virtio_ring", "net_failover"]
        );
        assert!(modinfo_depends(b"depends=\0name=x\0").is_empty());
    }

    #[test]
    fn rejects_non_elf() {
        assert!(depends(b"not an elf file").is_err());
    }

    #[test]
    fn unknown_module_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("wirt-mod-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let err = resolve(&dir, &["virtio_blk"]).unwrap_err();
        fs::remove_dir_all(&dir).unwrap();
        assert!(err.to_string().contains("virtio_blk"), "{err}");
    }
}
