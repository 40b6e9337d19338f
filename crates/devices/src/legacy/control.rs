//! How devices ask the VMM to reset, power off or end the VM, and tell it the guest is up.
//!
//! Devices run on vCPU threads and cannot stop the VM themselves: they post a
//! [`ControlEvent`] to the VM's [`VmControl`]. The first request wins and is kept until the
//! VMM takes it (a guest that writes "reset" and then "power off" gets a reset). The VMM
//! either polls [`VmControl::requested`] after each I/O exit (one atomic load) or waits for
//! [`VmControl::event_fd`] to become readable in its epoll loop; the eventfd is written once
//! per accepted request.
//!
//! The boot-timer port reports "guest ready" through the same object, on its own eventfd.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

/// What a device asks the VMM to do with the whole VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlEvent {
    /// Reset the machine (i8042 command 0xfe, reset control register 0xcf9, ACPI reset).
    Reset,
    /// Power off (ACPI S5 through PM1a control).
    PowerOff,
    /// QEMU isa-debug-exit: the guest wrote this value; see [`ControlEvent::exit_status`].
    DebugExit(u8),
}

const NONE: u32 = 0;
const RESET: u32 = 1;
const POWER_OFF: u32 = 2;
const DEBUG_EXIT: u32 = 0x100;

impl ControlEvent {
    fn encode(self) -> u32 {
        match self {
            ControlEvent::Reset => RESET,
            ControlEvent::PowerOff => POWER_OFF,
            ControlEvent::DebugExit(v) => DEBUG_EXIT | u32::from(v),
        }
    }

    fn decode(raw: u32) -> Option<Self> {
        match raw {
            RESET => Some(ControlEvent::Reset),
            POWER_OFF => Some(ControlEvent::PowerOff),
            r if r & !0xff == DEBUG_EXIT => Some(ControlEvent::DebugExit(r as u8)),
            _ => None,
        }
    }

    /// The process exit status this event asks for, if it asks for one: a debug exit with
    /// value V ends the VMM with `(V << 1) | 1`, exactly as QEMU's isa-debug-exit does (so a
    /// status is always odd and never collides with a plain successful exit).
    pub fn exit_status(self) -> Option<i32> {
        match self {
            ControlEvent::DebugExit(v) => Some((i32::from(v) << 1) | 1),
            _ => None,
        }
    }
}

/// Errors creating a [`VmControl`].
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot create an eventfd for VM control: {0}")]
    EventFd(#[source] io::Error),
}

/// The VM-wide mailbox between devices and the VMM. Share it as `Arc<VmControl>`.
#[derive(Debug)]
pub struct VmControl {
    event: AtomicU32,
    event_fd: EventFd,
    ready: OnceLock<Duration>,
    ready_fd: EventFd,
}

impl VmControl {
    pub fn new() -> Result<Self, ControlError> {
        let fd = || EventFd::new(libc::EFD_NONBLOCK).map_err(ControlError::EventFd);
        Ok(Self {
            event: AtomicU32::new(NONE),
            event_fd: fd()?,
            ready: OnceLock::new(),
            ready_fd: fd()?,
        })
    }

    /// Ask for `event`. Returns `true` if it was accepted, `false` if an earlier request is
    /// still pending (that one is kept).
    pub fn request(&self, event: ControlEvent) -> bool {
        let won = self
            .event
            .compare_exchange(NONE, event.encode(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            tracing::debug!(?event, "device requested VM control event");
            if let Err(e) = self.event_fd.write(1) {
                // The request is recorded; only an epoll waiter misses the wakeup. Pollers
                // still see it.
                tracing::warn!("cannot signal VM control eventfd: {e}");
            }
        }
        won
    }

    /// The pending request, if any, without consuming it. One atomic load.
    pub fn requested(&self) -> Option<ControlEvent> {
        ControlEvent::decode(self.event.load(Ordering::Acquire))
    }

    /// Consume the pending request, so that a later one can be accepted (after a reset the
    /// VM runs on and may ask again).
    pub fn take(&self) -> Option<ControlEvent> {
        // Drain the eventfd first: a request arriving in between leaves a count behind, which
        // costs a spurious wakeup at worst, never a lost one.
        let _ = self.event_fd.read();
        ControlEvent::decode(self.event.swap(NONE, Ordering::AcqRel))
    }

    /// Block until a request is pending (returned without consuming it) or `timeout` passes
    /// (`None`), for a VMM thread that has nothing else to wait for. `timeout: None` waits
    /// forever.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<Option<ControlEvent>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(ev) = self.requested() {
                return Ok(Some(ev));
            }
            let ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    // Round up so a sub-millisecond rest does not spin with a zero timeout.
                    i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                }
            };
            let mut pfd = libc::pollfd {
                fd: self.event_fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is a valid, initialized pollfd that lives across the call, the
            // count passed is 1, and the fd is owned by `self.event_fd`, which outlives the call.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            } else if pfd.revents & libc::POLLIN != 0 && self.requested().is_none() {
                // A stale count left by a `take` race: drain it, or poll would spin. A request
                // landing right now is still seen by the check at the top of the loop.
                let _ = self.event_fd.read();
            }
        }
    }

    /// Readable when a request was accepted. Non-blocking; [`VmControl::take`] drains it.
    pub fn event_fd(&self) -> &EventFd {
        &self.event_fd
    }

    /// Record that the guest reported ready `after` the VM started. Only the first report
    /// counts; returns whether this was it.
    pub fn notify_guest_ready(&self, after: Duration) -> bool {
        let first = self.ready.set(after).is_ok();
        if first {
            tracing::debug!("guest ready after {} ms", after.as_millis());
            if let Err(e) = self.ready_fd.write(1) {
                tracing::warn!("cannot signal guest-ready eventfd: {e}");
            }
        }
        first
    }

    /// How long after VM start the guest reported ready, if it has.
    pub fn guest_ready(&self) -> Option<Duration> {
        self.ready.get().copied()
    }

    /// Readable once the guest reported ready (never drained by this type).
    pub fn ready_fd(&self) -> &EventFd {
        &self.ready_fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_wins_until_taken() {
        let c = VmControl::new().unwrap();
        assert_eq!(c.requested(), None);
        assert!(c.event_fd().read().is_err(), "nothing signalled yet");

        assert!(c.request(ControlEvent::Reset));
        assert!(!c.request(ControlEvent::PowerOff));
        assert!(!c.request(ControlEvent::DebugExit(3)));
        assert_eq!(c.requested(), Some(ControlEvent::Reset));
        assert_eq!(c.requested(), Some(ControlEvent::Reset), "peeking keeps it");

        assert_eq!(c.take(), Some(ControlEvent::Reset));
        assert_eq!(c.requested(), None);
        assert!(c.event_fd().read().is_err(), "take drained the eventfd");

        assert!(c.request(ControlEvent::DebugExit(0xff)));
        assert_eq!(c.event_fd().read().unwrap(), 1);
        assert_eq!(c.take(), Some(ControlEvent::DebugExit(0xff)));
        assert_eq!(c.take(), None);
    }

    #[test]
    fn wait_returns_a_request_from_another_thread_or_times_out() {
        let c = std::sync::Arc::new(VmControl::new().unwrap());
        // A stale count on the eventfd must not make `wait` return early or spin.
        c.event_fd().write(1).unwrap();
        let started = Instant::now();
        assert_eq!(c.wait(Some(Duration::from_millis(30))).unwrap(), None);
        assert!(started.elapsed() >= Duration::from_millis(30));

        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            c2.request(ControlEvent::PowerOff);
        });
        assert_eq!(
            c.wait(Some(Duration::from_secs(30))).unwrap(),
            Some(ControlEvent::PowerOff)
        );
        t.join().unwrap();
        assert_eq!(
            c.wait(None).unwrap(),
            Some(ControlEvent::PowerOff),
            "not consumed"
        );
        assert_eq!(c.take(), Some(ControlEvent::PowerOff));
    }

    #[test]
    fn every_event_round_trips() {
        let c = VmControl::new().unwrap();
        let mut all = vec![ControlEvent::Reset, ControlEvent::PowerOff];
        all.extend((0..=255).map(ControlEvent::DebugExit));
        for ev in all {
            assert!(c.request(ev));
            assert_eq!(c.take(), Some(ev));
        }
    }

    #[test]
    fn debug_exit_status_is_qemu_compatible() {
        assert_eq!(ControlEvent::DebugExit(0).exit_status(), Some(1));
        assert_eq!(ControlEvent::DebugExit(1).exit_status(), Some(3));
        assert_eq!(ControlEvent::DebugExit(0x31).exit_status(), Some(0x63));
        assert_eq!(ControlEvent::DebugExit(0xff).exit_status(), Some(511));
        assert_eq!(ControlEvent::PowerOff.exit_status(), None);
    }

    #[test]
    fn guest_ready_is_reported_once() {
        let c = VmControl::new().unwrap();
        assert_eq!(c.guest_ready(), None);
        assert!(c.notify_guest_ready(Duration::from_millis(420)));
        assert!(!c.notify_guest_ready(Duration::from_millis(999)));
        assert_eq!(c.guest_ready(), Some(Duration::from_millis(420)));
        assert_eq!(c.ready_fd().read().unwrap(), 1);
        assert_eq!(c.requested(), None, "readiness is not a control request");
    }
}
