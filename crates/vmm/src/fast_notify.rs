//! Virtio notifications that bypass the VMM's vCPU and interrupt paths where the engine
//! offers it (KVM): a queue kick becomes an ioeventfd, so the guest's QueueNotify write
//! signals the queue's eventfd inside KVM without an exit; a device's level-triggered line
//! becomes an irqfd with resampling, so the event loop raises it with an eventfd write and
//! KVM lowers it at the guest's EOI. The software engine has neither: its MMIO writes are
//! already direct calls into the device, and its interrupt sink is a plain function call.

use std::sync::Arc;

use devices::InterruptSink;
use hypervisor::Vm;
use virtio::transport::pci;
use virtio::transport::pci::root::BarListener;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A level-triggered line raised through an irqfd. Lowering is the engine's job (at EOI),
/// so `set_level(_, false)` does nothing here.
struct IrqfdLine {
    gsi: u32,
    trigger: EventFd,
}

impl InterruptSink for IrqfdLine {
    fn set_level(&self, gsi: u32, level: bool) {
        if level && gsi == self.gsi {
            // A full eventfd counter (2^64 - 2 pending writes) still leaves the line raised.
            let _ = self.trigger.write(1);
        }
    }
}

/// A level-triggered line raised through an irqfd.
pub struct LevelIrqfd {
    /// Drives the line (give it to the device's transport in place of the VM's sink).
    pub line: Arc<dyn InterruptSink>,
    /// Signalled by the engine after it lowered the line at EOI (hand it to
    /// [`virtio::EventLoop::add_resample`]).
    pub resample: EventFd,
}

/// A level-triggered line for `gsi` backed by an irqfd; `None` when the engine has none.
pub fn level_irqfd(vm: &dyn Vm, gsi: u32) -> Result<Option<LevelIrqfd>, FastNotifyError> {
    let trigger = EventFd::new(EFD_NONBLOCK).map_err(FastNotifyError::EventFd)?;
    let resample = EventFd::new(EFD_NONBLOCK).map_err(FastNotifyError::EventFd)?;
    if !vm.register_level_irqfd(gsi, &trigger, &resample)? {
        return Ok(None);
    }
    Ok(Some(LevelIrqfd {
        line: Arc::new(IrqfdLine { gsi, trigger }),
        resample,
    }))
}

/// Registers each queue's kick eventfd for the 32-bit write of the queue index to `notify`
/// (virtio-mmio's QueueNotify register). Returns whether the engine took them.
pub fn register_queue_kicks(
    vm: &dyn Vm,
    notify: u64,
    kicks: &[EventFd],
) -> Result<bool, FastNotifyError> {
    let mut all = true;
    for (queue, kick) in kicks.iter().enumerate() {
        let value = u32::try_from(queue).map_err(|_| FastNotifyError::TooManyQueues)?;
        all &= vm.register_mmio_kick(notify, Some(value), kick)?;
    }
    Ok(all)
}

/// Kick eventfds of each PCI slot's queues, by slot number.
pub type SlotKicks = Vec<(u8, Arc<Vec<EventFd>>)>;

/// A BAR listener for the PCI root that keeps each queue's kick registered as an ioeventfd
/// on its notify register (`BAR0 + NOTIFY_OFFSET + NOTIFY_MULTIPLIER × queue`, any write
/// there: the driver writes the queue index in 16 bits) wherever the guest puts BAR0. An
/// engine without ioeventfds leaves the writes to the bus.
pub fn pci_kick_follower(vm: Arc<dyn Vm>, slots: SlotKicks) -> BarListener {
    let notify = |bar0: u64, queue: usize| {
        bar0 + pci::NOTIFY_OFFSET + u64::from(pci::NOTIFY_MULTIPLIER) * queue as u64
    };
    Box::new(move |slot, old, new| {
        let Some((_, kicks)) = slots.iter().find(|(s, _)| *s == slot) else {
            return;
        };
        for (queue, kick) in kicks.iter().enumerate() {
            if let Some(&bar0) = old.first() {
                if let Err(e) = vm.unregister_mmio_kick(notify(bar0, queue), None, kick) {
                    tracing::warn!("PCI slot {slot} queue {queue}: {e}");
                }
            }
            if let Some(&bar0) = new.first() {
                // On failure the write still reaches the BAR on the bus: slower, not lost.
                if let Err(e) = vm.register_mmio_kick(notify(bar0, queue), None, kick) {
                    tracing::warn!("PCI slot {slot} queue {queue}: {e}");
                }
            }
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum FastNotifyError {
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("a device has more queues than a notify value can name")]
    TooManyQueues,
    #[error(transparent)]
    Engine(#[from] hypervisor::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_irqfd_line_writes_the_trigger_only_when_raised() {
        let trigger = EventFd::new(EFD_NONBLOCK).unwrap();
        let line = IrqfdLine {
            gsi: 5,
            trigger: trigger.try_clone().unwrap(),
        };
        line.set_level(5, false);
        assert!(trigger.read().is_err(), "lowering must not trigger");
        line.set_level(6, true);
        assert!(trigger.read().is_err(), "another GSI");
        line.set_level(5, true);
        line.set_level(5, true);
        assert_eq!(trigger.read().unwrap(), 2);
    }
}
