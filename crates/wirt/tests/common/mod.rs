//! Running the `wirt` binary from end-to-end tests.

// Each test binary includes this module and uses a different subset of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Whether /dev/kvm can be opened; prints why a test skips when not.
pub fn kvm_available(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipped {test}: /dev/kvm not available ({e})");
            false
        }
    }
}

/// The result of one `wirt run`.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        Run {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `wirt run` on `kernel` with extra arguments, with a time limit.
pub fn wirt_run(kernel: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wirt"));
    cmd.arg("run").arg("--kernel").arg(kernel).args(args);
    run_with_timeout(cmd, std::time::Duration::from_secs(120))
}

/// Runs `wirt run` on `kernel` with extra arguments and a custom time limit.
pub fn wirt_run_for(kernel: &Path, args: &[&str], limit: std::time::Duration) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wirt"));
    cmd.arg("run").arg("--kernel").arg(kernel).args(args);
    run_with_timeout(cmd, limit)
}

/// Time limit for a default-guest run: generous, since the software engine is slower
/// than hardware; a hang still ends the test.
pub const GUEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(900);

/// Boots the default guest (`flavour`, built into the cache if missing) on the software
/// engine with `script` in `wirt.run=` after `DEFAULT_CMDLINE extra_cmdline`, and `args`.
pub fn boot_guest(
    flavour: image::KernelFlavour,
    extra_cmdline: &str,
    script: &str,
    args: &[&str],
) -> Run {
    let opts = image::BuildOptions {
        flavour,
        ..Default::default()
    };
    let img = image::build(&opts, &mut |_| {})
        .expect("building the guest image (needs apt access to Debian's packages)");
    let base = format!("{} {extra_cmdline}", image::DEFAULT_CMDLINE);
    let cmdline =
        image::cmdline_with_script(base.trim_end(), script).expect("script fits the cmdline");
    let initrd = img.initrd.to_string_lossy().into_owned();
    let mut all = vec!["--engine", "sw", "--initrd", &initrd, "--cmdline", &cmdline];
    all.extend_from_slice(args);
    wirt_run_for(&img.kernel, &all, GUEST_LIMIT)
}

/// Boots the minimal default guest with `script` and `args` (see [`boot_guest`]).
pub fn boot_default_guest(script: &str, args: &[&str]) -> Run {
    boot_guest(image::KernelFlavour::Minimal, "", script, args)
}

/// A fresh scratch directory, removed when dropped (paths stay short for sun_path).
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("wirt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, file: &str) -> std::path::PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The 16 random bytes a script printed as `rng=<32 hex digits>`; panics unless present
/// and not all zero.
pub fn assert_rng_line(out: &str) {
    let rng = out
        .lines()
        .find_map(|l| l.strip_prefix("rng="))
        .unwrap_or_else(|| panic!("no rng line in {out}"));
    assert_eq!(rng.len(), 32, "{out}");
    assert_ne!(rng, "0".repeat(32), "{out}");
}

/// Runs `wirt` with arbitrary arguments.
pub fn wirt(args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wirt"));
    cmd.args(args);
    run_with_timeout(cmd, std::time::Duration::from_secs(120))
}

/// Runs `wirt` with arbitrary arguments and `input` on its stdin (then closed).
pub fn wirt_with_input(args: &[&str], input: &[u8], limit: std::time::Duration) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wirt"));
    cmd.args(args);
    run_with_input(cmd, Some(input.to_vec()), limit)
}

fn run_with_timeout(cmd: Command, limit: std::time::Duration) -> Run {
    run_with_input(cmd, None, limit)
}

fn run_with_input(mut cmd: Command, input: Option<Vec<u8>>, limit: std::time::Duration) -> Run {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn wirt");
    if let (Some(data), Some(mut pipe)) = (input, child.stdin.take()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&data);
        });
    }
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "wirt did not finish within {limit:?}:\n{:?}",
                Run::from(out)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Run::from(child.wait_with_output().expect("output"))
}
