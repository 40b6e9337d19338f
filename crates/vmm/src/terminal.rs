//! Puts the user's terminal in raw mode for the guest console and guarantees it is put
//! back on every way out: normal return, error, panic in any thread, or a fatal signal.
//!
//! Written by hand with `termios` because the exact saved state must be restored
//! (vmm-sys-util's `Terminal::set_canon_mode` sets a canonical mode, not the user's own).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The terminal state before wirt changed it, for the signal handler and panic hook.
static SAVED: OnceLock<(libc::c_int, libc::termios)> = OnceLock::new();
/// Whether raw mode is currently in effect (so restoring twice is harmless).
static RAW: AtomicBool = AtomicBool::new(false);

/// Whether `fd` is a terminal.
pub fn is_tty(fd: libc::c_int) -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(fd) == 1 }
}

/// Restores the saved terminal state if raw mode is in effect. Async-signal-safe.
fn restore() {
    if RAW.swap(false, Ordering::SeqCst) {
        if let Some((fd, t)) = SAVED.get() {
            // SAFETY: tcsetattr with a termios previously filled by tcgetattr for this fd.
            unsafe { libc::tcsetattr(*fd, libc::TCSANOW, t) };
        }
    }
}

extern "C" fn on_fatal_signal(sig: libc::c_int) {
    restore();
    // SAFETY: resetting to the default action and re-raising is async-signal-safe; the
    // process then dies of the signal with the status a shell expects.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Raw mode on a terminal for as long as this guard lives.
pub struct RawMode(());

impl RawMode {
    /// Switches `fd` (a terminal) to raw mode. Returns `Ok(None)` if `fd` is not a terminal.
    pub fn enable(fd: libc::c_int) -> std::io::Result<Option<RawMode>> {
        if !is_tty(fd) {
            return Ok(None);
        }
        // SAFETY: zeroed termios is a valid out-parameter for tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is an open terminal and t is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let _ = SAVED.set((fd, t));
        install_handlers();
        let mut raw = t;
        // SAFETY: cfmakeraw only modifies the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output post-processing so the host side of "\n" stays sane for our own messages.
        raw.c_oflag |= libc::OPOST;
        RAW.store(true, Ordering::SeqCst);
        // SAFETY: fd is a terminal; raw is a valid termios derived from its current state.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            RAW.store(false, Ordering::SeqCst);
            return Err(std::io::Error::last_os_error());
        }
        Ok(Some(RawMode(())))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

fn install_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
            // SAFETY: the handler only calls async-signal-safe functions (tcsetattr,
            // signal, raise) and touches atomics and an already-initialised OnceLock.
            unsafe {
                libc::signal(
                    sig,
                    on_fatal_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
                )
            };
        }
    });
}

/// Escape-sequence parser for console input typed by a person: Ctrl-A x quits, Ctrl-A a
/// sends a literal Ctrl-A (as in QEMU). Only used when stdin is a terminal.
#[derive(Debug, Default)]
pub struct EscapeParser {
    after_ctrl_a: bool,
}

/// What to do with a chunk of typed input.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    /// Send these bytes to the guest.
    Bytes(Vec<u8>),
    /// The user asked to quit; bytes before the escape are included.
    Quit(Vec<u8>),
}

pub const CTRL_A: u8 = 0x01;

impl EscapeParser {
    pub fn feed(&mut self, input: &[u8]) -> Typed {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.after_ctrl_a {
                self.after_ctrl_a = false;
                match b {
                    b'x' | b'X' => return Typed::Quit(out),
                    b'a' | CTRL_A => out.push(CTRL_A),
                    other => {
                        out.push(CTRL_A);
                        out.push(other);
                    }
                }
            } else if b == CTRL_A {
                self.after_ctrl_a = true;
            } else {
                out.push(b);
            }
        }
        Typed::Bytes(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_a_x_quits_and_keeps_earlier_bytes() {
        let mut p = EscapeParser::default();
        assert_eq!(p.feed(b"ls\r"), Typed::Bytes(b"ls\r".to_vec()));
        assert_eq!(p.feed(b"ab\x01x"), Typed::Quit(b"ab".to_vec()));
    }

    #[test]
    fn ctrl_a_split_across_reads() {
        let mut p = EscapeParser::default();
        assert_eq!(p.feed(b"q\x01"), Typed::Bytes(b"q".to_vec()));
        assert_eq!(p.feed(b"X"), Typed::Quit(vec![]));
    }

    #[test]
    fn ctrl_a_a_sends_ctrl_a_and_other_keys_pass() {
        let mut p = EscapeParser::default();
        assert_eq!(
            p.feed(b"\x01a\x01c"),
            Typed::Bytes(vec![CTRL_A, CTRL_A, b'c'])
        );
    }

    #[test]
    fn not_a_tty_is_not_raw() {
        let f = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        assert!(RawMode::enable(f.as_raw_fd()).unwrap().is_none());
    }
}
