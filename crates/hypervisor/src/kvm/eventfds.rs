//! Device notifications that bypass the VMM on KVM: ioeventfds (a guest write to a queue's
//! notify register signals the queue's kick eventfd inside KVM, without an exit to user
//! space) and irqfds with resampling (a device raises its level-triggered line by writing an
//! eventfd; KVM lowers the line at the guest's EOI and tells the VMM through the resample fd).

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::kvm_err;
use crate::Error;

/// GSIs KVM's default routing has IOAPIC pins for.
const MAX_GSI: u32 = 24;

/// `KVM_IOEVENTFD` for a 32-bit write of `value` to `addr`, or for any write there.
pub(super) fn register_mmio_kick(
    vm: &VmFd,
    addr: u64,
    value: Option<u32>,
    kick: &EventFd,
) -> Result<bool, Error> {
    let at = IoEventAddress::Mmio(addr);
    match value {
        Some(v) => vm.register_ioevent(kick, &at, v),
        None => vm.register_ioevent(kick, &at, NoDatamatch),
    }
    .map_err(kvm_err("KVM_IOEVENTFD"))?;
    Ok(true)
}

/// `KVM_IOEVENTFD` with `KVM_IOEVENTFD_FLAG_DEASSIGN` for a registration made above.
pub(super) fn unregister_mmio_kick(
    vm: &VmFd,
    addr: u64,
    value: Option<u32>,
    kick: &EventFd,
) -> Result<(), Error> {
    let at = IoEventAddress::Mmio(addr);
    match value {
        Some(v) => vm.unregister_ioevent(kick, &at, v),
        None => vm.unregister_ioevent(kick, &at, NoDatamatch),
    }
    .map_err(kvm_err("KVM_IOEVENTFD (deassign)"))
}

/// `KVM_IRQFD` with `KVM_IRQFD_FLAG_RESAMPLE` on `gsi`.
pub(super) fn register_level_irqfd(
    vm: &VmFd,
    gsi: u32,
    trigger: &EventFd,
    resample: &EventFd,
) -> Result<bool, Error> {
    if gsi >= MAX_GSI {
        return Err(Error::InvalidState(format!(
            "GSI {gsi} has no IOAPIC pin (0..{MAX_GSI})"
        )));
    }
    vm.register_irqfd_with_resample(trigger, resample, gsi)
        .map_err(kvm_err("KVM_IRQFD"))?;
    Ok(true)
}
