//! The x86 conformance runner: runs every x86_64 entry of kvm-unit-tests'
//! `unittests.cfg` on a VMM the way the suite's README describes, prints one line per
//! test and the totals, and compares the outcomes with an expected-results file kept in
//! the repository (`expected/`), so that CI fails when a test that passed stops passing.
//!
//! Layout: `cfg` reads the configuration, `plan` turns an entry into a command line for
//! wirt or QEMU, `run` runs it and reads the outcome, `expect` keeps the expectations.
//! What we learned about the suite's expectations is in `README.md` beside this crate.

pub mod cfg;
pub mod expect;
pub mod plan;
pub mod run;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use plan::Vmm;
use run::{Outcome, TestResult};

/// Where the suite is by default: `shared/kvm-unit-tests` beside the repository, or
/// `$WIRT_KVM_UNIT_TESTS`.
pub fn default_suite_dir(repo_root: &Path) -> PathBuf {
    match std::env::var_os("WIRT_KVM_UNIT_TESTS") {
        Some(p) => PathBuf::from(p),
        None => repo_root.join("../shared/kvm-unit-tests"),
    }
}

/// Host CPUs shared by the tests that run at once: a test holds one slot per vCPU (at
/// most all of them), so timing-sensitive SMP tests are not starved by their neighbours.
struct Slots {
    free: Mutex<usize>,
    freed: std::sync::Condvar,
    total: usize,
}

impl Slots {
    fn new(total: usize) -> Slots {
        Slots {
            free: Mutex::new(total),
            freed: std::sync::Condvar::new(),
            total,
        }
    }

    fn take(&self, want: usize) -> usize {
        let want = want.clamp(1, self.total);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free < want {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= want;
        want
    }

    fn give(&self, n: usize) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += n;
        self.freed.notify_all();
    }
}

/// Runs the x86_64 entries of `entries` whose names contain one of `filters` (all when
/// empty), with at most `jobs` vCPUs running at once; `report` is called as each
/// finishes.
pub fn run_suite(
    entries: &[cfg::Entry],
    suite_x86: &Path,
    vmm: &Vmm,
    log_dir: &Path,
    jobs: usize,
    filters: &[String],
    report: &(dyn Fn(&TestResult) + Sync),
) -> Vec<TestResult> {
    let selected: Vec<&cfg::Entry> = entries
        .iter()
        .filter(|e| filters.is_empty() || filters.iter().any(|f| e.name.contains(f.as_str())))
        .collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let slots = Slots::new(jobs.max(1));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(e) = selected.get(i) else { break };
                let r = match plan::plan(e, suite_x86, vmm) {
                    Err(plan::NotRun(why)) => TestResult {
                        name: e.name.clone(),
                        outcome: Outcome::NotRun(why),
                        elapsed: Default::default(),
                        notes: vec![],
                        log: None,
                    },
                    Ok(inv) => {
                        let held = slots.take(e.smp as usize);
                        let r = run::run(&e.name, &inv, log_dir).unwrap_or_else(|err| TestResult {
                            name: e.name.clone(),
                            outcome: Outcome::Fail(format!("could not start the VMM: {err}")),
                            elapsed: Default::default(),
                            notes: inv.notes.clone(),
                            log: None,
                        });
                        slots.give(held);
                        r
                    }
                };
                report(&r);
                if let Ok(mut v) = results.lock() {
                    v.push(r);
                }
            });
        }
    });
    let mut v = results.into_inner().unwrap_or_default();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// One report line: `PASS  name  (1.2 s)  detail [notes]`.
pub fn line(r: &TestResult) -> String {
    let mut s = format!(
        "{:7} {:28} {:6.1} s",
        r.outcome.word(),
        r.name,
        r.elapsed.as_secs_f64()
    );
    let d = r.outcome.detail();
    if !d.is_empty() {
        s.push_str("  ");
        s.push_str(d);
    }
    if !r.notes.is_empty() {
        s.push_str(&format!("  [{}]", r.notes.join("; ")));
    }
    s
}

/// Counts by outcome word, in a fixed order.
pub fn totals(results: &[TestResult]) -> Vec<(&'static str, usize)> {
    ["PASS", "FAIL", "SKIP", "TIMEOUT", "NOTRUN"]
        .iter()
        .map(|w| {
            (
                *w,
                results.iter().filter(|r| r.outcome.word() == *w).count(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_holds_one_slot_per_vcpu_up_to_all_of_them() {
        let s = Slots::new(2);
        assert_eq!(s.take(4), 2, "an 4-vCPU test on 2 CPUs takes both");
        s.give(2);
        assert_eq!(s.take(1), 1);
        assert_eq!(s.take(1), 1);
        assert_eq!(*s.free.lock().unwrap(), 0);
        s.give(2);
        assert_eq!(s.take(0), 1, "every test holds at least one slot");
    }
}
