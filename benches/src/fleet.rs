//! Several VMs started together: when each one's console shows the ready marker, and how
//! much memory their processes hold. The start-rate row measures wirt's daemon and a set
//! of QEMU processes with the same two tools.

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::bail;

/// Watches console streams; each reports once, when its first ready marker arrives.
pub struct ReadyWatch {
    tx: Sender<(usize, Option<Instant>)>,
    rx: Receiver<(usize, Option<Instant>)>,
    watched: usize,
}

impl ReadyWatch {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        ReadyWatch { tx, rx, watched: 0 }
    }

    /// Reads `stream` on its own thread until it ends. The stream is drained after the
    /// marker too, so a VM never stalls on a full console pipe.
    pub fn watch(&mut self, stream: impl Read + Send + 'static) {
        let (index, tx) = (self.watched, self.tx.clone());
        self.watched += 1;
        std::thread::spawn(move || {
            let mut reported = false;
            for line in BufReader::new(stream).split(b'\n') {
                let Ok(line) = line else { break };
                if !reported && contains(&line, image::READY_MARKER.as_bytes()) {
                    reported = true;
                    let _ = tx.send((index, Some(Instant::now())));
                }
            }
            if !reported {
                let _ = tx.send((index, None));
            }
        });
    }

    /// Waits until every watched stream showed the marker; returns the last arrival.
    pub fn wait_all(&self, deadline: Instant) -> anyhow::Result<Instant> {
        let mut seen = vec![false; self.watched];
        let mut last = None;
        while seen.iter().any(|s| !s) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((i, None)) => bail!("VM {i}'s console ended before its ready marker"),
                Ok((i, Some(at))) => {
                    seen[i] = true;
                    last = Some(last.map_or(at, |l: Instant| l.max(at)));
                }
                Err(RecvTimeoutError::Timeout) => {
                    let missing = seen.iter().filter(|s| !**s).count();
                    bail!("{missing} of {} VMs never became ready", self.watched)
                }
                Err(RecvTimeoutError::Disconnected) => bail!("the console readers are gone"),
            }
        }
        last.ok_or_else(|| anyhow::anyhow!("nothing to wait for"))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Child processes that are killed and reaped when this is dropped, on success or not.
#[derive(Default)]
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Resident set size of process `pid` in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The child processes of `pid`, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// Sleeps a moment so freshly booted guests settle before their memory is sampled.
pub fn settle() {
    std::thread::sleep(Duration::from_secs(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_watch_reports_each_stream_once_and_the_last_arrival() {
        let mut w = ReadyWatch::new();
        let a = format!(
            "boot\n{}1.0\nmore\n{}2.0\n",
            image::READY_MARKER,
            image::READY_MARKER
        );
        w.watch(std::io::Cursor::new(a.into_bytes()));
        w.watch(std::io::Cursor::new(
            format!("x\r\n{}0.5\r\n", image::READY_MARKER).into_bytes(),
        ));
        let last = w.wait_all(Instant::now() + Duration::from_secs(5)).unwrap();
        assert!(last <= Instant::now());
    }

    #[test]
    fn a_stream_without_the_marker_fails_the_wait() {
        let mut w = ReadyWatch::new();
        w.watch(std::io::Cursor::new(b"no marker here\n".to_vec()));
        let err = w
            .wait_all(Instant::now() + Duration::from_secs(5))
            .unwrap_err();
        assert!(err.to_string().contains("ended before"), "{err}");
    }

    #[test]
    fn dropped_procs_are_killed_and_reaped() {
        let child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(children_of(std::process::id()).contains(&pid));
        drop(Procs(vec![child]));
        assert!(!children_of(std::process::id()).contains(&pid));
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn this_process_has_an_rss() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
