//! Assembles every `guests/*.S` into an ELF file in OUT_DIR with the system toolchain
//! (`cc` as preprocessor and assembler, `ld` as linker). Files whose name ends in `32.S`
//! become 32-bit ELF (Multiboot) guests; the others 64-bit ELF guests.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install binutils and gcc)"));
    assert!(status.success(), "{cmd:?} failed");
}

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = Path::new("guests");
    println!("cargo:rerun-if-changed=guests");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("guests/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "S"))
        .collect();
    sources.sort();
    for src in sources {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let is32 = stem.ends_with("32");
        let obj = out.join(format!("{stem}.o"));
        let elf = out.join(format!("{stem}.elf"));
        run(Command::new("cc")
            .args(["-c", "-nostdlib", "-I", "guests"])
            .arg(if is32 { "-m32" } else { "-m64" })
            .arg(&src)
            .arg("-o")
            .arg(&obj));
        run(Command::new("ld")
            .args(["-nostdlib", "--no-warn-rwx-segments", "-z", "noexecstack"])
            .args(["-m", if is32 { "elf_i386" } else { "elf_x86_64" }])
            .args(["-T", "guests/link.ld"])
            .arg(&obj)
            .arg("-o")
            .arg(&elf));
    }
}
