//! A device that accepts writes and ignores them, for ports guests poke without needing an
//! answer (POST code port 0x80, which Linux writes for I/O delays; unused legacy ports whose
//! probing should not count as unclaimed).
//!
//! It remembers the last byte written, which for port 0x80 is the guest's last POST code, and
//! counts writes. Reads return a fixed byte (all ones by default, like an empty ISA slot).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crate::legacy::bus::BusDevice;

#[derive(Debug)]
pub struct PortSink {
    read_value: u8,
    last_written: AtomicU8,
    writes: AtomicU64,
}

impl Default for PortSink {
    fn default() -> Self {
        Self::new(0xff)
    }
}

impl PortSink {
    /// A sink whose reads return `read_value` in every byte.
    pub fn new(read_value: u8) -> Self {
        Self {
            read_value,
            last_written: AtomicU8::new(0),
            writes: AtomicU64::new(0),
        }
    }

    /// The low byte of the last write (0 before any write).
    pub fn last_written(&self) -> u8 {
        self.last_written.load(Ordering::Relaxed)
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

impl BusDevice for PortSink {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(self.read_value);
    }

    fn write(&self, _offset: u64, data: &[u8]) {
        if let Some(&b) = data.first() {
            self.last_written.store(b, Ordering::Relaxed);
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::bus::Bus;
    use std::sync::Arc;

    #[test]
    fn accepts_writes_and_reads_fixed_value() {
        let bus = Bus::new();
        let sink = Arc::new(PortSink::default());
        bus.insert(sink.clone(), 0x80, 1).unwrap();
        assert!(bus.write(0x80, &[0x42]));
        assert!(bus.write(0x80, &[0x43, 0]));
        let mut d = [0u8; 2];
        assert!(bus.read(0x80, &mut d));
        assert_eq!(d, [0xff, 0xff]);
        assert_eq!((sink.last_written(), sink.writes()), (0x43, 2));
        assert_eq!(bus.stats().unclaimed_writes, 0, "claimed, not dropped");

        let zero = PortSink::new(0);
        zero.read(0, &mut d);
        assert_eq!(d, [0, 0]);
    }
}
