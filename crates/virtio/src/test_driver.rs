//! A minimal virtio-mmio driver for unit tests: it programs the transport's registers the way
//! Linux's `virtio_mmio` does, lays out split rings in a `GuestMemoryMmap`, offers chains,
//! notifies, and waits for the used ring and the interrupt — with the real event loop in
//! between, so the kick → event loop → device → interrupt path is what gets tested.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devices::legacy::bus::BusDevice;
use devices::InterruptSink;
use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::device::VirtioDevice;
use crate::event_loop::{EventLoop, EventLoopHandle};
use crate::guest_ram::GuestRam;
use crate::transport::mmio::MmioTransport;

pub const RAM_SIZE: u64 = 0x40_0000;
pub const GSI: u32 = 5;
const RINGS_BASE: u64 = 0x1_0000;
const BUFFERS_BASE: u64 = 0x10_0000;

/// Records the interrupt line.
#[derive(Default)]
pub struct RecordingSink {
    pub level: AtomicBool,
    pub raised: AtomicU32,
}

impl InterruptSink for RecordingSink {
    fn set_level(&self, gsi: u32, level: bool) {
        assert_eq!(gsi, GSI);
        if level && !self.level.swap(true, Ordering::SeqCst) {
            self.raised.fetch_add(1, Ordering::SeqCst);
        }
        if !level {
            self.level.store(false, Ordering::SeqCst);
        }
    }
}

/// One buffer of a chain the driver offers.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

pub fn r(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        writable: false,
    }
}

pub fn w(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        writable: true,
    }
}

struct DriverQueue {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

pub struct TestDriver {
    pub mem: Arc<GuestMemoryMmap>,
    pub transport: Arc<MmioTransport>,
    pub sink: Arc<RecordingSink>,
    /// Every `(gpa, len)` the device reported writing.
    pub writes: Arc<Mutex<Vec<(u64, u64)>>>,
    queues: Vec<DriverQueue>,
    next_buf: u64,
    _events: Option<EventLoopHandle>,
}

impl TestDriver {
    /// A driver for `device`, with the event loop running.
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        let mem = Arc::new(
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM_SIZE as usize)]).unwrap(),
        );
        let writes: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
        let log = writes.clone();
        let ram = GuestRam::new(
            mem.clone(),
            Arc::new(move |a, l| log.lock().unwrap().push((a, l))),
        );
        let sink = Arc::new(RecordingSink::default());
        let transport = Arc::new(MmioTransport::new(device, ram, sink.clone(), GSI).unwrap());
        let mut events = EventLoop::new().unwrap();
        events.add(&*transport).unwrap();
        TestDriver {
            mem,
            transport,
            sink,
            writes,
            queues: Vec::new(),
            next_buf: BUFFERS_BASE,
            _events: Some(events.spawn().unwrap()),
        }
    }

    pub fn read32(&self, reg: u32) -> u32 {
        let mut b = [0u8; 4];
        self.transport.read(u64::from(reg), &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write32(&self, reg: u32, v: u32) {
        self.transport.write(u64::from(reg), &v.to_le_bytes());
    }

    pub fn device_features(&self) -> u64 {
        self.write32(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        let lo = self.read32(VIRTIO_MMIO_DEVICE_FEATURES);
        self.write32(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        let hi = self.read32(VIRTIO_MMIO_DEVICE_FEATURES);
        u64::from(hi) << 32 | u64::from(lo)
    }

    /// Reset and bring the device up as Linux does, accepting `features` (plus VERSION_1)
    /// and setting up `nqueues` queues of up to `qsize` entries. Returns the status.
    pub fn init(&mut self, features: u64, nqueues: usize, qsize: u16) -> u32 {
        assert_eq!(self.read32(VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        assert_eq!(self.read32(VIRTIO_MMIO_VERSION), 2);
        self.write32(VIRTIO_MMIO_STATUS, 0);
        self.write32(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        self.write32(
            VIRTIO_MMIO_STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
        );
        let accepted = (features | 1 << VIRTIO_F_VERSION_1) & self.device_features();
        for sel in 0..2 {
            self.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
            self.write32(VIRTIO_MMIO_DRIVER_FEATURES, (accepted >> (32 * sel)) as u32);
        }
        let s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
        self.write32(VIRTIO_MMIO_STATUS, s);
        assert_ne!(
            self.read32(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK,
            0
        );
        self.queues.clear();
        for q in 0..nqueues {
            self.write32(VIRTIO_MMIO_QUEUE_SEL, q as u32);
            assert_eq!(self.read32(VIRTIO_MMIO_QUEUE_READY), 0);
            let max = self.read32(VIRTIO_MMIO_QUEUE_NUM_MAX) as u16;
            assert!(max > 0, "queue {q} exists");
            let size = max.min(qsize);
            let base = RINGS_BASE + q as u64 * 0x4000;
            let dq = DriverQueue {
                size,
                desc: base,
                avail: base + 0x1000,
                used: base + 0x2000,
                next_desc: 0,
                avail_idx: 0,
                used_seen: 0,
            };
            self.mem
                .write_slice(&[0u8; 0x3000], GuestAddress(base))
                .unwrap();
            self.write32(VIRTIO_MMIO_QUEUE_NUM, size.into());
            for (lo, addr) in [
                (VIRTIO_MMIO_QUEUE_DESC_LOW, dq.desc),
                (VIRTIO_MMIO_QUEUE_AVAIL_LOW, dq.avail),
                (VIRTIO_MMIO_QUEUE_USED_LOW, dq.used),
            ] {
                self.write32(lo, addr as u32);
                self.write32(lo + 4, (addr >> 32) as u32);
            }
            self.write32(VIRTIO_MMIO_QUEUE_READY, 1);
            assert_eq!(self.read32(VIRTIO_MMIO_QUEUE_READY), 1);
            self.queues.push(dq);
        }
        self.write32(VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_DRIVER_OK);
        self.settle();
        self.read32(VIRTIO_MMIO_STATUS)
    }

    /// Wait until the event loop has taken every pending kick (activation kicks all queues)
    /// and finished handling it, so later RAM snapshots see only new device writes.
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for fd in self.transport.queue_kicks() {
            loop {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, zero timeout.
                let n = unsafe { libc::poll(&mut p, 1, 0) };
                if n == 0 {
                    break;
                }
                assert!(Instant::now() < deadline, "event loop took the kick");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // The loop drains a kick before it takes the device lock; give it that moment, then
        // wait for the lock (held while the device runs).
        std::thread::sleep(Duration::from_millis(10));
        let _ = self.transport.status();
    }

    /// A fresh, zeroed guest buffer of `len` bytes.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let addr = self.next_buf;
        self.next_buf = (addr + len + 15) & !15;
        assert!(self.next_buf <= RAM_SIZE);
        self.mem
            .write_slice(&vec![0u8; len as usize], GuestAddress(addr))
            .unwrap();
        addr
    }

    pub fn write_mem(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    pub fn read_mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    /// Write raw descriptor `index` of queue `q`.
    pub fn write_desc(&self, q: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.write_mem(self.queues[q].desc + 16 * u64::from(index), &d);
    }

    /// Set `used_event` of queue `q` (the avail ring's trailer, with EVENT_IDX).
    pub fn set_used_event(&self, q: usize, idx: u16) {
        let dq = &self.queues[q];
        self.write_mem(dq.avail + 4 + 2 * u64::from(dq.size), &idx.to_le_bytes());
    }

    /// Publish `head` on queue `q`'s avail ring.
    pub fn publish(&mut self, q: usize, head: u16) {
        let dq = &mut self.queues[q];
        let slot = u64::from(dq.avail_idx % dq.size);
        let (avail, idx) = (dq.avail, dq.avail_idx.wrapping_add(1));
        dq.avail_idx = idx;
        self.write_mem(avail + 4 + 2 * slot, &head.to_le_bytes());
        self.write_mem(avail + 2, &idx.to_le_bytes());
    }

    /// Offer a chain made of `bufs` on queue `q`; returns its head index.
    pub fn add_chain(&mut self, q: usize, bufs: &[Buf]) -> u16 {
        let size = self.queues[q].size;
        let head = self.queues[q].next_desc;
        for (i, b) in bufs.iter().enumerate() {
            let index = (head + i as u16) % size;
            let last = i + 1 == bufs.len();
            let mut flags = if b.writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            self.write_desc(q, index, b.addr, b.len, flags, (index + 1) % size);
        }
        self.queues[q].next_desc = (head + bufs.len() as u16) % size;
        self.publish(q, head);
        head
    }

    pub fn kick(&self, q: usize) {
        self.write32(VIRTIO_MMIO_QUEUE_NOTIFY, q as u32);
    }

    /// The next used element `(id, len)` of queue `q`, waiting up to 5 s for it.
    pub fn wait_used(&mut self, q: usize) -> Option<(u32, u32)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let dq = &self.queues[q];
            let mut idx = [0u8; 2];
            self.mem
                .read_slice(&mut idx, GuestAddress(dq.used + 2))
                .unwrap();
            if u16::from_le_bytes(idx) != dq.used_seen {
                let slot = u64::from(dq.used_seen % dq.size);
                let e = self.read_mem(dq.used + 4 + 8 * slot, 8);
                self.queues[q].used_seen = self.queues[q].used_seen.wrapping_add(1);
                return Some((
                    u32::from_le_bytes(e[0..4].try_into().unwrap()),
                    u32::from_le_bytes(e[4..8].try_into().unwrap()),
                ));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Like an interrupt handler: check the line is up, read InterruptStatus, ACK it, and
    /// check the line dropped. Returns the status read.
    pub fn take_interrupt(&self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.sink.level.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "no interrupt raised");
            std::thread::sleep(Duration::from_millis(1));
        }
        let isr = self.read32(VIRTIO_MMIO_INTERRUPT_STATUS);
        assert_ne!(isr, 0, "line high with InterruptStatus 0");
        self.write32(VIRTIO_MMIO_INTERRUPT_ACK, isr);
        isr
    }

    /// Offer `bufs`, kick, wait for completion and the interrupt; returns the used length.
    pub fn request(&mut self, q: usize, bufs: &[Buf]) -> u32 {
        let head = self.add_chain(q, bufs);
        self.kick(q);
        let (id, len) = self.wait_used(q).expect("request completed");
        assert_eq!(id, u32::from(head));
        assert_eq!(
            self.take_interrupt() & VIRTIO_MMIO_INT_VRING,
            VIRTIO_MMIO_INT_VRING
        );
        len
    }

    /// Whether every byte of `[addr, addr + len)` was reported as written.
    pub fn reported(&self, addr: u64, len: u64) -> bool {
        let writes = self.writes.lock().unwrap();
        (addr..addr + len).all(|a| writes.iter().any(|&(s, l)| a >= s && a < s + l))
    }

    /// A copy of all guest RAM.
    pub fn ram_image(&self) -> Vec<u8> {
        self.read_mem(0, RAM_SIZE as usize)
    }

    /// Assert that every byte that differs between `before` and now was reported (the driver
    /// itself must not have written in between).
    pub fn assert_changes_reported(&self, before: &[u8]) {
        let after = self.ram_image();
        let writes = self.writes.lock().unwrap();
        let mut changed = 0;
        for (a, (x, y)) in before.iter().zip(&after).enumerate() {
            if x != y {
                changed += 1;
                let a = a as u64;
                assert!(
                    writes.iter().any(|&(s, l)| a >= s && a < s + l),
                    "device wrote {a:#x} ({x:#x} -> {y:#x}) without reporting it"
                );
            }
        }
        assert!(changed > 0, "the device wrote nothing");
    }
}
