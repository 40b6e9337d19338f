//! The host side of the guest's consoles: where the output of the serial console (COM1)
//! goes and where its input comes from, per `--serial stdio|file:PATH|socket:PATH|null`;
//! the same backends (but stdio) serve the virtio console (hvc0, `--virtio-console`).
//!
//! Input is read on its own thread and handed to a `deliver` function that blocks until
//! the UART has taken the bytes, so nothing typed or piped is dropped when the guest
//! reads slowly.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::SerialConfig;
use crate::outcome::{Outcome, StopReason};
use crate::terminal::{self, EscapeParser, RawMode, Typed};

/// Hands guest input to the UART; blocks until all bytes are taken or the VM stops.
pub type Deliver = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// An open console backend.
pub struct Console {
    output: Box<dyn Write + Send>,
    input: Input,
    /// Keeps the terminal raw while the VM runs; restores it when dropped.
    _raw: Option<RawMode>,
    /// The socket path to remove at the end.
    socket_path: Option<PathBuf>,
}

enum Input {
    None,
    Stdin { tty: bool },
    Socket(Arc<SocketConsole>, UnixListener),
}

impl Console {
    pub fn open(cfg: &SerialConfig) -> Result<Console, ConsoleError> {
        match cfg {
            SerialConfig::Stdio => {
                let tty = terminal::is_tty(libc::STDIN_FILENO);
                let raw = if tty {
                    RawMode::enable(libc::STDIN_FILENO).map_err(ConsoleError::Terminal)?
                } else {
                    None
                };
                Ok(Console {
                    output: Box::new(Stdout),
                    input: Input::Stdin { tty },
                    _raw: raw,
                    socket_path: None,
                })
            }
            SerialConfig::File(path) => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| ConsoleError::File {
                        path: path.clone(),
                        source,
                    })?;
                Ok(Console {
                    output: Box::new(f),
                    input: Input::None,
                    _raw: None,
                    socket_path: None,
                })
            }
            SerialConfig::Socket(path) => {
                let listener = bind_socket(path)?;
                let shared = Arc::new(SocketConsole::default());
                Ok(Console {
                    output: Box::new(SocketWriter(shared.clone())),
                    input: Input::Socket(shared, listener),
                    _raw: None,
                    socket_path: Some(path.clone()),
                })
            }
            SerialConfig::Null => Ok(Console {
                output: Box::new(io::sink()),
                input: Input::None,
                _raw: None,
                socket_path: None,
            }),
        }
    }

    /// The writer the UART sends guest output to.
    pub fn take_output(&mut self) -> Box<dyn Write + Send> {
        std::mem::replace(&mut self.output, Box::new(io::sink()))
    }

    /// Starts the input thread (if this backend has input).
    ///
    /// `eof_byte`: sent to the guest when piped (non-terminal) stdin ends, e.g. Ctrl-D so
    /// a guest shell reading the console sees end of input.
    pub fn start_input(
        &mut self,
        deliver: Deliver,
        outcome: Arc<Outcome>,
        eof_byte: Option<u8>,
    ) -> io::Result<()> {
        match std::mem::replace(&mut self.input, Input::None) {
            Input::None => Ok(()),
            Input::Stdin { tty } => {
                std::thread::Builder::new()
                    .name("console-in".into())
                    .spawn(move || stdin_loop(tty, deliver, outcome, eof_byte))?;
                Ok(())
            }
            Input::Socket(shared, listener) => {
                std::thread::Builder::new()
                    .name("console-sock".into())
                    .spawn(move || socket_loop(listener, shared, deliver))?;
                Ok(())
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Reads stdin until EOF. On a terminal, Ctrl-A x quits; otherwise bytes pass unchanged.
fn stdin_loop(tty: bool, deliver: Deliver, outcome: Arc<Outcome>, eof_byte: Option<u8>) {
    let mut parser = EscapeParser::default();
    let mut buf = [0u8; 256];
    let mut stdin = io::stdin().lock();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => {
                if let (false, Some(b)) = (tty, eof_byte) {
                    deliver(&[b]);
                }
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if !tty {
            deliver(&buf[..n]);
            continue;
        }
        match parser.feed(&buf[..n]) {
            Typed::Bytes(b) => deliver(&b),
            Typed::Quit(b) => {
                deliver(&b);
                outcome.report(StopReason::UserQuit);
                return;
            }
        }
    }
}

#[derive(Default)]
struct SocketConsole {
    client: Mutex<Option<UnixStream>>,
}

struct SocketWriter(Arc<SocketConsole>);

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut c = self.0.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = c.as_mut() {
            if s.write_all(buf).is_err() {
                *c = None; // the client went away; output is dropped until the next one
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn bind_socket(path: &Path) -> Result<UnixListener, ConsoleError> {
    if path.exists() {
        // Only replace a stale socket, never another kind of file.
        use std::os::unix::fs::FileTypeExt;
        let is_socket = std::fs::symlink_metadata(path)
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false);
        if !is_socket || UnixStream::connect(path).is_ok() {
            return Err(ConsoleError::SocketInUse(path.into()));
        }
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|source| ConsoleError::Socket {
        path: path.into(),
        source,
    })
}

/// How long a console write may wait for a socket client that does not read.
const CLIENT_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Accepts one client at a time; its input goes to the guest.
fn socket_loop(listener: UnixListener, shared: Arc<SocketConsole>, deliver: Deliver) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let Ok(writer) = stream.try_clone() else {
            continue;
        };
        // Output is written on the thread that produces it (a vCPU for the UART, the
        // virtio event loop for hvc0): a client that stops reading is dropped instead of
        // stalling the guest.
        if writer
            .set_write_timeout(Some(CLIENT_WRITE_TIMEOUT))
            .is_err()
        {
            continue;
        }
        *shared.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(writer);
        let mut buf = [0u8; 256];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => deliver(&buf[..n]),
            }
        }
        *shared.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The host side of the guest's virtio console (hvc0) while the VM runs: keeps the
/// backend open (and its socket file until dropped) and feeds its input to the device.
pub struct VirtioConsoleBackend {
    _console: Console,
    /// The only strong reference: the input thread stops delivering once this is gone.
    _input: Arc<virtio::console::ConsoleInput>,
}

/// How long input waits while the guest's hvc0 input buffer is full.
const HVC_INPUT_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// Opens the virtio console's backend `cfg` and creates the device that talks to it.
/// `stdio` is refused: the serial console owns the terminal.
pub fn open_virtio_console(
    cfg: &SerialConfig,
) -> Result<(virtio::console::Console, VirtioConsoleBackend), ConsoleError> {
    if *cfg == SerialConfig::Stdio {
        return Err(ConsoleError::VirtioConsoleStdio);
    }
    let mut console = Console::open(cfg)?;
    let (device, input) =
        virtio::console::Console::new(console.take_output()).map_err(ConsoleError::Device)?;
    let input = Arc::new(input);
    let weak = Arc::downgrade(&input);
    // Blocks the backend's input thread while the guest does not read, as the serial
    // console does, so pasted or piped input is not dropped.
    let deliver: Deliver = Arc::new(move |mut bytes: &[u8]| {
        while !bytes.is_empty() {
            let Some(input) = weak.upgrade() else { return };
            let n = input.send(bytes);
            bytes = &bytes[n..];
            if n == 0 {
                std::thread::sleep(HVC_INPUT_RETRY);
            }
        }
    });
    // Only the stdio backend reports a quit to the outcome, and it is refused above.
    console
        .start_input(deliver, Arc::new(Outcome::new()), None)
        .map_err(ConsoleError::Device)?;
    Ok((
        device,
        VirtioConsoleBackend {
            _console: console,
            _input: input,
        },
    ))
}

/// Unbuffered stdout: each UART byte appears immediately.
struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut out = io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot put the terminal in raw mode: {0}")]
    Terminal(#[source] io::Error),
    #[error("cannot open serial output file {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on serial socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("serial socket {} is in use or is not a socket: choose another path", .0.display())]
    SocketInUse(PathBuf),
    #[error("the virtio console cannot use stdio (the serial console does): use null, file:PATH or socket:PATH")]
    VirtioConsoleStdio,
    #[error("cannot create the virtio console: {0}")]
    Device(#[source] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_backend_appends_output() {
        let dir = std::env::temp_dir().join(format!("wirt-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("serial.log");
        let mut c = Console::open(&SerialConfig::File(path.clone())).unwrap();
        c.take_output().write_all(b"hello\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_virtio_console_refuses_stdio_and_opens_a_file() {
        assert!(matches!(
            open_virtio_console(&SerialConfig::Stdio),
            Err(ConsoleError::VirtioConsoleStdio)
        ));
        let dir = std::env::temp_dir().join(format!("wirt-hvc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hvc0.log");
        let (device, backend) = open_virtio_console(&SerialConfig::File(path.clone())).unwrap();
        use virtio::VirtioDevice;
        assert_eq!(device.device_type(), 3, "a virtio console");
        assert!(path.exists(), "the output file is created at start");
        drop((device, backend));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_socket_client_that_does_not_read_is_dropped_not_waited_for() {
        let dir = std::env::temp_dir().join(format!("wirt-stall-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.sock");
        let mut c = Console::open(&SerialConfig::Socket(path.clone())).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        let deliver: Deliver = Arc::new(move |_: &[u8]| {
            let _ = tx.lock().unwrap().send(());
        });
        c.start_input(deliver, Arc::new(Outcome::new()), None)
            .unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"x").unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the client is the console");
        // The client never reads: far more output than a socket buffer holds.
        let mut out = c.take_output();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..256 {
                out.write_all(&[b'o'; 32 * 1024]).unwrap();
            }
            done_tx.send(()).unwrap();
        });
        done_rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("output does not wait for a client that stopped reading");
        drop((client, c));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn socket_backend_carries_both_directions() {
        let dir = std::env::temp_dir().join(format!("wirt-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.sock");
        let mut c = Console::open(&SerialConfig::Socket(path.clone())).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let got2 = got.clone();
        let deliver: Deliver = Arc::new(move |b: &[u8]| got2.lock().unwrap().extend_from_slice(b));
        c.start_input(deliver, Arc::new(Outcome::new()), None)
            .unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"typed").unwrap();
        let mut out = c.take_output();
        // Wait until the accept loop registered the client, then send output to it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.lock().unwrap().len() < 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(&got.lock().unwrap()[..], b"typed");
        out.write_all(b"guest says hi").unwrap();
        let mut buf = [0u8; 13];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"guest says hi");
        // A second console on the same live socket is refused.
        assert!(matches!(
            Console::open(&SerialConfig::Socket(path.clone())),
            Err(ConsoleError::SocketInUse(_))
        ));
        drop(c);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
