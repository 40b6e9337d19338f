//! Describing a vCPU that KVM could not run: where it stopped and which instruction.
//!
//! On PVM hosts `KVM_EXIT_INTERNAL_ERROR` is the normal way an unsupported CPL0 instruction
//! shows up, so the report must say exactly what the guest executed: RIP and the bytes there
//! (translated with `KVM_TRANSLATE`, read from guest memory; best effort).

use kvm_bindings::{kvm_run, KVM_EXIT_INTERNAL_ERROR};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::state::linear_rip;

/// The longest x86 instruction.
const MAX_INSN_LEN: u64 = 15;
const PAGE_SIZE: u64 = 4096;
const CR0_PG: u64 = 1 << 31;

/// RIP and up to 15 instruction bytes at RIP; bytes stop at the first page that does not
/// translate or read.
pub fn instruction_at_rip(fd: &VcpuFd, mem: &GuestMemoryMmap) -> (u64, Vec<u8>) {
    let (Ok(regs), Ok(sregs)) = (fd.get_regs(), fd.get_sregs()) else {
        return (0, Vec::new());
    };
    let mut bytes = Vec::new();
    let mut linear = linear_rip(&regs, &sregs);
    let end = linear.saturating_add(MAX_INSN_LEN);
    while linear < end {
        let chunk = (end - linear).min(PAGE_SIZE - linear % PAGE_SIZE);
        let phys = match fd.translate_gva(linear) {
            Ok(t) if t.valid != 0 => t.physical_address,
            // Without paging the linear address is the physical one.
            _ if sregs.cr0 & CR0_PG == 0 => linear,
            _ => break,
        };
        let mut buf = vec![0u8; chunk as usize];
        if mem.read_slice(&mut buf, GuestAddress(phys)).is_err() {
            break;
        }
        bytes.extend_from_slice(&buf);
        linear += chunk;
    }
    (regs.rip, bytes)
}

/// What `kvm_run` says about an internal error, in words.
pub fn internal_error_detail(run: &kvm_run, pvm: bool) -> String {
    if run.exit_reason != KVM_EXIT_INTERNAL_ERROR {
        return "KVM_EXIT_INTERNAL_ERROR".to_string();
    }
    // SAFETY: the exit reason says the `internal` member of the union is the valid one.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let what = match internal.suberror {
        1 => "instruction emulation failed",
        2 => "exception while delivering an exception",
        3 => "event delivery failed",
        4 => "unexpected exit reason",
        _ => "unknown suberror",
    };
    let n = (internal.ndata as usize).min(internal.data.len());
    let data: Vec<String> = internal.data[..n]
        .iter()
        .map(|d| format!("{d:#x}"))
        .collect();
    let mut s = format!(
        "KVM internal error {} ({what}), data [{}]",
        internal.suberror,
        data.join(", ")
    );
    if pvm {
        s.push_str("; this KVM is PVM, whose CPL0 emulator lacks many instructions");
    }
    s
}
