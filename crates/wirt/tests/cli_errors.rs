//! Every mistake a user can make is one line on stderr naming the cause, with a non-zero
//! exit status — never a panic trace.

mod common;

use common::{wirt, wirt_run, Run};

fn assert_one_line_error(r: &Run, needle: &str) {
    assert_eq!(r.status, 1, "{r:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line: {r:?}");
    assert!(lines[0].starts_with("wirt: error: "), "{r:?}");
    assert!(lines[0].contains(needle), "expected {needle:?}: {r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");
}

#[test]
fn missing_kernel_is_one_line() {
    let r = wirt_run("/nonexistent/vmlinux".as_ref(), &["--engine", "sw"]);
    assert_one_line_error(&r, "cannot read kernel /nonexistent/vmlinux");
}

#[test]
fn directory_as_kernel_is_rejected() {
    let r = wirt_run("/".as_ref(), &[]);
    assert_one_line_error(&r, "is not a regular file");
}

#[test]
fn memory_too_small_is_rejected() {
    let k = std::env::current_exe().unwrap();
    let r = wirt_run(&k, &["--memory", "1M"]);
    assert_one_line_error(&r, "too small");
}

#[test]
fn unknown_kernel_format_names_what_it_found() {
    let dir = std::env::temp_dir().join(format!("wirt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let k = dir.join("not-a-kernel");
    std::fs::write(&k, b"#!/bin/sh\necho this is a script, not a kernel\n").unwrap();
    let r = wirt_run(&k, &["--engine", "sw", "--serial", "null"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_one_line_error(&r, "kernel");
}

#[test]
fn bad_flag_values_are_usage_errors() {
    let r = wirt(&["run", "--engine", "vmx"]);
    assert_ne!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("unknown engine"), "{r:?}");
    let r = wirt(&["run", "--memory", "lots"]);
    assert_ne!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("bad memory size"), "{r:?}");
}

#[test]
fn cpu_feature_edits_are_checked() {
    let r = wirt(&["run", "--cpu-features", "+warp"]);
    assert_ne!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("unknown CPU feature `warp`"), "{r:?}");
    let r = wirt(&["run", "--cpu-features", "x2apic"]);
    assert_ne!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("must start with + or -"), "{r:?}");
    // A feature the software engine does not implement is refused, not pretended.
    let kernel = test_guests::path("hello64");
    let r = wirt_run(
        &kernel,
        &[
            "--engine",
            "sw",
            "--serial",
            "null",
            "--cpu-features",
            "+vmx",
        ],
    );
    assert_one_line_error(&r, "cannot offer CPU feature `vmx`");
}

#[test]
fn the_test_device_is_refused_for_daemon_vms() {
    let r = wirt(&[
        "vm",
        "create",
        "t",
        "--kernel",
        "/bin/true",
        "--test-device",
    ]);
    assert_one_line_error(&r, "--test-device is for `wirt run`");
}
