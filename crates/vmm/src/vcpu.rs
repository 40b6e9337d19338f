//! One host thread per vCPU, each running [`Vcpu::run`] in a loop.
//!
//! States of a vCPU thread:
//! - **running**: inside `Vcpu::run`, executing guest code;
//! - **dispatching**: `run` returned [`VmExit::Io`]; the access was already handled by the
//!   device buses, and the thread asks `check` whether a device requested a stop (reset,
//!   power-off, debug-exit), then goes back to running;
//! - **paused**: the VM's [`PauseGate`] is closed; the thread parks between runs until it
//!   opens (the pauser kicks it out of `run` first);
//! - **stopping**: the VM's outcome is decided (by this thread, another vCPU, a device or
//!   the user); the thread leaves its loop and returns. Other threads get it out of
//!   `run` with the vCPU's [`Kicker`], which makes `run` return [`VmExit::Interrupted`].

use std::sync::Arc;
use std::thread::JoinHandle;

use hypervisor::{IoHandler, Kicker, Vcpu, VmExit};

use crate::outcome::{Outcome, StopReason};
use crate::pause::PauseGate;

/// A running vCPU thread and the handle that interrupts it.
pub struct VcpuThread {
    pub id: u32,
    pub kicker: Arc<dyn Kicker>,
    pub handle: JoinHandle<()>,
}

/// Starts vCPU `vcpu` on its own thread.
///
/// `check` runs after every handled I/O exit; it reports device-requested stops to the
/// outcome (it is how `VmControl` events reach the VMM without a separate thread).
pub fn spawn(
    mut vcpu: Box<dyn Vcpu>,
    io: Arc<dyn IoHandler>,
    outcome: Arc<Outcome>,
    gate: Arc<PauseGate>,
    check: Arc<dyn Fn() + Send + Sync>,
) -> std::io::Result<VcpuThread> {
    let id = vcpu.id();
    let kicker = vcpu.kicker();
    let handle = std::thread::Builder::new()
        .name(format!("vcpu{id}"))
        .spawn(move || run_loop(vcpu.as_mut(), io.as_ref(), &outcome, &gate, check.as_ref()))?;
    Ok(VcpuThread { id, kicker, handle })
}

fn run_loop(
    vcpu: &mut dyn Vcpu,
    io: &dyn IoHandler,
    outcome: &Outcome,
    gate: &PauseGate,
    check: &dyn Fn(),
) {
    let id = vcpu.id();
    while !outcome.is_decided() {
        gate.pass();
        if outcome.is_decided() {
            break;
        }
        match vcpu.run(io) {
            Ok(VmExit::Io) => check(),
            Ok(VmExit::Interrupted) => {}
            Ok(VmExit::Hlt) => {
                // Only without an irqchip able to wake the vCPU: nothing can resume it.
                // Yield so a stop request from elsewhere is seen, without spinning hot.
                std::thread::sleep(std::time::Duration::from_millis(1));
                check();
            }
            // A device's request made just before (Linux writes 0xCF9 and, should that not
            // take at once, triple-faults on purpose) is what the guest asked for: it wins.
            Ok(VmExit::Shutdown) => {
                check();
                outcome.report(StopReason::TripleFault)
            }
            Ok(VmExit::Reset) => outcome.report(StopReason::Reset),
            Ok(VmExit::InternalError { rip, bytes, detail }) => {
                outcome.report(StopReason::InternalError {
                    cpu: id,
                    rip,
                    bytes,
                    detail,
                })
            }
            Err(e) => outcome.report(StopReason::Failed(format!("vCPU {id}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypervisor::ExitCounters;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// A vCPU that exits with scripted results, then waits to be kicked.
    struct Scripted {
        exits: Vec<VmExit>,
        kicked: Arc<Flag>,
        counters: Arc<ExitCounters>,
    }

    #[derive(Default)]
    struct Flag(AtomicBool);
    impl Kicker for Flag {
        fn kick(&self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    impl Vcpu for Scripted {
        fn id(&self) -> u32 {
            7
        }
        fn set_state(&mut self, _: &arch::regs::CpuState) -> Result<(), hypervisor::Error> {
            Ok(())
        }
        fn state(&mut self) -> Result<arch::regs::CpuState, hypervisor::Error> {
            Ok(Default::default())
        }
        fn run(&mut self, _io: &dyn IoHandler) -> Result<VmExit, hypervisor::Error> {
            if let Some(e) = self.exits.pop() {
                return Ok(e);
            }
            while !self.kicked.0.swap(false, Ordering::SeqCst) {
                std::thread::yield_now();
            }
            Ok(VmExit::Interrupted)
        }
        fn kicker(&self) -> Arc<dyn Kicker> {
            self.kicked.clone()
        }
        fn counters(&self) -> Arc<ExitCounters> {
            self.counters.clone()
        }
    }

    struct NoIo;
    impl IoHandler for NoIo {
        fn pio_read(&self, _: u16, _: &mut [u8]) {}
        fn pio_write(&self, _: u16, _: &[u8]) {}
        fn mmio_read(&self, _: u64, _: &mut [u8]) {}
        fn mmio_write(&self, _: u64, _: &[u8]) {}
    }

    fn scripted(mut exits: Vec<VmExit>) -> Box<Scripted> {
        exits.reverse();
        Box::new(Scripted {
            exits,
            kicked: Default::default(),
            counters: Default::default(),
        })
    }

    #[test]
    fn io_exits_run_the_check_and_shutdown_decides() {
        let outcome = Arc::new(Outcome::new());
        let checks = Arc::new(AtomicU32::new(0));
        let c2 = checks.clone();
        let t = spawn(
            scripted(vec![VmExit::Io, VmExit::Io, VmExit::Shutdown]),
            Arc::new(NoIo),
            outcome.clone(),
            Arc::new(PauseGate::new()),
            Arc::new(move || {
                c2.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        assert_eq!(outcome.wait(), StopReason::TripleFault);
        t.handle.join().unwrap();
        assert_eq!(
            checks.load(Ordering::SeqCst),
            3,
            "after each I/O exit and before the shutdown"
        );
    }

    #[test]
    fn a_reset_a_device_requested_wins_over_the_triple_fault_after_it() {
        let outcome = Arc::new(Outcome::new());
        let o2 = outcome.clone();
        let t = spawn(
            scripted(vec![VmExit::Shutdown]),
            Arc::new(NoIo),
            outcome.clone(),
            Arc::new(PauseGate::new()),
            Arc::new(move || o2.report(StopReason::Reset)),
        )
        .unwrap();
        assert_eq!(outcome.wait(), StopReason::Reset);
        t.handle.join().unwrap();
    }

    #[test]
    fn a_kick_stops_a_vcpu_once_the_outcome_is_decided() {
        let outcome = Arc::new(Outcome::new());
        let t = spawn(
            scripted(vec![]),
            Arc::new(NoIo),
            outcome.clone(),
            Arc::new(PauseGate::new()),
            Arc::new(|| {}),
        )
        .unwrap();
        outcome.report(StopReason::UserQuit);
        t.kicker.kick();
        t.handle.join().unwrap();
    }

    #[test]
    fn internal_errors_carry_rip_and_bytes() {
        let outcome = Arc::new(Outcome::new());
        let exit = VmExit::InternalError {
            rip: 0x1000,
            bytes: vec![0x0f, 0x0b],
            detail: "x".into(),
        };
        let t = spawn(
            scripted(vec![exit]),
            Arc::new(NoIo),
            outcome.clone(),
            Arc::new(PauseGate::new()),
            Arc::new(|| {}),
        )
        .unwrap();
        let r = outcome.wait();
        t.handle.join().unwrap();
        assert_eq!(r.exit_status(), 6);
        assert!(
            r.describe()
                .contains("RIP 0x1000, instruction bytes [0f 0b]"),
            "{}",
            r.describe()
        );
    }
}
