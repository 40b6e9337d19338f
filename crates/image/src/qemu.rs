//! QEMU from Debian as the independent reference: the tests boot the default guest with
//! it until wirt's own engines do, and benchmarks run it side by side with wirt.
//!
//! The machine is `-M pc` under TCG, not `-M microvm`: with QEMU 7.2's TCG, microvm
//! delivers no timer interrupt while Linux calibrates its clocks (no PIT reference, no
//! HPET), so both kernels hang at boot ("tsc: Unable to calibrate against PIT", then
//! nothing), while `pc` boots every time.

use std::path::Path;
use std::process::Command;

/// The QEMU binary (Debian package `qemu-system-x86`).
pub const QEMU: &str = "qemu-system-x86_64";

/// The isa-debug-exit port, as wirt has it (`arch::layout::DEBUG_EXIT`); /init's last
/// resort if ACPI power-off fails.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// True if `qemu-system-x86_64` is on the PATH.
pub fn qemu_available() -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(QEMU).is_file()))
        .unwrap_or(false)
}

/// A QEMU command that boots `kernel` and `initrd` with `cmdline` on one vCPU with
/// `memory_mib` of RAM, the serial console on stdin/stdout, and exits when the guest
/// powers off (or resets: `-no-reboot`).
pub fn reference_command(kernel: &Path, initrd: &Path, cmdline: &str, memory_mib: u32) -> Command {
    reference_command_on("tcg", kernel, initrd, cmdline, memory_mib)
}

/// [`reference_command`] with the accelerator `accel` ("tcg" or "kvm").
pub fn reference_command_on(
    accel: &str,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    memory_mib: u32,
) -> Command {
    let mut command = Command::new(QEMU);
    command
        .args(["-M", "pc", "-accel", accel, "-cpu", "max", "-smp", "1"])
        .args(["-m", &memory_mib.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot"])
        .args([
            "-device",
            &format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=1"),
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", cmdline]);
    // The boot-timer port (0x440) has no device in QEMU: the guest's write is ignored.
    command
}
