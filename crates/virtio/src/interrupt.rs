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

    /// The engine lowered the line at the guest's EOI (a KVM irqfd with resampling): raise
    /// it again if InterruptStatus still has bits the driver has not acknowledged.
    pub fn resample(&self) {
        let s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if *s != 0 {
            self.sink.set_level(self.gsi, true);
        }
    }

    /// Restore InterruptStatus from a snapshot, driving the line to match.
    pub fn restore(&self, status: u32) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        *s = status & (VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
        self.sink.set_level(self.gsi, *s != 0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use devices::InterruptSink;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::VirtioInterrupt;
    use crate::EventLoop;

    /// Records every line change.
    #[derive(Default)]
    struct Lines(Mutex<Vec<(u32, bool)>>);

    impl InterruptSink for Lines {
        fn set_level(&self, gsi: u32, level: bool) {
            self.0.lock().unwrap().push((gsi, level));
        }
    }

    #[test]
    fn resample_raises_the_line_again_only_while_status_is_pending() {
        let lines = Arc::new(Lines::default());
        let irq = VirtioInterrupt::new(lines.clone(), 5);
        irq.resample();
        assert!(lines.0.lock().unwrap().is_empty(), "nothing pending");
        irq.signal_used_queue();
        irq.resample();
        assert_eq!(*lines.0.lock().unwrap(), vec![(5, true), (5, true)]);
        irq.ack(1);
        irq.resample();
        assert_eq!(lines.0.lock().unwrap().last(), Some(&(5, false)));
    }

    #[test]
    fn the_event_loop_resamples_when_the_engine_signals() {
        let lines = Arc::new(Lines::default());
        let irq = Arc::new(VirtioInterrupt::new(lines.clone(), 7));
        irq.signal_used_queue();
        let resample = EventFd::new(EFD_NONBLOCK).unwrap();
        let signal = resample.try_clone().unwrap();
        let mut event_loop = EventLoop::new().unwrap();
        event_loop.add_resample(resample, irq.clone()).unwrap();
        let _running = event_loop.spawn().unwrap();
        signal.write(1).unwrap();
        let start = Instant::now();
        while lines.0.lock().unwrap().len() < 2 {
            assert!(start.elapsed() < Duration::from_secs(10), "no resample");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(*lines.0.lock().unwrap(), vec![(7, true), (7, true)]);
    }
}
