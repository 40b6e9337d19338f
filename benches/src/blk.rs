//! The virtio-blk rows: sequential and random reads and writes on a scratch raw image,
//! attached to wirt (`--disk`) and to QEMU (`virtio-blk-pci`, `cache=writeback`, which is
//! what wirt's buffered file backend amounts to).
//!
//! The guest has no fio, so the workload is busybox `dd` with `iflag=direct` /
//! `oflag=direct` (O_DIRECT: the guest's page cache is bypassed, every block is a virtio
//! request). Phases are timed on the host, by the arrival of marker lines the script
//! prints between them, so a guest clock that drifts cannot skew the figures. Random I/O
//! is one `dd` process per 4 KiB block at offsets from a fixed awk seed (the same offsets
//! for both engines); it therefore includes a process start per I/O, which the row notes
//! measure separately (`dd` from /dev/zero to /dev/null, no disk involved).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use image::{cmdline_with_script, DEFAULT_CMDLINE};

use crate::measure::{run_vm, StopAt, VmRun};
use crate::report::RowResult;
use crate::rows::Setup;

/// Size of the scratch disk, MiB (the sequential phases move all of it).
const DISK_MIB: u64 = 256;
/// 4 KiB blocks read and written in each random phase.
const RANDOM_IOS: u32 = 400;
/// A bound for one VM run.
const LIMIT: Duration = Duration::from_secs(600);

/// The phases, in the order the script runs them: (marker, row name, title).
const PHASES: [(&str, &str, &str); 5] = [
    (
        "BENCH-seq-write",
        "blk-seq-write",
        "virtio-blk sequential write (1 MiB O_DIRECT)",
    ),
    (
        "BENCH-seq-read",
        "blk-seq-read",
        "virtio-blk sequential read (1 MiB O_DIRECT)",
    ),
    (
        "BENCH-rand-read",
        "blk-rand-read",
        "virtio-blk random read (4 KiB O_DIRECT, one dd each)",
    ),
    (
        "BENCH-rand-write",
        "blk-rand-write",
        "virtio-blk random write (4 KiB O_DIRECT, one dd each)",
    ),
    ("BENCH-spawn", "", ""),
];

/// The guest script: wait for /dev/vda, then the phases, each followed by its marker.
fn script() -> String {
    let blocks = DISK_MIB * 256;
    let n = RANDOM_IOS;
    format!(
        "i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
         awk 'BEGIN{{srand(7);for(i=0;i<{n};i++)print int(rand()*{blocks})}}' >/tmp/o\n\
         D=/dev/vda; Z=/dev/zero; N=/dev/null\n\
         echo BENCH-start\n\
         dd if=$Z of=$D bs=1M count={DISK_MIB} oflag=direct conv=fsync 2>$N || exit 1\n\
         echo BENCH-seq-write\n\
         dd if=$D of=$N bs=1M count={DISK_MIB} iflag=direct 2>$N || exit 2\n\
         echo BENCH-seq-read\n\
         while read o; do dd if=$D of=$N bs=4k count=1 skip=$o iflag=direct 2>$N || exit 3; done </tmp/o\n\
         echo BENCH-rand-read\n\
         while read o; do dd if=$Z of=$D bs=4k count=1 seek=$o oflag=direct conv=notrunc 2>$N || exit 4; done </tmp/o\n\
         sync; echo BENCH-rand-write\n\
         while read o; do dd if=$Z of=$N bs=4k count=1 2>$N; done </tmp/o\n\
         echo BENCH-spawn\n"
    )
}

/// Seconds each phase took (the four measured ones, then the spawn baseline).
fn phase_secs(run: &VmRun) -> Option<[f64; 5]> {
    let mut prev = run.line_at("BENCH-start")?;
    let mut out = [0.0; 5];
    for (i, (marker, _, _)) in PHASES.iter().enumerate() {
        let at = run.line_at(marker)?;
        out[i] = at.checked_sub(prev)?.as_secs_f64();
        prev = at;
    }
    Some(out)
}

/// The figure of phase `i` from its duration: MB/s for sequential, IOPS for random.
fn figure(i: usize, secs: f64) -> f64 {
    if i < 2 {
        (DISK_MIB << 20) as f64 / 1e6 / secs
    } else {
        f64::from(RANDOM_IOS) / secs
    }
}

/// A scratch raw image, filled (not sparse) so reads touch real blocks; removed on drop.
struct Scratch {
    dir: PathBuf,
    image: PathBuf,
}

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("wirt-bench-blk-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let image = dir.join("disk.raw");
        let mut f = std::fs::File::create(&image)
            .with_context(|| format!("cannot create {}", image.display()))?;
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..DISK_MIB {
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
        Ok(Scratch { dir, image })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wirt_cmd(s: &Setup, cmdline: &str, disk: &Path) -> Command {
    let mut c = s.wirt_cmd("sw", cmdline, s.memory_mib);
    c.arg("--disk").arg(format!("path={}", disk.display()));
    c
}

fn qemu_cmd(s: &Setup, cmdline: &str, disk: &Path) -> Option<Command> {
    let mut c = s.qemu_cmd("tcg", cmdline, s.qemu_mib()?)?;
    c.arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=bench,cache=writeback",
            disk.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=bench"]);
    Some(c)
}

pub fn rows(s: &Setup) -> Vec<RowResult> {
    let skipped = |why: String| -> Vec<RowResult> {
        PHASES[..4]
            .iter()
            .map(|(_, name, title)| RowResult::skipped(name, title, why.clone()))
            .collect()
    };
    let cmdline = match cmdline_with_script(DEFAULT_CMDLINE, &script()) {
        Ok(c) => c,
        Err(e) => return skipped(e.to_string()),
    };
    let scratch = match Scratch::new() {
        Ok(d) => d,
        Err(e) => return skipped(format!("no scratch disk: {e:#}")),
    };
    let (mut w, mut r, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..s.runs {
        match measured(run_vm(
            wirt_cmd(s, &cmdline, &scratch.image),
            StopAt::Exit,
            None,
            LIMIT,
        )) {
            Ok(p) => w.push(p),
            Err(e) => errors.push(format!("wirt: {e:#}")),
        }
        if let Some(cmd) = qemu_cmd(s, &cmdline, &scratch.image) {
            match measured(run_vm(cmd, StopAt::Exit, None, LIMIT)) {
                Ok(p) => r.push(p),
                Err(e) => errors.push(format!("qemu: {e:#}")),
            }
        }
    }
    let spawn = |runs: &[[f64; 5]]| median_of(runs, |p| figure(2, p[4]));
    let baseline = match (spawn(&w), spawn(&r)) {
        (Some(a), Some(b)) => format!("; dd without I/O alone: {a:.0}/s wirt, {b:.0}/s QEMU"),
        (Some(a), None) => format!("; dd without I/O alone: {a:.0}/s wirt"),
        _ => String::new(),
    };

    let mut first_error = String::new();
    if let Some(e) = errors.first() {
        let line = e.lines().next().unwrap_or_default();
        first_error = format!("; {} failed run(s), first: {line}", errors.len());
    }
    PHASES[..4]
        .iter()
        .enumerate()
        .map(|(i, (_, name, title))| {
            let pick = |runs: &[[f64; 5]]| runs.iter().map(|p| figure(i, p[i])).collect();
            let (unit, note) = if i < 2 {
                ("MB/s", format!("higher is better; {DISK_MIB} MiB raw image{first_error}"))
            } else {
                (
                    "IOPS",
                    format!(
                        "higher is better; {RANDOM_IOS} I/Os at random offsets, each a dd process, whose start dominates{baseline}{first_error}"
                    ),
                )
            };
            crate::rows::result(name, title, unit, "QEMU TCG", pick(&w), pick(&r), note)
        })
        .collect()
}

fn median_of(runs: &[[f64; 5]], f: impl Fn(&[f64; 5]) -> f64) -> Option<f64> {
    crate::measure::median(&runs.iter().map(f).collect::<Vec<_>>())
}

/// The phase durations of a finished run whose script succeeded.
fn measured(run: anyhow::Result<VmRun>) -> anyhow::Result<[f64; 5]> {
    let run = run?;
    let status = image::cmdline::exit_status(&run.console);
    anyhow::ensure!(
        status == Some(0),
        "the disk script ended with status {status:?}; console: {}",
        run.console
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    phase_secs(&run).context("phase markers missing from the console")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_fits_the_kernel_command_line() {
        cmdline_with_script(DEFAULT_CMDLINE, &script()).unwrap();
    }

    #[test]
    fn phases_are_timed_between_markers() {
        let mut run = VmRun::default();
        let marks = ["BENCH-start", "BENCH-seq-write", "BENCH-seq-read"];
        let more = ["BENCH-rand-read", "BENCH-rand-write", "BENCH-spawn"];
        for (i, m) in marks.iter().chain(more.iter()).enumerate() {
            run.lines
                .push((Duration::from_secs(10 + i as u64 * 2), format!("{m}\r")));
        }
        let p = phase_secs(&run).unwrap();
        assert_eq!(p, [2.0; 5]);
        assert!((figure(0, 2.0) - (DISK_MIB << 20) as f64 / 2e6).abs() < 1e-9);
        assert_eq!(figure(2, 2.0), f64::from(RANDOM_IOS) / 2.0);
    }

    #[test]
    fn a_missing_marker_gives_no_figures() {
        let mut run = VmRun::default();
        run.lines
            .push((Duration::from_secs(1), "BENCH-start".to_string()));
        assert!(phase_secs(&run).is_none());
    }
}
