//! Making a running `KVM_RUN` return promptly, from another thread, without losing kicks.
//!
//! A kick sets a pending flag and sends [`kick_signal`] to the vCPU's thread if it is inside
//! [`super::KvmVcpu`]'s run. The signal's handler runs on that thread and sets
//! `kvm_run.immediate_exit` of the vCPU the thread is running (found through a thread-local
//! pointer), so the kick is seen wherever the thread is:
//! - in guest mode: the signal forces `KVM_RUN` out with `EINTR`;
//! - between the pending check and the `KVM_RUN` ioctl: `immediate_exit` makes it return
//!   `EINTR` at once (a plain no-op signal would be lost here);
//! - outside `run`: nobody is signalled, and the next `run` sees the pending flag.
//!
//! All writes to `immediate_exit` happen on the vCPU's own thread (the handler runs there),
//! so nothing races with KVM's shared page from other threads.

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use libc::{c_int, c_void, siginfo_t};
use vmm_sys_util::signal::{register_signal_handler, unblock_signal, SIGRTMIN};

use crate::{Error, Kicker};

thread_local! {
    /// `immediate_exit` of the `kvm_run` page of the vCPU this thread is running, or null.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
    /// Whether the kick signal has been unblocked on this thread.
    static UNBLOCKED: Cell<bool> = const { Cell::new(false) };
}

/// The real-time signal used to kick vCPU threads (the first one, `SIGRTMIN`).
pub fn kick_signal() -> c_int {
    SIGRTMIN()
}

extern "C" fn on_kick_signal(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
    // Async-signal-safe: a const-initialized thread-local without destructor is a plain TLS
    // slot, and the write is a single byte store.
    IMMEDIATE_EXIT.with(|p| {
        let p = p.get();
        if !p.is_null() {
            // SAFETY: the pointer is set by `RunGuard` only while this thread is inside
            // `KvmVcpu::run`, which keeps the vCPU (and so its mmap'ed kvm_run page) alive;
            // it is cleared before `run` returns.
            unsafe { ptr::write_volatile(p, 1) };
        }
    });
}

/// Install the no-op-but-for-`immediate_exit` handler, once per process.
pub(crate) fn install_handler() -> Result<(), Error> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            register_signal_handler(kick_signal(), on_kick_signal).map_err(|e| e.errno())
        })
        .map_err(|errno| Error::Kvm {
            op: "sigaction(kick signal)",
            source: std::io::Error::from_raw_os_error(errno),
        })
}

/// What a vCPU and its kickers share.
#[derive(Debug, Default)]
pub(crate) struct KickState {
    pending: AtomicBool,
    /// The thread inside `run`, if any; held locked while signalling so it cannot leave.
    thread: Mutex<Option<libc::pthread_t>>,
}

impl KickState {
    /// Consume a pending kick.
    pub(crate) fn take(&self) -> bool {
        self.pending.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    fn set_thread(&self, t: Option<libc::pthread_t>) {
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
}

/// The [`Kicker`] of a [`super::KvmVcpu`].
#[derive(Debug, Clone)]
pub struct KvmKicker(pub(crate) Arc<KickState>);

impl Kicker for KvmKicker {
    fn kick(&self) {
        self.0.pending.store(true, Ordering::SeqCst);
        let thread = self.0.thread.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = *thread {
            // SAFETY: `t` is registered only while its thread is inside `run` and is removed
            // (under this lock) before `run` returns, so the thread is alive here. A failure
            // leaves the pending flag to be seen at the next run.
            unsafe { libc::pthread_kill(t, kick_signal()) };
        }
    }
}

/// Registers the current thread as running a vCPU for the duration of one `run` call.
pub(crate) struct RunGuard<'a> {
    state: &'a KickState,
    immediate_exit: *mut u8,
}

impl<'a> RunGuard<'a> {
    /// `immediate_exit` must point into the `kvm_run` page of the vCPU about to run, and the
    /// guard must not outlive that vCPU.
    pub(crate) fn enter(state: &'a KickState, immediate_exit: *mut u8) -> Self {
        if !UNBLOCKED.with(Cell::get) && unblock_signal(kick_signal()).is_ok() {
            UNBLOCKED.with(|u| u.set(true));
        }
        IMMEDIATE_EXIT.with(|p| p.set(immediate_exit));
        // SAFETY: pthread_self has no preconditions.
        state.set_thread(Some(unsafe { libc::pthread_self() }));
        RunGuard {
            state,
            immediate_exit,
        }
    }

    /// Set or clear `immediate_exit` from the vCPU thread.
    pub(crate) fn set_immediate_exit(&self, on: bool) {
        // SAFETY: the pointer came from the live vCPU's kvm_run page (see `enter`); this is
        // the vCPU's own thread, the only other writer is the signal handler on this thread.
        unsafe { ptr::write_volatile(self.immediate_exit, on.into()) };
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.state.set_thread(None);
        IMMEDIATE_EXIT.with(|p| p.set(ptr::null_mut()));
        self.set_immediate_exit(false);
    }
}
