//! Virtio queue handling: requests per second through a virtio-mmio transport, its
//! event loop and a device back end, driven the way Linux's `virtio_mmio` drives it (split
//! rings in guest memory, a QueueNotify write per batch, then the used ring and the
//! interrupt status). One request at a time measures the kick → event loop → device →
//! used ring round trip; a batch per kick measures queue processing itself.
//!
//! crates/virtio's own test driver is `#[cfg(test)]`, so this file carries a small one.
//!
//! `cargo bench -p wirt-bench --bench virtio_queue`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use devices::legacy::bus::BusDevice;
use devices::InterruptSink;
use virtio::config::DiskConfig;
use virtio::{EventLoop, EventLoopHandle, GuestRam, MmioTransport, VirtioDevice};
use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const RAM: usize = 4 << 20;
const DESC: u64 = 0x1_0000;
const AVAIL: u64 = 0x1_1000;
const USED: u64 = 0x1_2000;
const BUFFERS: u64 = 0x10_0000;
const GSI: u32 = 5;

/// The interrupt line, as a flag.
#[derive(Default)]
struct Line(AtomicBool);

impl InterruptSink for Line {
    fn set_level(&self, _gsi: u32, level: bool) {
        self.0.store(level, Ordering::Release);
    }
}

/// One descriptor of a chain: guest address, length, device-writable.
type Buf = (u64, u32, bool);

/// A one-queue virtio-mmio driver over its own guest memory, with the event loop running.
struct Driver {
    mem: Arc<GuestMemoryMmap>,
    transport: Arc<MmioTransport>,
    line: Arc<Line>,
    size: u16,
    avail_idx: u16,
    used_seen: u16,
    _events: EventLoopHandle,
}

impl Driver {
    fn new(device: Box<dyn VirtioDevice>) -> Driver {
        let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap());
        let ram = GuestRam::new(mem.clone(), virtio::ignore_guest_writes());
        let line = Arc::new(Line::default());
        let transport = Arc::new(MmioTransport::new(device, ram, line.clone(), GSI).unwrap());
        let mut events = EventLoop::new().unwrap();
        events.add(&*transport).unwrap();
        let mut d = Driver {
            mem,
            transport,
            line,
            size: 0,
            avail_idx: 0,
            used_seen: 0,
            _events: events.spawn().unwrap(),
        };
        d.init();
        d
    }

    fn read32(&self, reg: u32) -> u32 {
        let mut b = [0u8; 4];
        self.transport.read(u64::from(reg), &mut b);
        u32::from_le_bytes(b)
    }

    fn write32(&self, reg: u32, v: u32) {
        self.transport.write(u64::from(reg), &v.to_le_bytes());
    }

    /// Reset, negotiate VERSION_1 only, set up queue 0, DRIVER_OK.
    fn init(&mut self) {
        assert_eq!(self.read32(VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        self.write32(VIRTIO_MMIO_STATUS, 0);
        let mut status = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
        self.write32(VIRTIO_MMIO_STATUS, status);
        self.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        self.write32(VIRTIO_MMIO_DRIVER_FEATURES, 0);
        self.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        self.write32(VIRTIO_MMIO_DRIVER_FEATURES, 1 << (VIRTIO_F_VERSION_1 - 32));
        status |= VIRTIO_CONFIG_S_FEATURES_OK;
        self.write32(VIRTIO_MMIO_STATUS, status);
        assert_ne!(
            self.read32(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK,
            0
        );
        self.write32(VIRTIO_MMIO_QUEUE_SEL, 0);
        self.size = (self.read32(VIRTIO_MMIO_QUEUE_NUM_MAX) as u16).min(64);
        self.write32(VIRTIO_MMIO_QUEUE_NUM, self.size.into());
        for (reg, addr) in [
            (VIRTIO_MMIO_QUEUE_DESC_LOW, DESC),
            (VIRTIO_MMIO_QUEUE_AVAIL_LOW, AVAIL),
            (VIRTIO_MMIO_QUEUE_USED_LOW, USED),
        ] {
            self.write32(reg, addr as u32);
            self.write32(reg + 4, (addr >> 32) as u32);
        }
        self.write32(VIRTIO_MMIO_QUEUE_READY, 1);
        self.write32(VIRTIO_MMIO_STATUS, status | VIRTIO_CONFIG_S_DRIVER_OK);
        assert_ne!(
            self.read32(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_DRIVER_OK,
            0
        );
    }

    /// Writes chain number `slot` (descriptors from `slot * bufs.len()`) and publishes it.
    fn offer(&mut self, slot: u16, bufs: &[Buf]) {
        let first = slot * bufs.len() as u16;
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = first + i as u16;
            let last = i + 1 == bufs.len();
            let mut flags = if writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&(index + 1).to_le_bytes());
            self.mem
                .write_slice(&d, GuestAddress(DESC + 16 * u64::from(index)))
                .unwrap();
        }
        let ring_slot = u64::from(self.avail_idx % self.size);
        self.mem
            .write_obj(first, GuestAddress(AVAIL + 4 + 2 * ring_slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
    }

    /// Offers `batch` copies of the chain `bufs(slot)`, kicks once, and waits until all
    /// are used and the interrupt is raised; then acknowledges it.
    fn round(&mut self, batch: u16, bufs: &dyn Fn(u16) -> Vec<Buf>) {
        for slot in 0..batch {
            self.offer(slot, &bufs(slot));
        }
        self.write32(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        let target = self.used_seen.wrapping_add(batch);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let used: u16 = self.mem.read_obj(GuestAddress(USED + 2)).unwrap();
            if used == target && self.line.0.load(Ordering::Acquire) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the device did not complete the requests"
            );
            std::thread::yield_now();
        }
        self.used_seen = target;
        let isr = self.read32(VIRTIO_MMIO_INTERRUPT_STATUS);
        self.write32(VIRTIO_MMIO_INTERRUPT_ACK, isr);
    }
}

fn rng(c: &mut Criterion) {
    let mut d = Driver::new(Box::new(virtio::rng::Rng::new()));
    let bufs = |slot: u16| vec![(BUFFERS + u64::from(slot) * 64, 64, true)];
    let mut g = c.benchmark_group("virtio-rng");
    for batch in [1u16, 32] {
        g.throughput(Throughput::Elements(batch.into()));
        g.bench_function(format!("64-byte requests, {batch} per kick"), |b| {
            b.iter(|| d.round(batch, &bufs))
        });
    }
    g.finish();
}

fn blk(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("wirt-bench-virtio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.raw");
    std::fs::write(&path, vec![0x5au8; 16 << 20]).unwrap();
    let cfg: DiskConfig = format!("path={}", path.display()).parse().unwrap();
    let mut d = Driver::new(Box::new(virtio::block::Block::new(&cfg).unwrap()));
    // Per request (0x2000 apart): a 16-byte header (type, reserved, sector) at +0, the
    // status byte at +0x10 and 4 KiB of data at +0x1000; sectors spread over the disk.
    let mut g = c.benchmark_group("virtio-blk");
    for (name, kind) in [("4 KiB reads", 0u32), ("4 KiB writes", 1)] {
        for slot in 0..16u16 {
            let base = BUFFERS + u64::from(slot) * 0x2000;
            let mut header = [0u8; 16];
            header[0..4].copy_from_slice(&kind.to_le_bytes());
            header[8..16].copy_from_slice(&(u64::from(slot) * 8 * 97 % 32768).to_le_bytes());
            d.mem.write_slice(&header, GuestAddress(base)).unwrap();
        }
        let bufs = move |slot: u16| {
            let base = BUFFERS + u64::from(slot) * 0x2000;
            vec![
                (base, 16, false),
                (base + 0x1000, 4096, kind == 0),
                (base + 0x10, 1, true),
            ]
        };
        // Requests must succeed for their rate to mean anything: status byte 0 (OK), and a
        // read brings the disk's bytes.
        d.round(16, &bufs);
        for slot in 0..16u64 {
            let base = BUFFERS + slot * 0x2000;
            let status: u8 = d.mem.read_obj(GuestAddress(base + 0x10)).unwrap();
            assert_eq!(status, 0, "{name}: request {slot} failed");
            if kind == 0 {
                let byte: u8 = d.mem.read_obj(GuestAddress(base + 0x1000)).unwrap();
                assert_eq!(byte, 0x5a, "{name}: read returned other data");
            }
        }
        for batch in [1u16, 16] {
            g.throughput(Throughput::Elements(batch.into()));
            g.bench_function(format!("{name}, {batch} per kick"), |b| {
                b.iter(|| d.round(batch, &bufs))
            });
        }
    }
    g.finish();
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = rng, blk
}
criterion_main!(benches);
