//! Connecting to a host program's Unix socket without blocking the event loop.
//!
//! A plain connect(2) on a Unix stream socket waits while the listener's accept backlog is
//! full, so a guest opening connections to a host program that does not accept them could
//! stall every virtio device on the loop. A non-blocking connect fails with `WouldBlock`
//! instead; the device then refuses the guest's request.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};

/// A connected, non-blocking stream to the socket at `path`, or the reason there is none
/// (`WouldBlock` when the listener has no room for another pending connection).
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let addr = SockAddr::unix(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&addr)?;
    Ok(UnixStream::from(OwnedFd::from(socket)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn connects_and_never_waits_for_a_full_backlog() {
        let dir = std::env::temp_dir().join(format!("wirt-hc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.sock");
        // A backlog of one, so it fills up quickly.
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        socket.bind(&SockAddr::unix(&path).unwrap()).unwrap();
        socket.listen(1).unwrap();
        let listener = UnixListener::from(OwnedFd::from(socket));
        let mut first = connect_nonblocking(&path).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        first.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        accepted.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        // Nobody accepts any more: connecting keeps returning (at some point with
        // WouldBlock) instead of hanging.
        let mut pending = Vec::new();
        let refused = (0..64).find_map(|_| match connect_nonblocking(&path) {
            Ok(s) => {
                pending.push(s);
                None
            }
            Err(e) => Some(e),
        });
        let e = refused.expect("a full backlog refuses");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        assert!(connect_nonblocking(&dir.join("none.sock")).is_err());
        drop((pending, listener));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
