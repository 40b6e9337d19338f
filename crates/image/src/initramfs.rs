//! The initramfs: busybox-static, the /init script from guest/, the boot-timer program, the
//! guest tools (guest/tools/) and, for the stock kernel, its virtio modules, written as one
//! uncompressed newc archive.
//!
//! Uncompressed on purpose: the kernel unpacks it without running a decompressor, which
//! on the software engine costs more instructions than the extra bytes cost to load.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;
use std::process::Command;

use crate::debian::{one_line, run};
use crate::error::{ImageError, IoContext};
use crate::guest_tools::CompiledTool;
use crate::modules::Module;
use crate::newc::NewcWriter;
use crate::recipe;

/// Where /init finds the list of modules to load, one path per line, in order.
pub const MODULE_LIST: &str = "etc/wirt/modules";
/// The boot-timer program's path in the guest (/init runs it by name).
pub const BOOT_TIMER_PROGRAM: &str = "bin/wirt-boot-timer";

/// The busybox applets to link into /bin, from the binary itself (`busybox --list`).
pub fn busybox_applets(busybox: &Path) -> Result<Vec<String>, ImageError> {
    let out = run(
        Command::new(busybox).arg("--list"),
        "busybox",
        "busybox-static",
    )?;
    if !out.status.success() {
        return Err(ImageError::NotInPackage {
            package: recipe::BUSYBOX_PACKAGE.to_string(),
            what: format!("working busybox ({})", one_line(&out.stderr)),
        });
    }
    let applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| is_plain_name(a) && *a != "busybox")
        .map(str::to_string)
        .collect();
    if !applets.iter().any(|a| a == "sh") {
        return Err(ImageError::NotInPackage {
            package: recipe::BUSYBOX_PACKAGE.to_string(),
            what: "sh applet".to_string(),
        });
    }
    Ok(applets)
}

/// Names safe to use as a single path component.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// Writes the initramfs to `out`. Returns its size in bytes.
pub fn write(
    out: &Path,
    busybox: &Path,
    applets: &[String],
    boot_timer: &[u8],
    tools: &[CompiledTool],
    modules: &[Module],
) -> Result<u64, ImageError> {
    let file = File::create(out).context(|| format!("creating {}", out.display()))?;
    let mut w = NewcWriter::new(BufWriter::new(file));
    let ctx = || format!("writing {}", out.display());

    for dir in [
        "bin",
        "dev",
        "etc",
        "etc/wirt",
        "lib",
        "lib/modules",
        "proc",
        "root",
        "sys",
    ] {
        w.dir(dir, 0o755).context(ctx)?;
    }
    w.dir("tmp", 0o1777).context(ctx)?;
    // The kernel opens /dev/console for init before /init mounts devtmpfs.
    w.char_device("dev/console", 0o600, 5, 1).context(ctx)?;
    w.char_device("dev/null", 0o666, 1, 3).context(ctx)?;

    w.file("init", 0o755, recipe::INIT.as_bytes())
        .context(ctx)?;
    let busybox_bytes = fs::read(busybox).context(|| format!("reading {}", busybox.display()))?;
    w.file("bin/busybox", 0o755, &busybox_bytes).context(ctx)?;
    for applet in applets {
        w.symlink(&format!("bin/{applet}"), "busybox")
            .context(ctx)?;
    }
    w.file(BOOT_TIMER_PROGRAM, 0o755, boot_timer).context(ctx)?;
    for tool in tools {
        w.file(tool.guest_path, 0o755, &tool.bytes).context(ctx)?;
    }

    let mut list = String::new();
    for module in modules {
        let guest_path = format!("lib/modules/{}.ko", module.name);
        let bytes =
            fs::read(&module.path).context(|| format!("reading {}", module.path.display()))?;
        w.file(&guest_path, 0o644, &bytes).context(ctx)?;
        list.push('/');
        list.push_str(&guest_path);
        list.push('\n');
    }
    if !modules.is_empty() {
        w.file(MODULE_LIST, 0o644, list.as_bytes()).context(ctx)?;
    }

    let len = w.len();
    let file = w
        .finish()
        .context(ctx)?
        .into_inner()
        .map_err(|e| ImageError::io(ctx(), e.into_error()))?;
    file.sync_all().context(ctx)?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_names_are_checked() {
        assert!(is_plain_name("sh"));
        assert!(!is_plain_name("../x"));
        assert!(!is_plain_name(""));
        assert!(!is_plain_name(".."));
    }

    #[test]
    fn writes_init_busybox_links_and_module_list() {
        let dir = std::env::temp_dir().join(format!("wirt-initramfs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let busybox = dir.join("busybox");
        fs::write(&busybox, b"BUSYBOX").unwrap();
        let ko = dir.join("virtio.ko");
        fs::write(&ko, b"KO").unwrap();
        let out = dir.join("initrd");
        let modules = [Module {
            name: "virtio".into(),
            path: ko,
        }];
        write(
            &out,
            &busybox,
            &["sh".into(), "awk".into()],
            b"ELF",
            &[CompiledTool {
                guest_path: "bin/vsock",
                bytes: b"VSOCK-TOOL".to_vec(),
            }],
            &modules,
        )
        .unwrap();
        let bytes = fs::read(&out).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for needle in [
            "init\0",
            "bin/busybox\0",
            "bin/sh\0",
            "bin/awk\0",
            "bin/wirt-boot-timer\0",
            "bin/vsock\0",
            "VSOCK-TOOL",
            "lib/modules/virtio.ko\0",
            "etc/wirt/modules\0",
            "/lib/modules/virtio.ko\n",
            "dev/console\0",
            "TRAILER!!!\0",
            recipe::INIT,
        ] {
            assert!(text.contains(needle), "missing {needle:?}");
        }
    }
}
