//! Counting VM exits by reason: the same counters for both engines.
//!
//! On KVM each count is a real exit from `KVM_RUN`; on the software engine it is the event
//! that would have been an exit (the engine handles it without leaving its loop).

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a vCPU left guest mode (or would have).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExitReason {
    PioRead,
    PioWrite,
    MmioRead,
    MmioWrite,
    Hlt,
    Shutdown,
    SystemEvent,
    InternalError,
    Interrupted,
    IrqWindow,
    Other,
}

impl ExitReason {
    pub const ALL: [ExitReason; 11] = [
        ExitReason::PioRead,
        ExitReason::PioWrite,
        ExitReason::MmioRead,
        ExitReason::MmioWrite,
        ExitReason::Hlt,
        ExitReason::Shutdown,
        ExitReason::SystemEvent,
        ExitReason::InternalError,
        ExitReason::Interrupted,
        ExitReason::IrqWindow,
        ExitReason::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExitReason::PioRead => "pio-read",
            ExitReason::PioWrite => "pio-write",
            ExitReason::MmioRead => "mmio-read",
            ExitReason::MmioWrite => "mmio-write",
            ExitReason::Hlt => "hlt",
            ExitReason::Shutdown => "shutdown",
            ExitReason::SystemEvent => "system-event",
            ExitReason::InternalError => "internal-error",
            ExitReason::Interrupted => "interrupted",
            ExitReason::IrqWindow => "irq-window",
            ExitReason::Other => "other",
        }
    }
}

/// Per-vCPU exit counters, readable from any thread while the vCPU runs.
#[derive(Debug, Default)]
pub struct ExitCounters {
    counts: [AtomicU64; ExitReason::ALL.len()],
    /// Guest instructions executed (software engine only; 0 on KVM).
    instructions: AtomicU64,
}

impl ExitCounters {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn count(&self, reason: ExitReason) {
        self.counts[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: ExitReason) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }

    pub fn add_instructions(&self, n: u64) {
        self.instructions.fetch_add(n, Ordering::Relaxed);
    }

    pub fn instructions(&self) -> u64 {
        self.instructions.load(Ordering::Relaxed)
    }

    /// (reason, count) for every reason with a non-zero count.
    pub fn snapshot(&self) -> Vec<(ExitReason, u64)> {
        ExitReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let c = ExitCounters::new();
        c.count(ExitReason::PioWrite);
        c.count(ExitReason::PioWrite);
        c.count(ExitReason::Hlt);
        c.add_instructions(10);
        assert_eq!(c.get(ExitReason::PioWrite), 2);
        assert_eq!(c.get(ExitReason::MmioRead), 0);
        assert_eq!(
            c.snapshot(),
            vec![(ExitReason::PioWrite, 2), (ExitReason::Hlt, 1)]
        );
        assert_eq!(c.instructions(), 10);
    }
}
