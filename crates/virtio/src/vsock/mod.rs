//! virtio-vsock with Firecracker's host-side convention: a Unix socket per VM.
//!
//! Host → guest: a host program connects to the Unix socket `socket` and writes
//! `CONNECT <port>\n`; the device asks the guest for a connection to `<port>` and, once the
//! guest accepts, answers `OK <host_port>\n`; then the stream carries the data.
//! Guest → host: a guest connection to host (CID 2) port P is connected to the Unix socket
//! `<socket>_<P>`.
//!
//! Either side may half-close: a host stream at end of file becomes a SHUTDOWN (send) for
//! the guest and the guest's reply still reaches the host; a guest SHUTDOWN (send) shuts
//! down the host stream's write side once the guest's data is written to it. A
//! connection ends with a reset when the guest closes it or the host stops reading.
//!
//! All host sockets are non-blocking and sit in the device's own epoll set, whose fd the
//! event loop watches as the device's extra fd; credit-based flow control (buf_alloc /
//! fwd_cnt) keeps the device from sending the guest more than it has room for.

mod host_connect;
pub mod packet;

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::chain::{ChainReader, ChainWriter, DescChain};
use crate::config::VsockConfig;
use crate::device::{read_config_bytes, DeviceContext, DeviceError, DeviceEvent, VirtioDevice};
use crate::vsock::packet::*;

pub const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
/// Receive buffer space per connection that the device advertises to the guest.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Most payload bytes in one packet the device sends.
const MAX_PKT_PAYLOAD: usize = 64 * 1024;
/// Longest `CONNECT <port>\n` line accepted.
const MAX_HANDSHAKE: usize = 32;
const LISTENER_TOKEN: u64 = 0;
/// Host ports the device assigns to host-initiated connections start here.
const FIRST_HOST_PORT: u32 = 1 << 30;

/// Why a vsock device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("cannot listen on vsock socket {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "vsock socket {} is in use or is not a socket: choose another path",
        .0.display()
    )]
    InUse(PathBuf),
    #[error("vsock epoll: {0}")]
    Epoll(std::io::Error),
}

#[derive(Debug, PartialEq, Eq)]
enum ConnState {
    /// Host initiated; waiting for the guest's RESPONSE.
    Connecting,
    Established,
}

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    state: ConnState,
    token: u64,
    /// The host stream has (or may have) data to read.
    host_readable: bool,
    /// The host stream reached end of file; the guest was told the host sends no more.
    host_eof: bool,
    /// The guest sends no more: shut down the host stream's write side once `to_host`
    /// is written.
    guest_eof: bool,
    /// The guest closed the connection: once `to_host` is written, reset and forget it.
    closing: bool,
    /// The host stream's write side is shut down (done once: each shutdown is a new
    /// epoll event, so repeating it would spin the event loop).
    host_write_shut: bool,
    /// Guest data not yet written to the host stream.
    to_host: Vec<u8>,
    /// Host data read but not yet sent to the guest (at most one packet's worth).
    from_host: Vec<u8>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes sent to the guest.
    rx_cnt: u32,
    /// Bytes received from the guest and passed on to the host.
    fwd_cnt: u32,
    /// `fwd_cnt` as last told to the guest.
    fwd_cnt_sent: u32,
}

impl Conn {
    fn new(stream: UnixStream, state: ConnState, token: u64) -> Self {
        Conn {
            stream,
            state,
            token,
            host_readable: true,
            host_eof: false,
            guest_eof: false,
            closing: false,
            host_write_shut: false,
            to_host: Vec::new(),
            from_host: Vec::new(),
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
        }
    }

    /// Bytes the guest still has room for.
    fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.rx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    /// Writes what the host stream takes of `to_host`. False if the stream is broken
    /// (the host closed its reading side).
    fn flush_to_host(&mut self) -> bool {
        while !self.to_host.is_empty() {
            match self.stream.write(&self.to_host) {
                Ok(0) => return false,
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }
}

/// (host port, guest port).
type Key = (u32, u32);

/// A host stream still sending its `CONNECT <port>\n` line.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

/// A virtio-vsock device.
pub struct Vsock {
    cid: u64,
    socket: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    conns: HashMap<Key, Conn>,
    handshakes: HashMap<u64, Handshake>,
    tokens: HashMap<u64, Key>,
    next_token: u64,
    next_host_port: u32,
    /// Control packets waiting for a guest receive buffer.
    control: VecDeque<Header>,
}

impl std::fmt::Debug for Vsock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vsock")
            .field("cid", &self.cid)
            .field("socket", &self.socket)
            .field("connections", &self.conns.len())
            .finish()
    }
}

impl Vsock {
    /// Listen on `cfg.socket` (replacing a stale socket file) for guest CID `cfg.cid`.
    /// A path that is not a socket, or a socket in use, is refused.
    pub fn new(cfg: &VsockConfig) -> Result<Self, VsockError> {
        let listen_err = |source| VsockError::Listen {
            path: cfg.socket.clone(),
            source,
        };
        if cfg.socket.exists() {
            // Only a stale socket is replaced: never another kind of file, nor a socket
            // something still listens on.
            use std::os::unix::fs::FileTypeExt;
            let is_socket = std::fs::symlink_metadata(&cfg.socket)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            if !is_socket || UnixStream::connect(&cfg.socket).is_ok() {
                return Err(VsockError::InUse(cfg.socket.clone()));
            }
            std::fs::remove_file(&cfg.socket).map_err(listen_err)?;
        }
        let listener = UnixListener::bind(&cfg.socket).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let epoll = Epoll::new().map_err(VsockError::Epoll)?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, LISTENER_TOKEN),
            )
            .map_err(VsockError::Epoll)?;
        Ok(Vsock {
            cid: u64::from(cfg.cid),
            socket: cfg.socket.clone(),
            listener,
            epoll,
            conns: HashMap::new(),
            handshakes: HashMap::new(),
            tokens: HashMap::new(),
            next_token: LISTENER_TOKEN + 1,
            next_host_port: FIRST_HOST_PORT,
            control: VecDeque::new(),
        })
    }

    fn watch(&mut self, stream: &UnixStream) -> Option<u64> {
        let token = self.next_token;
        self.next_token += 1;
        let ev = EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
        self.epoll
            .ctl(
                ControlOperation::Add,
                stream.as_raw_fd(),
                EpollEvent::new(ev, token),
            )
            .ok()?;
        Some(token)
    }

    fn unwatch(&mut self, stream: &UnixStream) {
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            stream.as_raw_fd(),
            EpollEvent::default(),
        );
    }

    fn header(&self, key: Key, op: u16) -> Header {
        let (fwd_cnt, flags) = self.conns.get(&key).map_or((0, 0), |c| (c.fwd_cnt, 0));
        Header {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: key.0,
            dst_port: key.1,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt,
        }
    }

    fn send_control(&mut self, key: Key, op: u16) {
        let h = self.header(key, op);
        if let Some(c) = self.conns.get_mut(&key) {
            c.fwd_cnt_sent = c.fwd_cnt;
        }
        self.control.push_back(h);
    }

    fn remove(&mut self, key: Key) {
        if let Some(c) = self.conns.remove(&key) {
            self.unwatch(&c.stream);
            self.tokens.remove(&c.token);
        }
    }

    fn reset_to_guest(&mut self, h: &Header) {
        self.control.push_back(Header {
            src_cid: HOST_CID,
            dst_cid: h.src_cid,
            src_port: h.dst_port,
            dst_port: h.src_port,
            type_: TYPE_STREAM,
            op: OP_RST,
            ..Header::default()
        });
    }

    /// One packet from the guest.
    fn guest_packet(&mut self, h: Header, payload: &[u8]) {
        if h.dst_cid != HOST_CID || h.src_cid != self.cid || h.type_ != TYPE_STREAM {
            if h.op != OP_RST {
                self.reset_to_guest(&h);
            }
            return;
        }
        let key = (h.dst_port, h.src_port);
        if h.op == OP_REQUEST {
            self.connect_to_host(key, &h);
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            if h.op != OP_RST {
                self.reset_to_guest(&h);
            }
            return;
        };
        conn.peer_buf_alloc = h.buf_alloc;
        conn.peer_fwd_cnt = h.fwd_cnt;
        match h.op {
            OP_RESPONSE if conn.state == ConnState::Connecting => {
                conn.state = ConnState::Established;
                // The socket buffer of a fresh connection always has room for one line.
                let line = format!("OK {}\n", key.0);
                if conn.stream.write_all(line.as_bytes()).is_err() {
                    self.send_control(key, OP_RST);
                    self.remove(key);
                }
            }
            OP_RW if conn.state == ConnState::Established => {
                let room = BUF_ALLOC as usize - conn.to_host.len().min(BUF_ALLOC as usize);
                if payload.len() > room {
                    // The guest ignored our credit: drop the connection.
                    self.send_control(key, OP_RST);
                    self.remove(key);
                    return;
                }
                conn.to_host.extend_from_slice(payload);
                self.flush_and_settle(key);
            }
            OP_SHUTDOWN => {
                // Data the guest sent before shutting down still reaches the host first.
                if h.flags & SHUTDOWN_SEND != 0 {
                    conn.guest_eof = true;
                }
                if h.flags & (SHUTDOWN_SEND | SHUTDOWN_RCV) == SHUTDOWN_SEND | SHUTDOWN_RCV {
                    conn.closing = true;
                }
                self.flush_and_settle(key);
            }
            OP_RST => self.remove(key),
            OP_CREDIT_REQUEST => self.send_control(key, OP_CREDIT_UPDATE),
            OP_CREDIT_UPDATE => {}
            _ => {
                self.send_control(key, OP_RST);
                self.remove(key);
            }
        }
    }

    /// Writes pending guest data to the host stream, then does what waited for it: shut
    /// down the host's write side after the guest's SHUTDOWN, reset after the guest's
    /// close; tells the guest about freed buffer space.
    fn flush_and_settle(&mut self, key: Key) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if !conn.flush_to_host() {
            self.send_control(key, OP_RST);
            self.remove(key);
            return;
        }
        if !conn.to_host.is_empty() {
            // The rest is written when the host stream has room (its epoll event).
            if conn.fwd_cnt.wrapping_sub(conn.fwd_cnt_sent) >= BUF_ALLOC / 4 {
                self.send_control(key, OP_CREDIT_UPDATE);
            }
            return;
        }
        if conn.guest_eof && !conn.host_write_shut {
            conn.host_write_shut = true;
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        }
        if conn.closing {
            self.send_control(key, OP_RST);
            self.remove(key);
        } else if conn.fwd_cnt.wrapping_sub(conn.fwd_cnt_sent) >= BUF_ALLOC / 4 {
            self.send_control(key, OP_CREDIT_UPDATE);
        }
    }

    /// The guest connects to host port `key.0`: connect to `<socket>_<port>`.
    fn connect_to_host(&mut self, key: Key, h: &Header) {
        if self.conns.contains_key(&key) {
            self.reset_to_guest(h);
            return;
        }
        let mut path = self.socket.clone().into_os_string();
        path.push(format!("_{}", key.0));
        let stream = match host_connect::connect_nonblocking(Path::new(&path)) {
            Ok(s) => s,
            Err(_) => {
                self.reset_to_guest(h);
                return;
            }
        };
        let Some(token) = self.watch(&stream) else {
            self.reset_to_guest(h);
            return;
        };
        let mut conn = Conn::new(stream, ConnState::Established, token);
        // Freshly connected: nothing to read until epoll says so (a read now would only
        // find nothing and waste one of the guest's receive buffers).
        conn.host_readable = false;
        conn.peer_buf_alloc = h.buf_alloc;
        conn.peer_fwd_cnt = h.fwd_cnt;
        self.conns.insert(key, conn);
        self.tokens.insert(token, key);
        self.send_control(key, OP_RESPONSE);
    }

    /// Accept host connections and advance handshakes and readability from the epoll set.
    fn poll_host(&mut self) {
        let mut events = vec![EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if n == 0 {
                return;
            }
            for ev in &events[..n] {
                let token = ev.data();
                if token == LISTENER_TOKEN {
                    self.accept_all();
                } else if self.handshakes.contains_key(&token) {
                    self.advance_handshake(token);
                } else if let Some(key) = self.tokens.get(&token).copied() {
                    if let Some(c) = self.conns.get_mut(&key) {
                        let readable = EventSet::IN
                            | EventSet::READ_HANG_UP
                            | EventSet::HANG_UP
                            | EventSet::ERROR;
                        if ev.event_set().intersects(readable) {
                            c.host_readable = true;
                        }
                        self.flush_and_settle(key);
                    }
                }
            }
        }
    }

    fn accept_all(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if let Some(token) = self.watch(&stream) {
                self.handshakes.insert(
                    token,
                    Handshake {
                        stream,
                        line: Vec::new(),
                    },
                );
                self.advance_handshake(token);
            }
        }
    }

    fn advance_handshake(&mut self, token: u64) {
        let Some(hs) = self.handshakes.get_mut(&token) else {
            return;
        };
        let mut byte = [0u8; 1];
        // Byte by byte, so no data after the line is consumed here.
        let done = loop {
            match hs.stream.read(&mut byte) {
                Ok(0) => break Err(()),
                Ok(_) if byte[0] == b'\n' => break Ok(()),
                Ok(_) if hs.line.len() < MAX_HANDSHAKE => hs.line.push(byte[0]),
                Ok(_) => break Err(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break Err(()),
            }
        };
        let Some(hs) = self.handshakes.remove(&token) else {
            return;
        };
        let port = std::str::from_utf8(&hs.line)
            .ok()
            .and_then(|l| l.strip_prefix("CONNECT "))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let (Ok(()), Some(port)) = (done, port) else {
            self.unwatch(&hs.stream);
            return;
        };
        let host_port = self.allocate_host_port(port);
        let key = (host_port, port);
        self.tokens.insert(token, key);
        self.conns
            .insert(key, Conn::new(hs.stream, ConnState::Connecting, token));
        self.send_control(key, OP_REQUEST);
    }

    fn allocate_host_port(&mut self, guest_port: u32) -> u32 {
        loop {
            let p = self.next_host_port;
            self.next_host_port = self
                .next_host_port
                .checked_add(1)
                .unwrap_or(FIRST_HOST_PORT);
            if !self.conns.contains_key(&(p, guest_port)) {
                return p;
            }
        }
    }

    fn process_tx(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let mut packets = Vec::new();
        ctx.for_each_chain(TX, |ram, chain| {
            let Ok(chain) = chain else { return 0 };
            let mut r = ChainReader::new(ram, &chain.readable);
            let mut hb = [0u8; HDR_LEN];
            if r.read(&mut hb) != Ok(HDR_LEN) {
                return 0; // Too short to be a packet: dropped.
            }
            let h = Header::parse(&hb);
            let len = (h.len as usize).min(MAX_PKT_PAYLOAD);
            if u64::from(h.len) > r.remaining() || h.len as usize > MAX_PKT_PAYLOAD {
                packets.push((Header { op: 0, ..h }, Vec::new()));
                return 0;
            }
            let mut payload = vec![0u8; len];
            if r.read(&mut payload) != Ok(len) {
                return 0;
            }
            packets.push((h, payload));
            0
        })?;
        for (h, payload) in packets {
            self.guest_packet(h, &payload);
        }
        Ok(())
    }

    /// Fill guest receive buffers: control packets first, then host data within credit.
    fn process_rx(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        loop {
            if let Some(h) = self.control.front().copied() {
                let Some(head) = ctx.pop(RX)? else {
                    return Ok(());
                };
                self.control.pop_front();
                let len = write_packet(ctx, head, &h, &[]);
                ctx.complete(RX, head, len)?;
                continue;
            }
            let Some(key) = self
                .conns
                .iter()
                .find(|(_, c)| {
                    c.state == ConnState::Established
                        && c.peer_credit() > 0
                        && (!c.from_host.is_empty() || (c.host_readable && !c.host_eof))
                })
                .map(|(k, _)| *k)
            else {
                return Ok(());
            };
            // Read before taking a guest buffer, so none is used up for nothing.
            if !self.fill_from_host(key) {
                continue;
            }
            let Some(head) = ctx.pop(RX)? else {
                return Ok(());
            };
            let (table, size) = ctx.table(RX);
            let room = DescChain::walk(ctx.ram, table, size, head)
                .map(|c| c.writable_len().saturating_sub(HDR_LEN as u64))
                .unwrap_or(0);
            let Some(conn) = self.conns.get(&key) else {
                return Ok(());
            };
            let n = usize::try_from(room)
                .unwrap_or(usize::MAX)
                .min(conn.from_host.len())
                .min(conn.peer_credit() as usize);
            if n == 0 {
                // A broken or too small buffer: give it back unused, try the next one.
                ctx.complete(RX, head, 0)?;
                continue;
            }
            let mut h = self.header(key, OP_RW);
            h.len = n as u32;
            let Some(conn) = self.conns.get_mut(&key) else {
                return Ok(());
            };
            let len = write_packet(ctx, head, &h, &conn.from_host[..n]);
            ctx.complete(RX, head, len)?;
            conn.from_host.drain(..n);
            conn.rx_cnt = conn.rx_cnt.wrapping_add(n as u32);
            conn.fwd_cnt_sent = conn.fwd_cnt;
        }
    }

    /// Makes sure `key`'s connection has host data waiting for the guest, reading the host
    /// stream if needed (at most what the guest has room for). False if there is none: the
    /// stream is drained, at its end (a SHUTDOWN for the guest is queued) or broken (a
    /// reset is queued and the connection forgotten).
    fn fill_from_host(&mut self, key: Key) -> bool {
        let Some(conn) = self.conns.get_mut(&key) else {
            return false;
        };
        if !conn.from_host.is_empty() {
            return true;
        }
        let want = MAX_PKT_PAYLOAD.min(conn.peer_credit() as usize);
        conn.from_host.resize(want, 0);
        let result = conn.stream.read(&mut conn.from_host);
        let n = *result.as_ref().unwrap_or(&0);
        conn.from_host.truncate(n);
        match result {
            Ok(0) => {
                // The host sends no more (it may still read: a half-close). Tell the
                // guest; the connection ends when the guest closes it or the host stops
                // reading.
                conn.host_eof = true;
                conn.host_readable = false;
                let mut h = self.header(key, OP_SHUTDOWN);
                h.flags = SHUTDOWN_SEND;
                self.control.push_back(h);
                false
            }
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::Interrupted => false,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                conn.host_readable = false;
                false
            }
            Err(_) => {
                self.send_control(key, OP_RST);
                self.remove(key);
                false
            }
        }
    }
}

/// Write header and payload into the receive chain `head`; returns the bytes written.
fn write_packet(ctx: &mut DeviceContext<'_>, head: u16, h: &Header, payload: &[u8]) -> u32 {
    let (table, size) = ctx.table(RX);
    let Ok(chain) = DescChain::walk(ctx.ram, table, size, head) else {
        return 0;
    };
    if chain.writable_len() < (HDR_LEN + payload.len()) as u64 {
        return 0;
    }
    let mut w = ChainWriter::new(ctx.ram, &chain.writable);
    if w.write(&h.bytes()).is_err() || w.write(payload).is_err() {
        return 0;
    }
    w.written() as u32
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        // rx, tx, event.
        vec![QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        0
    }

    fn config_len(&self) -> usize {
        8
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }

    fn reset(&mut self) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for k in keys {
            self.remove(k);
        }
        for (_, hs) in std::mem::take(&mut self.handshakes) {
            self.unwatch(&hs.stream);
        }
        self.tokens.clear();
        self.control.clear();
    }

    fn handle(
        &mut self,
        event: DeviceEvent,
        ctx: &mut DeviceContext<'_>,
    ) -> Result<(), DeviceError> {
        match event {
            DeviceEvent::Queue(TX) => self.process_tx(ctx)?,
            // Also catches host connections that arrived before the driver was ready.
            DeviceEvent::Queue(RX) => self.poll_host(),
            DeviceEvent::Extra(0) => self.poll_host(),
            _ => return Ok(()),
        }
        self.process_rx(ctx)
    }

    fn extra_fds(&self) -> Vec<RawFd> {
        vec![self.epoll.as_raw_fd()]
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests;
