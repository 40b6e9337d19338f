//! QEMU's `isa-debug-exit`: lets test guests end the VM with a chosen exit status.
//!
//! A write of V at the device (placed at port 0xf4, `arch::layout::DEBUG_EXIT`, as in QEMU's
//! usual `-device isa-debug-exit,iobase=0xf4`) posts [`ControlEvent::DebugExit`]`(V)`; the VMM
//! then exits with status `(V << 1) | 1` ([`ControlEvent::exit_status`]), so a guest can never
//! produce a status that looks like a clean exit 0. Accesses of 1, 2 or 4 bytes are accepted;
//! only the low byte of the value is used. Reads return zero.

use std::sync::Arc;

use crate::legacy::bus::BusDevice;
use crate::legacy::control::{ControlEvent, VmControl};

pub struct DebugExit {
    control: Arc<VmControl>,
}

impl DebugExit {
    pub fn new(control: Arc<VmControl>) -> Self {
        Self { control }
    }
}

impl BusDevice for DebugExit {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        // x86 is little-endian: the first byte of the access is the low byte of the value.
        if let (0, Some(&value)) = (offset, data.first()) {
            self.control.request(ControlEvent::DebugExit(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_of_any_width_posts_low_byte() {
        let control = Arc::new(VmControl::new().unwrap());
        let dev = DebugExit::new(control.clone());
        for (data, expect) in [
            (&[0x10u8][..], 0x10u8),
            (&[0x34, 0x12][..], 0x34),
            (&[0x01, 0, 0, 0][..], 0x01),
        ] {
            dev.write(0, data);
            let ev = control.take().unwrap();
            assert_eq!(ev, ControlEvent::DebugExit(expect));
            assert_eq!(ev.exit_status(), Some((i32::from(expect) << 1) | 1));
        }
        dev.write(0, &[]);
        dev.write(1, &[5]);
        assert_eq!(control.take(), None, "empty or off-port writes do nothing");
        let mut d = [0xaa; 4];
        dev.read(0, &mut d);
        assert_eq!(d, [0; 4]);
    }
}
