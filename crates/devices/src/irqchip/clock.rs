//! Time as the interrupt chip sees it: a monotonic nanosecond counter that can be injected.
//!
//! The PIT and the LAPIC timers are passive: they compute their state from "now" whenever
//! they are read or polled, so they need a clock but no threads. Production uses
//! [`MonotonicClock`] (the host's `Instant`); tests use [`ManualClock`] and move time by
//! hand, which makes every timer test deterministic instead of sleep-based.
//!
//! [`TscRate`] converts between this clock and the guest's TSC, so that the TSC-deadline
//! timer and the emulator's `RDTSC` agree on one time line.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The shortest interval between two interrupts of a periodic timer (APIC timer in
/// periodic mode, PIT modes 2 and 3), as KVM's `min_timer_period_us`: a guest that programs
/// a tiny period must not make the host spin. Linux's shortest period (HZ=1000) is 1 ms.
pub const MIN_PERIODIC_NS: u64 = 200_000;

/// A monotonic time source in nanoseconds since an origin fixed at its creation.
pub trait Clock: Send + Sync + Debug {
    /// Nanoseconds since the origin; never decreases.
    fn now_ns(&self) -> u64;
    /// The host instant that corresponds to `0` (used to sleep until a deadline).
    fn origin(&self) -> Instant;

    /// The host instant at which this clock reads `ns`.
    fn instant_at(&self, ns: u64) -> Instant {
        let origin = self.origin();
        origin
            .checked_add(Duration::from_nanos(ns))
            .or_else(|| origin.checked_add(Duration::from_secs(1 << 30)))
            .unwrap_or(origin)
    }

    /// The clock reading at host instant `at` (0 if `at` is before the origin).
    fn ns_at(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin()).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }
}

/// The host's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
    fn origin(&self) -> Instant {
        self.origin
    }
}

/// A clock that only moves when told to: for deterministic tests.
#[derive(Debug)]
pub struct ManualClock {
    origin: Instant,
    now: AtomicU64,
}

impl ManualClock {
    pub fn new() -> Self {
        ManualClock {
            origin: Instant::now(),
            now: AtomicU64::new(0),
        }
    }
    /// Set the reading (ignored if it would go backwards).
    pub fn set_ns(&self, ns: u64) {
        self.now.fetch_max(ns, Ordering::SeqCst);
    }
    /// Move the reading forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(by))
            });
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
    fn origin(&self) -> Instant {
        self.origin
    }
}

/// `a * b / c` without intermediate overflow, saturating at `u64::MAX`.
pub(crate) fn muldiv(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        return u64::MAX;
    }
    u64::try_from(u128::from(a) * u128::from(b) / u128::from(c)).unwrap_or(u64::MAX)
}

/// `ceil(a * b / c)`, saturating.
pub(crate) fn muldiv_ceil(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        return u64::MAX;
    }
    let c = u128::from(c);
    u64::try_from((u128::from(a) * u128::from(b)).div_ceil(c)).unwrap_or(u64::MAX)
}

/// The guest TSC's frequency: TSC = clock_ns * hz / 1e9 (the TSC is 0 at the clock origin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TscRate {
    pub hz: u64,
}

impl TscRate {
    /// The TSC value at clock reading `ns`.
    pub fn ticks_at(&self, ns: u64) -> u64 {
        muldiv(ns, self.hz, NANOS_PER_SEC)
    }
    /// The first clock reading at which the TSC reaches `ticks`.
    pub fn ns_at(&self, ticks: u64) -> u64 {
        muldiv_ceil(ticks, NANOS_PER_SEC, self.hz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let c = ManualClock::new();
        c.advance(Duration::from_micros(5));
        assert_eq!(c.now_ns(), 5_000);
        c.set_ns(1_000);
        assert_eq!(c.now_ns(), 5_000);
        assert_eq!(c.instant_at(5_000) - c.origin(), Duration::from_micros(5));
        assert_eq!(c.ns_at(c.origin() + Duration::from_nanos(42)), 42);
    }

    #[test]
    fn tsc_round_trips() {
        let tsc = TscRate { hz: 2_500_000_000 };
        assert_eq!(tsc.ticks_at(1_000_000_000), 2_500_000_000);
        assert_eq!(tsc.ns_at(2_500), 1_000);
        // ns_at is the first instant at which the TSC has reached the value.
        let ns = tsc.ns_at(7);
        assert!(tsc.ticks_at(ns) >= 7);
        assert!(tsc.ticks_at(ns - 1) < 7);
    }

    #[test]
    fn muldiv_does_not_overflow() {
        assert_eq!(muldiv(u64::MAX, 2, 4), u64::MAX / 2);
        assert_eq!(muldiv(1, 1, 0), u64::MAX);
        assert_eq!(muldiv_ceil(10, 1, 3), 4);
    }
}
