//! On a terminal, `wirt run` puts stdin in raw mode while the VM runs and restores it on
//! the way out, including when it is killed by a signal. A pseudo-terminal comes from
//! util-linux's `script`; `stty -g` prints the terminal state before, during and after.

use std::process::Command;

use test_guests::path;

/// Runs `shell` inside a fresh pseudo-terminal and returns the lines it printed that are
/// `stty -g` states or `status=` reports. Anything else (a shell's own "Terminated" job
/// report, which depends on which shell `script` starts) is left out.
fn in_pty(shell: &str) -> Option<Vec<String>> {
    let out = match Command::new("script")
        .args(["-qec", shell, "/dev/null"])
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipped: util-linux's script is not available ({e})");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    Some(
        text.lines()
            .filter(|l| l.starts_with("status=") || is_stty_state(l))
            .map(str::to_string)
            .collect(),
    )
}

/// `stty -g` prints colon-separated hexadecimal fields and nothing else.
fn is_stty_state(line: &str) -> bool {
    line.split(':').count() > 4
        && line
            .split(':')
            .all(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn terminal_is_restored_after_a_normal_exit() {
    let wirt = env!("CARGO_BIN_EXE_wirt");
    let guest = path("hello64");
    let shell = format!(
        "stty -g; {wirt} run --engine sw --kernel {} >/dev/null; echo status=$?; stty -g",
        guest.display()
    );
    let Some(lines) = in_pty(&shell) else { return };
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[1], "status=33", "{lines:?}");
    assert_eq!(lines[0], lines[2], "terminal state changed: {lines:?}");
}

#[test]
fn terminal_is_raw_while_running_and_restored_after_sigterm() {
    let wirt = env!("CARGO_BIN_EXE_wirt");
    let guest = path("spin64");
    let shell = format!(
        "stty -g; {wirt} run --engine sw --kernel {} </dev/tty >/dev/null & p=$!; sleep 1; \
         stty -g; kill -TERM $p; wait $p; echo status=$?; stty -g",
        guest.display()
    );
    let Some(lines) = in_pty(&shell) else { return };
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_ne!(
        lines[0], lines[1],
        "not in raw mode while running: {lines:?}"
    );
    assert_eq!(lines[2], "status=143", "killed by SIGTERM: {lines:?}");
    assert_eq!(lines[0], lines[3], "terminal not restored: {lines:?}");
}
