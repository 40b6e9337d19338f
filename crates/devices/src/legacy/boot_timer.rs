//! The boot-timer port: the guest's first write marks "guest ready" and measures boot time.
//!
//! The guest's init writes any value to the port (`arch::layout::BOOT_TIMER`, 0x440) once it
//! has reached user space; the device records how long that took since VM start and tells the
//! VMM through [`VmControl::notify_guest_ready`]. Later writes are ignored, so a guest cannot
//! skew the measurement. Reads return zero.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::legacy::bus::BusDevice;
use crate::legacy::control::VmControl;

pub struct BootTimer {
    start: Instant,
    control: Arc<VmControl>,
}

impl BootTimer {
    /// `start` is when the VM started (just before its vCPUs first ran).
    pub fn new(start: Instant, control: Arc<VmControl>) -> Self {
        Self { start, control }
    }

    /// Boot time, once the guest has reported.
    pub fn boot_time(&self) -> Option<Duration> {
        self.control.guest_ready()
    }
}

impl BusDevice for BootTimer {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, _offset: u64, _data: &[u8]) {
        // `notify_guest_ready` keeps only the first report; no need to check here.
        self.control.notify_guest_ready(self.start.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_write_records_elapsed_time() {
        let control = Arc::new(VmControl::new().unwrap());
        let start = Instant::now() - Duration::from_millis(1500);
        let dev = BootTimer::new(start, control.clone());
        assert_eq!(dev.boot_time(), None);

        dev.write(0, &[123]);
        let t = dev.boot_time().unwrap();
        assert!(
            t >= Duration::from_millis(1500) && t < Duration::from_secs(60),
            "{t:?}"
        );
        assert_eq!(control.ready_fd().read().unwrap(), 1);

        std::thread::sleep(Duration::from_millis(5));
        dev.write(0, &[1, 2, 3, 4]);
        assert_eq!(dev.boot_time(), Some(t), "later writes are ignored");
        assert_eq!(control.requested(), None);
    }
}
