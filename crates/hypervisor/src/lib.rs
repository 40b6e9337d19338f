//! The narrow interface between the VMM and the engine that executes guest code.
//!
//! Two engines implement it: [`kvm`] (Linux KVM, hardware-assisted) and [`sw`] (wirt's own
//! x86-64 emulator in `crates/emu`). The VMM builds a [`Vm`] from a [`Hypervisor`], creates
//! one [`Vcpu`] per guest CPU and calls [`Vcpu::run`] in a loop on that vCPU's thread.
//!
//! Port and MMIO accesses are dispatched *inside* `run` to the [`IoHandler`] the VMM passes
//! in (the device buses), and counted in [`ExitCounters`]; `run` returns a [`VmExit`] only
//! when the VMM has something to decide (shutdown, reset, an error, a kick).

pub mod exits;
pub mod kvm;
pub mod sw;

pub use exits::{ExitCounters, ExitReason};

use std::sync::Arc;

use arch::regs::CpuState;
use devices::InterruptSink;
use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

/// Which engine runs a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Linux KVM.
    Kvm,
    /// wirt's software engine (CPU emulation).
    Sw,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Kvm => "kvm",
            EngineKind::Sw => "sw",
        })
    }
}

/// The device side of port I/O and MMIO: the VMM's buses.
///
/// Called on the vCPU thread that made the access. Reads fill `data` (its length is the
/// access size); an access nobody claims reads as all ones and writes are dropped.
pub trait IoHandler: Send + Sync {
    fn pio_read(&self, port: u16, data: &mut [u8]);
    fn pio_write(&self, port: u16, data: &[u8]);
    fn mmio_read(&self, addr: u64, data: &mut [u8]);
    fn mmio_write(&self, addr: u64, data: &[u8]);
}

/// Why [`Vcpu::run`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// A port or MMIO access was handled by the [`IoHandler`]; the VMM may check its
    /// control state (a device may have asked for reset or exit) and call `run` again.
    Io,
    /// The vCPU halted with interrupts disabled or without an irqchip to wake it.
    Hlt,
    /// The guest shut the CPU down (triple fault).
    Shutdown,
    /// The guest asked for a system reset.
    Reset,
    /// [`Kicker::kick`] interrupted the run.
    Interrupted,
    /// The engine could not continue: the guest executed something it cannot handle.
    InternalError {
        rip: u64,
        /// The instruction bytes at `rip`, as far as they could be read.
        bytes: Vec<u8>,
        detail: String,
    },
}

/// Wakes a vCPU out of [`Vcpu::run`] from another thread; `run` then returns
/// [`VmExit::Interrupted`] promptly (at the next instruction boundary on the software engine,
/// via a signal and `immediate_exit` on KVM).
pub trait Kicker: Send + Sync {
    fn kick(&self);
}

/// One guest CPU.
pub trait Vcpu: Send {
    fn id(&self) -> u32;
    /// Load the complete architectural state (at boot, or on restore).
    fn set_state(&mut self, state: &CpuState) -> Result<(), Error>;
    /// Read the complete architectural state (for snapshots and diagnostics).
    fn state(&mut self) -> Result<CpuState, Error>;
    /// Run guest code until something the VMM must see happens.
    fn run(&mut self, io: &dyn IoHandler) -> Result<VmExit, Error>;
    /// A handle other threads use to interrupt `run`.
    fn kicker(&self) -> Arc<dyn Kicker>;
    /// This vCPU's exit counters (shared, so the VMM can read them while it runs).
    fn counters(&self) -> Arc<ExitCounters>;
}

/// One virtual machine: guest memory is registered at creation, vCPUs are created from it.
pub trait Vm: Send + Sync {
    fn engine(&self) -> EngineKind;
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>, Error>;
    /// Where devices send their interrupts.
    fn interrupt_sink(&self) -> Arc<dyn InterruptSink>;

    /// Devices call this after writing guest RAM themselves (DMA), with the written range.
    /// The software engine drops decoded code it cached for those pages; KVM needs nothing.
    fn note_guest_write(&self, _gpa: u64, _len: u64) {}

    /// Has the engine signal `kick` itself when the guest writes to the MMIO address `addr`
    /// (KVM: an ioeventfd), so such a write never leaves the engine: a 32-bit write of
    /// `value` if given, any write otherwise. `Ok(false)`: the engine has no such path and
    /// the write reaches the [`IoHandler`] as usual (the software engine, whose bus call is
    /// already a direct call).
    fn register_mmio_kick(
        &self,
        _addr: u64,
        _value: Option<u32>,
        _kick: &EventFd,
    ) -> Result<bool, Error> {
        Ok(false)
    }

    /// Undoes [`Vm::register_mmio_kick`] with the same arguments (a PCI BAR moved).
    fn unregister_mmio_kick(
        &self,
        _addr: u64,
        _value: Option<u32>,
        _kick: &EventFd,
    ) -> Result<(), Error> {
        Ok(())
    }

    /// Lets a write to `trigger` raise the level-triggered line `gsi` without a call into
    /// the VMM's interrupt sink (KVM: an irqfd with a resample fd). The engine lowers the
    /// line when the guest acknowledges the interrupt (EOI) and then signals `resample`:
    /// whoever drives the line must raise it again if its source is still pending.
    /// `Ok(false)`: the engine has no such path; drive the line through
    /// [`Vm::interrupt_sink`].
    fn register_level_irqfd(
        &self,
        _gsi: u32,
        _trigger: &EventFd,
        _resample: &EventFd,
    ) -> Result<bool, Error> {
        Ok(false)
    }
}

/// Errors of the engines.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("/dev/kvm is not available: {0}")]
    KvmUnavailable(String),
    #[error("KVM ioctl {op} failed: {source}")]
    Kvm {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the software engine failed: {0}")]
    Sw(String),
    #[error("invalid vCPU state: {0}")]
    InvalidState(String),
    #[error(transparent)]
    CpuFeature(#[from] arch::cpuid::FeatureError),
}
