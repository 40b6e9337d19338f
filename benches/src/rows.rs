//! The benchmark rows. Each alternates wirt and its reference run by run.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use image::{cmdline_with_script, BuildOptions, Image, DEFAULT_CMDLINE};

use crate::measure::{median, run_vm, StopAt, VmRun};
use crate::report::RowResult;
use crate::Args;

/// The CPU-bound workload run inside the guest and natively (same busybox applets).
const WORKLOAD: &str = "seq 1 100000 | awk '{s+=$1} END {print s}' >/dev/null\n\
                        head -c 8000000 /dev/zero | sha256sum >/dev/null\n\
                        head -c 2000000 /dev/zero | gzip -1 | gunzip | wc -c >/dev/null\n\
                        i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done\n";

/// A wall-clock bound for one VM run; a hang ends the run, not the benchmark.
const LIMIT: Duration = Duration::from_secs(600);

pub struct Setup {
    pub wirt: PathBuf,
    pub qemu: Option<PathBuf>,
    pub image: Image,
    pub memory_mib: u64,
    pub runs: usize,
    pub pvm: bool,
}

impl Setup {
    pub fn new(args: &Args) -> anyhow::Result<Setup> {
        let wirt = match &args.wirt {
            Some(p) => p.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("no parent dir")?
                .join("wirt"),
        };
        anyhow::ensure!(
            wirt.is_file(),
            "no wirt binary at {} (build it first)",
            wirt.display()
        );
        let image = image::build(&BuildOptions::default(), &mut |_| {})
            .context("cannot build the default guest image")?;
        Ok(Setup {
            wirt,
            qemu: which("qemu-system-x86_64"),
            image,
            memory_mib: args.memory_mib,
            runs: args.runs.max(1),
            pvm: std::path::Path::new("/sys/module/kvm_pvm").exists(),
        })
    }

    /// `wirt run` of the default guest with `cmdline` and `mib` of RAM, console on stdio.
    pub fn wirt_cmd(&self, engine: &str, cmdline: &str, mib: u64) -> Command {
        let mut c = Command::new(&self.wirt);
        c.args(["run", "--engine", engine, "--serial", "stdio"])
            .arg("--memory")
            .arg(format!("{mib}M"))
            .arg("--kernel")
            .arg(&self.image.kernel)
            .arg("--initrd")
            .arg(&self.image.initrd)
            .arg("--cmdline")
            .arg(cmdline);
        c
    }

    /// The same QEMU command the image's own test uses, with `accel` and `mib` of RAM.
    pub fn qemu_cmd(&self, accel: &str, cmdline: &str, mib: u32) -> Option<Command> {
        self.qemu.as_ref()?;
        Some(image::qemu::reference_command_on(
            accel,
            &self.image.kernel,
            &self.image.initrd,
            cmdline,
            mib,
        ))
    }
}

impl Setup {
    /// `--memory-mib` as QEMU's `-m` takes it.
    pub fn qemu_mib(&self) -> Option<u32> {
        u32::try_from(self.memory_mib).ok()
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

pub struct Row {
    pub name: &'static str,
    pub title: &'static str,
    /// One or more table rows (a row group such as blk gives one per phase).
    pub run: fn(&Setup) -> Vec<RowResult>,
}

/// Guest memory of the memory-overhead row (the 128 MiB 1-vCPU idle guest).
const MEMORY_ROW_MIB: u32 = 128;

pub const ALL: [Row; 6] = [
    Row {
        name: "boot",
        title: "boot to ready marker (sw vs QEMU TCG)",
        run: |s| vec![boot_sw(s)],
    },
    Row {
        name: "boot-kvm",
        title: "boot to ready marker (KVM vs QEMU KVM)",
        run: |s| vec![boot_kvm(s)],
    },
    Row {
        name: "memory",
        title: "VMM memory overhead, idle at shell",
        run: |s| vec![memory(s)],
    },
    Row {
        name: "throughput",
        title: "CPU-bound workload in the guest (sw vs QEMU TCG)",
        run: |s| vec![throughput(s)],
    },
    Row {
        name: "blk",
        title: "virtio-blk sequential/random I/O",
        run: crate::blk::rows,
    },
    Row {
        name: "start-rate",
        title: "VM start rate through the daemon",
        run: crate::start_rate::rows,
    },
];

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

/// Runs wirt and the reference alternately; `pick` extracts the figure from a run.
fn alternate(
    s: &Setup,
    wirt: &dyn Fn() -> Command,
    reference: &dyn Fn() -> Option<Command>,
    stop: StopAt,
    sample_memory_of_mib: Option<u64>,
    pick: fn(&VmRun) -> Option<f64>,
) -> (Vec<f64>, Vec<f64>, Vec<String>) {
    let (mut w, mut r, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    let mem = sample_memory_of_mib;
    for _ in 0..s.runs {
        match run_vm(wirt(), stop, mem, LIMIT) {
            Ok(run) => w.extend(pick(&run)),
            Err(e) => errors.push(format!("wirt: {e}")),
        }
        if let Some(cmd) = reference() {
            match run_vm(cmd, stop, mem, LIMIT) {
                Ok(run) => r.extend(pick(&run)),
                Err(e) => errors.push(format!("qemu: {e}")),
            }
        }
    }
    (w, r, errors)
}

fn row(
    name: &'static str,
    title: &'static str,
    unit: &'static str,
    reference_name: &'static str,
    (w, r, errors): (Vec<f64>, Vec<f64>, Vec<String>),
) -> RowResult {
    let mut note = String::new();
    if let Some(e) = errors.first() {
        let first_line = e.lines().next().unwrap_or_default();
        note = format!("{} failed run(s), first: {first_line}", errors.len());
    }
    result(name, title, unit, reference_name, w, r, note)
}

/// A row from every run's figure for wirt (`w`) and the reference (`r`): medians, ratio.
pub fn result(
    name: &'static str,
    title: &'static str,
    unit: &'static str,
    reference_name: &'static str,
    w: Vec<f64>,
    r: Vec<f64>,
    note: String,
) -> RowResult {
    let (wm, rm) = (median(&w), median(&r));
    RowResult {
        name,
        title,
        unit,
        wirt: wm,
        reference: rm,
        reference_name,
        ratio: wm.zip(rm).map(|(a, b)| a / b),
        runs: w.len().max(r.len()),
        note,
    }
}

fn boot_sw(s: &Setup) -> RowResult {
    let results = alternate(
        s,
        &|| s.wirt_cmd("sw", DEFAULT_CMDLINE, s.memory_mib),
        &|| s.qemu_cmd("tcg", DEFAULT_CMDLINE, s.qemu_mib()?),
        StopAt::Ready,
        None,
        |r| secs(r.ready),
    );
    row("boot", ALL[0].title, "s", "QEMU TCG", results)
}

fn boot_kvm(s: &Setup) -> RowResult {
    if s.pvm {
        return RowResult::skipped(
            "boot-kvm",
            ALL[1].title,
            "skipped: /dev/kvm here is a PVM host module, on which Linux guests cannot reach user space",
        );
    }
    if !std::path::Path::new("/dev/kvm").exists() {
        return RowResult::skipped("boot-kvm", ALL[1].title, "skipped: no /dev/kvm");
    }
    let results = alternate(
        s,
        &|| s.wirt_cmd("kvm", DEFAULT_CMDLINE, s.memory_mib),
        &|| s.qemu_cmd("kvm", DEFAULT_CMDLINE, s.qemu_mib()?),
        StopAt::Ready,
        None,
        |r| secs(r.ready),
    );
    row("boot-kvm", ALL[1].title, "s", "QEMU KVM", results)
}

fn memory(s: &Setup) -> RowResult {
    let results = alternate(
        s,
        &|| s.wirt_cmd("sw", DEFAULT_CMDLINE, MEMORY_ROW_MIB.into()),
        &|| s.qemu_cmd("tcg", DEFAULT_CMDLINE, MEMORY_ROW_MIB),
        StopAt::Ready,
        Some(MEMORY_ROW_MIB.into()),
        |r| r.overhead_kib.map(|k| k as f64 / 1024.0),
    );
    let mut r = row("memory", ALL[2].title, "MiB", "QEMU TCG", results);
    if r.note.is_empty() {
        r.note = "128 MiB 1-vCPU guest; process RSS minus the guest-RAM mapping's RSS, 1 s after the ready marker".into();
    }
    r
}

fn throughput(s: &Setup) -> RowResult {
    let cmdline = match cmdline_with_script(DEFAULT_CMDLINE, WORKLOAD) {
        Ok(c) => c,
        Err(e) => return RowResult::skipped("throughput", ALL[3].title, e.to_string()),
    };
    let results = alternate(
        s,
        &|| s.wirt_cmd("sw", &cmdline, s.memory_mib),
        &|| s.qemu_cmd("tcg", &cmdline, s.qemu_mib()?),
        StopAt::Exit,
        None,
        |r| Some(r.exit_marker?.as_secs_f64() - r.ready?.as_secs_f64()),
    );
    let mut r = row("throughput", ALL[3].title, "s", "QEMU TCG", results);
    let native = native_workload_secs();
    r.note = match native {
        Some(n) => format!("{} native on the host: {n:.3} s", r.note)
            .trim()
            .to_string(),
        None => format!("{} (native run failed)", r.note).trim().to_string(),
    };
    r
}

/// The same workload with the host's own shell and tools.
fn native_workload_secs() -> Option<f64> {
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let ok = Command::new("sh")
            .arg("-c")
            .arg(WORKLOAD)
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
        times.push(t.elapsed().as_secs_f64());
    }
    median(&times)
}
