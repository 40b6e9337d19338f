//! End-to-end: `wirt run` boots the tiny guests of `crates/test-guests` on each engine and
//! the serial output, exit status and exit counters are checked. The KVM variants skip
//! with a printed reason where /dev/kvm is missing; the software-engine variants run
//! everywhere.

mod common;

use common::{kvm_available, wirt_run, Run};
use test_guests::path;

/// Runs guest `name` on `engine`, or returns None when that engine is unavailable here.
fn boot(engine: &str, name: &str, extra: &[&str], test: &str) -> Option<Run> {
    if engine == "kvm" && !kvm_available(test) {
        return None;
    }
    let mut args = vec!["--engine", engine];
    args.extend_from_slice(extra);
    Some(wirt_run(&path(name), &args))
}

fn exit_count(r: &Run, reason: &str) -> u64 {
    r.stderr
        .lines()
        .find(|l| l.split_whitespace().next() == Some(reason))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn elf64_prints_cmdline_and_exits_via_debug_exit(engine: &str) {
    let extra = ["--cmdline", "foo=bar wirt", "--serial", "stdio"];
    let Some(r) = boot(engine, "hello64", &extra, "elf64") else {
        return;
    };
    assert_eq!(r.status, 0x21, "{r:?}");
    assert!(r.stdout.contains("hello from a 64-bit guest\n"), "{r:?}");
    assert!(r.stdout.contains("cmdline: foo=bar wirt\n"), "{r:?}");
}

fn port_and_mmio_exits_are_handled_and_counted(engine: &str) {
    let Some(r) = boot(engine, "io64", &["--stats"], "io") else {
        return;
    };
    assert_eq!(r.status, 0x23, "{r:?}");
    assert!(r.stdout.contains("mmio-unclaimed ok"), "{r:?}");
    for reason in ["pio-read", "pio-write", "mmio-read", "mmio-write"] {
        assert!(
            exit_count(&r, reason) > 0,
            "no {reason} exits counted: {r:?}"
        );
    }
}

fn hlt_is_woken_by_the_timer_interrupt(engine: &str) {
    let Some(r) = boot(engine, "timer64", &[], "timer") else {
        return;
    };
    assert_eq!(r.status, 0x27, "{r:?}");
    assert!(r.stdout.contains("timer ok"), "{r:?}");
}

fn i8042_reset_ends_the_vm_with_status_2(engine: &str) {
    let Some(r) = boot(engine, "reset64", &[], "reset") else {
        return;
    };
    assert_eq!(r.status, 2, "{r:?}");
    assert!(r.stdout.contains("resetting"), "{r:?}");
}

fn triple_fault_ends_the_vm_with_status_4(engine: &str) {
    let Some(r) = boot(engine, "triple64", &["--stats"], "triple") else {
        return;
    };
    assert_eq!(r.status, 4, "{r:?}");
    assert!(r.stderr.contains("triple-faulted"), "{r:?}");
    assert_eq!(exit_count(&r, "shutdown"), 1, "{r:?}");
}

fn two_vcpus_both_run(engine: &str) {
    let Some(r) = boot(engine, "smp64", &["--cpus", "2"], "smp") else {
        return;
    };
    assert_eq!(r.status, 0x29, "{r:?}");
    assert!(r.stdout.contains("A\nsmp ok"), "{r:?}");
}

fn multiboot_gets_magic_and_cmdline(engine: &str) {
    let Some(r) = boot(engine, "mb32", &["--cmdline", "mb=1"], "multiboot") else {
        return;
    };
    assert_eq!(r.status, 0x2d, "{r:?}");
    assert!(r.stdout.contains("hello from a multiboot guest\n"), "{r:?}");
    // As QEMU's loader does, the kernel's file name comes first (kvm-unit-tests' argv[0]).
    let argv0 = test_guests::path("mb32").display().to_string();
    assert!(
        r.stdout.contains(&format!("cmdline: {argv0} mb=1\n")),
        "{r:?}"
    );
}

fn serial_output_goes_to_a_file(engine: &str) {
    let dir = std::env::temp_dir().join(format!("wirt-serial-{engine}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("serial.log");
    let arg = format!("file:{}", log.display());
    let Some(r) = boot(engine, "hello64", &["--serial", &arg], "serial-file") else {
        return;
    };
    let written = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(r.status, 0x21, "{r:?}");
    assert!(
        !r.stdout.contains("hello"),
        "output must not reach stdout: {r:?}"
    );
    assert!(written.contains("hello from a 64-bit guest"), "{written:?}");
}

macro_rules! on_each_engine {
    ($($name:ident),* $(,)?) => {
        mod kvm {
            $(#[test] fn $name() { super::$name("kvm") })*
        }
        mod sw {
            $(#[test] fn $name() { super::$name("sw") })*
        }
    };
}

on_each_engine!(
    elf64_prints_cmdline_and_exits_via_debug_exit,
    port_and_mmio_exits_are_handled_and_counted,
    hlt_is_woken_by_the_timer_interrupt,
    i8042_reset_ends_the_vm_with_status_2,
    triple_fault_ends_the_vm_with_status_4,
    two_vcpus_both_run,
    multiboot_gets_magic_and_cmdline,
    serial_output_goes_to_a_file,
);
