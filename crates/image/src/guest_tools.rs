//! Small guest programs written in C in `guest/tools/`, compiled with the host's gcc while
//! the image is built, for what busybox cannot do (today: `/bin/vsock`, an AF_VSOCK client
//! and server).
//!
//! They are freestanding (no libc, raw system calls), so a static binary of a few KiB
//! needs nothing from the guest. Their sources and the compiler flags are part of the
//! image's cache key ([`crate::recipe::recipe_key`]); the kernel's key does not include
//! them, so changing a tool rebuilds only the initramfs.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::debian::{one_line, run};
use crate::error::{ImageError, IoContext};

/// A guest program: its path in the initramfs and its C source.
pub struct GuestTool {
    /// Path inside the initramfs, e.g. `bin/vsock`.
    pub guest_path: &'static str,
    /// The file name under guest/tools/ (for messages).
    pub source_name: &'static str,
    pub source: &'static str,
}

/// Every guest tool the image contains.
pub const TOOLS: &[GuestTool] = &[GuestTool {
    guest_path: "bin/vsock",
    source_name: "vsock.c",
    source: include_str!("../../../guest/tools/vsock.c"),
}];

/// How each tool is compiled: static, no libc, small; only general-purpose registers, so
/// the software engine's less common SIMD paths are not needed.
pub const GCC_FLAGS: &[&str] = &[
    "-Os",
    "-static",
    "-nostdlib",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-stack-protector",
    "-fno-pie",
    "-no-pie",
    "-fno-asynchronous-unwind-tables",
    "-mgeneral-regs-only",
    "-Wall",
    "-Wl,--build-id=none",
    "-s",
];

/// A compiled tool, ready for the initramfs.
pub struct CompiledTool {
    pub guest_path: &'static str,
    pub bytes: Vec<u8>,
}

/// gcc's first `error:` line, else its last line.
fn first_error(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .find(|l| l.contains("error:"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| one_line(stderr))
}

/// Compiles every tool in `scratch` (a directory the caller owns).
pub fn compile_all(scratch: &Path) -> Result<Vec<CompiledTool>, ImageError> {
    fs::create_dir_all(scratch).context(|| format!("creating {}", scratch.display()))?;
    TOOLS.iter().map(|t| compile(t, scratch)).collect()
}

fn compile(tool: &GuestTool, scratch: &Path) -> Result<CompiledTool, ImageError> {
    let source = scratch.join(tool.source_name);
    fs::write(&source, tool.source).context(|| format!("writing {}", source.display()))?;
    let output = scratch.join(format!("{}.elf", tool.source_name));
    let out = run(
        Command::new("gcc")
            .args(GCC_FLAGS)
            .arg("-o")
            .arg(&output)
            .arg(&source),
        "gcc",
        "gcc",
    )?;
    if !out.status.success() {
        return Err(ImageError::GuestTool {
            tool: tool.source_name,
            detail: first_error(&out.stderr),
        });
    }
    let bytes = fs::read(&output).context(|| format!("reading {}", output.display()))?;
    Ok(CompiledTool {
        guest_path: tool.guest_path,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_embedded_with_plain_guest_paths() {
        for t in TOOLS {
            assert!(t.guest_path.starts_with("bin/"), "{}", t.guest_path);
            assert!(
                t.source.contains("_start"),
                "{} has an entry point",
                t.source_name
            );
        }
    }

    /// Compiles the real sources when gcc is installed (scripts/setup installs it).
    #[test]
    fn tools_compile_to_static_x86_64_elf() {
        if Command::new("gcc").arg("--version").output().is_err() {
            eprintln!("skipped: gcc is not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("wirt-tools-{}", std::process::id()));
        let tools = compile_all(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(tools.len(), TOOLS.len());
        for t in &tools {
            assert_eq!(&t.bytes[..4], b"\x7fELF", "{}", t.guest_path);
            assert_eq!(t.bytes[4], 2, "64-bit");
            assert_eq!(
                u16::from_le_bytes([t.bytes[18], t.bytes[19]]),
                0x3e,
                "x86-64"
            );
            // No PT_INTERP: a static executable that needs no dynamic loader.
            let phoff = u64::from_le_bytes(t.bytes[32..40].try_into().unwrap()) as usize;
            let phnum = u16::from_le_bytes([t.bytes[56], t.bytes[57]]) as usize;
            for i in 0..phnum {
                let p = phoff + i * 56;
                let kind = u32::from_le_bytes(t.bytes[p..p + 4].try_into().unwrap());
                assert_ne!(kind, 3, "{} must be static", t.guest_path);
            }
            assert!(t.bytes.len() < 64 * 1024, "{} is small", t.guest_path);
        }
    }

    #[test]
    fn a_compile_error_names_the_tool() {
        if Command::new("gcc").arg("--version").output().is_err() {
            eprintln!("skipped: gcc is not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("wirt-tools-bad-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let bad = GuestTool {
            guest_path: "bin/bad",
            source_name: "bad.c",
            source: "this is not C",
        };
        let err = compile(&bad, &dir).err().expect("a compile error");
        fs::remove_dir_all(&dir).unwrap();
        assert!(
            matches!(err, ImageError::GuestTool { tool: "bad.c", .. }),
            "{err}"
        );
    }
}
