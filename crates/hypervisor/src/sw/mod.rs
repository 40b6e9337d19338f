//! The software engine: wirt's own x86-64 CPU (`crates/emu`) behind the same [`Vm`] and
//! [`Vcpu`] traits as KVM, with the interrupt controllers and timers that KVM keeps in the
//! kernel provided in user space by `devices::irqchip::SwIrqChip`.
//!
//! Each vCPU runs the emulator on its own thread for a bounded number of instructions at a
//! time; between slices it polls timers and kick requests, and when the guest halts it
//! sleeps in the irqchip until an interrupt, a timer deadline or a kick.
//!
//! [`Vm`]: crate::Vm
//! [`Vcpu`]: crate::Vcpu

mod platform;
mod state;
mod vcpu;
mod vm;

pub use vcpu::SwVcpu;
pub use vm::{cpuid_model, SwVm};
