//! Opening `/dev/kvm`: the checks a user needs explained, and what kind of KVM this is.
//!
//! Every failure here is something the user can fix (load a module, join a group, pick the
//! software engine), so each error message names the fix. The host kind matters because a
//! PVM host module serves the same API but emulates CPL0 guest code, slowly and incompletely.

use std::path::Path;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, Kvm};
use vm_memory::GuestMemoryMmap;

use super::kvm_err;
use super::vm::KvmVm;
use crate::Error;

/// The KVM API version every KVM since Linux 2.6.22 reports.
const KVM_API_VERSION: i32 = 12;

/// Capabilities the engine relies on, with what it uses them for.
const REQUIRED_CAPS: [(Cap, &str); 7] = [
    (Cap::UserMemory, "guest memory slots"),
    (Cap::Irqchip, "in-kernel PIC/IOAPIC/LAPIC"),
    (Cap::Pit2, "in-kernel PIT"),
    (Cap::SetTssAddr, "TSS address"),
    (Cap::ExtCpuid, "CPUID setup"),
    (Cap::ImmediateExit, "stopping a running vCPU"),
    (Cap::SetIdentityMapAddr, "identity map address"),
];

/// What serves `/dev/kvm` on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// Intel VT-x.
    Vmx,
    /// AMD-V.
    Svm,
    /// The PVM host module: no hardware virtualization, CPL0 guest code is emulated.
    Pvm,
}

impl HostKind {
    /// One line for the start-up banner.
    pub fn description(self) -> &'static str {
        match self {
            HostKind::Vmx => "KVM with Intel VT-x",
            HostKind::Svm => "KVM with AMD-V",
            HostKind::Pvm => {
                "KVM served by PVM (no VT-x/AMD-V): guest kernel code is emulated slowly and \
                 some instructions stop the guest; use --engine sw for Linux guests"
            }
        }
    }
}

/// An open `/dev/kvm`.
#[derive(Debug)]
pub struct KvmHypervisor {
    kvm: Kvm,
    kind: HostKind,
}

impl KvmHypervisor {
    /// Open `/dev/kvm` and check the API version and the capabilities wirt needs.
    pub fn new() -> Result<Self, Error> {
        let kvm = Kvm::new().map_err(|e| open_error(e.errno()))?;
        let version = kvm.get_api_version();
        if version != KVM_API_VERSION {
            return Err(Error::KvmUnavailable(format!(
                "/dev/kvm speaks KVM API version {version}, wirt needs {KVM_API_VERSION}; \
                 use --engine sw"
            )));
        }
        for (cap, what) in REQUIRED_CAPS {
            if !kvm.check_extension(cap) {
                return Err(Error::KvmUnavailable(format!(
                    "this KVM lacks {cap:?} (needed for {what}); use --engine sw"
                )));
            }
        }
        let kind = detect_host_kind(
            Path::new("/sys/module/kvm_pvm").exists(),
            &std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(),
        );
        Ok(KvmHypervisor { kvm, kind })
    }

    /// What serves `/dev/kvm` here.
    pub fn host_kind(&self) -> HostKind {
        self.kind
    }

    /// True when `/dev/kvm` is the PVM host module (see `shared/KVM-HERE.md`).
    pub fn is_pvm(&self) -> bool {
        self.kind == HostKind::Pvm
    }

    /// One line describing this KVM, for the start-up banner.
    pub fn description(&self) -> &'static str {
        self.kind.description()
    }

    /// Create a VM with `mem` registered as its RAM, an in-kernel irqchip and PIT, for up to
    /// `cpus` vCPUs.
    pub fn create_vm(&self, mem: &GuestMemoryMmap, cpus: u8) -> Result<KvmVm, Error> {
        let max = self.kvm.get_max_vcpus();
        if cpus == 0 || usize::from(cpus) > max {
            return Err(Error::InvalidState(format!(
                "{cpus} vCPUs requested, this KVM supports 1..={max}"
            )));
        }
        let supported_cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let msr_index = self
            .kvm
            .get_msr_index_list()
            .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?;
        let vm = self.kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        KvmVm::new(
            vm,
            mem,
            cpus,
            supported_cpuid.as_slice().to_vec(),
            msr_index.as_slice().to_vec(),
            self.is_pvm(),
        )
    }
}

/// The error for a failed `open("/dev/kvm")`, naming the fix.
fn open_error(errno: i32) -> Error {
    Error::KvmUnavailable(match errno {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => {
            "/dev/kvm does not exist: load the kvm module (modprobe kvm_intel or kvm_amd) or \
             use --engine sw"
                .to_string()
        }
        libc::EACCES | libc::EPERM => "permission denied on /dev/kvm: add yourself to the kvm \
             group or run as root (or use --engine sw)"
            .to_string(),
        _ => format!(
            "cannot open /dev/kvm: {}; use --engine sw",
            std::io::Error::from_raw_os_error(errno)
        ),
    })
}

/// PVM when its module is loaded, or when `/dev/kvm` works although the CPU shows neither
/// VT-x (`vmx`) nor AMD-V (`svm`).
fn detect_host_kind(pvm_module_loaded: bool, cpuinfo: &str) -> HostKind {
    if pvm_module_loaded {
        return HostKind::Pvm;
    }
    let flags = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace());
    let mut kind = HostKind::Pvm;
    for flag in flags {
        match flag {
            "vmx" => return HostKind::Vmx,
            "svm" => kind = HostKind::Svm,
            _ => {}
        }
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_name_the_fix() {
        let missing = open_error(libc::ENOENT).to_string();
        assert!(missing.contains("load the kvm module"), "{missing}");
        assert!(missing.contains("--engine sw"), "{missing}");
        let denied = open_error(libc::EACCES).to_string();
        assert!(denied.contains("kvm group"), "{denied}");
        assert!(denied.contains("root"), "{denied}");
        let other = open_error(libc::EIO).to_string();
        assert!(other.contains("cannot open /dev/kvm"), "{other}");
    }

    #[test]
    fn host_kind_from_cpuinfo() {
        let vmx = "processor : 0\nflags\t\t: fpu vme vmx sse\n";
        let svm = "flags : fpu svm sse\n";
        let none = "flags : fpu sse hypervisor\n";
        assert_eq!(detect_host_kind(false, vmx), HostKind::Vmx);
        assert_eq!(detect_host_kind(false, svm), HostKind::Svm);
        assert_eq!(detect_host_kind(false, none), HostKind::Pvm);
        assert_eq!(detect_host_kind(true, vmx), HostKind::Pvm);
        assert!(HostKind::Pvm.description().contains("PVM"));
    }
}
