//! One KVM vCPU: loading and saving its state, and the `KVM_RUN` loop that dispatches port
//! and MMIO exits to the VMM's buses.

use std::sync::Arc;

use arch::regs::CpuState;
use kvm_bindings::{
    kvm_mp_state, kvm_msr_entry, Msrs, KVM_MP_STATE_RUNNABLE, KVM_SYSTEM_EVENT_RESET,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::GuestMemoryMmap;

use super::fault::{instruction_at_rip, internal_error_detail};
use super::kick::{KickState, KvmKicker, RunGuard};
use super::{kvm_err, msrs, state};
use crate::{Error, ExitCounters, ExitReason, IoHandler, Kicker, Vcpu, VmExit};

/// Write `list` with `KVM_SET_MSRS`; an MSR KVM refuses is an error naming it.
pub(crate) fn write_msrs(fd: &VcpuFd, list: &[(u32, u64)]) -> Result<(), Error> {
    if list.is_empty() {
        return Ok(());
    }
    let entries: Vec<kvm_msr_entry> = list
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries)
        .map_err(|e| Error::InvalidState(format!("MSR list: {e:?}")))?;
    let written = fd.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
    match list.get(written) {
        None => Ok(()),
        Some((index, value)) => Err(Error::InvalidState(format!(
            "KVM refused MSR {index:#x} = {value:#x}"
        ))),
    }
}

/// A vCPU running on KVM.
#[derive(Debug)]
pub struct KvmVcpu {
    id: u32,
    fd: VcpuFd,
    mem: GuestMemoryMmap,
    msr_index: Arc<[u32]>,
    pvm: bool,
    counters: Arc<ExitCounters>,
    kick: Arc<KickState>,
}

/// What one `KVM_RUN` produced, detached from the borrowed `kvm_run` page.
enum Step {
    Exit(VmExit),
    /// Run again (a spurious signal, an exit KVM completed on its own).
    Again,
    /// `EINTR` or `KVM_EXIT_INTR`: a kick, or some other signal.
    Interrupted,
    /// The vCPU cannot continue; `detail` says why, RIP and bytes are read afterwards.
    Failed(String),
    /// The internal-error exit, whose detail is in `kvm_run`.
    InternalError,
}

impl KvmVcpu {
    pub(crate) fn new(
        id: u32,
        fd: VcpuFd,
        mem: GuestMemoryMmap,
        msr_index: Arc<[u32]>,
        pvm: bool,
    ) -> Self {
        KvmVcpu {
            id,
            fd,
            mem,
            msr_index,
            pvm,
            counters: Arc::new(ExitCounters::new()),
            kick: Arc::new(KickState::default()),
        }
    }

    /// The underlying KVM vCPU, for ioctls the trait does not cover.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// The saved MSRs KVM supports here; one that fails to read is left out.
    fn get_msrs(&self) -> Result<Vec<(u32, u64)>, Error> {
        let mut wanted: Vec<u32> = msrs::state_msrs()
            .into_iter()
            .filter(|i| self.msr_index.contains(i))
            .collect();
        let mut out = Vec::new();
        while !wanted.is_empty() {
            let entries: Vec<kvm_msr_entry> = wanted
                .iter()
                .map(|&index| kvm_msr_entry {
                    index,
                    ..Default::default()
                })
                .collect();
            let mut batch = Msrs::from_entries(&entries)
                .map_err(|e| Error::InvalidState(format!("MSR list: {e:?}")))?;
            let read = self
                .fd
                .get_msrs(&mut batch)
                .map_err(kvm_err("KVM_GET_MSRS"))?;
            out.extend(batch.as_slice()[..read].iter().map(|e| (e.index, e.data)));
            // KVM stops at the first MSR it cannot read: skip it, read the rest.
            wanted.drain(..(read + 1).min(wanted.len()));
        }
        Ok(out)
    }

    /// One `KVM_RUN`, with port and MMIO exits handed to `io`.
    fn step(&mut self, io: &dyn IoHandler) -> Result<Step, Error> {
        let c = &self.counters;
        let step = match self.fd.run() {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    c.count(ExitReason::PioRead);
                    io.pio_read(port, data);
                    Step::Exit(VmExit::Io)
                }
                VcpuExit::IoOut(port, data) => {
                    c.count(ExitReason::PioWrite);
                    io.pio_write(port, data);
                    Step::Exit(VmExit::Io)
                }
                VcpuExit::MmioRead(addr, data) => {
                    c.count(ExitReason::MmioRead);
                    io.mmio_read(addr, data);
                    Step::Exit(VmExit::Io)
                }
                VcpuExit::MmioWrite(addr, data) => {
                    c.count(ExitReason::MmioWrite);
                    io.mmio_write(addr, data);
                    Step::Exit(VmExit::Io)
                }
                VcpuExit::Hlt => {
                    c.count(ExitReason::Hlt);
                    Step::Exit(VmExit::Hlt)
                }
                VcpuExit::Shutdown => {
                    c.count(ExitReason::Shutdown);
                    Step::Exit(VmExit::Shutdown)
                }
                VcpuExit::SystemEvent(kind, _) => {
                    c.count(ExitReason::SystemEvent);
                    Step::Exit(if kind == KVM_SYSTEM_EVENT_RESET {
                        VmExit::Reset
                    } else {
                        VmExit::Shutdown
                    })
                }
                VcpuExit::IrqWindowOpen => {
                    c.count(ExitReason::IrqWindow);
                    Step::Again
                }
                VcpuExit::Intr => Step::Interrupted,
                VcpuExit::InternalError => Step::InternalError,
                VcpuExit::FailEntry(reason, cpu) => Step::Failed(format!(
                    "VM entry failed: hardware reason {reason:#x} on host CPU {cpu}"
                )),
                other => Step::Failed(format!("unexpected KVM exit {other:?}")),
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Step::Interrupted,
            Err(e) => return Err(kvm_err("KVM_RUN")(e)),
        };
        Ok(step)
    }

    fn failure(&mut self, detail: String) -> VmExit {
        self.counters.count(ExitReason::InternalError);
        let (rip, bytes) = instruction_at_rip(&self.fd, &self.mem);
        VmExit::InternalError { rip, bytes, detail }
    }
}

impl Vcpu for KvmVcpu {
    fn id(&self) -> u32 {
        self.id
    }

    /// Loads registers, system registers, MSRs, and resets the FPU; the vCPU is made
    /// runnable, so an application processor set up this way starts at `state.rip` without
    /// waiting for INIT/SIPI (leave it alone to have it wait for them).
    fn set_state(&mut self, cpu: &CpuState) -> Result<(), Error> {
        let current = self.fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        let sregs = state::sregs_to_kvm(cpu, &current)?;
        self.fd
            .set_sregs(&sregs)
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        self.fd
            .set_regs(&state::regs_to_kvm(cpu))
            .map_err(kvm_err("KVM_SET_REGS"))?;
        self.fd
            .set_fpu(&state::default_fpu())
            .map_err(kvm_err("KVM_SET_FPU"))?;
        write_msrs(&self.fd, &cpu.msrs)?;
        self.fd
            .set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            })
            .map_err(kvm_err("KVM_SET_MP_STATE"))
    }

    fn state(&mut self) -> Result<CpuState, Error> {
        let mut cpu = CpuState::default();
        let regs = self.fd.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        let sregs = self.fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        state::regs_from_kvm(&regs, &mut cpu);
        state::sregs_from_kvm(&sregs, &mut cpu);
        cpu.msrs = self.get_msrs()?;
        Ok(cpu)
    }

    fn run(&mut self, io: &dyn IoHandler) -> Result<VmExit, Error> {
        let kick = self.kick.clone();
        let immediate_exit: *mut u8 = &mut self.fd.get_kvm_run().immediate_exit;
        let guard = RunGuard::enter(&kick, immediate_exit);
        loop {
            // A kick that came before this point: enter KVM_RUN anyway with immediate_exit
            // set, so KVM completes a pending port/MMIO read and returns EINTR at once.
            if kick.is_pending() {
                guard.set_immediate_exit(true);
            }
            match self.step(io)? {
                Step::Exit(exit) => return Ok(exit),
                Step::Again => continue,
                Step::Interrupted => {
                    guard.set_immediate_exit(false);
                    if kick.take() {
                        self.counters.count(ExitReason::Interrupted);
                        return Ok(VmExit::Interrupted);
                    }
                    // A signal that was not a kick for this vCPU: carry on.
                }
                Step::InternalError => {
                    let detail = internal_error_detail(self.fd.get_kvm_run(), self.pvm);
                    return Ok(self.failure(detail));
                }
                Step::Failed(detail) => return Ok(self.failure(detail)),
            }
        }
    }

    fn kicker(&self) -> Arc<dyn Kicker> {
        Arc::new(KvmKicker(self.kick.clone()))
    }

    fn counters(&self) -> Arc<ExitCounters> {
        self.counters.clone()
    }
}
