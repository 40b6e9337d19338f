//! The start-rate rows: how many VMs per second `wirt serve` creates and boots to the
//! ready marker, and how much memory each idle VM then holds — against the same number of
//! QEMU TCG processes started together.
//!
//! Everything this starts (the daemon, its VMMs, console clients, QEMU processes) is
//! owned by a guard that kills it when dropped, so a failed run leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use image::DEFAULT_CMDLINE;

use crate::fleet::{children_of, rss_kib, settle, Procs, ReadyWatch};
use crate::report::RowResult;
use crate::rows::Setup;

/// VMs started together per run.
pub const VMS: usize = 4;
/// Guest memory of each VM, MiB.
const VM_MIB: u32 = 128;
/// A bound for one run (all VMs booted); a hang ends the run.
const LIMIT: Duration = Duration::from_secs(120);

pub const RATE_TITLE: &str = "VM start rate through the daemon (4 × 128 MiB sw VMs at once)";
pub const MEMORY_TITLE: &str = "memory per idle VM (4 × 128 MiB, at the shell)";

/// One run's figures: VMs per second to all-ready, and MiB of RSS per VM.
struct Figures {
    rate: f64,
    mib_per_vm: f64,
}

pub fn rows(s: &Setup) -> Vec<RowResult> {
    let dir = std::env::temp_dir().join(format!("wirt-bench-daemon-{}", std::process::id()));
    let daemon = match Daemon::start(&s.wirt, &dir) {
        Ok(d) => d,
        Err(e) => {
            return vec![
                RowResult::skipped("start-rate", RATE_TITLE, format!("daemon failed: {e:#}")),
                RowResult::skipped("idle-vm-memory", MEMORY_TITLE, "daemon failed"),
            ]
        }
    };
    let (mut wirt, mut qemu, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    let mut daemon_kib = None;
    for run in 0..s.runs {
        match wirt_run(s, &daemon, run) {
            Ok(f) => wirt.push(f),
            Err(e) => errors.push(format!("wirt: {e:#}")),
        }
        daemon_kib = daemon_kib.or(rss_kib(daemon.pid()));
        if s.qemu.is_some() {
            match qemu_run(s) {
                Ok(f) => qemu.push(f),
                Err(e) => errors.push(format!("qemu: {e:#}")),
            }
        }
    }
    drop(daemon);
    let note = |extra: String| {
        let mut n = extra;
        if let Some(e) = errors.first() {
            let first = e.lines().next().unwrap_or_default();
            n = format!("{n}; {} failed run(s), first: {first}", errors.len());
        }
        n
    };
    let rate = crate::rows::result(
        "start-rate",
        RATE_TITLE,
        "VMs/s",
        "QEMU TCG",
        wirt.iter().map(|f| f.rate).collect(),
        qemu.iter().map(|f| f.rate).collect(),
        note(format!(
            "higher is better; from the first create request to the last ready marker \
             ({VMS} VMs booting at once on the host's cores)"
        )),
    );
    let memory = crate::rows::result(
        "idle-vm-memory",
        MEMORY_TITLE,
        "MiB",
        "QEMU TCG",
        wirt.iter().map(|f| f.mib_per_vm).collect(),
        qemu.iter().map(|f| f.mib_per_vm).collect(),
        note(format!(
            "RSS of the VMM processes / {VMS}, 1 s after the last ready marker (guest RAM \
             touched included){}",
            daemon_kib
                .map(|k| format!("; the daemon itself: {:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_default()
        )),
    );
    let _ = std::fs::remove_dir_all(&dir);
    vec![rate, memory]
}

/// `VMS` VMs created and started through the daemon, each with a console client watching
/// for the ready marker; they are deleted again whatever happens.
fn wirt_run(s: &Setup, d: &Daemon, run: usize) -> anyhow::Result<Figures> {
    let names: Vec<String> = (0..VMS).map(|i| format!("bench-{run}-{i}")).collect();
    let result = (|| {
        let mut consoles = Procs::default();
        let mut watch = ReadyWatch::new();
        let memory = format!("{VM_MIB}M");
        let start = Instant::now();
        for name in &names {
            let kernel = s.image.kernel.to_string_lossy();
            let initrd = s.image.initrd.to_string_lossy();
            d.vm(&[
                "create",
                name,
                "--start",
                "--engine",
                "sw",
                "--cpus",
                "1",
                "--memory",
                &memory,
                "--kernel",
                &kernel,
                "--initrd",
                &initrd,
                "--cmdline",
                DEFAULT_CMDLINE,
            ])?;
            let mut console = d.console(name)?;
            watch.watch(console.stdout.take().context("no console stdout")?);
            consoles.0.push(console);
        }
        let last = watch.wait_all(start + LIMIT)?;
        let secs = (last - start).as_secs_f64();
        settle();
        let vmms = children_of(d.pid());
        if vmms.len() != VMS {
            bail!("the daemon has {} VMM processes, not {VMS}", vmms.len());
        }
        let kib: u64 = vmms.iter().filter_map(|&p| rss_kib(p)).sum();
        Ok(Figures {
            rate: VMS as f64 / secs,
            mib_per_vm: kib as f64 / 1024.0 / VMS as f64,
        })
    })();
    for name in &names {
        let _ = d.vm(&["rm", "--force", name]);
    }
    result
}

/// `VMS` QEMU TCG processes started together.
fn qemu_run(s: &Setup) -> anyhow::Result<Figures> {
    let mut procs = Procs::default();
    let mut watch = ReadyWatch::new();
    let start = Instant::now();
    for _ in 0..VMS {
        let mut cmd = s
            .qemu_cmd("tcg", DEFAULT_CMDLINE, VM_MIB)
            .context("no QEMU")?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().context("cannot start QEMU")?;
        watch.watch(child.stdout.take().context("no QEMU stdout")?);
        procs.0.push(child);
    }
    let last = watch.wait_all(start + LIMIT)?;
    let secs = (last - start).as_secs_f64();
    settle();
    let kib: u64 = procs.0.iter().filter_map(|c| rss_kib(c.id())).sum();
    Ok(Figures {
        rate: VMS as f64 / secs,
        mib_per_vm: kib as f64 / 1024.0 / VMS as f64,
    })
}

/// A `wirt serve` on a socket in a private directory; SIGTERM (then SIGKILL) on drop,
/// which ends its VMMs with it.
struct Daemon {
    child: Child,
    wirt: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    fn start(wirt: &Path, dir: &Path) -> anyhow::Result<Daemon> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let socket = dir.join("api.sock");
        let child = Command::new(wirt)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start wirt serve")?;
        let daemon = Daemon {
            child,
            wirt: wirt.to_path_buf(),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&daemon.socket).is_err() {
            if Instant::now() > deadline {
                bail!("the daemon did not come up within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn vm_command(&self) -> Command {
        let mut c = Command::new(&self.wirt);
        c.arg("vm").arg("--socket").arg(&self.socket);
        c
    }

    /// `wirt vm --json ARGS`, which must succeed.
    fn vm(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .vm_command()
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run wirt vm")?;
        if !out.status.success() {
            bail!(
                "wirt vm {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `wirt vm console NAME` with its output piped (stdin held open: nothing is typed).
    fn console(&self, name: &str) -> anyhow::Result<Child> {
        self.vm_command()
            .args(["console", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run wirt vm console")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
