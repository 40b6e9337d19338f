//! virtio-vsock with the test driver as the guest and real Unix sockets as the host side.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use super::*;
use crate::test_driver::{r, w, TestDriver};

const GUEST_CID: u64 = 3;

struct Guest {
    d: TestDriver,
    socket: PathBuf,
}

fn setup(name: &str) -> Guest {
    let socket =
        std::env::temp_dir().join(format!("wirt-vsock-{}-{name}.sock", std::process::id()));
    let cfg: VsockConfig = format!("cid={GUEST_CID},socket={}", socket.display())
        .parse()
        .unwrap();
    let mut d = TestDriver::new(Box::new(Vsock::new(&cfg).unwrap()));
    d.init(0, 3, 64);
    let mut cid = [0u8; 8];
    devices::legacy::bus::BusDevice::read(&*d.transport, 0x100, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), GUEST_CID);
    Guest { d, socket }
}

impl Guest {
    /// Post a receive buffer and wait for the packet the device puts in it.
    fn recv(&mut self) -> (Header, Vec<u8>) {
        let buf = self.d.alloc(4096);
        self.d.add_chain(RX, &[w(buf, 4096)]);
        self.d.kick(RX);
        let (_, len) = self.d.wait_used(RX).expect("a packet for the guest");
        assert!(len as usize >= HDR_LEN, "used length {len}");
        let bytes = self.d.read_mem(buf, len as usize);
        let h = Header::parse(bytes[..HDR_LEN].try_into().unwrap());
        assert_eq!(h.len as usize, len as usize - HDR_LEN);
        (h, bytes[HDR_LEN..].to_vec())
    }

    fn send(&mut self, h: Header, payload: &[u8]) {
        let hb = self.d.alloc(HDR_LEN as u64);
        self.d.write_mem(
            hb,
            &Header {
                len: payload.len() as u32,
                ..h
            }
            .bytes(),
        );
        let mut bufs = vec![r(hb, HDR_LEN as u32)];
        if !payload.is_empty() {
            let p = self.d.alloc(payload.len() as u64);
            self.d.write_mem(p, payload);
            bufs.push(r(p, payload.len() as u32));
        }
        assert_eq!(self.d.request(TX, &bufs), 0);
    }

    fn packet(&self, src_port: u32, dst_port: u32, op: u16) -> Header {
        Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            type_: TYPE_STREAM,
            op,
            buf_alloc: 65536,
            ..Header::default()
        }
    }
}

#[test]
fn host_connects_to_guest() {
    let mut g = setup("h2g");
    let mut host = UnixStream::connect(&g.socket).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.write_all(b"CONNECT 1234\n").unwrap();

    let (req, _) = g.recv();
    assert_eq!(
        (req.op, req.src_cid, req.dst_cid, req.dst_port),
        (OP_REQUEST, HOST_CID, GUEST_CID, 1234)
    );
    let host_port = req.src_port;
    g.send(g.packet(1234, host_port, OP_RESPONSE), &[]);
    let mut line = String::new();
    BufReader::new(&host).read_line(&mut line).unwrap();
    assert_eq!(line, format!("OK {host_port}\n"));

    // Host -> guest data.
    host.write_all(b"ping").unwrap();
    let (h, data) = g.recv();
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RW, host_port, 1234));
    assert_eq!(data, b"ping");
    // Guest -> host data.
    g.send(g.packet(1234, host_port, OP_RW), b"pong");
    let mut got = [0u8; 4];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    // A credit request is answered with our counters.
    g.send(g.packet(1234, host_port, OP_CREDIT_REQUEST), &[]);
    let (h, _) = g.recv();
    assert_eq!(
        (h.op, h.buf_alloc, h.fwd_cnt),
        (OP_CREDIT_UPDATE, BUF_ALLOC, 4)
    );

    // The host closes: the guest is told to shut down.
    drop(host);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.flags), (OP_SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND));
}

#[test]
fn guest_connects_to_host() {
    let mut g = setup("g2h");
    let mut port_path = g.socket.clone().into_os_string();
    port_path.push("_5000");
    let listener = UnixListener::bind(&port_path).unwrap();

    g.send(g.packet(999, 5000, OP_REQUEST), &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RESPONSE, 5000, 999));
    let (mut host, _) = listener.accept().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    g.send(g.packet(999, 5000, OP_RW), b"hello host");
    let mut got = [0u8; 10];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello host");
    host.write_all(b"hi").unwrap();
    let (h, data) = g.recv();
    assert_eq!((h.op, data.as_slice()), (OP_RW, &b"hi"[..]));

    // No listener on port 6000: reset. A packet for no connection: reset.
    g.send(g.packet(998, 6000, OP_REQUEST), &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.dst_port), (OP_RST, 998));
    g.send(g.packet(997, 5000, OP_RW), b"x");
    assert_eq!(g.recv().0.op, OP_RST);
    // Malformed: a header too short is dropped; a wrong source CID is reset; the device
    // keeps serving the established connection.
    let short = g.d.alloc(10);
    assert_eq!(g.d.request(TX, &[r(short, 10)]), 0);
    g.send(
        Header {
            src_cid: 77,
            ..g.packet(999, 5000, OP_RW)
        },
        b"bad",
    );
    assert_eq!(g.recv().0.op, OP_RST);
    g.send(g.packet(999, 5000, OP_RW), b"still");
    let mut got = [0u8; 5];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still");
    let _ = std::fs::remove_file(&port_path);
}

#[test]
fn bad_handshake_is_closed() {
    let g = setup("bad");
    let mut host = UnixStream::connect(&g.socket).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.write_all(b"HELLO there\n").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(host.read(&mut buf).unwrap(), 0, "closed without a reply");
}
