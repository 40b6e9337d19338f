//! Runs one planned test and reads its outcome the way the suite defines it: the VMM's
//! exit status carries the test's debug-exit code V as `(V << 1) | 1`, so 1 is a pass,
//! 3 a failure and 77 (V = 38) a test that skipped itself; anything else, or the time
//! limit, is a failure. The serial log and the VMM's stderr are kept per test.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::plan::{Invocation, ENV_PLACEHOLDER};

/// What became of one test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The test reported failures, or the VMM ended it some other way.
    Fail(String),
    /// The test skipped itself (status 77): something it needs is absent.
    Skip(String),
    /// Still running at the time limit.
    Timeout,
    /// The runner did not start it (32-bit, needs KVM, ...).
    NotRun(String),
}

impl Outcome {
    /// The word used in reports and in the expected-results file.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail(_) => "FAIL",
            Outcome::Skip(_) => "SKIP",
            Outcome::Timeout => "TIMEOUT",
            Outcome::NotRun(_) => "NOTRUN",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Outcome::Fail(d) | Outcome::Skip(d) | Outcome::NotRun(d) => d,
            Outcome::Pass | Outcome::Timeout => "",
        }
    }
}

/// The result of one run, with where its logs are.
#[derive(Clone, Debug)]
pub struct TestResult {
    pub name: String,
    pub outcome: Outcome,
    pub elapsed: Duration,
    pub notes: Vec<String>,
    pub log: Option<PathBuf>,
}

/// The last `SUMMARY:` line of a serial log, and the first few `FAIL:` lines.
fn summarize(log: &str) -> String {
    let summary = log
        .lines()
        .rev()
        .find(|l| l.starts_with("SUMMARY:"))
        .map(str::to_string);
    let fails: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("FAIL:"))
        .take(3)
        .collect();
    let mut out = summary.unwrap_or_else(|| "no SUMMARY line".into());
    if !fails.is_empty() {
        out.push_str("; ");
        out.push_str(&fails.join("; "));
    }
    out
}

/// The first `SKIP:` reason in a log, or the summary.
fn skip_reason(log: &str) -> String {
    log.lines()
        .find(|l| l.starts_with("SKIP:") || l.contains("skip"))
        .map(str::to_string)
        .unwrap_or_else(|| summarize(log))
}

/// Reads up to the last 64 KiB of a file as text.
fn tail(path: &Path) -> String {
    let mut s = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut s);
    }
    let start = s.len().saturating_sub(64 * 1024);
    String::from_utf8_lossy(&s[start..]).into_owned()
}

/// Classifies an exit status (`None`: killed by a signal) given the serial log and the
/// VMM's stderr.
pub fn classify(status: Option<i32>, log: &str, stderr: &str) -> Outcome {
    let vmm_error = stderr
        .lines()
        .find(|l| l.starts_with("wirt: error") || l.starts_with("qemu-system"));
    match status {
        // A VMM that refused to start also exits 1: only a test that ran can pass.
        Some(1) if vmm_error.is_none() => Outcome::Pass,
        Some(3) => Outcome::Fail(summarize(log)),
        Some(77) => Outcome::Skip(skip_reason(log)),
        Some(s) => {
            let why = match (s, vmm_error) {
                (_, Some(e)) => e.to_string(),
                (4, _) => "triple fault".into(),
                (6, _) => stderr
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("the engine could not execute the guest")
                    .to_string(),
                (s, _) => format!("exit status {s}; {}", summarize(log)),
            };
            Outcome::Fail(why)
        }
        None => Outcome::Fail("killed by a signal".into()),
    }
}

/// Runs `inv` for test `name`, keeping its serial log and stderr in `log_dir`.
pub fn run(name: &str, inv: &Invocation, log_dir: &Path) -> std::io::Result<TestResult> {
    std::fs::create_dir_all(log_dir)?;
    let env_path = log_dir.join(format!("{name}.env"));
    std::fs::write(&env_path, &inv.env_file)?;
    let log_path = log_dir.join(format!("{name}.log"));
    let err_path = log_dir.join(format!("{name}.err"));
    let args: Vec<String> = inv
        .args
        .iter()
        .map(|a| {
            if a == ENV_PLACEHOLDER {
                env_path.display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let start = Instant::now();
    let mut child = Command::new(&inv.program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(File::create(&log_path)?)
        .stderr(File::create(&err_path)?)
        .spawn()?;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if start.elapsed() >= inv.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    let _ = std::fs::remove_file(&env_path);
    let outcome = match status {
        None => Outcome::Timeout,
        Some(st) => classify(st.code(), &tail(&log_path), &tail(&err_path)),
    };
    Ok(TestResult {
        name: name.to_string(),
        outcome,
        elapsed,
        notes: inv.notes.clone(),
        log: Some(log_path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_debug_exit_convention() {
        let log = "PASS: a\nFAIL: b\nSUMMARY: 2 tests, 1 unexpected failures\n";
        assert_eq!(classify(Some(1), log, ""), Outcome::Pass);
        assert_eq!(
            classify(Some(3), log, ""),
            Outcome::Fail("SUMMARY: 2 tests, 1 unexpected failures; FAIL: b".into())
        );
        assert_eq!(
            classify(Some(77), "SKIP: no x2apic\n", ""),
            Outcome::Skip("SKIP: no x2apic".into())
        );
        assert_eq!(classify(Some(4), "", "").word(), "FAIL");
        assert_eq!(classify(None, "", "").word(), "FAIL");
    }

    #[test]
    fn a_vmm_that_refused_to_start_is_not_a_pass() {
        let o = classify(Some(1), "", "wirt: error: cannot load the guest: bad\n");
        assert_eq!(
            o,
            Outcome::Fail("wirt: error: cannot load the guest: bad".into())
        );
    }
}
