//! End-to-end checks of the default guest: it builds from Debian packages, a second build
//! reuses the cache, and it boots in QEMU (the reference until wirt's engines boot it),
//! prints the ready marker, runs a `wirt.run=` script and reports its exit status.
//!
//! Building needs apt's index and the build tools of guest/README.md; a test fails with
//! the build error if they are missing. Booting needs `qemu-system-x86_64`; without it the
//! boot tests print why and skip.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use image::{cmdline, qemu, BuildOptions, Image, KernelFlavour};
use sha2::{Digest, Sha256};

/// Generous: QEMU TCG on a busy 2-core CI machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn build(flavour: KernelFlavour) -> Image {
    let opts = BuildOptions {
        flavour,
        ..Default::default()
    };
    image::build(&opts, &mut |p| eprintln!("[{flavour}] {p:?}")).unwrap_or_else(|e| {
        panic!(
            "building the default guest ({flavour}) failed: {e}\n\
             (needs Debian's apt with an updated index and the tools in guest/README.md)"
        )
    })
}

struct Boot {
    console: String,
    exit_code: Option<i32>,
    elapsed: Duration,
}

/// Boots `image` in QEMU with `cmdline`; None (after saying why) if QEMU is missing.
fn boot_in_qemu(image: &Image, cmdline: &str) -> Option<Boot> {
    if !qemu::qemu_available() {
        eprintln!(
            "skipped: {} is not installed (apt-get install qemu-system-x86)",
            qemu::QEMU
        );
        return None;
    }
    let started = Instant::now();
    let mut child = qemu::reference_command(&image.kernel, &image.initrd, cmdline, 256)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting QEMU");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let console = reader.join().unwrap();
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    let status = status.unwrap_or_else(|| {
        panic!("QEMU did not exit within {BOOT_TIMEOUT:?}; console:\n{console}\nstderr:\n{stderr}")
    });
    Some(Boot {
        console,
        exit_code: status.code(),
        elapsed,
    })
}

/// Runs a script exercising pipes, awk, sha256sum and port I/O, and checks every marker.
fn runs_a_script(flavour: KernelFlavour) {
    let image = build(flavour);
    // wirt-boot-timer is /init's port writer: run again, it shows ioperm works here.
    let script = "seq 1 100 | awk '{s+=$1} END {print s}'\n\
                  printf wirt | sha256sum\n\
                  wirt-boot-timer && echo port-ok\n\
                  exit 3\n";
    let cmdline = cmdline::cmdline_with_script(image.cmdline(), script).unwrap();
    let Some(boot) = boot_in_qemu(&image, &cmdline) else {
        return;
    };
    let console = &boot.console;
    eprintln!("[{flavour}] QEMU ran for {:.2?}:\n{console}", boot.elapsed);
    let uptime = cmdline::ready_uptime(console)
        .unwrap_or_else(|| panic!("no ready marker on the console:\n{console}"));
    assert!(uptime > 0.0 && uptime < 120.0, "uptime {uptime}");
    let expected = format!("5050\n{:x}  -\nport-ok\n", Sha256::digest(b"wirt"));
    assert_eq!(
        cmdline::script_output(console).as_deref(),
        Some(expected.as_str()),
        "console:\n{console}"
    );
    assert_eq!(
        cmdline::exit_status(console),
        Some(3),
        "console:\n{console}"
    );
    // ACPI power-off ends QEMU normally (exit 0); the debug-exit fallback would not.
    assert_eq!(boot.exit_code, Some(0), "console:\n{console}");
}

fn second_build_reuses_the_cache(flavour: KernelFlavour) {
    let first = build(flavour);
    let started = Instant::now();
    let second = build(flavour);
    let warm = started.elapsed();
    eprintln!("[{flavour}] warm build took {warm:.2?}");
    assert!(second.reused, "the second build rebuilt the image");
    assert_eq!(first.kernel, second.kernel);
    assert_eq!(first.initrd, second.initrd);
    assert_eq!(first.key, second.key);
    let opts = BuildOptions {
        flavour,
        ..Default::default()
    };
    let cached = image::cached(&opts)
        .unwrap()
        .expect("cached() finds the image");
    assert_eq!(cached.kernel, first.kernel);
    assert_eq!(cached.initrd, first.initrd);
    assert!(
        warm < Duration::from_secs(30),
        "a cached build must not rebuild anything ({warm:?})"
    );
}

#[test]
fn minimal_image_runs_a_script_in_qemu() {
    runs_a_script(KernelFlavour::Minimal);
}

#[test]
fn stock_image_runs_a_script_in_qemu() {
    runs_a_script(KernelFlavour::Stock);
}

#[test]
fn minimal_image_second_build_reuses_the_cache() {
    second_build_reuses_the_cache(KernelFlavour::Minimal);
}

#[test]
fn stock_image_second_build_reuses_the_cache() {
    second_build_reuses_the_cache(KernelFlavour::Stock);
}
