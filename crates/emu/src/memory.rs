//! Guest-physical memory as the CPU sees it: RAM regions as raw host pointers (for speed),
//! everything else forwarded to the platform as MMIO, plus the shared page-version table
//! that invalidates decoded code when a page holding it is written.
//!
//! Hand-written because the interpreter needs unchecked-speed loads/stores and real atomic
//! read-modify-write on guest RAM (`lock` prefix), which `vm-memory`'s `Bytes` API does not
//! offer at that granularity.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};

pub const PAGE_SIZE: u64 = 4096;
pub const PAGE_SHIFT: u32 = 12;

#[derive(Clone, Copy, Debug)]
struct Region {
    start: u64,
    len: u64,
    host: *mut u8,
    /// Index of this region's first page in the page-version table.
    first_page: usize,
}

/// Per-4K-page code versions, shared by all vCPUs of a VM.
///
/// Bit 0 set means "decoded blocks exist for this page"; any write to such a page bumps the
/// value (which clears bit 0), so every block that recorded the old value is stale. Values
/// only ever grow, so a block can never see its recorded value again after a write.
#[derive(Clone, Debug)]
pub struct CodeVersions {
    pages: Arc<[AtomicU32]>,
}

impl CodeVersions {
    fn new(pages: usize) -> Self {
        CodeVersions {
            pages: (0..pages).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Marks a page as holding decoded code; returns the version blocks must record.
    pub(crate) fn mark_code(&self, idx: usize) -> u32 {
        let Some(slot) = self.pages.get(idx) else {
            return 0;
        };
        loop {
            let v = slot.load(Ordering::Acquire);
            if v & 1 == 1 {
                return v;
            }
            if slot
                .compare_exchange(v, v.wrapping_add(1), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return v.wrapping_add(1);
            }
        }
    }

    #[inline]
    pub(crate) fn current(&self, idx: usize) -> u32 {
        self.pages.get(idx).map_or(0, |s| s.load(Ordering::Acquire))
    }

    /// Notes a write to page `idx`; returns true if it held code (now invalidated).
    #[inline]
    pub(crate) fn note_write_page(&self, idx: usize) -> bool {
        let Some(slot) = self.pages.get(idx) else {
            return false;
        };
        let v = slot.load(Ordering::Relaxed);
        if v & 1 == 0 {
            return false;
        }
        let _ = slot.compare_exchange(v, v.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed);
        true
    }
}

/// Guest RAM and the code-version table. Cheap to clone (one per vCPU).
#[derive(Clone)]
pub struct GuestRam {
    regions: Vec<Region>,
    versions: CodeVersions,
    /// Keeps the mappings alive for as long as any raw pointer above is used.
    _mem: GuestMemoryMmap,
    /// Serialises locked read-modify-writes that straddle an 8-byte boundary.
    split_lock: Arc<AtomicU8>,
}

// SAFETY: the raw pointers point into mmaps owned by `_mem` (kept alive by this struct);
// all accesses through them are bounds-checked against the region lengths and use
// unaligned/atomic primitives that are valid for concurrent use from several threads
// (the guest is responsible for its own data races, exactly as on hardware).
unsafe impl Send for GuestRam {}
// SAFETY: see `Send` above; shared access only reads the immutable region table.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// Builds the view of `mem`; the returned value shares one code-version table for all
    /// its clones (one clone per vCPU).
    pub fn new(mem: &GuestMemoryMmap) -> Self {
        let mut regions = Vec::new();
        let mut pages = 0usize;
        for r in mem.iter() {
            let Ok(host) = r.get_host_address(MemoryRegionAddress(0)) else {
                continue;
            };
            let len = r.len();
            regions.push(Region {
                start: r.start_addr().0,
                len,
                host,
                first_page: pages,
            });
            pages += len.div_ceil(PAGE_SIZE) as usize;
        }
        regions.sort_by_key(|r| r.start);
        GuestRam {
            regions,
            versions: CodeVersions::new(pages),
            _mem: mem.clone(),
            split_lock: Arc::new(AtomicU8::new(0)),
        }
    }

    pub fn versions(&self) -> &CodeVersions {
        &self.versions
    }

    /// Host pointer and page-table index for the whole 4K page at `gpa_page` (page-aligned),
    /// or None if the page is not entirely RAM.
    #[inline]
    pub(crate) fn page(&self, gpa_page: u64) -> Option<(*mut u8, usize)> {
        for r in &self.regions {
            if gpa_page >= r.start && gpa_page < r.start + r.len {
                let off = gpa_page - r.start;
                if off + PAGE_SIZE > r.len {
                    return None;
                }
                // SAFETY: off + PAGE_SIZE <= r.len, so the pointer stays inside the mapping.
                let p = unsafe { r.host.add(off as usize) };
                return Some((p, r.first_page + (off >> PAGE_SHIFT) as usize));
            }
        }
        None
    }

    /// Host pointer for `len` bytes at `gpa` if they are all RAM.
    #[inline]
    pub(crate) fn range(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            if gpa >= r.start && gpa < r.start + r.len {
                let off = gpa - r.start;
                if len > r.len - off {
                    return None;
                }
                // SAFETY: off + len <= r.len.
                return Some(unsafe { r.host.add(off as usize) });
            }
        }
        None
    }

    /// Code-version index of the page holding `gpa`.
    pub(crate) fn page_index(&self, gpa: u64) -> Option<usize> {
        self.page(gpa & !(PAGE_SIZE - 1)).map(|(_, i)| i)
    }

    /// Tells the CPUs that something other than a CPU (e.g. DMA) wrote `[gpa, gpa+len)`, so
    /// decoded code there must be dropped.
    pub fn note_external_write(&self, gpa: u64, len: u64) {
        let mut p = gpa & !(PAGE_SIZE - 1);
        let end = gpa.saturating_add(len);
        while p < end {
            if let Some(i) = self.page_index(p) {
                self.versions.note_write_page(i);
            }
            p += PAGE_SIZE;
        }
    }

    /// Reads bytes of guest RAM (not MMIO); false if any byte is outside RAM.
    pub fn read_phys(&self, gpa: u64, out: &mut [u8]) -> bool {
        match self.range(gpa, out.len() as u64) {
            Some(p) => {
                // SAFETY: range() checked that out.len() bytes at p are inside a mapping.
                unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
                true
            }
            None => false,
        }
    }

    /// Writes bytes of guest RAM; false if any byte is outside RAM.
    pub fn write_phys(&self, gpa: u64, data: &[u8]) -> bool {
        match self.range(gpa, data.len() as u64) {
            Some(p) => {
                // SAFETY: range() checked that data.len() bytes at p are inside a mapping.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
                self.note_external_write(gpa, data.len() as u64);
                true
            }
            None => false,
        }
    }

    pub(crate) fn split_lock(&self) -> &AtomicU8 {
        &self.split_lock
    }
}

/// Loads `size` (1, 2, 4 or 8) bytes little-endian from a host pointer (other sizes read
/// nothing and give 0).
///
/// # Safety
/// `p..p+size` must be inside a live guest RAM mapping.
#[inline(always)]
pub(crate) unsafe fn load(p: *const u8, size: usize) -> u64 {
    match size {
        1 => *p as u64,
        2 => (p as *const u16).read_unaligned() as u64,
        4 => (p as *const u32).read_unaligned() as u64,
        8 => (p as *const u64).read_unaligned(),
        _ => 0,
    }
}

/// Stores `size` (1, 2, 4 or 8) bytes little-endian to a host pointer.
///
/// # Safety
/// `p..p+size` must be inside a live guest RAM mapping.
#[inline(always)]
pub(crate) unsafe fn store(p: *mut u8, size: usize, v: u64) {
    match size {
        1 => *p = v as u8,
        2 => (p as *mut u16).write_unaligned(v as u16),
        4 => (p as *mut u32).write_unaligned(v as u32),
        8 => (p as *mut u64).write_unaligned(v),
        _ => {}
    }
}

/// Atomically replaces the `size`-byte value at `p` by `f(old)` (a locked read-modify-write),
/// returning the old value. `f` returns None to leave memory unchanged (cmpxchg failure).
///
/// # Safety
/// `p..p+size` must be inside a live guest RAM mapping.
pub(crate) unsafe fn atomic_rmw(
    p: *mut u8,
    size: usize,
    split: &AtomicU8,
    mut f: impl FnMut(u64) -> Option<u64>,
) -> u64 {
    macro_rules! cas_loop {
        ($at:ty, $t:ty) => {{
            let a = &*(p as *const $at);
            let mut old = a.load(Ordering::SeqCst);
            loop {
                match f(old as u64) {
                    None => return old as u64,
                    Some(new) => {
                        match a.compare_exchange_weak(
                            old,
                            new as $t,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        ) {
                            Ok(_) => return old as u64,
                            Err(cur) => old = cur,
                        }
                    }
                }
            }
        }};
    }
    let aligned = matches!(size, 1 | 2 | 4 | 8) && (p as usize).is_multiple_of(size);
    if aligned {
        match size {
            1 => cas_loop!(std::sync::atomic::AtomicU8, u8),
            2 => cas_loop!(std::sync::atomic::AtomicU16, u16),
            4 => cas_loop!(AtomicU32, u32),
            _ => cas_loop!(AtomicU64, u64),
        }
    }
    // Split lock: serialise against other split locks (not against plain accesses, which
    // hardware would also block; guests do not rely on that and Linux warns about it).
    while split
        .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
    let old = load(p, size);
    if let Some(new) = f(old) {
        store(p, size, new);
    }
    split.store(0, Ordering::Release);
    old
}

/// Atomic 16-byte compare-and-exchange (LOCK CMPXCHG16B on the host); returns the value
/// that was in memory (equal to `expect` iff the exchange happened).
///
/// # Safety
/// `p` must be 16-byte aligned and point at 16 bytes of live guest RAM.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn cmpxchg16b(p: *mut u8, expect: u128, new: u128) -> u128 {
    let mut lo = expect as u64;
    let mut hi = (expect >> 64) as u64;
    // rbx is reserved by LLVM, so the new low half is swapped in and out around the op.
    std::arch::asm!(
        "xchg {nb}, rbx",
        "lock cmpxchg16b [{p}]",
        "xchg {nb}, rbx",
        p = in(reg) p,
        nb = inout(reg) new as u64 => _,
        inout("rax") lo,
        inout("rdx") hi,
        in("rcx") (new >> 64) as u64,
        options(nostack)
    );
    (hi as u128) << 64 | lo as u128
}
