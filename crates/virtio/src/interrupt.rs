//! The interrupt of one virtio-mmio device: the InterruptStatus register and its GSI.
//!
//! virtio-mmio uses one level-triggered line per device. The line is high while
//! InterruptStatus is non-zero: the device sets a bit (used buffer, config change) and raises
//! it; the driver's InterruptACK write clears bits, and the line drops when none are left.
//! Status and line change together under one lock so they can never disagree.

use std::sync::{Arc, Mutex};

use devices::InterruptSink;
use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};

/// How a transport tells the driver about used buffers and configuration changes.
pub trait VirtioIrq: Send + Sync {
    /// Queue `queue` has new used buffers the driver wants to hear about.
    fn signal_queue(&self, queue: usize);
    /// The configuration (or device status) changed.
    fn signal_config(&self);
    /// Device reset: withdraw any pending interrupt.
    fn reset(&self);
}

impl VirtioIrq for VirtioInterrupt {
    fn signal_queue(&self, _queue: usize) {
        self.signal_used_queue();
    }
    fn signal_config(&self) {
        self.signal_config_change();
    }
    fn reset(&self) {
        VirtioInterrupt::reset(self);
    }
}

/// InterruptStatus plus the line it drives.
pub struct VirtioInterrupt {
    sink: Arc<dyn InterruptSink>,
    gsi: u32,
    status: Mutex<u32>,
}

impl std::fmt::Debug for VirtioInterrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioInterrupt")
            .field("gsi", &self.gsi)
            .field("status", &self.status())
            .finish()
    }
}

impl VirtioInterrupt {
    pub fn new(sink: Arc<dyn InterruptSink>, gsi: u32) -> Self {
        VirtioInterrupt {
            sink,
            gsi,
            status: Mutex::new(0),
        }
    }

    pub fn gsi(&self) -> u32 {
        self.gsi
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_bits(&self, bits: u32) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        *s |= bits;
        self.sink.set_level(self.gsi, true);
    }

    /// A queue has new used buffers.
    pub fn signal_used_queue(&self) {
        self.set_bits(VIRTIO_MMIO_INT_VRING);
    }

    /// The device configuration (or the status, e.g. DEVICE_NEEDS_RESET) changed.
    pub fn signal_config_change(&self) {
        self.set_bits(VIRTIO_MMIO_INT_CONFIG);
    }

    /// The driver's InterruptACK write.
    pub fn ack(&self, bits: u32) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        *s &= !bits;
        if *s == 0 {
            self.sink.set_level(self.gsi, false);
        }
    }

    /// Device reset: clear everything and lower the line.
    pub fn reset(&self) {
        self.ack(u32::MAX);
    }

    /// Restore InterruptStatus from a snapshot, driving the line to match.
    pub fn restore(&self, status: u32) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        *s = status & (VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
        self.sink.set_level(self.gsi, *s != 0);
    }
}
