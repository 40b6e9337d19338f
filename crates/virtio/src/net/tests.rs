//! virtio-net against a SOCK_SEQPACKET socketpair standing in for the TAP, and a real TAP
//! where the host allows it.

use std::os::fd::{FromRawFd, OwnedFd};

use super::*;
use crate::test_driver::{r, w, TestDriver};

fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into the array, which we then own.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn send(fd: &OwnedFd, data: &[u8]) {
    // SAFETY: writes `data` to an open socket.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize);
}

fn recv(fd: &OwnedFd) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_FRAME];
    // SAFETY: reads into a live buffer of the given length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0);
    buf.truncate(n as usize);
    buf
}

#[test]
fn frames_both_ways_over_a_socketpair() {
    let (dev_end, peer) = socketpair();
    let mac = MacAddr([0x52, 0x54, 0, 1, 2, 3]);
    let net = Net::from_fd(dev_end, mac, false);
    let mut d = TestDriver::new(Box::new(net));
    d.init(1 << VIRTIO_NET_F_MAC | 1 << VIRTIO_NET_F_STATUS, 2, 16);
    let mut cfg = [0u8; 8];
    devices::legacy::bus::BusDevice::read(&*d.transport, 0x100, &mut cfg);
    assert_eq!(cfg[..6], mac.0);
    assert_eq!(cfg[6], 1, "link up");
    assert_eq!(
        d.device_features() & 1 << VIRTIO_NET_F_GUEST_TSO4,
        0,
        "no offloads without a TAP"
    );

    // Guest -> host: header and frame in separate descriptors arrive as one packet.
    let hdr = d.alloc(12);
    let frame: Vec<u8> = (0..60u8).collect();
    let data = d.alloc(60);
    d.write_mem(data, &frame);
    assert_eq!(d.request(TX, &[r(hdr, 12), r(data, 60)]), 0);
    let got = recv(&peer);
    assert_eq!(got.len(), 72);
    assert_eq!(got[12..], frame[..]);

    // Host -> guest: a frame sent before any buffer waits, then fills the first one.
    let mut pkt = vec![0u8; 12];
    pkt.extend(b"incoming frame");
    send(&peer, &pkt);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let rx = d.alloc(2048);
    let head = d.add_chain(RX, &[w(rx, 2048)]);
    let before = d.ram_image();
    d.kick(RX);
    assert_eq!(d.wait_used(RX), Some((head.into(), pkt.len() as u32)));
    d.take_interrupt();
    let back = d.read_mem(rx, pkt.len());
    assert_eq!(back[12..], pkt[12..]);
    assert_eq!(back[10..12], [1, 0], "num_buffers = 1");
    d.assert_changes_reported(&before);

    // A buffer posted first is filled when the frame arrives; a frame too big for the
    // buffer is dropped without breaking the device.
    let small = d.alloc(16);
    let h2 = d.add_chain(RX, &[w(small, 16)]);
    d.kick(RX);
    send(&peer, &[0u8; 100]);
    assert_eq!(d.wait_used(RX), Some((h2.into(), 0)));
    let h3 = d.add_chain(RX, &[w(rx, 2048)]);
    d.kick(RX);
    send(&peer, &pkt);
    assert_eq!(d.wait_used(RX), Some((h3.into(), pkt.len() as u32)));
}

#[test]
fn real_tap_with_offloads() {
    if !std::path::Path::new("/dev/net/tun").exists() {
        println!("skipped: /dev/net/tun is missing on this host");
        return;
    }
    let name = format!("wirtt{}", std::process::id() % 100_000);
    let cfg: NetConfig = format!("tap={name},mac=52:54:00:aa:bb:cc").parse().unwrap();
    let net = match Net::new(&cfg) {
        Ok(n) => n,
        Err(e) => {
            println!("skipped: cannot create a TAP here: {e}");
            return;
        }
    };
    assert!(std::path::Path::new(&format!("/sys/class/net/{name}")).exists());
    let mut d = TestDriver::new(Box::new(net));
    let offered = d.device_features();
    assert_ne!(offered & 1 << VIRTIO_NET_F_GUEST_TSO4, 0);
    assert_ne!(offered & 1 << VIRTIO_NET_F_HOST_TSO6, 0);
    // Negotiating offloads issues TUNSETOFFLOAD, which the kernel accepts.
    d.init(offered, 2, 16);
    let host_mac = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap();
    assert_eq!(host_mac.trim().len(), 17);
    drop(d);
    // The interface was not made persistent: closing the fd removes it.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!std::path::Path::new(&format!("/sys/class/net/{name}")).exists());
}
