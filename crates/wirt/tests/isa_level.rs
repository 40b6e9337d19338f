//! x86-64 ISA levels on the software engine: a CPU-bound C program
//! (`isa_level/workload.c`), compiled on the host with `gcc -O2 -march=x86-64-vN
//! -static`, runs natively and in the default guest and must print the same lines. The
//! binary reaches the guest as the raw contents of a virtio disk. glibc's start-up refuses
//! to run on a CPU whose CPUID lacks the level, and the compiled loops use the level's
//! instructions, so a missing or wrong instruction shows as a failure or a different line.

mod common;

use std::process::Command;

use common::{boot_default_guest, Scratch};

fn run_level(level: &str) {
    let scratch = Scratch::new(&format!("isa-{level}"));
    let bin = scratch.path("workload");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/isa_level/workload.c");
    let gcc = Command::new("gcc")
        .args(["-O2", &format!("-march=x86-64-{level}"), "-static", "-o"])
        .arg(&bin)
        .arg(src)
        .arg("-lm")
        .output()
        .expect("gcc runs (scripts/setup installs it)");
    assert!(
        gcc.status.success(),
        "{}",
        String::from_utf8_lossy(&gcc.stderr)
    );
    let native = Command::new(&bin)
        .output()
        .expect("the workload runs natively");
    assert!(native.status.success(), "native run: {native:?}");
    let expected = String::from_utf8(native.stdout).expect("ASCII output");

    // The binary, padded to whole sectors, is the disk; the guest copies it out.
    let mut image = std::fs::read(&bin).expect("compiled binary");
    let len = image.len();
    image.resize(len.div_ceil(512) * 512, 0);
    let disk = scratch.path("disk.img");
    std::fs::write(&disk, &image).expect("disk image written");
    let script = format!(
        "i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
         head -c {len} /dev/vda > /tmp/workload; chmod +x /tmp/workload\n\
         /tmp/workload; echo workload-status=$?\n"
    );
    let disk_arg = format!("path={},readonly=on", disk.display());
    let r = boot_default_guest(&script, &["--disk", &disk_arg]);
    assert_eq!(r.status, 0, "{r:?}");
    let out = image::cmdline::script_output(&r.stdout).expect("script output");
    assert!(
        out.contains(&format!("{expected}workload-status=0\n")),
        "x86-64-{level}: guest output differs from the host's\n--- host ---\n{expected}--- guest ---\n{out}"
    );
}

#[test]
fn an_x86_64_v2_binary_runs_as_on_the_host() {
    run_level("v2");
}

#[test]
fn an_x86_64_v3_binary_runs_as_on_the_host() {
    run_level("v3");
}
