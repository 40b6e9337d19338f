//! The only way device back ends touch guest memory.
//!
//! wirt's software engine caches decoded guest code per page, so every byte a device writes
//! into guest RAM (a block read landing in the page cache, a used-ring entry, a page the
//! balloon gives back) must be reported, or the engine could run stale code. [`GuestRam`]
//! wraps the VM's `GuestMemoryMmap` without exposing it: it reads freely, but every write
//! (including the queue's used-ring updates, done through [`GuestRam::add_used`]) goes
//! through one function that calls the [`GuestWriteNotifier`] afterwards.

use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Called with `(guest physical address, length)` after a device wrote that guest range.
pub type GuestWriteNotifier = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// A notifier that ignores every write (for VMs whose engine caches nothing).
pub fn ignore_guest_writes() -> GuestWriteNotifier {
    Arc::new(|_, _| {})
}

/// Why a guest-memory access by a device failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestRamError {
    #[error("guest range {addr:#x}+{len:#x} is not RAM")]
    OutOfRange { addr: u64, len: u64 },
}

/// Guest memory as a device back end sees it: reads, and writes that are always reported.
#[derive(Clone)]
pub struct GuestRam {
    mem: Arc<GuestMemoryMmap>,
    notify: GuestWriteNotifier,
}

impl std::fmt::Debug for GuestRam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestRam")
            .field("regions", &self.mem.num_regions())
            .finish()
    }
}

impl GuestRam {
    pub fn new(mem: Arc<GuestMemoryMmap>, notify: GuestWriteNotifier) -> Self {
        GuestRam { mem, notify }
    }

    /// Whether `[addr, addr + len)` lies entirely in guest RAM (possibly across regions).
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        let Ok(len) = usize::try_from(len) else {
            return false;
        };
        len == 0 && self.mem.address_in_range(GuestAddress(addr))
            || GuestMemoryBackend::check_range(&*self.mem, GuestAddress(addr), len)
    }

    fn check(&self, addr: u64, len: usize) -> Result<(), GuestRamError> {
        if GuestMemoryBackend::check_range(&*self.mem, GuestAddress(addr), len) {
            Ok(())
        } else {
            Err(GuestRamError::OutOfRange {
                addr,
                len: len as u64,
            })
        }
    }

    /// Fill `buf` from guest memory at `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), GuestRamError> {
        self.check(addr, buf.len())?;
        self.mem
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| GuestRamError::OutOfRange {
                addr,
                len: buf.len() as u64,
            })
    }

    /// Write `buf` into guest memory at `addr` and report the range to the notifier.
    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<(), GuestRamError> {
        self.check(addr, buf.len())?;
        let result = self.mem.write_slice(buf, GuestAddress(addr));
        // Report even a failed write: part of it may have landed.
        if !buf.is_empty() {
            (self.notify)(addr, buf.len() as u64);
        }
        result.map_err(|_| GuestRamError::OutOfRange {
            addr,
            len: buf.len() as u64,
        })
    }

    /// Fill `[addr, addr + len)` with zero bytes (reported like any write).
    pub fn write_zeroes(&self, addr: u64, len: u64) -> Result<(), GuestRamError> {
        const CHUNK: u64 = 64 * 1024;
        let zeroes = [0u8; CHUNK as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            let at = addr
                .checked_add(done)
                .ok_or(GuestRamError::OutOfRange { addr, len })?;
            self.write(at, &zeroes[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    /// The host virtual address of `[addr, addr + len)` if the range lies inside one region.
    ///
    /// Only for host-side memory management (the balloon's `madvise`), which must call
    /// [`GuestRam::report_write`] for the range when it changes its contents.
    pub(crate) fn host_range(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let region = self.mem.find_region(GuestAddress(addr))?;
        let offset = addr.checked_sub(region.start_addr().0)?;
        if offset.checked_add(len)? > region.len() {
            return None;
        }
        self.mem.get_host_address(GuestAddress(addr)).ok()
    }

    /// Report a write made outside [`GuestRam::write`] (e.g. pages dropped by `madvise`).
    pub(crate) fn report_write(&self, addr: u64, len: u64) {
        (self.notify)(addr, len);
    }

    /// The head index of the next available descriptor chain of `queue`, if any.
    ///
    /// Only the index is returned (walk it with [`crate::chain::DescChain::walk`]), so the raw
    /// guest memory never leaves this type. An error means the avail ring itself is broken
    /// (e.g. its index ran more than a queue size ahead): the device should ask for a reset.
    pub fn pop_head(&self, queue: &mut Queue) -> Result<Option<u16>, virtio_queue::Error> {
        Ok(queue
            .iter(&*self.mem)?
            .next()
            .map(|chain| chain.head_index()))
    }

    /// Put `head` with `len` written bytes on the used ring, reporting the ring writes.
    pub fn add_used(
        &self,
        queue: &mut Queue,
        head: u16,
        len: u32,
    ) -> Result<(), virtio_queue::Error> {
        let slot = u64::from(queue.next_used() % queue.size().max(1));
        let result = queue.add_used(&*self.mem, head, len);
        let used = queue.used_ring();
        // The element (8 bytes at 4 + 8 * slot) and the index (2 bytes at 2).
        (self.notify)(used.wrapping_add(4 + 8 * slot), 8);
        (self.notify)(used.wrapping_add(2), 2);
        result
    }

    /// Whether the driver wants an interrupt for the buffers used so far (EVENT_IDX aware).
    pub fn needs_notification(&self, queue: &mut Queue) -> bool {
        queue.needs_notification(&*self.mem).unwrap_or(true)
    }

    /// Whether the queue's rings lie in guest RAM.
    pub fn queue_is_valid(&self, queue: &Queue) -> bool {
        queue.is_valid(&*self.mem)
    }
}
