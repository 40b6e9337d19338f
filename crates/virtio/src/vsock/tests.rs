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
        self.recv_in(4096)
    }

    /// Like `recv`, with a receive buffer of `size` bytes.
    fn recv_in(&mut self, size: u32) -> (Header, Vec<u8>) {
        let buf = self.d.alloc(u64::from(size));
        self.d.add_chain(RX, &[w(buf, size)]);
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

    // The host closes: the guest is told the host sends no more; when the guest closes
    // too, the device resets the connection and forgets it.
    drop(host);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
    g.send(
        Header {
            flags: SHUTDOWN_RCV | SHUTDOWN_SEND,
            ..g.packet(1234, host_port, OP_SHUTDOWN)
        },
        &[],
    );
    assert_eq!(g.recv().0.op, OP_RST);
    g.send(g.packet(1234, host_port, OP_RW), b"late");
    assert_eq!(g.recv().0.op, OP_RST, "the connection is gone");
}

/// Connects from the host to guest port `port`; returns the host stream and host port.
fn host_connect(g: &mut Guest, port: u32) -> (UnixStream, u32) {
    let mut host = UnixStream::connect(&g.socket).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.write_all(format!("CONNECT {port}\n").as_bytes())
        .unwrap();
    let (req, _) = g.recv();
    assert_eq!((req.op, req.dst_port), (OP_REQUEST, port));
    g.send(g.packet(port, req.src_port, OP_RESPONSE), &[]);
    let mut line = [0u8; 3];
    host.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"OK ");
    let mut rest = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        host.read_exact(&mut byte).unwrap();
        rest.push(byte[0]);
    }
    (host, req.src_port)
}

#[test]
fn a_host_half_close_still_carries_the_guest_reply() {
    let mut g = setup("half");
    let (mut host, host_port) = host_connect(&mut g, 7);
    // The host sends a request and shuts down its write side, as `nc -N` does.
    host.write_all(b"question").unwrap();
    host.shutdown(std::net::Shutdown::Write).unwrap();
    let (h, data) = g.recv();
    assert_eq!((h.op, data.as_slice()), (OP_RW, &b"question"[..]));
    let (h, _) = g.recv();
    assert_eq!((h.op, h.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
    // The guest answers, then shuts down sending: the host reads the answer, then EOF.
    g.send(g.packet(7, host_port, OP_RW), b"answer");
    g.send(
        Header {
            flags: SHUTDOWN_SEND,
            ..g.packet(7, host_port, OP_SHUTDOWN)
        },
        &[],
    );
    let mut got = Vec::new();
    host.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"answer");
}

#[test]
fn guest_data_before_its_shutdown_reaches_the_host_in_order() {
    let mut g = setup("order");
    let mut port_path = g.socket.clone().into_os_string();
    port_path.push("_5001");
    let listener = UnixListener::bind(&port_path).unwrap();
    g.send(g.packet(1000, 5001, OP_REQUEST), &[]);
    assert_eq!(g.recv().0.op, OP_RESPONSE);
    let (mut host, _) = listener.accept().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // More than the host socket buffer holds, so part of it waits in the device.
    let big: Vec<u8> = (0..BUF_ALLOC as usize).map(|i| (i % 251) as u8).collect();
    for chunk in big.chunks(MAX_PKT_PAYLOAD) {
        g.send(g.packet(1000, 5001, OP_RW), chunk);
    }
    g.send(
        Header {
            flags: SHUTDOWN_RCV | SHUTDOWN_SEND,
            ..g.packet(1000, 5001, OP_SHUTDOWN)
        },
        &[],
    );
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        host.read_to_end(&mut got).unwrap();
        got
    });
    // The device resets the connection only once everything reached the host (the
    // guest's buffers are posted here; the credit updates come first).
    loop {
        let (h, _) = g.recv();
        if h.op == OP_RST {
            break;
        }
        assert_eq!(h.op, OP_CREDIT_UPDATE);
    }
    assert!(
        reader.join().unwrap() == big,
        "every byte, in order, then EOF"
    );
    let _ = std::fs::remove_file(&port_path);
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

#[test]
fn host_data_larger_than_a_guest_buffer_arrives_in_pieces() {
    let mut g = setup("split");
    let mut port_path = g.socket.clone().into_os_string();
    port_path.push("_5002");
    let listener = UnixListener::bind(&port_path).unwrap();
    g.send(g.packet(1001, 5002, OP_REQUEST), &[]);
    assert_eq!(g.recv().0.op, OP_RESPONSE);
    let (mut host, _) = listener.accept().unwrap();
    let data: Vec<u8> = (0..100u8).collect();
    host.write_all(&data).unwrap();
    // Room for the header and 20 bytes: the rest waits for the next buffer.
    let (h, first) = g.recv_in(HDR_LEN as u32 + 20);
    assert_eq!((h.op, first.len()), (OP_RW, 20));
    let (h, rest) = g.recv();
    assert_eq!(h.op, OP_RW);
    assert_eq!([first, rest].concat(), data);
    let _ = std::fs::remove_file(&port_path);
}

#[test]
fn only_a_stale_socket_is_replaced() {
    let dir = std::env::temp_dir().join(format!("wirt-vsock-inuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = |p: &std::path::Path| -> VsockConfig {
        format!("cid=3,socket={}", p.display()).parse().unwrap()
    };
    // A regular file is never deleted.
    let file = dir.join("notes.txt");
    std::fs::write(&file, b"keep me").unwrap();
    assert!(matches!(Vsock::new(&cfg(&file)), Err(VsockError::InUse(_))));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    // A live socket (another VM's) is not taken over; a stale one is.
    let sock = dir.join("v.sock");
    let live = Vsock::new(&cfg(&sock)).unwrap();
    assert!(matches!(Vsock::new(&cfg(&sock)), Err(VsockError::InUse(_))));
    drop(live);
    // A socket file nobody listens on any more (left by a crashed wirt) is replaced.
    let stale = UnixListener::bind(dir.join("other.sock")).unwrap();
    drop(stale);
    assert!(Vsock::new(&cfg(&dir.join("other.sock"))).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_guest_port_nobody_listens_on_closes_the_host_stream() {
    let mut g = setup("nolisten");
    let mut host = UnixStream::connect(&g.socket).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.write_all(b"CONNECT 4242\n").unwrap();
    let (req, _) = g.recv();
    assert_eq!((req.op, req.dst_port), (OP_REQUEST, 4242));
    // The guest has no listener on 4242 and resets: the host sees EOF, no "OK" line.
    g.send(g.packet(4242, req.src_port, OP_RST), &[]);
    let mut got = Vec::new();
    host.read_to_end(&mut got).unwrap();
    assert!(got.is_empty(), "{got:?}");
}
