//! The PIIX/ICH reset control register (port 0xcf9, `arch::layout::RESET_CONTROL`), which the
//! FADT names as the ACPI reset register and Linux's `reboot=pci` writes directly.
//!
//! Bit 2 (RST_CPU) starts the reset; bit 1 (SYS_RST, hard vs. soft) and bit 3 (full reset)
//! only choose its kind, which a VM does not distinguish. So the FADT's RESET_VALUE 0x06 and
//! Linux's `0x02` then `0x06` sequence both post exactly one [`ControlEvent::Reset`].
//! Reads return the last value written without bit 2 (it is self-clearing on hardware).
//!
//! On a PC this byte sits inside the PCI configuration-address dword at 0xcf8; when a PCI host
//! bridge is placed at 0xcf8, it must forward one-byte accesses at 0xcf9 here.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::legacy::bus::BusDevice;
use crate::legacy::control::{ControlEvent, VmControl};

const RST_CPU: u8 = 1 << 2;
const WRITABLE: u8 = 0x0e;

/// Guest-visible state for snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetControlState {
    pub value: u8,
}

pub struct ResetControl {
    value: AtomicU8,
    control: Arc<VmControl>,
}

impl ResetControl {
    pub fn new(control: Arc<VmControl>) -> Self {
        Self::from_state(ResetControlState::default(), control)
    }

    pub fn from_state(state: ResetControlState, control: Arc<VmControl>) -> Self {
        Self {
            value: AtomicU8::new(state.value & WRITABLE & !RST_CPU),
            control,
        }
    }

    pub fn state(&self) -> ResetControlState {
        ResetControlState {
            value: self.value.load(Ordering::Relaxed),
        }
    }
}

impl BusDevice for ResetControl {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (0, Some(b)) = (offset, data.first_mut()) {
            *b = self.value.load(Ordering::Relaxed);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        if offset != 0 {
            return;
        }
        self.value.store(v & WRITABLE & !RST_CPU, Ordering::Relaxed);
        if v & RST_CPU != 0 {
            self.control.request(ControlEvent::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_pci_reboot_sequence_resets_once() {
        let control = Arc::new(VmControl::new().unwrap());
        let dev = ResetControl::new(control.clone());
        dev.write(0, &[0x02]);
        assert_eq!(control.requested(), None, "0x02 only selects a hard reset");
        let mut d = [0u8];
        dev.read(0, &mut d);
        assert_eq!(d, [0x02]);

        dev.write(0, &[0x06]);
        assert_eq!(control.take(), Some(ControlEvent::Reset));
        dev.read(0, &mut d);
        assert_eq!(d, [0x02], "RST_CPU self-clears");
        assert_eq!(dev.state(), ResetControlState { value: 0x02 });
    }

    #[test]
    fn other_values_do_not_reset() {
        let control = Arc::new(VmControl::new().unwrap());
        let dev = ResetControl::new(control.clone());
        for v in [0x00, 0x02, 0x08, 0x0a, 0xf1] {
            dev.write(0, &[v]);
        }
        dev.write(1, &[0x06]);
        assert_eq!(control.requested(), None);
    }
}
