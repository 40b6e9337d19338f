//! An address-range bus that routes port-I/O or MMIO accesses to devices.
//!
//! Every I/O exit of every vCPU goes through [`Bus::read`] or [`Bus::write`], so lookup is a
//! binary search over a sorted vector of non-overlapping ranges behind a read-mostly lock.
//! The same type serves both address spaces: port numbers are just small addresses.
//!
//! A device is found by the *first* address of an access; it gets the offset of that address
//! into its range and the full access (1, 2, 4 or 8 bytes, or more from the software engine),
//! even when the access runs past the end of its range. Devices therefore check `offset` and
//! `data.len()` themselves, which they must do anyway because both come from the guest.
//! Accesses nobody claims read as all ones (like a floating ISA/PCI bus) and their writes are
//! dropped; both are counted so the VMM can show them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::legacy::sync::{read_lock, write_lock};

/// A device on a [`Bus`].
///
/// Methods take `&self` because several vCPU threads may access one device at the same time;
/// devices keep their state behind their own locks or atomics.
pub trait BusDevice: Send + Sync {
    /// Fill `data` (its length is the access size) with the value at `offset` into the
    /// device's range.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// Accept `data` (its length is the access size) written at `offset` into the range.
    fn write(&self, offset: u64, data: &[u8]);
}

/// A half-open address range `[base, base + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BusRange {
    pub base: u64,
    pub len: u64,
}

impl BusRange {
    /// The last address inside the range (ranges are never empty).
    fn last(&self) -> u64 {
        // `len >= 1` and `base + len - 1` was checked not to overflow at insertion.
        self.base + (self.len - 1)
    }

    fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.len
    }

    fn overlaps(&self, other: &BusRange) -> bool {
        self.base <= other.last() && other.base <= self.last()
    }
}

impl std::fmt::Display for BusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:#x}..{:#x}",
            self.base,
            self.base as u128 + self.len as u128
        )
    }
}

/// Why a device could not be placed on or removed from a [`Bus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("empty bus range at {base:#x}")]
    EmptyRange { base: u64 },
    #[error("bus range at {base:#x} with length {len:#x} wraps around the address space")]
    RangeOverflow { base: u64, len: u64 },
    #[error("bus range {new} overlaps the device already at {existing}")]
    Overlap { new: BusRange, existing: BusRange },
    #[error("no device is placed at {base:#x}")]
    NotFound { base: u64 },
}

/// Counts of accesses that no device claimed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BusStats {
    pub unclaimed_reads: u64,
    pub unclaimed_writes: u64,
}

struct Entry {
    range: BusRange,
    device: Arc<dyn BusDevice>,
}

/// A set of devices, each owning a non-overlapping address range.
#[derive(Default)]
pub struct Bus {
    /// Sorted by `range.base`; ranges never overlap.
    entries: RwLock<Vec<Entry>>,
    unclaimed_reads: AtomicU64,
    unclaimed_writes: AtomicU64,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges: Vec<BusRange> = read_lock(&self.entries).iter().map(|e| e.range).collect();
        f.debug_struct("Bus")
            .field("ranges", &ranges)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Place `device` at `[base, base + len)`.
    pub fn insert(&self, device: Arc<dyn BusDevice>, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::EmptyRange { base });
        }
        if base.checked_add(len - 1).is_none() {
            return Err(BusError::RangeOverflow { base, len });
        }
        let new = BusRange { base, len };
        let mut entries = write_lock(&self.entries);
        let pos = entries.partition_point(|e| e.range.base < base);
        // Only the neighbours on either side can overlap a range in a sorted, disjoint list.
        let neighbours = pos.checked_sub(1).into_iter().chain(Some(pos));
        for i in neighbours {
            if let Some(e) = entries.get(i) {
                if e.range.overlaps(&new) {
                    return Err(BusError::Overlap {
                        new,
                        existing: e.range,
                    });
                }
            }
        }
        entries.insert(pos, Entry { range: new, device });
        Ok(())
    }

    /// Remove the device whose range starts exactly at `base`, returning it.
    pub fn remove(&self, base: u64) -> Result<Arc<dyn BusDevice>, BusError> {
        let mut entries = write_lock(&self.entries);
        match entries.binary_search_by_key(&base, |e| e.range.base) {
            Ok(i) => Ok(entries.remove(i).device),
            Err(_) => Err(BusError::NotFound { base }),
        }
    }

    /// The device claiming `addr`, its range, and the offset of `addr` into that range.
    ///
    /// The lock is released before the device is called, so a device may change the bus it
    /// sits on (a PCI device moving its BAR) from inside an access.
    pub fn resolve(&self, addr: u64) -> Option<(Arc<dyn BusDevice>, BusRange, u64)> {
        let entries = read_lock(&self.entries);
        Self::find(&entries, addr).map(|e| (Arc::clone(&e.device), e.range, addr - e.range.base))
    }

    fn find(entries: &[Entry], addr: u64) -> Option<&Entry> {
        // The last range starting at or below `addr` is the only candidate.
        let pos = entries.partition_point(|e| e.range.base <= addr);
        let e = entries.get(pos.checked_sub(1)?)?;
        e.range.contains(addr).then_some(e)
    }

    /// Read `data.len()` bytes at `addr`. Returns whether a device claimed the access; if none
    /// did, `data` is all ones.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((device, _, offset)) => {
                device.read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                self.unclaimed_reads.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(addr, len = data.len(), "unclaimed bus read");
                false
            }
        }
    }

    /// Write `data` at `addr`. Returns whether a device claimed the access; if none did, the
    /// write is dropped.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((device, _, offset)) => {
                device.write(offset, data);
                true
            }
            None => {
                self.unclaimed_writes.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(addr, len = data.len(), "unclaimed bus write");
                false
            }
        }
    }

    /// The ranges currently placed, in address order.
    pub fn ranges(&self) -> Vec<BusRange> {
        read_lock(&self.entries).iter().map(|e| e.range).collect()
    }

    pub fn stats(&self) -> BusStats {
        BusStats {
            unclaimed_reads: self.unclaimed_reads.load(Ordering::Relaxed),
            unclaimed_writes: self.unclaimed_writes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records every access it sees; reads return the low byte of the offset in each byte.
    #[derive(Default)]
    struct Recorder {
        log: Mutex<Vec<(char, u64, Vec<u8>)>>,
    }

    impl BusDevice for Recorder {
        fn read(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
            self.log.lock().unwrap().push(('r', offset, data.to_vec()));
        }
        fn write(&self, offset: u64, data: &[u8]) {
            self.log.lock().unwrap().push(('w', offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_with_offset_into_range() {
        let bus = Bus::new();
        let uart = Arc::new(Recorder::default());
        let rtc = Arc::new(Recorder::default());
        bus.insert(uart.clone(), 0x3f8, 8).unwrap();
        bus.insert(rtc.clone(), 0x70, 2).unwrap();

        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b, [5]);
        assert!(bus.write(0x3f8, b"x"));
        assert!(bus.write(0x71, &[0x12]));
        assert!(bus.read(0x70, &mut b));
        assert_eq!(b, [0]);

        assert_eq!(
            *uart.log.lock().unwrap(),
            vec![('r', 5, vec![5]), ('w', 0, vec![b'x'])]
        );
        assert_eq!(
            *rtc.log.lock().unwrap(),
            vec![('w', 1, vec![0x12]), ('r', 0, vec![0])]
        );
        assert_eq!(bus.stats(), BusStats::default());
    }

    #[test]
    fn unclaimed_reads_are_all_ones_and_counted() {
        let bus = Bus::new();
        let dev = Arc::new(Recorder::default());
        bus.insert(dev.clone(), 0x70, 2).unwrap();
        let mut d = [0u8; 4];
        assert!(!bus.read(0x72, &mut d));
        assert_eq!(d, [0xff; 4]);
        assert!(!bus.read(0x6f, &mut d));
        assert!(!bus.write(0x72, &[1]));
        assert!(!bus.write(u64::MAX, &[1]));
        assert_eq!(
            bus.stats(),
            BusStats {
                unclaimed_reads: 2,
                unclaimed_writes: 2
            }
        );
        assert!(dev.log.lock().unwrap().is_empty());
    }

    #[test]
    fn overlapping_and_empty_ranges_are_rejected() {
        let bus = Bus::new();
        let d: Arc<dyn BusDevice> = Arc::new(Recorder::default());
        bus.insert(d.clone(), 0x600, 4).unwrap();
        bus.insert(d.clone(), 0x608, 4).unwrap();
        let existing = BusRange {
            base: 0x600,
            len: 4,
        };
        assert_eq!(
            bus.insert(d.clone(), 0x603, 2),
            Err(BusError::Overlap {
                new: BusRange {
                    base: 0x603,
                    len: 2
                },
                existing
            })
        );
        // Starts before an existing range and runs into it.
        assert!(matches!(
            bus.insert(d.clone(), 0x5f0, 0x11),
            Err(BusError::Overlap { existing: e, .. }) if e == existing
        ));
        // Covers an existing range entirely.
        assert!(matches!(
            bus.insert(d.clone(), 0x605, 0x100),
            Err(BusError::Overlap { .. })
        ));
        assert_eq!(
            bus.insert(d.clone(), 0x700, 0),
            Err(BusError::EmptyRange { base: 0x700 })
        );
        assert_eq!(
            bus.insert(d.clone(), u64::MAX, 2),
            Err(BusError::RangeOverflow {
                base: u64::MAX,
                len: 2
            })
        );
        // The gap between the two ranges fits exactly; the top byte of the space too.
        bus.insert(d.clone(), 0x604, 4).unwrap();
        bus.insert(d.clone(), u64::MAX, 1).unwrap();
        assert_eq!(
            bus.ranges().iter().map(|r| r.base).collect::<Vec<_>>(),
            vec![0x600, 0x604, 0x608, u64::MAX]
        );
    }

    #[test]
    fn remove_frees_the_range() {
        let bus = Bus::new();
        let d: Arc<dyn BusDevice> = Arc::new(Recorder::default());
        bus.insert(d.clone(), 0xd000_0000, 0x1000).unwrap();
        assert!(bus.write(0xd000_0fff, &[0]));
        assert_eq!(
            bus.remove(0xd000_0001).err(),
            Some(BusError::NotFound { base: 0xd000_0001 })
        );
        bus.remove(0xd000_0000).unwrap();
        assert!(!bus.write(0xd000_0fff, &[0]));
        bus.insert(d, 0xd000_0800, 0x1000).unwrap();
        let (_, range, offset) = bus.resolve(0xd000_0900).unwrap();
        assert_eq!(
            (range.base, offset),
            (0xd000_0800, 0x100),
            "a moved device resolves at its new place"
        );
    }

    /// A device that moves itself when written, as a PCI BAR write does.
    struct Mover {
        bus: std::sync::Weak<Bus>,
    }

    impl BusDevice for Mover {
        fn read(&self, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write(&self, _offset: u64, data: &[u8]) {
            let bus = self.bus.upgrade().unwrap();
            let me = bus.remove(0x1000).unwrap();
            bus.insert(me, u64::from(data[0]) << 12, 0x10).unwrap();
        }
    }

    #[test]
    fn device_may_change_its_bus_during_an_access() {
        let bus = Arc::new(Bus::new());
        let mover = Arc::new(Mover {
            bus: Arc::downgrade(&bus),
        });
        bus.insert(mover, 0x1000, 0x10).unwrap();
        assert!(bus.write(0x1004, &[0x2]), "no deadlock on the bus lock");
        assert!(bus.resolve(0x1004).is_none());
        assert_eq!(bus.resolve(0x2004).unwrap().2, 4);
    }

    #[test]
    fn concurrent_accesses_from_many_threads() {
        let bus = Arc::new(Bus::new());
        let dev = Arc::new(Recorder::default());
        bus.insert(dev.clone(), 0x100, 0x10).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let bus = bus.clone();
                std::thread::spawn(move || {
                    for i in 0..1024u64 {
                        bus.write(0x100 + (i + t) % 0x20, &[t as u8]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let claimed = dev.log.lock().unwrap().len() as u64;
        assert_eq!(claimed + bus.stats().unclaimed_writes, 4096);
        assert_eq!(claimed, 2048);
    }

    #[test]
    fn lookup_among_many_ranges() {
        let bus = Bus::new();
        let d: Arc<dyn BusDevice> = Arc::new(Recorder::default());
        // Insert out of order; every other 16-byte slot is taken.
        for i in (0..100u64).rev() {
            bus.insert(d.clone(), i * 32, 16).unwrap();
        }
        for addr in 0..3200u64 {
            let hit = bus.resolve(addr);
            if addr % 32 < 16 {
                let (_, r, off) = hit.unwrap();
                assert_eq!((r.base, off), (addr - addr % 32, addr % 32));
            } else {
                assert!(hit.is_none(), "{addr:#x} is in a gap");
            }
        }
    }
}
