//! virtio-blk driven through the MMIO transport and the event loop by the test driver.

use std::path::PathBuf;

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET;
use virtio_bindings::virtio_mmio::*;

use super::*;
use crate::config::DiskFormat;
use crate::test_driver::{r, w, TestDriver};

const DISK_SIZE: usize = 1 << 20;

struct TempDisk(PathBuf);

impl TempDisk {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("wirt-virtio-{}-{name}.raw", std::process::id()));
        let data: Vec<u8> = (0..DISK_SIZE).map(|i| (i / 512 + i) as u8).collect();
        std::fs::write(&path, data).unwrap();
        TempDisk(path)
    }
    fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for TempDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn driver(disk: &TempDisk, readonly: bool) -> TestDriver {
    let cfg = DiskConfig {
        path: disk.0.clone(),
        readonly,
        serial: Some("wirt-disk-7".into()),
        format: DiskFormat::Raw,
        direct: false,
    };
    let mut d = TestDriver::new(Box::new(Block::new(&cfg).unwrap()));
    let all = 1 << VIRTIO_BLK_F_FLUSH
        | 1 << VIRTIO_BLK_F_DISCARD
        | 1 << VIRTIO_BLK_F_WRITE_ZEROES
        | 1 << VIRTIO_BLK_F_RO;
    d.init(all, 1, 16);
    d
}

fn header(d: &mut TestDriver, ty: u32, sector: u64) -> u64 {
    let h = d.alloc(16);
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&ty.to_le_bytes());
    b[8..16].copy_from_slice(&sector.to_le_bytes());
    d.write_mem(h, &b);
    h
}

/// Issue a read of `len` bytes at `sector`; returns (status, data, used len).
fn read(d: &mut TestDriver, sector: u64, len: u32) -> (u8, Vec<u8>, u32) {
    let h = header(d, VIRTIO_BLK_T_IN, sector);
    let data = d.alloc(len.into());
    let status = d.alloc(1);
    d.write_mem(status, &[0xff]);
    let used = d.request(0, &[r(h, 16), w(data, len), w(status, 1)]);
    (
        d.read_mem(status, 1)[0],
        d.read_mem(data, len as usize),
        used,
    )
}

fn write(d: &mut TestDriver, sector: u64, bytes: &[u8]) -> u8 {
    let h = header(d, VIRTIO_BLK_T_OUT, sector);
    let data = d.alloc(bytes.len() as u64);
    d.write_mem(data, bytes);
    let status = d.alloc(1);
    d.write_mem(status, &[0xff]);
    d.request(0, &[r(h, 16), r(data, bytes.len() as u32), w(status, 1)]);
    d.read_mem(status, 1)[0]
}

fn simple(d: &mut TestDriver, ty: u32) -> u8 {
    let h = header(d, ty, 0);
    let status = d.alloc(1);
    d.write_mem(status, &[0xff]);
    d.request(0, &[r(h, 16), w(status, 1)]);
    d.read_mem(status, 1)[0]
}

fn dwz(d: &mut TestDriver, ty: u32, sector: u64, sectors: u32, flags: u32) -> u8 {
    let h = header(d, ty, 0);
    let seg = d.alloc(16);
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&sector.to_le_bytes());
    b[8..12].copy_from_slice(&sectors.to_le_bytes());
    b[12..16].copy_from_slice(&flags.to_le_bytes());
    d.write_mem(seg, &b);
    let status = d.alloc(1);
    d.write_mem(status, &[0xff]);
    d.request(0, &[r(h, 16), r(seg, 16), w(status, 1)]);
    d.read_mem(status, 1)[0]
}

#[test]
fn config_space_and_features() {
    let disk = TempDisk::new("config");
    let d = driver(&disk, false);
    assert_eq!(d.read32(VIRTIO_MMIO_DEVICE_ID), 2);
    let mut cap = [0u8; 8];
    devices::legacy::bus::BusDevice::read(&*d.transport, 0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (DISK_SIZE / 512) as u64);
    let f = d.device_features();
    assert_ne!(f & 1 << VIRTIO_BLK_F_FLUSH, 0);
    assert_ne!(f & 1 << VIRTIO_BLK_F_DISCARD, 0);
    assert_eq!(f & 1 << VIRTIO_BLK_F_RO, 0);
}

#[test]
fn read_write_flush_get_id() {
    let disk = TempDisk::new("rw");
    let mut d = driver(&disk, false);
    let expect = disk.contents();

    // A read: the data arrives and every byte the device wrote was reported.
    let h = header(&mut d, VIRTIO_BLK_T_IN, 3);
    let data = d.alloc(2048);
    let status = d.alloc(1);
    d.write_mem(status, &[0xff]);
    let head = d.add_chain(
        0,
        &[r(h, 16), w(data, 1024), w(data + 1024, 1024), w(status, 1)],
    );
    let before = d.ram_image();
    d.kick(0);
    assert_eq!(d.wait_used(0), Some((head.into(), 2049)));
    d.take_interrupt();
    assert_eq!(d.read_mem(status, 1), [VIRTIO_BLK_S_OK as u8]);
    assert_eq!(d.read_mem(data, 2048), expect[3 * 512..3 * 512 + 2048]);
    assert!(d.reported(data, 2048) && d.reported(status, 1));
    d.assert_changes_reported(&before);

    // A write lands in the file, a flush succeeds.
    let payload: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(write(&mut d, 10, &payload), VIRTIO_BLK_S_OK as u8);
    assert_eq!(simple(&mut d, VIRTIO_BLK_T_FLUSH), VIRTIO_BLK_S_OK as u8);
    assert_eq!(disk.contents()[10 * 512..10 * 512 + 1024], payload[..]);
    let (s, back, _) = read(&mut d, 10, 1024);
    assert_eq!((s, back), (VIRTIO_BLK_S_OK as u8, payload));

    // GET_ID returns the serial, NUL padded.
    let h = header(&mut d, VIRTIO_BLK_T_GET_ID, 0);
    let id = d.alloc(20);
    let status = d.alloc(1);
    assert_eq!(d.request(0, &[r(h, 16), w(id, 20), w(status, 1)]), 21);
    assert_eq!(d.read_mem(status, 1), [0]);
    let mut want = b"wirt-disk-7".to_vec();
    want.resize(20, 0);
    assert_eq!(d.read_mem(id, 20), want);

    // Past the end of the disk: IOERR; unknown type: UNSUPP.
    let (s, _, _) = read(&mut d, (DISK_SIZE / 512) as u64 - 1, 1024);
    assert_eq!(s, VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(simple(&mut d, 0x77), VIRTIO_BLK_S_UNSUPP as u8);
}

#[test]
fn discard_and_write_zeroes() {
    let disk = TempDisk::new("dwz");
    let mut d = driver(&disk, false);
    let orig = disk.contents();
    assert_eq!(dwz(&mut d, VIRTIO_BLK_T_DISCARD, 8, 8, 0), 0);
    assert_eq!(dwz(&mut d, VIRTIO_BLK_T_WRITE_ZEROES, 20, 3, 0), 0);
    assert_eq!(
        dwz(
            &mut d,
            VIRTIO_BLK_T_WRITE_ZEROES,
            32,
            8,
            VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
        ),
        0
    );
    let now = disk.contents();
    assert_eq!(now.len(), DISK_SIZE, "size kept");
    for (sector, chunk) in now.chunks(512).enumerate() {
        let zero =
            (8..16).contains(&sector) || (20..23).contains(&sector) || (32..40).contains(&sector);
        if zero {
            assert!(chunk.iter().all(|&b| b == 0), "sector {sector} zeroed");
        } else {
            assert_eq!(
                chunk,
                &orig[sector * 512..sector * 512 + 512],
                "sector {sector} kept"
            );
        }
    }
    // Out of range and reserved flags fail.
    assert_eq!(
        dwz(&mut d, VIRTIO_BLK_T_DISCARD, 2040, 16, 0),
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(
        dwz(&mut d, VIRTIO_BLK_T_DISCARD, 0, 8, 1),
        VIRTIO_BLK_S_IOERR as u8
    );
}

#[test]
fn readonly_rejects_writes() {
    let disk = TempDisk::new("ro");
    let mut d = driver(&disk, true);
    let orig = disk.contents();
    assert_ne!(d.device_features() & 1 << VIRTIO_BLK_F_RO, 0);
    assert_eq!(d.device_features() & 1 << VIRTIO_BLK_F_DISCARD, 0);
    assert_eq!(write(&mut d, 0, &[0xaa; 512]), VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(
        dwz(&mut d, VIRTIO_BLK_T_DISCARD, 0, 8, 0),
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(
        dwz(&mut d, VIRTIO_BLK_T_WRITE_ZEROES, 0, 8, 0),
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(disk.contents(), orig);
    let (s, data, _) = read(&mut d, 0, 512);
    assert_eq!((s, &data[..]), (0, &orig[..512]));
    assert_eq!(simple(&mut d, VIRTIO_BLK_T_FLUSH), 0);
}

/// After a bad request, a good one still works.
fn still_works(d: &mut TestDriver, disk: &TempDisk) {
    let (s, data, _) = read(d, 1, 512);
    assert_eq!(s, VIRTIO_BLK_S_OK as u8);
    assert_eq!(data, disk.contents()[512..1024]);
}

#[test]
fn malformed_requests_fail_alone() {
    let disk = TempDisk::new("bad");
    let mut d = driver(&disk, false);

    // Header too short.
    let h = header(&mut d, VIRTIO_BLK_T_IN, 0);
    let data = d.alloc(512);
    let status = d.alloc(1);
    assert_eq!(d.request(0, &[r(h, 8), w(data, 512), w(status, 1)]), 1);
    assert_eq!(d.read_mem(status, 1), [VIRTIO_BLK_S_IOERR as u8]);
    still_works(&mut d, &disk);

    // Wrong direction: the header is device-writable, or a read's data is device-readable.
    d.write_mem(status, &[0xff]);
    d.request(0, &[w(h, 16), w(data, 512), w(status, 1)]);
    assert_eq!(d.read_mem(status, 1), [VIRTIO_BLK_S_IOERR as u8]);
    d.write_mem(status, &[0xff]);
    d.request(0, &[r(h, 16), r(data, 512), w(status, 1)]);
    assert_eq!(d.read_mem(status, 1), [VIRTIO_BLK_S_IOERR as u8]);
    // Readable after writable.
    d.write_mem(status, &[0xff]);
    assert_eq!(
        d.request(0, &[r(h, 16), w(data, 512), r(data, 512), w(status, 1)]),
        0
    );
    assert_eq!(
        d.read_mem(status, 1),
        [0xff],
        "no status for a structurally broken chain"
    );
    still_works(&mut d, &disk);

    // Data buffer outside RAM, and a huge length running past RAM: IOERR, nothing copied.
    let wh = header(&mut d, VIRTIO_BLK_T_OUT, 0);
    let orig = disk.contents();
    d.write_mem(status, &[0xff]);
    d.request(0, &[r(wh, 16), r(0x1_0000_0000, 512), w(status, 1)]);
    assert_eq!(d.read_mem(status, 1), [VIRTIO_BLK_S_IOERR as u8]);
    d.write_mem(status, &[0xff]);
    d.request(0, &[r(h, 16), w(data, 0xffff_f000), w(status, 1)]);
    assert_eq!(d.read_mem(status, 1), [VIRTIO_BLK_S_IOERR as u8]);
    // Buffers at the very top of the address space (sums would overflow).
    assert_eq!(d.request(0, &[r(h, 16), w(u64::MAX - 0x100, 0x200)]), 0);
    d.request(0, &[r(h, 16), w(u64::MAX - 0x100, 0x200), w(u64::MAX, 1)]);
    d.write_mem(status, &[0xff]);
    d.request(0, &[r(u64::MAX - 4, 16), w(data, 512), w(status, 1)]);
    assert_eq!(d.read_mem(status, 1), [VIRTIO_BLK_S_IOERR as u8]);
    // Zero-length data.
    d.write_mem(status, &[0xff]);
    d.request(0, &[r(h, 16), w(data, 0), w(status, 1)]);
    assert_eq!(d.read_mem(status, 1), [VIRTIO_BLK_S_IOERR as u8]);
    // No status byte at all.
    assert_eq!(d.request(0, &[r(h, 16)]), 0);
    assert_eq!(disk.contents(), orig);
    still_works(&mut d, &disk);

    // A descriptor loop: 0 -> 1 -> 0 ... is cut off and completed with nothing written.
    d.write_desc(0, 5, h, 16, VRING_NEXT, 6);
    d.write_desc(0, 6, data, 512, VRING_NEXT | VRING_WRITE, 5);
    d.publish(0, 5);
    d.kick(0);
    assert_eq!(d.wait_used(0), Some((5, 0)));
    d.take_interrupt();
    // A next index outside the table.
    d.write_desc(0, 7, h, 16, VRING_NEXT, 999);
    d.publish(0, 7);
    d.kick(0);
    assert_eq!(d.wait_used(0), Some((7, 0)));
    d.take_interrupt();
    assert_eq!(d.transport.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    still_works(&mut d, &disk);
}

const VRING_NEXT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
const VRING_WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;

#[test]
fn broken_queue_needs_reset_then_recovers() {
    let disk = TempDisk::new("reset");
    let mut d = driver(&disk, false);
    // A head index outside the ring cannot even be completed: the queue is broken.
    d.publish(0, 1000);
    d.kick(0);
    let isr = d.take_interrupt();
    assert_eq!(isr & VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_CONFIG);
    assert_ne!(d.transport.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    // The driver resets and starts again; the device works.
    d.init(1 << VIRTIO_BLK_F_FLUSH, 1, 16);
    assert_eq!(d.transport.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    still_works(&mut d, &disk);

    // An avail index running more than a queue size ahead is broken too.
    d.write_mem(0x1_0000 + 0x1000 + 2, &500u16.to_le_bytes());
    d.kick(0);
    d.take_interrupt();
    assert_ne!(d.transport.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
}

#[test]
fn many_requests_in_flight_complete_out_of_order() {
    let disk = TempDisk::new("many");
    let mut d = driver(&disk, false);
    let expect = disk.contents();
    // Four rounds of five 3-descriptor reads, each round published together and notified
    // once; the worker pool may finish them in any order.
    for round in 0..4u64 {
        let mut reqs = Vec::new();
        for i in 0..5u64 {
            let sector = round * 40 + i * 7;
            let h = header(&mut d, VIRTIO_BLK_T_IN, sector);
            let data = d.alloc(1536);
            let status = d.alloc(1);
            d.write_mem(status, &[0xff]);
            let head = d.add_chain(0, &[r(h, 16), w(data, 1536), w(status, 1)]);
            reqs.push((head, sector, data, status));
        }
        d.kick(0);
        let mut seen = Vec::new();
        for _ in 0..reqs.len() {
            let (id, len) = d.wait_used(0).expect("completion");
            assert_eq!(len, 1537);
            seen.push(id as u16);
        }
        seen.sort();
        let mut heads: Vec<u16> = reqs.iter().map(|r| r.0).collect();
        heads.sort();
        assert_eq!(seen, heads, "each request completed exactly once");
        d.take_interrupt();
        for (_, sector, data, status) in reqs {
            assert_eq!(d.read_mem(status, 1), [0]);
            let off = sector as usize * 512;
            assert_eq!(d.read_mem(data, 1536), expect[off..off + 1536]);
        }
    }
}

#[test]
fn indirect_descriptors() {
    use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
    const INDIRECT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16;
    let disk = TempDisk::new("indirect");
    let cfg = DiskConfig {
        path: disk.0.clone(),
        readonly: false,
        serial: None,
        format: DiskFormat::Raw,
        direct: false,
    };
    let mut d = TestDriver::new(Box::new(Block::new(&cfg).unwrap()));
    d.init(1 << VIRTIO_RING_F_INDIRECT_DESC, 1, 16);

    // A read whose three buffers live in an indirect table.
    let h = header(&mut d, VIRTIO_BLK_T_IN, 5);
    let data = d.alloc(512);
    let status = d.alloc(1);
    let table = d.alloc(48);
    let mut t = Vec::new();
    for (i, (addr, len, flags)) in [
        (h, 16, VRING_NEXT),
        (data, 512, VRING_NEXT | VRING_WRITE),
        (status, 1, VRING_WRITE),
    ]
    .into_iter()
    .enumerate()
    {
        t.extend(addr.to_le_bytes());
        t.extend((len as u32).to_le_bytes());
        t.extend(flags.to_le_bytes());
        t.extend(((i + 1) as u16).to_le_bytes());
    }
    d.write_mem(table, &t);
    d.write_desc(0, 0, table, 48, INDIRECT, 0);
    d.set_used_event(0, 0);
    d.publish(0, 0);
    d.kick(0);
    assert_eq!(d.wait_used(0), Some((0, 513)));
    d.take_interrupt();
    assert_eq!(d.read_mem(status, 1), [0]);
    assert_eq!(d.read_mem(data, 512), disk.contents()[5 * 512..6 * 512]);

    // An indirect table that points to another indirect table is refused.
    d.write_mem(table, &{
        let mut b = Vec::new();
        b.extend(table.to_le_bytes());
        b.extend(48u32.to_le_bytes());
        b.extend(INDIRECT.to_le_bytes());
        b.extend(0u16.to_le_bytes());
        b
    });
    d.set_used_event(0, 2);
    d.publish(0, 0);
    d.kick(0);
    assert_eq!(d.wait_used(0), Some((0, 0)));
    d.take_interrupt();
}

#[test]
fn qcow2_image_read_write_discard() {
    use imago::file::File;
    use imago::qcow2::Qcow2;
    use imago::{
        DenyImplicitOpenGate, FormatAccess, FormatCreateBuilder, FormatDriverBuilder, Storage,
        StorageCreateOptions,
    };
    let path = std::env::temp_dir().join(format!("wirt-virtio-{}-q.qcow2", std::process::id()));
    let _cleanup = TempDisk(path.clone());
    {
        let file = File::create_open(StorageCreateOptions::new().filename(&path)).unwrap();
        let q = Qcow2::<File>::create_builder(file)
            .size(DISK_SIZE as u64)
            .create_open(DenyImplicitOpenGate::default(), |image| {
                Ok(Qcow2::<File>::builder(image).backing(None).write(true))
            })
            .unwrap();
        let access = FormatAccess::new(q);
        access.write(&[0x5a; 4096][..], 8192).unwrap();
        access.flush().unwrap();
    }
    let cfg: DiskConfig = format!("path={},format=qcow2,serial=q", path.display())
        .parse()
        .unwrap();
    let mut d = TestDriver::new(Box::new(Block::new(&cfg).unwrap()));
    d.init(
        1 << VIRTIO_BLK_F_FLUSH | 1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES,
        1,
        16,
    );
    let mut cap = [0u8; 8];
    devices::legacy::bus::BusDevice::read(&*d.transport, 0x100, &mut cap);
    assert_eq!(
        u64::from_le_bytes(cap),
        (DISK_SIZE / 512) as u64,
        "virtual size, not file size"
    );

    let (s, data, _) = read(&mut d, 16, 1024);
    assert_eq!((s, data), (0, vec![0x5a; 1024]));
    let (s, data, _) = read(&mut d, 100, 512);
    assert_eq!(
        (s, data),
        (0, vec![0; 512]),
        "unallocated clusters read as zero"
    );
    let payload: Vec<u8> = (0..2048u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(write(&mut d, 300, &payload), 0);
    assert_eq!(simple(&mut d, VIRTIO_BLK_T_FLUSH), 0);
    let (s, back, _) = read(&mut d, 300, 2048);
    assert_eq!((s, back), (0, payload.clone()));
    assert_eq!(dwz(&mut d, VIRTIO_BLK_T_DISCARD, 16, 8, 0), 0);
    let (_, data, _) = read(&mut d, 16, 1024);
    assert_eq!(data, vec![0; 1024], "discarded");
    drop(d);

    // The data is in the image, readable by another opener.
    let q = Qcow2::<File>::builder_path(&path)
        .write(false)
        .open(imago::PermissiveImplicitOpenGate::default())
        .unwrap();
    let access = FormatAccess::new(q);
    let mut buf = vec![0u8; 2048];
    access.read(&mut buf[..], 300 * 512).unwrap();
    assert_eq!(buf, payload);
}
