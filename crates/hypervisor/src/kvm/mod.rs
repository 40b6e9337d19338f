//! The KVM engine: guest code runs under Linux KVM (`/dev/kvm`), wirt handles the exits.
//!
//! [`KvmHypervisor`] opens `/dev/kvm` and checks what wirt needs; [`KvmVm`] owns one VM (memory
//! slots, in-kernel PIC/IOAPIC/PIT, interrupt lines); [`KvmVcpu`] runs one vCPU's `KVM_RUN`
//! loop. The conversions between wirt's engine-neutral [`arch::regs::CpuState`] and KVM's
//! register structures live in [`state`], the CPUID adjustments in [`cpuid`], and the
//! machinery that interrupts a running `KVM_RUN` from another thread in [`kick`].
//!
//! On PVM hosts (see `shared/KVM-HERE.md`) the same API is served by a host module that
//! emulates CPL0 guest code; [`KvmHypervisor::is_pvm`] detects it so the VMM can say so and
//! pick the software engine for guests PVM cannot run.

pub mod cpuid;
mod eventfds;
mod fault;
mod host;
pub mod kick;
mod lapic;
pub mod msrs;
pub mod state;
mod vcpu;
mod vm;

pub use host::{HostKind, KvmHypervisor};
pub use kick::KvmKicker;
pub use vcpu::KvmVcpu;
pub use vm::{KvmInterruptSink, KvmVm};

use crate::Error;

/// Wrap a failed KVM ioctl in the crate's error type, naming the operation.
pub(crate) fn kvm_err(op: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> Error {
    move |e| Error::Kvm {
        op,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}
