//! The recipe files from `guest/`, compiled into the binary, and the hashes that key the
//! cache: an image is rebuilt exactly when a recipe file, the generated boot-timer
//! program, a guest tool's source or compiler flags, the kernel flavour or a resolved
//! Debian package version changes.

use sha2::{Digest, Sha256};

use crate::debian::{hex, Package};
use crate::options::KernelFlavour;

/// The guest's /init script.
pub const INIT: &str = include_str!("../../../guest/init");
/// The minimal kernel's Kconfig fragment.
pub const KERNEL_CONFIG: &str = include_str!("../../../guest/kernel.config");
/// The script that configures and compiles the minimal kernel.
pub const BUILD_KERNEL_SH: &str = include_str!("../../../guest/build-kernel.sh");

/// Bumped when this crate changes how it lays out an image, to invalidate old caches.
const LAYOUT_VERSION: &str = "wirt-image-layout-1";

/// Debian packages the image is made of.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The metapackage that always points at Debian's current cloud kernel.
pub const CLOUD_KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
/// Prefix of the versioned kernel package the metapackage depends on.
pub const KERNEL_PACKAGE_PREFIX: &str = "linux-image-";
/// The kernel source the minimal kernel is compiled from.
pub const LINUX_SOURCE_PACKAGE: &str = "linux-source-6.1";

/// Accumulates length-prefixed parts, so ("ab", "c") and ("a", "bc") differ.
struct KeyHasher(Sha256);

impl KeyHasher {
    fn new(domain: &str) -> Self {
        let mut h = Self(Sha256::new());
        h.part(LAYOUT_VERSION.as_bytes());
        h.part(domain.as_bytes());
        h
    }

    fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    fn package(&mut self, p: &Package) -> &mut Self {
        self.part(p.name.as_bytes())
            .part(p.version.as_bytes())
            .part(p.architecture.as_bytes())
            .part(p.sha256.as_bytes())
    }

    fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

/// The lines of the kernel config fragment that mean something to Kconfig
/// (`CONFIG_X=v` and `# CONFIG_X is not set`), so editing a comment does not recompile
/// the kernel.
fn kernel_config_settings() -> String {
    KERNEL_CONFIG
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("CONFIG_") || (l.starts_with("# CONFIG_") && l.ends_with(" is not set"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Key of everything in `guest/` and this crate that shapes an image of `flavour`,
/// without package versions: lets a cached image be found when apt's index cannot be
/// read.
pub fn recipe_key(flavour: KernelFlavour, port_writer: &[u8]) -> String {
    recipe_key_with_tools(flavour, port_writer, crate::guest_tools::TOOLS)
}

fn recipe_key_with_tools(
    flavour: KernelFlavour,
    port_writer: &[u8],
    tools: &[crate::guest_tools::GuestTool],
) -> String {
    let mut h = KeyHasher::new("recipe");
    h.part(flavour.name().as_bytes())
        .part(INIT.as_bytes())
        .part(port_writer);
    for tool in tools {
        h.part(tool.guest_path.as_bytes())
            .part(tool.source.as_bytes());
    }
    for flag in crate::guest_tools::GCC_FLAGS {
        h.part(flag.as_bytes());
    }
    if flavour == KernelFlavour::Minimal {
        h.part(kernel_config_settings().as_bytes())
            .part(BUILD_KERNEL_SH.as_bytes());
    } else {
        for module in crate::modules::VIRTIO_MODULES {
            h.part(module.as_bytes());
        }
    }
    h.finish()
}

/// Key of a complete image: the recipe plus the exact Debian packages it is made of.
pub fn image_key(recipe_key: &str, packages: &[Package]) -> String {
    let mut h = KeyHasher::new("image");
    h.part(recipe_key.as_bytes());
    for p in packages {
        h.package(p);
    }
    h.finish()
}

/// Key of a compiled minimal kernel: only the config, the build script and the source
/// package, so changing /init does not recompile the kernel.
pub fn minimal_kernel_key(source: &Package) -> String {
    let mut h = KeyHasher::new("minimal-kernel");
    h.part(kernel_config_settings().as_bytes())
        .part(BUILD_KERNEL_SH.as_bytes())
        .package(source);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(version: &str) -> Package {
        Package {
            name: "busybox-static".into(),
            version: version.into(),
            architecture: "amd64".into(),
            sha256: "00".into(),
            depends: String::new(),
        }
    }

    #[test]
    fn keys_are_stable() {
        let r = recipe_key(KernelFlavour::Stock, b"elf");
        assert_eq!(r, recipe_key(KernelFlavour::Stock, b"elf"));
        assert_eq!(r.len(), 64);
        assert_eq!(
            image_key(&r, &[package("1")]),
            image_key(&r, &[package("1")])
        );
    }

    #[test]
    fn every_input_changes_the_key() {
        let r = recipe_key(KernelFlavour::Stock, b"elf");
        assert_ne!(r, recipe_key(KernelFlavour::Minimal, b"elf"));
        assert_ne!(r, recipe_key(KernelFlavour::Stock, b"elf2"));
        let k = image_key(&r, &[package("1")]);
        assert_ne!(k, image_key(&r, &[package("2")]));
        assert_ne!(k, image_key(&r, &[]));
        let mut other_sha = package("1");
        other_sha.sha256 = "01".into();
        assert_ne!(k, image_key(&r, &[other_sha]));
        assert_ne!(
            minimal_kernel_key(&package("1")),
            minimal_kernel_key(&package("2"))
        );
    }

    #[test]
    fn a_guest_tool_changes_the_image_key_only() {
        use crate::guest_tools::{GuestTool, TOOLS};
        let edited = [GuestTool {
            source: "int edited;",
            ..TOOLS[0]
        }];
        let flavour = KernelFlavour::Minimal;
        assert_eq!(
            recipe_key(flavour, b"elf"),
            recipe_key_with_tools(flavour, b"elf", TOOLS)
        );
        assert_ne!(
            recipe_key(flavour, b"elf"),
            recipe_key_with_tools(flavour, b"elf", &edited)
        );
    }

    #[test]
    fn kernel_key_ignores_comments_only() {
        let settings = kernel_config_settings();
        assert!(settings.contains("CONFIG_VIRTIO_BLK=y"));
        assert!(settings.contains("# CONFIG_MODULES is not set"));
        assert!(!settings.contains("Goals"));
    }

    #[test]
    fn parts_are_delimited() {
        let mut a = KeyHasher::new("t");
        a.part(b"ab").part(b"c");
        let mut b = KeyHasher::new("t");
        b.part(b"a").part(b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn recipe_files_are_embedded() {
        assert!(INIT.starts_with("#!/bin/busybox sh"));
        assert!(INIT.contains(crate::cmdline::READY_MARKER));
        assert!(INIT.contains(crate::cmdline::EXIT_MARKER));
        assert!(KERNEL_CONFIG.contains("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y"));
        assert!(BUILD_KERNEL_SH.contains("allnoconfig"));
    }
}
