//! Pausing and resuming all vCPUs of a VM.
//!
//! `pause` closes the gate and kicks every vCPU out of `Vcpu::run`; each vCPU thread then
//! parks at the gate (counted), and `pause` returns once all are parked, so guest state is
//! stable while paused. `resume` opens the gate. A VM that is stopping releases the gate so
//! parked threads can leave.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    parked: usize,
    released: bool,
}

/// The gate vCPU threads pass between runs.
#[derive(Debug, Default)]
pub struct PauseGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl PauseGate {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by a vCPU thread between runs: blocks while the gate is closed.
    pub fn pass(&self) {
        let mut s = self.lock();
        if !s.closed || s.released {
            return;
        }
        s.parked += 1;
        self.changed.notify_all();
        while s.closed && !s.released {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.parked -= 1;
        self.changed.notify_all();
    }

    /// Closes the gate; the caller then kicks the vCPUs.
    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// Waits until `n` vCPU threads are parked (true) or `timeout` passed (false).
    pub fn wait_parked(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        while s.parked < n && !s.released {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s.parked >= n
    }

    pub fn open(&self) {
        self.lock().closed = false;
        self.changed.notify_all();
    }

    /// The VM is stopping: nobody parks any more.
    pub fn release(&self) {
        self.lock().released = true;
        self.changed.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn pause_parks_every_thread_and_resume_lets_them_go() {
        let gate = Arc::new(PauseGate::new());
        let work = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (g, w, s) = (gate.clone(), work.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !s.load(Ordering::SeqCst) {
                        g.pass();
                        w.fetch_add(1, Ordering::SeqCst);
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        gate.close();
        assert!(gate.wait_parked(2, Duration::from_secs(5)));
        let frozen = work.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            work.load(Ordering::SeqCst),
            frozen,
            "no progress while paused"
        );
        gate.open();
        let deadline = Instant::now() + Duration::from_secs(5);
        while work.load(Ordering::SeqCst) == frozen && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(
            work.load(Ordering::SeqCst) > frozen,
            "progress after resume"
        );
        stop.store(true, Ordering::SeqCst);
        gate.release();
        for t in threads {
            t.join().unwrap();
        }
    }
}
