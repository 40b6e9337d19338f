//! virtio-balloon: the host asks the guest to give memory back (inflate) or lets it take
//! memory again (deflate); the guest also reports memory statistics and free pages.
//!
//! Pages the guest gives up (inflated or reported free) are dropped from the host mapping with
//! `madvise(MADV_DONTNEED)`, which frees them and makes them read as zeroes afterwards — a
//! change to guest memory, so each range is reported to the guest-write notifier. The VMM
//! drives the balloon through a [`BalloonHandle`] (target size, statistics), whose requests
//! reach the device through an eventfd on the event loop.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::chain::{ChainReader, DescChain};
use crate::device::{read_config_bytes, DeviceContext, DeviceError, DeviceEvent, VirtioDevice};
use crate::guest_ram::GuestRam;

pub const VIRTIO_BALLOON_F_STATS_VQ: u32 = 1;
pub const VIRTIO_BALLOON_F_DEFLATE_ON_OOM: u32 = 2;
pub const VIRTIO_BALLOON_F_REPORTING: u32 = 5;
/// Balloon PFNs are always in 4 KiB units, whatever the guest's page size.
const PFN_SHIFT: u32 = 12;
const PAGE_SIZE: u64 = 1 << PFN_SHIFT;
pub const QUEUE_SIZE: u16 = 128;
const CONFIG_LEN: usize = 16;
/// The most statistics entries kept from one buffer (the spec defines 16 tags so far).
pub const MAX_STATS: usize = 64;

/// The name of a statistics tag (VIRTIO_BALLOON_S_*, virtio 1.2 §5.5.6.3), or `None` for a
/// tag this device does not know (newer drivers send more).
pub fn stat_name(tag: u16) -> Option<&'static str> {
    Some(match tag {
        0 => "swap_in",
        1 => "swap_out",
        2 => "major_faults",
        3 => "minor_faults",
        4 => "free_memory",
        5 => "total_memory",
        6 => "available_memory",
        7 => "disk_caches",
        8 => "hugetlb_allocations",
        9 => "hugetlb_failures",
        10 => "oom_kills",
        11 => "alloc_stalls",
        12 => "async_scans",
        13 => "direct_scans",
        14 => "async_reclaims",
        15 => "direct_reclaims",
        _ => return None,
    })
}

/// Balloon options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonConfig {
    /// Let the guest deflate on its own when it runs out of memory.
    pub deflate_on_oom: bool,
    /// Accept free page reports (the guest hands back free memory without inflating).
    pub free_page_reporting: bool,
}

/// What the balloon knows, shared with its [`BalloonHandle`]; also its snapshot state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonState {
    /// Pages the host wants the guest to give up (config `num_pages`).
    pub target_pages: u32,
    /// Pages the guest says it has given up (config `actual`).
    pub actual_pages: u32,
    /// Pages dropped from the host by inflation, and by free page reporting.
    pub inflated_pages: u64,
    pub deflated_pages: u64,
    pub reported_pages: u64,
    /// The latest statistics from the guest, as `(tag, value)` (VIRTIO_BALLOON_S_*).
    pub stats: Vec<(u16, u64)>,
    #[serde(skip)]
    config_dirty: bool,
    #[serde(skip)]
    stats_wanted: bool,
}

type Shared = Arc<Mutex<BalloonState>>;

fn lock(s: &Shared) -> MutexGuard<'_, BalloonState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The VMM's side of the balloon.
#[derive(Debug)]
pub struct BalloonHandle {
    shared: Shared,
    evt: EventFd,
}

impl BalloonHandle {
    /// Ask the guest to hold `pages` 4 KiB pages in the balloon.
    pub fn set_target_pages(&self, pages: u32) {
        let mut s = lock(&self.shared);
        s.target_pages = pages;
        s.config_dirty = true;
        drop(s);
        let _ = self.evt.write(1);
    }

    /// Ask the guest for fresh statistics.
    pub fn request_stats(&self) {
        lock(&self.shared).stats_wanted = true;
        let _ = self.evt.write(1);
    }

    pub fn state(&self) -> BalloonState {
        lock(&self.shared).clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Inflate,
    Deflate,
    Stats,
    Reporting,
}

/// A virtio-balloon device.
#[derive(Debug)]
pub struct Balloon {
    cfg: BalloonConfig,
    shared: Shared,
    evt: EventFd,
    roles: Vec<Role>,
    /// The statistics buffer the driver left with us, returned when we want new numbers.
    stats_head: Option<u16>,
}

impl Balloon {
    pub fn new(cfg: BalloonConfig) -> std::io::Result<(Self, BalloonHandle)> {
        let evt = EventFd::new(EFD_NONBLOCK)?;
        let shared: Shared = Arc::default();
        let handle = BalloonHandle {
            shared: shared.clone(),
            evt: evt.try_clone()?,
        };
        Ok((
            Balloon {
                cfg,
                shared,
                evt,
                roles: Vec::new(),
                stats_head: None,
            },
            handle,
        ))
    }

    fn role_index(&self, role: Role) -> Option<usize> {
        self.roles.iter().position(|r| *r == role)
    }

    /// Read the PFNs of a chain and free (or just count, for deflate) their pages.
    fn pfns(&mut self, ram: &GuestRam, chain: &DescChain, inflate: bool) {
        let mut r = ChainReader::new(ram, &chain.readable);
        let mut buf = [0u8; 4];
        let (mut freed, mut counted) = (0u64, 0u64);
        while let Ok(4) = r.read(&mut buf) {
            let gpa = u64::from(u32::from_le_bytes(buf)) << PFN_SHIFT;
            counted += 1;
            if inflate && discard(ram, gpa, PAGE_SIZE) {
                freed += 1;
            }
        }
        let mut s = lock(&self.shared);
        if inflate {
            s.inflated_pages += freed;
        } else {
            s.deflated_pages += counted;
        }
    }

    fn report(&mut self, ram: &GuestRam, chain: &DescChain) {
        let mut pages = 0;
        for seg in chain.readable.iter().chain(&chain.writable) {
            let len = u64::from(seg.len);
            if seg.addr % PAGE_SIZE == 0 && len % PAGE_SIZE == 0 && discard(ram, seg.addr, len) {
                pages += len / PAGE_SIZE;
            }
        }
        lock(&self.shared).reported_pages += pages;
    }

    fn parse_stats(&mut self, ram: &GuestRam, chain: &DescChain) {
        let mut r = ChainReader::new(ram, &chain.readable);
        let mut entry = [0u8; 10];
        let mut stats = Vec::new();
        while let Ok(10) = r.read(&mut entry) {
            let tag = u16::from_le_bytes([entry[0], entry[1]]);
            let val = u64::from_le_bytes(entry[2..10].try_into().unwrap_or_default());
            if stats.len() < MAX_STATS {
                stats.push((tag, val));
            }
        }
        lock(&self.shared).stats = stats;
    }
}

/// Drop `[gpa, gpa + len)` from the host mapping; the guest sees zeroes there afterwards.
fn discard(ram: &GuestRam, gpa: u64, len: u64) -> bool {
    let Some(host) = ram.host_range(gpa, len) else {
        return false;
    };
    let Ok(len_usize) = usize::try_from(len) else {
        return false;
    };
    // SAFETY: `host_range` checked that `[host, host + len)` lies inside one mapped region of
    // guest memory, which stays mapped while `ram` lives. MADV_DONTNEED only replaces the
    // pages' contents with zero pages; Rust holds no references into guest memory (all
    // accesses go through volatile copies), so no aliasing rules are broken.
    let r = unsafe { libc::madvise(host.cast(), len_usize, libc::MADV_DONTNEED) };
    ram.report_write(gpa, len);
    r == 0
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BALLOON
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        // inflate, deflate, stats, reporting; the driver numbers the ones it uses in order.
        vec![QUEUE_SIZE; 4]
    }

    fn features(&self) -> u64 {
        let mut f = 1 << VIRTIO_BALLOON_F_STATS_VQ;
        if self.cfg.deflate_on_oom {
            f |= 1 << VIRTIO_BALLOON_F_DEFLATE_ON_OOM;
        }
        if self.cfg.free_page_reporting {
            f |= 1 << VIRTIO_BALLOON_F_REPORTING;
        }
        f
    }

    fn config_len(&self) -> usize {
        CONFIG_LEN
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let s = lock(&self.shared);
        let mut c = [0u8; CONFIG_LEN];
        c[0..4].copy_from_slice(&s.target_pages.to_le_bytes());
        c[4..8].copy_from_slice(&s.actual_pages.to_le_bytes());
        read_config_bytes(&c, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if offset == 4 && data.len() == 4 {
            lock(&self.shared).actual_pages =
                u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        }
    }

    fn activate(&mut self, features: u64) {
        self.roles = vec![Role::Inflate, Role::Deflate];
        if features & 1 << VIRTIO_BALLOON_F_STATS_VQ != 0 {
            self.roles.push(Role::Stats);
        }
        if features & 1 << VIRTIO_BALLOON_F_REPORTING != 0 {
            self.roles.push(Role::Reporting);
        }
    }

    fn reset(&mut self) {
        self.roles.clear();
        self.stats_head = None;
    }

    fn handle(
        &mut self,
        event: DeviceEvent,
        ctx: &mut DeviceContext<'_>,
    ) -> Result<(), DeviceError> {
        match event {
            DeviceEvent::Queue(q) => match self.roles.get(q).copied() {
                Some(role @ (Role::Inflate | Role::Deflate)) => {
                    ctx.for_each_chain(q, |ram, chain| {
                        if let Ok(chain) = chain {
                            self.pfns(ram, &chain, role == Role::Inflate);
                        }
                        0
                    })
                }
                Some(Role::Reporting) => ctx.for_each_chain(q, |ram, chain| {
                    if let Ok(chain) = chain {
                        self.report(ram, &chain);
                    }
                    0
                }),
                Some(Role::Stats) => {
                    while let Some(head) = ctx.pop(q)? {
                        // A second buffer while one is held: give the old one back.
                        if let Some(old) = self.stats_head.take() {
                            ctx.complete(q, old, 0)?;
                        }
                        let (table, size) = ctx.table(q);
                        if let Ok(chain) = DescChain::walk(ctx.ram, table, size, head) {
                            self.parse_stats(ctx.ram, &chain);
                        }
                        self.stats_head = Some(head);
                    }
                    Ok(())
                }
                None => Ok(()),
            },
            DeviceEvent::Extra(_) => {
                let _ = self.evt.read();
                let (dirty, wanted) = {
                    let mut s = lock(&self.shared);
                    (
                        std::mem::take(&mut s.config_dirty),
                        std::mem::take(&mut s.stats_wanted),
                    )
                };
                ctx.config_changed |= dirty;
                if wanted {
                    if let (Some(q), Some(head)) =
                        (self.role_index(Role::Stats), self.stats_head.take())
                    {
                        ctx.complete(q, head, 0)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn extra_fds(&self) -> Vec<RawFd> {
        vec![self.evt.as_raw_fd()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_driver::{r, w, TestDriver};
    use virtio_bindings::virtio_mmio::*;

    fn setup(cfg: BalloonConfig) -> (TestDriver, BalloonHandle) {
        let (b, h) = Balloon::new(cfg).unwrap();
        let mut d = TestDriver::new(Box::new(b));
        let all = 1 << VIRTIO_BALLOON_F_STATS_VQ
            | 1 << VIRTIO_BALLOON_F_DEFLATE_ON_OOM
            | 1 << VIRTIO_BALLOON_F_REPORTING;
        let nq = if cfg.free_page_reporting { 4 } else { 3 };
        d.init(all, nq, 16);
        (d, h)
    }

    #[test]
    fn inflate_frees_and_reports_pages() {
        let (mut d, h) = setup(BalloonConfig::default());
        assert_eq!(d.read32(VIRTIO_MMIO_DEVICE_ID), 5);
        let f = d.device_features();
        assert_eq!(f & 1 << VIRTIO_BALLOON_F_DEFLATE_ON_OOM, 0);
        // Two guest pages with data, plus a PFN far outside RAM (ignored).
        d.write_mem(0x20_0000, &[0xab; 4096]);
        d.write_mem(0x20_3000, &[0xcd; 4096]);
        let list = d.alloc(12);
        let pfns: Vec<u8> = [0x200u32, 0x203, 0x00ff_ffff]
            .iter()
            .flat_map(|p| p.to_le_bytes())
            .collect();
        d.write_mem(list, &pfns);
        assert_eq!(d.request(0, &[r(list, 12)]), 0);
        assert_eq!(
            d.read_mem(0x20_0000, 4096),
            vec![0u8; 4096],
            "page dropped by madvise"
        );
        assert_eq!(d.read_mem(0x20_3000, 4096), vec![0u8; 4096]);
        assert!(d.reported(0x20_0000, 4096) && d.reported(0x20_3000, 4096));
        assert_eq!(h.state().inflated_pages, 2);
        // Deflate just counts; the page stays usable.
        assert_eq!(d.request(1, &[r(list, 4)]), 0);
        assert_eq!(h.state().deflated_pages, 1);
        d.write_mem(0x20_0000, &[1, 2, 3]);
        assert_eq!(d.read_mem(0x20_0000, 3), [1, 2, 3]);
    }

    #[test]
    fn target_actual_and_stats() {
        let (mut d, h) = setup(BalloonConfig {
            deflate_on_oom: true,
            free_page_reporting: false,
        });
        assert_ne!(
            d.device_features() & 1 << VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
            0
        );
        let gen = d.read32(VIRTIO_MMIO_CONFIG_GENERATION);
        h.set_target_pages(1000);
        assert_eq!(d.take_interrupt(), VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(d.read32(VIRTIO_MMIO_CONFIG), 1000);
        assert_ne!(d.read32(VIRTIO_MMIO_CONFIG_GENERATION), gen);
        d.write32(VIRTIO_MMIO_CONFIG + 4, 600);
        assert_eq!(h.state().actual_pages, 600);

        // The driver's first stats buffer is kept until the host asks for more.
        let buf = d.alloc(20);
        let mut s = Vec::new();
        for (tag, val) in [(4u16, 123u64), (5, 456)] {
            s.extend(tag.to_le_bytes());
            s.extend(val.to_le_bytes());
        }
        d.write_mem(buf, &s);
        let head = d.add_chain(2, &[r(buf, 20)]);
        d.kick(2);
        let t0 = std::time::Instant::now();
        while h.state().stats.is_empty() {
            assert!(t0.elapsed().as_secs() < 5, "stats parsed");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(h.state().stats, vec![(4, 123), (5, 456)]);
        h.request_stats();
        assert_eq!(d.wait_used(2), Some((head.into(), 0)));
    }

    #[test]
    fn free_page_reporting_drops_ranges() {
        let (mut d, h) = setup(BalloonConfig {
            deflate_on_oom: false,
            free_page_reporting: true,
        });
        d.write_mem(0x30_0000, &[0x5a; 8192]);
        let head = d.add_chain(3, &[w(0x30_0000, 8192), w(0x1_0000_0000, 4096)]);
        let before = d.ram_image();
        d.kick(3);
        assert_eq!(d.wait_used(3), Some((head.into(), 0)));
        d.take_interrupt();
        assert_eq!(d.read_mem(0x30_0000, 8192), vec![0u8; 8192]);
        assert_eq!(h.state().reported_pages, 2);
        d.assert_changes_reported(&before);
    }

    /// Writes a statistics buffer of `entries` into guest memory; returns its address and length.
    fn stats_buffer(d: &mut TestDriver, entries: &[(u16, u64)], tail: &[u8]) -> (u64, u32) {
        let mut s = Vec::new();
        for (tag, val) in entries {
            s.extend(tag.to_le_bytes());
            s.extend(val.to_le_bytes());
        }
        s.extend_from_slice(tail);
        let buf = d.alloc(s.len() as u64);
        d.write_mem(buf, &s);
        (buf, s.len() as u32)
    }

    fn wait_stats(h: &BalloonHandle, want: impl Fn(&[(u16, u64)]) -> bool) -> Vec<(u16, u64)> {
        let t0 = std::time::Instant::now();
        loop {
            let s = h.state().stats;
            if want(&s) {
                return s;
            }
            assert!(t0.elapsed().as_secs() < 5, "stats never matched: {s:?}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn stats_buffers_are_held_replaced_bounded_and_returned_on_request() {
        let (mut d, h) = setup(BalloonConfig::default());
        // Asking before the driver has left a buffer completes nothing.
        h.request_stats();
        d.settle();
        assert_eq!(d.read32(VIRTIO_MMIO_INTERRUPT_STATUS), 0);

        // A truncated trailing entry is ignored; the whole ones are taken.
        let (a, alen) = stats_buffer(&mut d, &[(4, 1), (5, 2)], &[7, 0, 9]);
        let first = d.add_chain(2, &[r(a, alen)]);
        d.kick(2);
        wait_stats(&h, |s| s == [(4, 1), (5, 2)]);

        // A second buffer while one is held: the first comes back, the new numbers count.
        let (b, blen) = stats_buffer(&mut d, &[(6, 3)], &[]);
        let second = d.add_chain(2, &[r(b, blen)]);
        d.kick(2);
        assert_eq!(d.wait_used(2), Some((first.into(), 0)));
        wait_stats(&h, |s| s == [(6, 3)]);

        // A buffer with more entries than the device keeps: only MAX_STATS are stored.
        h.request_stats();
        assert_eq!(d.wait_used(2), Some((second.into(), 0)));
        let many: Vec<(u16, u64)> = (0..MAX_STATS as u16 + 10).map(|t| (t, 1)).collect();
        let (c, clen) = stats_buffer(&mut d, &many, &[]);
        d.add_chain(2, &[r(c, clen)]);
        d.kick(2);
        let s = wait_stats(&h, |s| s.len() == MAX_STATS);
        assert_eq!(s[..], many[..MAX_STATS]);
    }

    #[test]
    fn without_the_stats_queue_the_third_queue_reports_free_pages() {
        let (b, h) = Balloon::new(BalloonConfig {
            deflate_on_oom: false,
            free_page_reporting: true,
        })
        .unwrap();
        let mut d = TestDriver::new(Box::new(b));
        // A driver that does not take VIRTIO_BALLOON_F_STATS_VQ: queues are numbered
        // inflate, deflate, reporting.
        d.init(1 << VIRTIO_BALLOON_F_REPORTING, 3, 16);
        d.write_mem(0x30_0000, &[0x77; 4096]);
        let head = d.add_chain(2, &[w(0x30_0000, 4096)]);
        d.kick(2);
        assert_eq!(d.wait_used(2), Some((head.into(), 0)));
        assert_eq!(d.read_mem(0x30_0000, 4096), vec![0u8; 4096]);
        assert_eq!(h.state().reported_pages, 1);
        assert!(h.state().stats.is_empty());
    }

    #[test]
    fn deflate_on_oom_lets_the_guest_take_pages_back_below_the_target() {
        let (mut d, h) = setup(BalloonConfig {
            deflate_on_oom: true,
            free_page_reporting: false,
        });
        h.set_target_pages(4);
        assert_eq!(d.take_interrupt(), VIRTIO_MMIO_INT_CONFIG);
        // The guest inflates to the target...
        let pfns: Vec<u8> = (0x300u32..0x304).flat_map(|p| p.to_le_bytes()).collect();
        let list = d.alloc(16);
        d.write_mem(list, &pfns);
        assert_eq!(d.request(0, &[r(list, 16)]), 0);
        d.write32(VIRTIO_MMIO_CONFIG + 4, 4);
        assert_eq!(h.state().inflated_pages, 4);
        // ...then, short of memory, deflates three pages on its own and says so.
        assert_eq!(d.request(1, &[r(list, 12)]), 0);
        d.write32(VIRTIO_MMIO_CONFIG + 4, 1);
        let s = h.state();
        assert_eq!(
            (s.target_pages, s.actual_pages, s.deflated_pages),
            (4, 1, 3)
        );
        // The host does not insist: no new request, and the pages are the guest's again.
        assert_eq!(d.read32(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        assert_eq!(d.read32(VIRTIO_MMIO_CONFIG), 4, "the target stands");
        d.write_mem(0x30_1000, &[9; 64]);
        assert_eq!(d.read_mem(0x30_1000, 64), vec![9u8; 64]);
        // A deflate list with a PFN outside RAM is counted but harms nothing.
        let bad = d.alloc(4);
        d.write_mem(bad, &0x00ff_ffffu32.to_le_bytes());
        assert_eq!(d.request(1, &[r(bad, 4)]), 0);
        assert_eq!(h.state().deflated_pages, 4);
    }

    #[test]
    fn stat_names_follow_the_spec() {
        assert_eq!(stat_name(4), Some("free_memory"));
        assert_eq!(stat_name(5), Some("total_memory"));
        assert_eq!(stat_name(6), Some("available_memory"));
        assert_eq!(stat_name(99), None);
    }
}
