//! The contract between the default guest and whoever boots it: the kernel command line it
//! expects and the markers its /init prints on the console.
//!
//! `wirt run`, the tests and the benchmarks all take these from here, so the guest and
//! its users cannot drift apart.

use base64::Engine;

/// The kernel command line the default guest boots with.
///
/// - `console=ttyS0`: kernel messages and /init's console on COM1 (the 16550 at 0x3f8).
/// - `quiet`: only warnings and errors on the console; every character printed costs
///   port writes the VMM must emulate. Drop it (or add `loglevel=7`) to debug a boot.
/// - `panic=-1`: reboot at once on a kernel panic, so a broken guest ends the VM
///   instead of hanging it (`-no-reboot` in QEMU, a reset exit in wirt).
/// - `8250.nr_uarts=1`: probe only COM1; probing COM2..4 costs port I/O for nothing.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 quiet panic=-1 8250.nr_uarts=1";

/// What /init prints once user space is up: `WIRT-READY uptime=<seconds since boot>`.
/// It writes the boot-timer port (0x440) right after.
pub const READY_MARKER: &str = "WIRT-READY uptime=";

/// What /init prints before powering off: `WIRT-EXIT status=<exit status>` of the
/// `wirt.run=` script or of the console shell.
pub const EXIT_MARKER: &str = "WIRT-EXIT status=";

/// Kernel command-line parameter carrying a shell script to run, base64-encoded.
pub const RUN_PARAMETER: &str = "wirt.run=";

/// Kernel command-line parameter `wirt.console=batch`: the console shell reads commands
/// without prompt or echo (for a script piped into `wirt run`; it ends at Ctrl-D).
pub const BATCH_CONSOLE: &str = "wirt.console=batch";

/// Longest kernel command line x86 Linux accepts (`COMMAND_LINE_SIZE`), terminating NUL
/// included.
pub const COMMAND_LINE_SIZE: usize = 2048;

/// Errors of [`cmdline_with_script`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error(
        "the script makes the kernel command line {len} bytes long, over Linux's limit of \
         {max}: shorten it or put it on a disk"
    )]
    TooLong { len: usize, max: usize },
}

/// `base` plus `wirt.run=<script in base64>`: the guest runs `script` with `sh`, prints
/// [`EXIT_MARKER`] and its exit status, and powers off.
pub fn cmdline_with_script(base: &str, script: &str) -> Result<String, CmdlineError> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(script);
    let cmdline = format!("{base} {RUN_PARAMETER}{encoded}");
    if cmdline.len() + 1 > COMMAND_LINE_SIZE {
        return Err(CmdlineError::TooLong {
            len: cmdline.len() + 1,
            max: COMMAND_LINE_SIZE,
        });
    }
    Ok(cmdline)
}

/// The uptime (seconds) in the first ready marker of a console transcript.
pub fn ready_uptime(console: &str) -> Option<f64> {
    marker_value(console, READY_MARKER)?.parse().ok()
}

/// The exit status in the first exit marker of a console transcript.
pub fn exit_status(console: &str) -> Option<i32> {
    marker_value(console, EXIT_MARKER)?.parse().ok()
}

fn marker_value<'a>(console: &'a str, marker: &str) -> Option<&'a str> {
    console.lines().find_map(|line| {
        let start = line.find(marker)? + marker.len();
        line[start..].split_whitespace().next()
    })
}

/// The console output between the ready marker line and the exit marker line: what the
/// `wirt.run=` script printed (kernel messages that interleave are not filtered).
pub fn script_output(console: &str) -> Option<String> {
    let mut lines = console.lines();
    lines.by_ref().find(|l| l.contains(READY_MARKER))?;
    let mut out = String::new();
    for line in lines {
        if line.contains(EXIT_MARKER) {
            return Some(out);
        }
        out.push_str(line.trim_end_matches('\r'));
        out.push('\n');
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_base64_on_the_cmdline() {
        let c = cmdline_with_script("console=ttyS0", "echo hi").unwrap();
        assert_eq!(c, "console=ttyS0 wirt.run=ZWNobyBoaQ==");
    }

    #[test]
    fn too_long_script_is_refused() {
        let script = "x".repeat(COMMAND_LINE_SIZE);
        assert!(matches!(
            cmdline_with_script(DEFAULT_CMDLINE, &script),
            Err(CmdlineError::TooLong { .. })
        ));
    }

    #[test]
    fn parses_a_transcript() {
        let console =
            "[    0.1] booting\r\nWIRT-READY uptime=0.52\r\n5050\r\nabc\r\nWIRT-EXIT status=3\r\n";
        assert_eq!(ready_uptime(console), Some(0.52));
        assert_eq!(exit_status(console), Some(3));
        assert_eq!(script_output(console).unwrap(), "5050\nabc\n");
    }

    #[test]
    fn missing_markers_are_none() {
        assert_eq!(ready_uptime("nothing"), None);
        assert_eq!(exit_status("WIRT-READY uptime=1"), None);
        assert_eq!(script_output("WIRT-READY uptime=1\nfoo\n"), None);
    }
}
