//! virtio-pci probed and driven as Linux does: config mechanism #1 (the chipset's ports,
//! which forward to the root's ECAM window), BAR sizing and placement, capability walk,
//! common-config setup, MSI-X or INTx.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devices::legacy::bus::Bus;
use devices::legacy::{PciConfigPorts, PortSink};
use devices::InterruptSink;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::msix::MsiSink;
use super::root::{PciFunction, PciRoot};
use super::*;
use crate::event_loop::EventLoop;
use crate::rng::Rng;

const BAR: u64 = 0xe000_0000;
const ECAM: u64 = 0xb000_0000;
const DESC: u64 = 0x1_0000;
const AVAIL: u64 = 0x1_1000;
const USED: u64 = 0x1_2000;
const BUF: u64 = 0x10_0000;

#[derive(Default)]
struct Msis(Mutex<Vec<(u64, u32)>>);
impl MsiSink for Msis {
    fn send_msi(&self, address: u64, data: u32) {
        self.0.lock().unwrap().push((address, data));
    }
}

#[derive(Default)]
struct Line(AtomicBool);
impl InterruptSink for Line {
    fn set_level(&self, _gsi: u32, level: bool) {
        self.0.store(level, Ordering::SeqCst);
    }
}

struct Machine {
    mem: Arc<GuestMemoryMmap>,
    pio: Bus,
    mmio: Arc<Bus>,
    slot: u8,
    transport: Arc<PciTransport>,
    used_seen: u16,
    avail_idx: u16,
}

impl Machine {
    fn new(msi: Option<Arc<dyn MsiSink>>, line: Arc<Line>) -> Self {
        let mem =
            Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap());
        let ram = GuestRam::new(mem.clone(), crate::guest_ram::ignore_guest_writes());
        let transport =
            Arc::new(PciTransport::new(Box::new(Rng::new()), ram, msi, line, 10).unwrap());
        let mmio = Arc::new(Bus::new());
        let root = PciRoot::new(&mmio);
        let slot = root.add(transport.clone() as Arc<dyn PciFunction>).unwrap();
        mmio.insert(root.ecam(), ECAM, root::ECAM_BUS0_SIZE)
            .unwrap();
        let pio = Bus::new();
        let ports = PciConfigPorts::new(Arc::new(PortSink::new(0)), mmio.clone(), ECAM, 1);
        pio.insert(Arc::new(ports), 0xcf8, 8).unwrap();
        Machine {
            mem,
            pio,
            mmio,
            slot,
            transport,
            used_seen: 0,
            avail_idx: 0,
        }
    }

    fn cfg_addr(&self, reg: u8) {
        let a = 0x8000_0000u32 | u32::from(self.slot) << 11 | u32::from(reg & 0xfc);
        self.pio.write(0xcf8, &a.to_le_bytes());
    }

    fn cfg_read32(&self, reg: u8) -> u32 {
        self.cfg_addr(reg);
        let mut b = [0u8; 4];
        self.pio.read(0xcfc, &mut b);
        u32::from_le_bytes(b)
    }

    fn cfg_write(&self, reg: u8, data: &[u8]) {
        self.cfg_addr(reg);
        self.pio.write(0xcfc + u64::from(reg & 3), data);
    }

    fn bar_read(&self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        assert!(
            self.mmio.read(BAR + off, &mut b[..len]),
            "BAR decoded at {BAR:#x}"
        );
        u64::from_le_bytes(b)
    }

    fn bar_write(&self, off: u64, v: u64, len: usize) {
        assert!(self.mmio.write(BAR + off, &v.to_le_bytes()[..len]));
    }

    /// Probe like Linux: size and place BAR0, enable memory, and walk the capabilities.
    /// Returns (virtio cap type -> BAR offset, MSI-X capability position).
    fn probe(&self) -> (Vec<(u8, u32)>, Option<u8>) {
        assert_eq!(self.cfg_read32(0), 0x1044_1af4, "virtio-rng, modern ID");
        assert_eq!(self.cfg_read32(8) & 0xff, 1, "revision 1");
        self.cfg_write(0x10, &u32::MAX.to_le_bytes());
        assert_eq!(
            self.cfg_read32(0x10),
            0xffff_8004,
            "32 KiB, 64-bit memory BAR"
        );
        self.cfg_write(0x10, &(BAR as u32).to_le_bytes());
        self.cfg_write(0x14, &0u32.to_le_bytes());
        assert!(
            self.mmio.resolve(BAR).is_none(),
            "not decoded before memory enable"
        );
        self.cfg_write(0x04, &0x0006u16.to_le_bytes());
        assert!(self.mmio.resolve(BAR).is_some());
        let mut caps = Vec::new();
        let mut msix = None;
        let mut pos = (self.cfg_read32(0x34) & 0xff) as u8;
        while pos != 0 {
            let head = self.cfg_read32(pos);
            match head & 0xff {
                0x09 => caps.push(((head >> 24) as u8, self.cfg_read32(pos + 8))),
                0x11 => msix = Some(pos),
                other => panic!("unexpected capability {other:#x}"),
            }
            pos = (head >> 8) as u8;
        }
        (caps, msix)
    }

    fn init(&self, common: u64) {
        self.bar_write(common + 0x14, 0, 1);
        self.bar_write(common + 0x14, 3, 1);
        self.bar_write(common + 0x08, 1, 4);
        self.bar_write(common + 0x0c, 1, 4); // VERSION_1
        self.bar_write(common + 0x14, 0xb, 1);
        assert_eq!(self.bar_read(common + 0x14, 1), 0xb, "FEATURES_OK kept");
        assert_eq!(self.bar_read(common + 0x12, 2), 1, "one queue");
        self.bar_write(common + 0x16, 0, 2);
        self.bar_write(common + 0x18, 8, 2);
        for (off, addr) in [(0x20, DESC), (0x28, AVAIL), (0x30, USED)] {
            self.bar_write(common + off, addr & 0xffff_ffff, 4);
            self.bar_write(common + off + 4, addr >> 32, 4);
        }
        self.bar_write(common + 0x1c, 1, 2);
        self.bar_write(common + 0x14, 0xf, 1);
    }

    /// Offer one 32-byte writable buffer, notify, wait for it to be used.
    fn request(&mut self, notify: u64) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&BUF.to_le_bytes());
        d[8..12].copy_from_slice(&32u32.to_le_bytes());
        d[12..14].copy_from_slice(&2u16.to_le_bytes()); // WRITE
        self.mem.write_slice(&d, GuestAddress(DESC)).unwrap();
        let slot = u64::from(self.avail_idx % 8);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_slice(&0u16.to_le_bytes(), GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
        self.mem
            .write_slice(&self.avail_idx.to_le_bytes(), GuestAddress(AVAIL + 2))
            .unwrap();
        self.bar_write(notify, 0, 2);
        let t0 = Instant::now();
        loop {
            let idx: u16 = self.mem.read_obj(GuestAddress(USED + 2)).unwrap();
            if idx != self.used_seen {
                self.used_seen = idx;
                let len: u32 = self.mem.read_obj(GuestAddress(USED + 8)).unwrap();
                assert_eq!(len, 32);
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "request completed");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn wait_for(cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn msix_delivery_masking_and_ecam() {
    let msis = Arc::new(Msis::default());
    let line = Arc::new(Line::default());
    let mut m = Machine::new(Some(msis.clone()), line.clone());
    let (caps, msix) = m.probe();
    let off = |t: u8| u64::from(caps.iter().find(|c| c.0 == t).unwrap().1);
    assert_eq!(caps.len(), 4);
    let msix = msix.expect("MSI-X offered");
    assert_eq!(m.cfg_read32(msix) >> 16 & 0x7ff, 1, "two vectors");

    // ECAM sees the same config space.
    let mut b = [0u8; 4];
    m.mmio.read(0xb000_0000 + (u64::from(m.slot) << 15), &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x1044_1af4);

    let mut events = EventLoop::new().unwrap();
    events.add(&*m.transport).unwrap();
    let _loop = events.spawn().unwrap();

    let common = off(1);
    m.init(common);
    // Enable MSI-X, program vector 1 for the queue.
    m.cfg_write(msix + 2, &0x8000u16.to_le_bytes());
    m.bar_write(MSIX_TABLE_OFFSET + 16, 0xfee0_0000, 4);
    m.bar_write(MSIX_TABLE_OFFSET + 20, 0, 4);
    m.bar_write(MSIX_TABLE_OFFSET + 24, 0x41, 4);
    m.bar_write(MSIX_TABLE_OFFSET + 28, 0, 4);
    m.bar_write(common + 0x1a, 1, 2);
    assert_eq!(m.bar_read(common + 0x1a, 2), 1);
    m.bar_write(common + 0x1a, 7, 2);
    assert_eq!(
        m.bar_read(common + 0x1a, 2),
        0xffff,
        "out-of-range vector refused"
    );
    m.bar_write(common + 0x1a, 1, 2);

    let notify = off(2);
    m.request(notify);
    wait_for(|| msis.0.lock().unwrap().len() == 1);
    assert_eq!(msis.0.lock().unwrap()[0], (0xfee0_0000, 0x41));
    assert!(!line.0.load(Ordering::SeqCst), "no INTx with MSI-X");

    // Masked: pending bit instead of a message; unmasking delivers it.
    m.bar_write(MSIX_TABLE_OFFSET + 28, 1, 4);
    m.request(notify);
    wait_for(|| m.bar_read(MSIX_PBA_OFFSET, 1) == 0b10);
    assert_eq!(msis.0.lock().unwrap().len(), 1);
    m.bar_write(MSIX_TABLE_OFFSET + 28, 0, 4);
    assert_eq!(msis.0.lock().unwrap().len(), 2);
    assert_eq!(m.bar_read(MSIX_PBA_OFFSET, 1), 0);

    // The state survives a snapshot round trip into a fresh function.
    let state = m.transport.state();
    let json = serde_json::to_string(&state).unwrap();
    let back: crate::transport::state::PciState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    assert!(back.irq.msix_enabled && back.irq.queue_vectors == vec![1]);
    let ram = GuestRam::new(m.mem.clone(), crate::guest_ram::ignore_guest_writes());
    let t2 = PciTransport::new(
        Box::new(Rng::new()),
        ram,
        Some(msis.clone()),
        line.clone(),
        10,
    )
    .unwrap();
    t2.restore(&back);
    assert_eq!(t2.state(), state);
    assert_eq!(t2.bars().first().map(|b| b.base), Some(BAR));

    // Moving the BAR moves the registers.
    m.cfg_write(0x10, &0xd000_0000u32.to_le_bytes());
    assert!(m.mmio.resolve(BAR).is_none());
    assert!(m.mmio.resolve(0xd000_0000).is_some());
}

#[test]
fn intx_fallback_with_isr() {
    let line = Arc::new(Line::default());
    let mut m = Machine::new(None, line.clone());
    let (caps, msix) = m.probe();
    assert!(msix.is_none(), "no MSI-X capability without an MSI sink");
    let off = |t: u8| u64::from(caps.iter().find(|c| c.0 == t).unwrap().1);
    let mut events = EventLoop::new().unwrap();
    events.add(&*m.transport).unwrap();
    let _loop = events.spawn().unwrap();
    m.init(off(1));
    assert_ne!(m.transport.status() & 4, 0, "DRIVER_OK");
    m.request(off(2));
    wait_for(|| line.0.load(Ordering::SeqCst));
    assert_eq!(m.bar_read(off(3), 1), 1, "ISR: queue interrupt");
    assert!(
        !line.0.load(Ordering::SeqCst),
        "reading the ISR lowers the line"
    );
    assert_eq!(m.bar_read(off(3), 1), 0, "read clears");
    // An empty slot reads as all ones.
    let mut b = [0u8; 4];
    m.pio
        .write(0xcf8, &(0x8000_0000u32 | 9 << 11).to_le_bytes());
    m.pio.read(0xcfc, &mut b);
    assert_eq!(b, [0xff; 4], "empty slot");
}

#[test]
fn slots_are_placed_where_asked_and_the_root_does_not_keep_the_bus_alive() {
    struct Dummy;
    impl PciFunction for Dummy {
        fn config_read(&self, _offset: u16, data: &mut [u8]) {
            data.fill(0x5a);
        }
        fn config_write(&self, _offset: u16, _data: &[u8]) {}
    }
    let mmio = Arc::new(Bus::new());
    let root = PciRoot::new(&mmio);
    mmio.insert(root.ecam(), ECAM, root::ECAM_BUS0_SIZE)
        .unwrap();
    root.add_at(5, Arc::new(Dummy)).unwrap();
    assert!(matches!(
        root.add_at(5, Arc::new(Dummy)),
        Err(root::PciError::SlotTaken(5))
    ));
    assert!(root.add_at(0, Arc::new(Dummy)).is_err(), "the host bridge");
    assert!(root.add_at(32, Arc::new(Dummy)).is_err());
    assert_eq!(root.add(Arc::new(Dummy)).unwrap(), 1);
    let mut b = [0u8; 4];
    mmio.read(ECAM + (5 << 15), &mut b);
    assert_eq!(b, [0x5a; 4]);
    // The ECAM window on the bus holds the root; the root only a weak bus reference.
    let weak = Arc::downgrade(&mmio);
    drop(root);
    drop(mmio);
    assert!(weak.upgrade().is_none(), "bus and root freed together");
}

#[test]
fn engine_msi_follows_the_sinks_capability() {
    struct Engine(Mutex<Vec<(u64, u32)>>, bool);
    impl InterruptSink for Engine {
        fn set_level(&self, _gsi: u32, _level: bool) {}
        fn supports_msi(&self) -> bool {
            self.1
        }
        fn send_msi(&self, addr: u64, data: u32) -> bool {
            self.0.lock().unwrap().push((addr, data));
            true
        }
    }
    let without: Arc<dyn InterruptSink> = Arc::new(Engine(Mutex::default(), false));
    assert!(msix::engine_msi(&without).is_none());
    let engine = Arc::new(Engine(Mutex::default(), true));
    let with: Arc<dyn InterruptSink> = engine.clone();
    msix::engine_msi(&with)
        .expect("an MSI path")
        .send_msi(0xfee0_0000, 0x42);
    assert_eq!(*engine.0.lock().unwrap(), vec![(0xfee0_0000, 0x42)]);
}
