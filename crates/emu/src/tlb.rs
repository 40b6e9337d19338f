//! The software TLB: a direct-mapped array of linear-page translations.
//!
//! Each entry caches the result of one page walk for one 4 KiB linear page, with the
//! permissions pre-combined for the current CR0.WP, CR4.SMEP/SMAP/PKE/PKS and PKRU/PKRS
//! (changing any of them flushes everything), so an access is checked with one AND.
//! Supervisor data accesses have two bits each: the plain one (SMAP enforced) and the
//! `_AC` one for explicit accesses at CPL < 3 with EFLAGS.AC set (SMAP overridden).
//! Entries of MMIO pages have a null host pointer.

pub const TLB_SIZE: usize = 1024;

pub const P_READ_SUP: u8 = 1 << 0;
pub const P_READ_USER: u8 = 1 << 1;
pub const P_WRITE_SUP: u8 = 1 << 2;
pub const P_WRITE_USER: u8 = 1 << 3;
pub const P_EXEC_SUP: u8 = 1 << 4;
pub const P_EXEC_USER: u8 = 1 << 5;
pub const P_READ_SUP_AC: u8 = 1 << 6;
pub const P_WRITE_SUP_AC: u8 = 1 << 7;

/// Kind of memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

impl Access {
    /// The permission bit an access needs in a TLB entry.
    #[inline(always)]
    pub fn required(self, user: bool) -> u8 {
        match (self, user) {
            (Access::Read, false) => P_READ_SUP,
            (Access::Read, true) => P_READ_USER,
            (Access::Write, false) => P_WRITE_SUP,
            (Access::Write, true) => P_WRITE_USER,
            (Access::Exec, false) => P_EXEC_SUP,
            (Access::Exec, true) => P_EXEC_USER,
        }
    }

    /// The bit a supervisor access needs when SMAP is overridden (explicit access,
    /// CPL < 3, EFLAGS.AC = 1).
    #[inline(always)]
    pub fn required_ac(self) -> u8 {
        match self {
            Access::Read => P_READ_SUP_AC,
            Access::Write => P_WRITE_SUP_AC,
            Access::Exec => P_EXEC_SUP,
        }
    }
}

/// 32 bytes, aligned: one probe touches one cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
pub struct TlbEntry {
    /// Linear page address (low 12 bits zero); meaningful only if `perms != 0`.
    pub tag: u64,
    /// Guest-physical page address.
    pub phys: u64,
    /// Host address of the page in RAM, or null for MMIO.
    pub host: *mut u8,
    /// Code-version index of the page (u32::MAX if not RAM).
    vidx: u32,
    pub perms: u8,
    /// log2 of the size of the guest page this came from (12, 21, 22 or 30), so INVLPG
    /// of any address in a large page drops all its 4K pieces.
    span_bits: u8,
    /// From a global page with CR4.PGE set: survives CR3 writes.
    global: bool,
}

impl TlbEntry {
    const EMPTY: TlbEntry = TlbEntry {
        tag: 0,
        phys: 0,
        host: std::ptr::null_mut(),
        vidx: u32::MAX,
        perms: 0,
        span_bits: 12,
        global: false,
    };

    /// An entry for linear page `tag` (from a guest page of 2^`span_bits` bytes).
    pub fn new(
        tag: u64,
        phys: u64,
        host: *mut u8,
        vidx: usize,
        perms: u8,
        span_bits: u8,
        global: bool,
    ) -> Self {
        TlbEntry {
            tag,
            phys,
            host,
            vidx: u32::try_from(vidx).unwrap_or(u32::MAX),
            perms,
            span_bits,
            global,
        }
    }

    /// Code-version index of the page (`usize::MAX` if not RAM).
    #[inline(always)]
    pub fn vidx(&self) -> usize {
        if self.vidx == u32::MAX {
            usize::MAX
        } else {
            self.vidx as usize
        }
    }

    /// Mask of the linear-address bits naming the guest page this entry came from.
    #[inline(always)]
    pub fn span_mask(&self) -> u64 {
        !((1u64 << self.span_bits) - 1)
    }
}

pub struct Tlb {
    entries: Box<[TlbEntry]>,
    /// Whether any entry came from a large page (INVLPG must then scan).
    has_large: bool,
}

// SAFETY: the host pointers are into guest RAM kept alive by the Cpu's GuestRam; the TLB is
// owned by one Cpu and moves with it between threads.
unsafe impl Send for Tlb {}

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            entries: vec![TlbEntry::EMPTY; TLB_SIZE].into_boxed_slice(),
            has_large: false,
        }
    }
}

impl Tlb {
    #[inline(always)]
    fn index(lin: u64) -> usize {
        ((lin >> 12) as usize) & (TLB_SIZE - 1)
    }

    /// The entry for `lin` if it is cached and allows `need`.
    #[inline(always)]
    pub fn lookup(&self, lin: u64, need: u8) -> Option<&TlbEntry> {
        let e = &self.entries[Self::index(lin)];
        if e.tag == (lin & !0xfff) && e.perms & need != 0 {
            Some(e)
        } else {
            None
        }
    }

    pub fn insert(&mut self, e: TlbEntry) {
        if e.span_bits != 12 {
            self.has_large = true;
        }
        self.entries[Self::index(e.tag)] = e;
    }

    /// INVLPG (also drops every cached piece of a large page containing `lin`).
    pub fn flush_page(&mut self, lin: u64) {
        let e = &mut self.entries[Self::index(lin)];
        if e.tag == (lin & !0xfff) {
            e.perms = 0;
        }
        if self.has_large {
            for e in self.entries.iter_mut() {
                let m = e.span_mask();
                if e.perms != 0 && (e.tag & m) == (lin & m) {
                    e.perms = 0;
                }
            }
        }
    }

    /// CR3 write: drop all non-global entries.
    pub fn flush_non_global(&mut self) {
        for e in self.entries.iter_mut() {
            if !e.global {
                e.perms = 0;
            }
        }
    }

    pub fn flush_all(&mut self) {
        for e in self.entries.iter_mut() {
            e.perms = 0;
        }
        self.has_large = false;
    }
}
