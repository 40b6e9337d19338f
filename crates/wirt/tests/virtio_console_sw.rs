//! End-to-end on the software engine: the default guest's virtio console (/dev/hvc0)
//! with `--virtio-console file:PATH` (output reaches the file) and `socket:PATH` (both
//! directions through a Unix socket).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Run, Scratch};

const LIMIT: Duration = common::GUEST_LIMIT;

/// Waits (bounded) for the console device node; the driver probes asynchronously.
const WAIT_FOR_HVC0: &str =
    "i=0; while [ ! -c /dev/hvc0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n";

fn boot_with_console(script: &str, backend: &str) -> Run {
    common::boot_default_guest(script, &["--virtio-console", backend])
}

#[test]
fn guest_output_on_hvc0_reaches_the_host_file() {
    let dir = Scratch::new("hvc-file");
    let log = dir.path("hvc0.log");
    let script = format!(
        "{WAIT_FOR_HVC0}\
         echo hello-from-hvc0 > /dev/hvc0 && echo written\n\
         seq 1 3000 > /dev/hvc0\n"
    );
    let r = boot_with_console(&script, &format!("file:{}", log.display()));
    let written = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(r.status, 0, "{r:?}");
    let out = image::cmdline::script_output(&r.stdout).expect("script output");
    assert!(out.contains("written\n"), "{out}");
    // The tty turns \n into \r\n on output.
    let written = written.replace("\r\n", "\n");
    assert!(written.contains("hello-from-hvc0\n"), "{written:?}");
    let seq: String = (1..=3000).map(|i| format!("{i}\n")).collect();
    assert!(written.contains(&seq), "all of seq 1 3000 in order");
    assert!(
        !out.contains("hello-from-hvc0"),
        "hvc0 output is not on the serial console"
    );
}

/// Connects to the console socket once wirt has created it.
fn connect(path: &Path) -> UnixStream {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(s) = UnixStream::connect(path) {
            return s;
        }
        assert!(Instant::now() < deadline, "no console socket at {path:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_socket_client_talks_with_the_guest_over_hvc0() {
    let dir = Scratch::new("hvc-sock");
    let socket = dir.path("hvc0.sock");
    let client = {
        let socket = socket.clone();
        std::thread::spawn(move || {
            let mut s = connect(&socket);
            s.set_read_timeout(Some(LIMIT)).unwrap();
            // Wait for the guest's greeting, then type a line.
            let mut seen = Vec::new();
            let mut buf = [0u8; 256];
            while !String::from_utf8_lossy(&seen).contains("hello-host") {
                let n = s.read(&mut buf).expect("read the console");
                assert!(n > 0, "console closed before the greeting: {seen:?}");
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"typed-into-hvc0\n").unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        })
    };
    // The guest repeats its greeting until the client is there (output written while no
    // client is connected is dropped), then reads one line.
    let script = format!(
        "{WAIT_FOR_HVC0}\
         exec 3<>/dev/hvc0\n\
         stty -echo <&3\n\
         ( while :; do echo hello-host >&3; sleep 0.5; done ) &\n\
         read -r line <&3; kill $!\n\
         echo got=$line\n"
    );
    let r = boot_with_console(&script, &format!("socket:{}", socket.display()));
    let seen = client.join().unwrap();
    assert_eq!(r.status, 0, "{r:?}");
    assert!(seen.contains("hello-host"), "{seen:?}");
    let out = image::cmdline::script_output(&r.stdout).expect("script output");
    assert!(out.contains("got=typed-into-hvc0\n"), "{out}");
}
