//! Running one VM process and timing what its console prints.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// When to end a measured VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAt {
    /// Kill it once the ready marker appeared (after sampling memory if asked).
    Ready,
    /// Let it run until it exits by itself.
    Exit,
}

/// What one VM run showed.
#[derive(Debug, Default)]
pub struct VmRun {
    /// Wall time from spawn to the ready marker.
    pub ready: Option<Duration>,
    /// Wall time from spawn to the exit marker.
    pub exit_marker: Option<Duration>,
    /// Process RSS minus the guest-RAM mapping's RSS, sampled idle after ready (KiB).
    pub overhead_kib: Option<u64>,
    pub console: String,
    /// Every console line with its arrival time since spawn (for in-guest phase markers).
    pub lines: Vec<(Duration, String)>,
}

impl VmRun {
    /// Arrival time of the first console line that is exactly `text` (trailing CR ignored).
    pub fn line_at(&self, text: &str) -> Option<Duration> {
        self.lines
            .iter()
            .find(|(_, l)| l.trim_end_matches('\r') == text)
            .map(|(at, _)| *at)
    }
}

/// Spawns `cmd`, reads its stdout line by line with arrival times, and stops as asked.
pub fn run_vm(
    mut cmd: Command,
    stop: StopAt,
    sample_memory_of_mib: Option<u64>,
    limit: Duration,
) -> anyhow::Result<VmRun> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut run = VmRun::default();
    let result = (|| -> anyhow::Result<()> {
        loop {
            let left = limit.saturating_sub(start.elapsed());
            let (at, line) = match rx.recv_timeout(left) {
                Ok(x) => x,
                Err(mpsc::RecvTimeoutError::Timeout) => bail!("no result within {limit:?}"),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            run.console.push_str(&line);
            run.console.push('\n');
            run.lines.push((at - start, line.clone()));
            if run.ready.is_none() && line.contains(image::READY_MARKER) {
                run.ready = Some(at - start);
                if let Some(mib) = sample_memory_of_mib {
                    std::thread::sleep(Duration::from_secs(1));
                    run.overhead_kib = overhead_kib(child.id(), mib);
                }
                if stop == StopAt::Ready {
                    break;
                }
            }
            if run.exit_marker.is_none() && line.contains(image::EXIT_MARKER) {
                run.exit_marker = Some(at - start);
            }
        }
        Ok(())
    })();
    end(&mut child);
    result?;
    if run.ready.is_none() {
        bail!(
            "the guest never printed its ready marker; console:\n{}",
            tail(&run.console)
        );
    }
    Ok(run)
}

fn end(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// RSS of process `pid` minus the RSS of its guest-RAM mapping (the anonymous mapping
/// between `guest_mib` and `guest_mib + 8` MiB long), in KiB.
pub fn overhead_kib(pid: u32, guest_mib: u64) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let (mut total, mut guest) = (0u64, 0u64);
    let mut size_kib = 0u64;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("Size:") => size_kib = f.next()?.parse().ok()?,
            Some("Rss:") => {
                let rss: u64 = f.next()?.parse().ok()?;
                total += rss;
                let lo = guest_mib * 1024;
                if size_kib >= lo && size_kib <= lo + 8 * 1024 {
                    guest = guest.max(rss);
                }
            }
            _ => {}
        }
    }
    Some(total.saturating_sub(guest))
}

/// The median of `xs` (None if empty).
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn overhead_of_this_process_is_its_rss() {
        let kib = overhead_kib(std::process::id(), 1 << 20).unwrap();
        assert!(kib > 0);
    }
}
