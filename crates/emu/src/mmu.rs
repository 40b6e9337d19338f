//! Linear-to-physical translation (page walks for 32-bit, PAE and 4-level paging, with
//! reserved-bit checks, SMEP, SMAP and protection keys) and the data accesses every
//! instruction makes through it.
//!
//! Fast path: one TLB probe and a host load/store when the access stays on one page of RAM.
//! Slow paths: page walks (setting accessed/dirty bits atomically, raising #PF with the
//! right error code and CR2), page-crossing accesses, and MMIO (forwarded to the platform).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::cpu::{Cpu, CR0_PG, CR0_WP, CR4_PAE, CR4_PSE, EFER_LMA, EFER_NXE};
use crate::exceptions::{gp0, pfec, Fault, PF, R};
use crate::memory::{self, PAGE_SIZE};
use crate::platform::Platform;
use crate::protect::{pte_key, KeyRights, CR4_PKE, CR4_PKS, CR4_SMAP, CR4_SMEP, PFEC_PK};
use crate::tlb::*;

const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PTE_P: u64 = 1;
const PTE_W: u64 = 2;
const PTE_U: u64 = 4;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;
const PTE_G: u64 = 1 << 8;
const PTE_NX: u64 = 1 << 63;

/// The attributes of a translation combined over all levels of its walk.
#[derive(Clone, Copy, Debug)]
struct Leaf {
    writable: bool,
    user: bool,
    nx: bool,
    /// Protection key of the leaf entry (0 outside 4-level paging).
    key: u32,
}

impl Cpu {
    /// Translates `lin` for `acc`, from the TLB or by walking the page tables.
    #[inline(always)]
    pub(crate) fn translate(&mut self, lin: u64, acc: Access, user: bool) -> R<TlbEntry> {
        if let Some(e) = self.tlb.lookup(lin, acc.required(user)) {
            return Ok(*e);
        }
        self.translate_miss(lin, acc, user)
    }

    /// A TLB miss for the plain permission bit: try the SMAP-override bit, then walk.
    #[inline(never)]
    fn translate_miss(&mut self, lin: u64, acc: Access, user: bool) -> R<TlbEntry> {
        if !user && self.smap_override() {
            if let Some(e) = self.tlb.lookup(lin, acc.required_ac()) {
                return Ok(*e);
            }
        }
        self.walk(lin, acc, user)
    }

    fn pte_read(&self, gpa: u64, wide: bool) -> Option<(u64, *mut u8)> {
        let size = if wide { 8 } else { 4 };
        let p = self.ram.range(gpa, size)?;
        // SAFETY: range() checked that `size` bytes at p are guest RAM.
        let v = unsafe { memory::load(p, size as usize) };
        Some((v, p))
    }

    fn pte_set_bits(p: *mut u8, wide: bool, bits: u64) {
        // SAFETY: p came from pte_read (inside RAM); page-table entries are naturally
        // aligned because their table addresses are 4K-aligned and the index scales by size.
        unsafe {
            if wide {
                (*(p as *const AtomicU64)).fetch_or(bits, Ordering::SeqCst);
            } else {
                (*(p as *const AtomicU32)).fetch_or(bits as u32, Ordering::SeqCst);
            }
        }
    }

    fn page_fault(&mut self, lin: u64, code: u32) -> Fault {
        self.cr2 = lin;
        Fault::with_code(PF, code)
    }

    /// The full page walk; fills the TLB on success.
    ///
    /// Faults as hardware does: a not-present entry gives P=0; a reserved bit (physical
    /// address bits at or above MAXPHYADDR, NX without EFER.NXE, PS in a PML4E, PS in a
    /// PDPTE without 1 GiB pages, the low address bits of a large page) gives P|RSVD;
    /// otherwise the combined U/S, R/W, NX bits with CR0.WP, SMEP, SMAP and protection
    /// keys decide. Accessed bits are set in the non-leaf entries walked through; the
    /// leaf's accessed and dirty bits only when the access succeeds.
    pub(crate) fn walk(&mut self, lin: u64, acc: Access, user: bool) -> R<TlbEntry> {
        let page = lin & !0xfff;
        if self.cr0 & CR0_PG == 0 {
            let phys = page & 0xffff_ffff_ffff_f000;
            let e = self.make_entry(page, phys, 0xff, 12, false);
            return Ok(e);
        }
        let long = self.efer & EFER_LMA != 0;
        let pae = self.cr4 & CR4_PAE != 0;
        let nxe = self.efer & EFER_NXE != 0;
        let smep = self.cr4 & CR4_SMEP != 0;
        if long {
            let top = (lin as i64) >> 47;
            if top != 0 && top != -1 {
                return Err(gp0());
            }
        }
        // (table address, index shift) per level; entries 8 bytes unless legacy 32-bit.
        let wide = pae || long;
        let mut code = 0u32;
        if acc == Access::Write {
            code |= pfec::W;
        }
        if user {
            code |= pfec::U;
        }
        if acc == Access::Exec && (wide && nxe || smep) {
            code |= pfec::I;
        }
        // Reserved at every level of PAE and 4-level paging.
        let rsvd = if wide {
            let mut m = self.feat.phys_reserved();
            if !nxe {
                m |= PTE_NX;
            }
            if !long {
                // PAE entries have no software-available or key bits up there.
                m |= 0x7ff0_0000_0000_0000;
            }
            m
        } else {
            0
        };
        let mut writable = true;
        let mut usr = true;
        let mut nx = false;
        let mut table;
        let mut levels: u32;
        if long {
            table = self.cr3 & ADDR_MASK;
            levels = 4;
        } else if pae {
            let pdpte_addr = (self.cr3 & 0xffff_ffe0) + ((lin >> 30) & 3) * 8;
            let Some((pdpte, _)) = self.pte_read(pdpte_addr, true) else {
                return Err(self.page_fault(lin, code));
            };
            if pdpte & PTE_P == 0 {
                return Err(self.page_fault(lin, code));
            }
            // PAE PDPTEs: bits 2:1, 8:5 and 63:MAXPHYADDR are reserved.
            let pdpte_rsvd = self.feat.phys_reserved() | 0xfff0_0000_0000_01e6;
            if pdpte & pdpte_rsvd != 0 {
                return Err(self.page_fault(lin, code | pfec::P | pfec::RSVD));
            }
            table = pdpte & ADDR_MASK;
            levels = 2;
        } else {
            table = self.cr3 & 0xffff_f000;
            levels = 2;
        }
        let leaf;
        let leaf_ptr;
        let leaf_phys;
        let span_bits;
        loop {
            let (shift, idx_mask) = if wide {
                (12 + 9 * (levels - 1), 0x1ff)
            } else {
                (12 + 10 * (levels - 1), 0x3ff)
            };
            let idx = (lin >> shift) & idx_mask;
            let ent_addr = table + idx * if wide { 8 } else { 4 };
            let Some((pte, ptr)) = self.pte_read(ent_addr, wide) else {
                return Err(self.page_fault(lin, code));
            };
            if pte & PTE_P == 0 {
                return Err(self.page_fault(lin, code));
            }
            let ps = pte & PTE_PS != 0;
            let large =
                levels > 1 && ps && (wide && levels <= 3 || !wide && self.cr4 & CR4_PSE != 0);
            let mut bad = rsvd;
            if wide && ps {
                match levels {
                    4 => bad |= PTE_PS,
                    // 1 GiB page: address bits 29:13 must be zero (bit 12 is PAT).
                    3 if self.feat.gbpages => bad |= 0x3fff_e000,
                    3 => bad |= PTE_PS,
                    // 2 MiB page: address bits 20:13.
                    2 => bad |= 0x1f_e000,
                    _ => {}
                }
            }
            if pte & bad != 0 {
                return Err(self.page_fault(lin, code | pfec::P | pfec::RSVD));
            }
            if wide && pte & PTE_NX != 0 {
                nx = true;
            }
            writable &= pte & PTE_W != 0;
            usr &= pte & PTE_U != 0;
            if levels == 1 || large {
                let (page_bits, base) = if levels == 1 {
                    (
                        12,
                        if wide {
                            pte & ADDR_MASK
                        } else {
                            pte & 0xffff_f000
                        },
                    )
                } else if wide {
                    (shift, pte & ADDR_MASK & !((1u64 << shift) - 1))
                } else {
                    // 4 MiB page (PSE-36 high bits ignored).
                    (22, pte & 0xffc0_0000)
                };
                leaf_phys = base | (lin & ((1u64 << page_bits) - 1) & !0xfff);
                span_bits = page_bits as u8;
                leaf = pte;
                leaf_ptr = ptr;
                break;
            }
            if pte & PTE_A == 0 {
                Self::pte_set_bits(ptr, wide, PTE_A);
            }
            table = if wide {
                pte & ADDR_MASK
            } else {
                pte & 0xffff_f000
            };
            levels -= 1;
        }
        let rights = self.page_rights(Leaf {
            writable,
            user: usr,
            nx,
            key: if long { pte_key(leaf) } else { 0 },
        });
        let allowed = match (acc, user) {
            (Access::Read, true) => rights & P_READ_USER != 0,
            (Access::Write, true) => rights & P_WRITE_USER != 0,
            (Access::Exec, u) => rights & Access::Exec.required(u) != 0,
            (a, false) if self.smap_override() => rights & a.required_ac() != 0,
            (a, false) => rights & a.required(false) != 0,
        };
        if !allowed {
            let mut c = code | pfec::P;
            if acc != Access::Exec && self.key_denies(long, usr, user, acc, leaf) {
                c |= PFEC_PK;
            }
            return Err(self.page_fault(lin, c));
        }
        let mut dirty = leaf & PTE_D != 0;
        let mut set = 0;
        if leaf & PTE_A == 0 {
            set |= PTE_A;
        }
        if acc == Access::Write && !dirty {
            set |= PTE_D;
            dirty = true;
        }
        if set != 0 {
            Self::pte_set_bits(leaf_ptr, wide, set);
        }
        let mut perms = rights;
        if !dirty {
            // The first write must come back here to set D.
            perms &= !(P_WRITE_SUP | P_WRITE_USER | P_WRITE_SUP_AC);
        }
        let global = leaf & PTE_G != 0 && self.cr4 & crate::cpu::CR4_PGE != 0;
        Ok(self.make_entry(page, leaf_phys, perms, span_bits, global))
    }

    /// An implicit supervisor-mode read (GDT/LDT, IDT, TSS): SMAP applies to it even at
    /// CPL < 3 with EFLAGS.AC set, which only lifts SMAP for explicit accesses.
    pub(crate) fn read_sys(&mut self, io: &mut dyn Platform, lin: u64, size: usize) -> R<u64> {
        let ac = self.flags.bits & crate::flags::AC;
        // AC is kept in `bits` (never lazily computed); hide it for this access only.
        self.flags.bits &= !ac;
        let r = self.read_lin(io, lin, size, false);
        self.flags.bits |= ac;
        r
    }

    /// Whether explicit supervisor data accesses ignore SMAP now (CPL < 3, EFLAGS.AC).
    #[inline(always)]
    pub(crate) fn smap_override(&self) -> bool {
        self.cpl < 3 && self.flags.bits & crate::flags::AC != 0
    }

    /// The TLB permission bits of a translation with the leaf's combined attributes,
    /// under the current CR0.WP, CR4.SMEP/SMAP/PKE/PKS, PKRU and PKRS.
    fn page_rights(&self, l: Leaf) -> u8 {
        let wp = self.cr0 & CR0_WP != 0;
        let smap = self.cr4 & CR4_SMAP != 0;
        let smep = self.cr4 & CR4_SMEP != 0;
        let k = self.key_rights(self.efer & EFER_LMA != 0, l.user, l.key);
        let read = !k.access_disabled;
        let mut p = 0;
        if l.user && read {
            p |= P_READ_USER;
            if l.writable && !k.write_disabled {
                p |= P_WRITE_USER;
            }
        }
        // Supervisor accesses: a user page under protection keys, or a supervisor page
        // under PKS (user accesses to supervisor pages never get this far).
        if read {
            p |= P_READ_SUP_AC;
            if !wp || l.writable && !k.write_disabled {
                p |= P_WRITE_SUP_AC;
            }
        }
        if !(smap && l.user) {
            if p & P_READ_SUP_AC != 0 {
                p |= P_READ_SUP;
            }
            if p & P_WRITE_SUP_AC != 0 {
                p |= P_WRITE_SUP;
            }
        }
        if !l.nx {
            if l.user {
                p |= P_EXEC_USER;
            }
            if !(smep && l.user) {
                p |= P_EXEC_SUP;
            }
        }
        p
    }

    /// The key rights that apply to data accesses to a page (all rights when keys are
    /// off for it: PKE for user pages, PKS for supervisor pages, 4-level paging only).
    fn key_rights(&self, long: bool, user_page: bool, key: u32) -> KeyRights {
        if !long {
            KeyRights::ALL
        } else if user_page && self.cr4 & CR4_PKE != 0 {
            KeyRights::of(self.keys.pkru, key)
        } else if !user_page && self.cr4 & CR4_PKS != 0 {
            KeyRights::of(self.keys.pkrs, key)
        } else {
            KeyRights::ALL
        }
    }

    /// Whether the protection key alone denies this data access (sets PFEC.PK).
    fn key_denies(&self, long: bool, user_page: bool, user: bool, acc: Access, pte: u64) -> bool {
        if user && !user_page {
            return false;
        }
        let k = self.key_rights(long, user_page, pte_key(pte));
        let wp = self.cr0 & CR0_WP != 0;
        k.access_disabled || acc == Access::Write && k.write_disabled && (user || wp)
    }

    fn make_entry(
        &mut self,
        page: u64,
        phys: u64,
        perms: u8,
        span_bits: u8,
        global: bool,
    ) -> TlbEntry {
        let (host, vidx) = match self.ram.page(phys) {
            Some((h, i)) => (h, i),
            None => (std::ptr::null_mut(), usize::MAX),
        };
        let e = TlbEntry::new(page, phys, host, vidx, perms, span_bits, global);
        self.tlb.insert(e);
        e
    }

    /// Reads `size` (1..=8) bytes at a linear address. The common case (TLB hit on RAM,
    /// access inside one page) is inlined into the caller.
    #[inline(always)]
    pub(crate) fn read_lin(
        &mut self,
        io: &mut dyn Platform,
        lin: u64,
        size: usize,
        user: bool,
    ) -> R<u64> {
        if self.dbg.data {
            self.note_data_access(lin, size, false);
        }
        let off = (lin & 0xfff) as usize;
        if matches!(size, 1 | 2 | 4 | 8) && off + size <= PAGE_SIZE as usize {
            if let Some(e) = self.tlb.lookup(lin, Access::Read.required(user)) {
                if !e.host.is_null() {
                    // SAFETY: off + size <= 4096 and host points at a whole page of RAM.
                    return Ok(unsafe { memory::load(e.host.add(off), size) });
                }
            }
        }
        self.read_lin_slow(io, lin, size, user)
    }

    /// Writes `size` (1..=8) bytes at a linear address (fast path inlined, see `read_lin`).
    #[inline(always)]
    pub(crate) fn write_lin(
        &mut self,
        io: &mut dyn Platform,
        lin: u64,
        size: usize,
        v: u64,
        user: bool,
    ) -> R<()> {
        if self.dbg.data {
            self.note_data_access(lin, size, true);
        }
        let off = (lin & 0xfff) as usize;
        if matches!(size, 1 | 2 | 4 | 8) && off + size <= PAGE_SIZE as usize {
            if let Some(e) = self.tlb.lookup(lin, Access::Write.required(user)) {
                if !e.host.is_null() {
                    let (host, vidx) = (e.host, e.vidx());
                    // SAFETY: off + size <= 4096 and host points at a whole page of RAM.
                    unsafe { memory::store(host.add(off), size, v) };
                    if self.ram.versions().note_write_page(vidx) {
                        self.block_end = true;
                    }
                    return Ok(());
                }
            }
        }
        self.write_lin_slow(io, lin, size, v, user)
    }

    #[inline(never)]
    fn read_lin_slow(
        &mut self,
        io: &mut dyn Platform,
        lin: u64,
        size: usize,
        user: bool,
    ) -> R<u64> {
        let off = (lin & 0xfff) as usize;
        let size = size.min(8);
        if off + size <= PAGE_SIZE as usize && matches!(size, 1 | 2 | 4 | 8) {
            let e = self.translate(lin, Access::Read, user)?;
            if !e.host.is_null() {
                // SAFETY: off + size <= 4096 and host points at a whole page of RAM.
                return Ok(unsafe { memory::load(e.host.add(off), size) });
            }
            let mut buf = [0u8; 8];
            io.mmio_read(e.phys + off as u64, &mut buf[..size]);
            return Ok(u64::from_le_bytes(buf));
        }
        // Crossing a page: translate both pages first so a fault leaves nothing half-done.
        let mut buf = [0u8; 8];
        self.read_bytes(io, lin, &mut buf[..size], user)?;
        Ok(u64::from_le_bytes(buf))
    }

    #[inline(never)]
    fn write_lin_slow(
        &mut self,
        io: &mut dyn Platform,
        lin: u64,
        size: usize,
        v: u64,
        user: bool,
    ) -> R<()> {
        let off = (lin & 0xfff) as usize;
        let size = size.min(8);
        if off + size <= PAGE_SIZE as usize && matches!(size, 1 | 2 | 4 | 8) {
            let e = self.translate(lin, Access::Write, user)?;
            if !e.host.is_null() {
                // SAFETY: off + size <= 4096 and host points at a whole page of RAM.
                unsafe { memory::store(e.host.add(off), size, v) };
                if self.ram.versions().note_write_page(e.vidx()) {
                    self.block_end = true;
                }
                return Ok(());
            }
            io.mmio_write(e.phys + off as u64, &v.to_le_bytes()[..size]);
            // A device write may raise an interrupt (an APIC's ICR or EOI, an IOAPIC
            // unmask): the run loop looks before the next instruction, as hardware does.
            self.block_end = true;
            return Ok(());
        }
        self.write_bytes(io, lin, &v.to_le_bytes()[..size], user)
    }

    /// Reads any number of bytes (page crossings and MMIO handled; all pages translated
    /// before any byte is read).
    pub(crate) fn read_bytes(
        &mut self,
        io: &mut dyn Platform,
        lin: u64,
        out: &mut [u8],
        user: bool,
    ) -> R<()> {
        if self.dbg.data {
            self.note_data_access(lin, out.len(), false);
        }
        let mut done = 0usize;
        let mut pages = Vec::with_capacity(2);
        while done < out.len() {
            let a = lin.wrapping_add(done as u64);
            let e = self.translate(a, Access::Read, user)?;
            let n = (PAGE_SIZE as usize - (a & 0xfff) as usize).min(out.len() - done);
            pages.push((e, a, n, done));
            done += n;
        }
        for (e, a, n, at) in pages {
            let off = (a & 0xfff) as usize;
            if e.host.is_null() {
                // MMIO accesses are at most 8 bytes each.
                for (i, c) in out[at..at + n].chunks_mut(8).enumerate() {
                    io.mmio_read(e.phys + (off + i * 8) as u64, c);
                }
            } else {
                // SAFETY: off + n <= 4096 within one RAM page.
                unsafe {
                    std::ptr::copy_nonoverlapping(e.host.add(off), out[at..].as_mut_ptr(), n)
                };
            }
        }
        Ok(())
    }

    pub(crate) fn write_bytes(
        &mut self,
        io: &mut dyn Platform,
        lin: u64,
        data: &[u8],
        user: bool,
    ) -> R<()> {
        if self.dbg.data {
            self.note_data_access(lin, data.len(), true);
        }
        let mut done = 0usize;
        let mut pages = Vec::with_capacity(2);
        while done < data.len() {
            let a = lin.wrapping_add(done as u64);
            let e = self.translate(a, Access::Write, user)?;
            let n = (PAGE_SIZE as usize - (a & 0xfff) as usize).min(data.len() - done);
            pages.push((e, a, n, done));
            done += n;
        }
        for (e, a, n, at) in pages {
            let off = (a & 0xfff) as usize;
            if e.host.is_null() {
                for (i, c) in data[at..at + n].chunks(8).enumerate() {
                    io.mmio_write(e.phys + (off + i * 8) as u64, c);
                }
                self.block_end = true; // as in `write_lin_slow`
            } else {
                // SAFETY: off + n <= 4096 within one RAM page.
                unsafe { std::ptr::copy_nonoverlapping(data[at..].as_ptr(), e.host.add(off), n) };
                if self.ram.versions().note_write_page(e.vidx()) {
                    self.block_end = true;
                }
            }
        }
        Ok(())
    }

    /// Read-modify-write of `size` bytes: `f(old)` gives the new value (None = no write).
    /// With `locked`, the update is atomic against other vCPUs. Returns the old value.
    pub(crate) fn rmw_lin(
        &mut self,
        io: &mut dyn Platform,
        lin: u64,
        size: usize,
        user: bool,
        locked: bool,
        mut f: impl FnMut(u64) -> Option<u64>,
    ) -> R<u64> {
        let off = (lin & 0xfff) as usize;
        let size = size.clamp(1, 8);
        if off + size <= PAGE_SIZE as usize && matches!(size, 1 | 2 | 4 | 8) {
            let e = self.translate(lin, Access::Write, user)?;
            if !e.host.is_null() {
                // SAFETY: off + size <= 4096 within one RAM page.
                let p = unsafe { e.host.add(off) };
                let old = if locked {
                    // SAFETY: as above.
                    unsafe { memory::atomic_rmw(p, size, self.ram.split_lock(), f) }
                } else {
                    // SAFETY: as above.
                    let old = unsafe { memory::load(p, size) };
                    if let Some(n) = f(old) {
                        // SAFETY: as above.
                        unsafe { memory::store(p, size, n) };
                    }
                    old
                };
                if self.ram.versions().note_write_page(e.vidx()) {
                    self.block_end = true;
                }
                return Ok(old);
            }
            let mut buf = [0u8; 8];
            io.mmio_read(e.phys + off as u64, &mut buf[..size]);
            let old = u64::from_le_bytes(buf);
            if let Some(n) = f(old) {
                io.mmio_write(e.phys + off as u64, &n.to_le_bytes()[..size]);
                self.block_end = true; // as in `write_lin_slow`
            }
            return Ok(old);
        }
        // Page-crossing: check both pages writable first.
        self.translate(lin, Access::Write, user)?;
        self.translate(lin.wrapping_add(size as u64 - 1), Access::Write, user)?;
        let old = self.read_lin(io, lin, size, user)?;
        if let Some(n) = f(old) {
            self.write_lin(io, lin, size, n, user)?;
        }
        Ok(old)
    }

    /// A code byte for diagnostics (no faults, no side effects beyond a TLB fill).
    pub(crate) fn peek_code_byte(&mut self, lin: u64) -> Option<u8> {
        let e = self.translate(lin, Access::Read, false).ok()?;
        if e.host.is_null() {
            return None;
        }
        // SAFETY: offset < 4096 inside a RAM page.
        Some(unsafe { *e.host.add((lin & 0xfff) as usize) })
    }

    /// Whether an access should be checked as a user-mode access.
    #[inline(always)]
    pub(crate) fn user(&self) -> bool {
        self.cpl == 3
    }
}
