//! The exit-statistics table `--stats` prints when a VM ends.

use std::time::Duration;

use hypervisor::{ExitCounters, ExitReason};

/// Exit counts summed over all vCPUs, plus instructions executed and run time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmStats {
    pub exits: Vec<(ExitReason, u64)>,
    pub instructions: u64,
    pub elapsed: Duration,
    /// Time from start to the guest's first boot-timer write (the default guest's "ready").
    pub ready: Option<Duration>,
}

impl VmStats {
    pub fn collect(counters: &[std::sync::Arc<ExitCounters>], elapsed: Duration) -> Self {
        let exits = ExitReason::ALL
            .iter()
            .map(|&r| (r, counters.iter().map(|c| c.get(r)).sum::<u64>()))
            .filter(|&(_, n)| n > 0)
            .collect();
        let instructions = counters.iter().map(|c| c.instructions()).sum();
        VmStats {
            exits,
            instructions,
            elapsed,
            ready: None,
        }
    }

    /// A plain-text table, one reason per line.
    pub fn table(&self) -> String {
        let mut s = String::from("exit reason        count\n");
        let mut total = 0;
        for (r, n) in &self.exits {
            s.push_str(&format!("{:<16} {:>9}\n", r.name(), n));
            total += n;
        }
        s.push_str(&format!("{:<16} {:>9}\n", "total", total));
        let secs = self.elapsed.as_secs_f64();
        if self.instructions > 0 {
            let mips = if secs > 0.0 {
                self.instructions as f64 / secs / 1e6
            } else {
                0.0
            };
            s.push_str(&format!(
                "instructions     {:>9}  ({mips:.1} MIPS over {secs:.2} s)\n",
                self.instructions
            ));
        } else {
            s.push_str(&format!("run time         {secs:>8.2}s\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sums_over_vcpus() {
        let a = Arc::new(ExitCounters::new());
        let b = Arc::new(ExitCounters::new());
        a.count(ExitReason::PioWrite);
        b.count(ExitReason::PioWrite);
        b.count(ExitReason::MmioRead);
        b.add_instructions(2_000_000);
        let s = VmStats::collect(&[a, b], Duration::from_secs(1));
        assert_eq!(
            s.exits,
            vec![(ExitReason::PioWrite, 2), (ExitReason::MmioRead, 1)]
        );
        let t = s.table();
        assert!(t.contains("pio-write                2"), "{t}");
        assert!(t.contains("total                    3"), "{t}");
        assert!(t.contains("2.0 MIPS"), "{t}");
    }
}
