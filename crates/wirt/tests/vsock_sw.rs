//! End-to-end on the software engine: virtio-vsock between the default guest's
//! `/bin/vsock` (guest/tools/vsock.c) and Unix sockets on the host, with Firecracker's
//! convention: the guest reaches host port P at `<socket>_P`; the host reaches a guest
//! port by connecting to `<socket>` and sending `CONNECT <port>\n`.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Run, Scratch};

const LIMIT: Duration = common::GUEST_LIMIT;
const GUEST_CID: &str = "3";

/// Boots the default guest with a vsock device on `socket`, runs `script`.
fn boot_with_vsock(script: &str, socket: &Path) -> Run {
    let vsock = format!("cid={GUEST_CID},socket={}", socket.display());
    common::boot_default_guest(script, &["--vsock", &vsock])
}

/// What `seq 1 n` prints.
fn seq(n: u32) -> Vec<u8> {
    (1..=n)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Accepts `count` connections on `listener`, one after another; each is echoed back
/// until the guest shuts down its sending side. Returns what each connection carried.
fn echo_server(listener: UnixListener, count: usize) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut carried = Vec::new();
        for _ in 0..count {
            let (mut conn, _) = listener.accept().expect("the guest connects");
            conn.set_read_timeout(Some(LIMIT)).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                let n = conn.read(&mut buf).expect("read from the guest");
                if n == 0 {
                    break;
                }
                conn.write_all(&buf[..n]).expect("echo to the guest");
                got.extend_from_slice(&buf[..n]);
            }
            carried.push(got);
        }
        carried
    })
}

#[test]
fn the_guest_connects_to_a_host_socket_and_reads_the_echo() {
    let dir = Scratch::new("vsock-g2h");
    let socket = dir.path("v.sock");
    let listener = UnixListener::bind(dir.path("v.sock_5000")).unwrap();
    let server = echo_server(listener, 2);
    // One line, then 108 KB (more than one packet, and more than the guest's initial
    // receive buffers hold) whose echo is checked by hash; then a port nobody listens on.
    let script = "echo hello-from-guest | vsock connect 2 5000; echo status=$?\n\
                  seq 1 20000 | vsock connect 2 5000 | sha256sum\n\
                  vsock connect 2 5999 </dev/null; echo refused=$?\n";
    let r = boot_with_vsock(script, &socket);
    let carried = server.join().unwrap();
    assert_eq!(r.status, 0, "{r:?}");
    let out = image::cmdline::script_output(&r.stdout).expect("script output");
    assert!(out.contains("hello-from-guest\nstatus=0\n"), "{out}");
    let expected = seq(20000);
    assert!(
        out.contains(&sha256_hex(&expected)),
        "echo of seq 1 20000: {out}"
    );
    assert!(out.contains("refused=1\n"), "{out}");
    assert_eq!(carried[0], b"hello-from-guest\n");
    assert!(carried[1] == expected, "the host got seq 1 20000 intact");
}

/// Connects to the guest's `port` through `socket`, retrying until the guest listens
/// (until then the guest resets the request and the device closes the stream).
fn connect_to_guest(socket: &Path, port: u32) -> (UnixStream, String) {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        if let Ok(mut s) = UnixStream::connect(socket) {
            s.set_read_timeout(Some(LIMIT)).unwrap();
            s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
            // Byte by byte: the data after the line belongs to the caller.
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while let Ok(1) = s.read(&mut byte) {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    return (s, String::from_utf8_lossy(&line).into_owned());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the guest never accepted a connection on port {port}");
}

#[test]
fn the_host_connects_to_a_guest_listener_and_gets_its_echo() {
    let dir = Scratch::new("vsock-h2g");
    let socket = dir.path("v.sock");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let host = {
        let (socket, payload) = (socket.clone(), payload.clone());
        std::thread::spawn(move || {
            let (mut stream, ok_line) = connect_to_guest(&socket, 6000);
            // Write and read at once: the guest echoes while it still receives.
            let mut writer = stream.try_clone().unwrap();
            let w = std::thread::spawn(move || {
                writer.write_all(&payload).unwrap();
                writer.shutdown(std::net::Shutdown::Write).unwrap();
            });
            let mut echoed = Vec::new();
            stream.read_to_end(&mut echoed).unwrap();
            w.join().unwrap();
            // `vsock listen`: the guest sends its stdin, then reads until the host is done.
            let (mut stream, _) = connect_to_guest(&socket, 6001);
            let mut from_guest = Vec::new();
            stream.read_to_end(&mut from_guest).unwrap();
            stream.write_all(b"reply-from-host\n").unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            (ok_line, echoed, from_guest)
        })
    };
    let script = "vsock echo 6000 2>/tmp/listening &\n\
                  echoer=$!\n\
                  echo hello-from-listener | vsock listen 6001 >/tmp/reply 2>/dev/null &\n\
                  listener=$!\n\
                  wait $echoer; echo echo-status=$?\n\
                  wait $listener; echo listen-status=$?\n\
                  cat /tmp/listening /tmp/reply\n";
    let r = boot_with_vsock(script, &socket);
    let (ok_line, echoed, from_guest) = host.join().unwrap();
    assert_eq!(r.status, 0, "{r:?}");
    let out = image::cmdline::script_output(&r.stdout).expect("script output");
    assert!(out.contains("echo-status=0\n"), "{out}");
    assert!(out.contains("vsock: listening on port 6000\n"), "{out}");
    let host_port = ok_line
        .strip_prefix("OK ")
        .and_then(|p| p.trim_end().parse::<u32>().ok());
    assert!(host_port.is_some(), "handshake reply {ok_line:?}");
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the echo is the payload, in order");
    assert_eq!(from_guest, b"hello-from-listener\n");
    assert!(out.contains("listen-status=0\n"), "{out}");
    assert!(out.contains("\nreply-from-host\n"), "{out}");
}
