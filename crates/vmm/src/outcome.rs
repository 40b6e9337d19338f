//! Why a VM stopped, decided once: the first reason reported wins.
//!
//! vCPU threads, devices (through `VmControl`) and the console (Ctrl-A x) all report here;
//! the thread that waits in [`Outcome::wait`] then stops the rest of the VM.

use std::sync::{Condvar, Mutex};

/// How a VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest asked for a reset (i8042, reset register); wirt does not reboot.
    Reset,
    /// The guest triple-faulted.
    TripleFault,
    /// The guest wrote V to the debug-exit port.
    DebugExit(u8),
    /// The user quit from the console (Ctrl-A x) or the VM was stopped from outside.
    UserQuit,
    /// The VM was killed on request (`wirt vm kill`, or `stop` past its timeout): the
    /// guest was not asked to power off.
    Killed,
    /// The engine could not go on.
    InternalError {
        cpu: u32,
        rip: u64,
        bytes: Vec<u8>,
        detail: String,
    },
    /// wirt itself failed while running the VM.
    Failed(String),
}

impl StopReason {
    /// The process exit status `wirt run` uses for this outcome (documented in README).
    ///
    /// Debug-exit statuses are always odd (QEMU's `(V << 1) | 1`); wirt's own outcomes use
    /// even numbers so that a script can tell them apart.
    pub fn exit_status(&self) -> i32 {
        match self {
            StopReason::PowerOff | StopReason::UserQuit | StopReason::Killed => 0,
            StopReason::DebugExit(v) => ((i32::from(*v)) << 1) | 1,
            StopReason::Reset => 2,
            StopReason::TripleFault => 4,
            StopReason::InternalError { .. } => 6,
            StopReason::Failed(_) => 8,
        }
    }

    /// A one-line description for the user.
    pub fn describe(&self) -> String {
        match self {
            StopReason::PowerOff => "guest powered off".into(),
            StopReason::Reset => "guest requested a reset (wirt does not reboot)".into(),
            StopReason::TripleFault => "guest triple-faulted (CPU shutdown)".into(),
            StopReason::DebugExit(v) => format!("guest wrote {v:#x} to the debug-exit port"),
            StopReason::UserQuit => "stopped by the user".into(),
            StopReason::Killed => {
                "killed by the user (the guest was not asked to power off)".into()
            }
            StopReason::InternalError {
                cpu,
                rip,
                bytes,
                detail,
            } => {
                let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
                format!(
                    "vCPU {cpu} stopped: {detail} at RIP {rip:#x}, instruction bytes [{}]",
                    hex.join(" ")
                )
            }
            StopReason::Failed(e) => format!("VM failed: {e}"),
        }
    }
}

/// The single stop decision of one VM.
#[derive(Debug, Default)]
pub struct Outcome {
    reason: Mutex<Option<StopReason>>,
    changed: Condvar,
}

impl Outcome {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `reason` unless another reason was recorded first.
    pub fn report(&self, reason: StopReason) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason);
            self.changed.notify_all();
        }
    }

    pub fn is_decided(&self) -> bool {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Waits at most `timeout` for a reason.
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> Option<StopReason> {
        let r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        let (r, _) = self
            .changed
            .wait_timeout_while(r, timeout, |r| r.is_none())
            .unwrap_or_else(|p| p.into_inner());
        r.clone()
    }

    /// Blocks until a reason is recorded and returns it.
    pub fn wait(&self) -> StopReason {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(reason) = r.as_ref() {
                return reason.clone();
            }
            r = self.changed.wait(r).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl From<devices::legacy::ControlEvent> for StopReason {
    fn from(ev: devices::legacy::ControlEvent) -> Self {
        use devices::legacy::ControlEvent;
        match ev {
            ControlEvent::Reset => StopReason::Reset,
            ControlEvent::PowerOff => StopReason::PowerOff,
            ControlEvent::DebugExit(v) => StopReason::DebugExit(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_reason_wins() {
        let o = Outcome::new();
        o.report(StopReason::DebugExit(3));
        o.report(StopReason::PowerOff);
        assert_eq!(o.wait(), StopReason::DebugExit(3));
    }

    #[test]
    fn wait_wakes_on_report_from_another_thread() {
        let o = Arc::new(Outcome::new());
        let o2 = o.clone();
        let t = std::thread::spawn(move || o2.wait());
        std::thread::sleep(std::time::Duration::from_millis(20));
        o.report(StopReason::Reset);
        assert_eq!(t.join().unwrap(), StopReason::Reset);
    }

    #[test]
    fn exit_statuses_are_distinct() {
        assert_eq!(StopReason::DebugExit(0x10).exit_status(), 0x21);
        assert_eq!(StopReason::PowerOff.exit_status(), 0);
        let ours = [
            StopReason::Reset,
            StopReason::TripleFault,
            StopReason::InternalError {
                cpu: 0,
                rip: 0,
                bytes: vec![],
                detail: String::new(),
            },
            StopReason::Failed(String::new()),
        ];
        for r in ours {
            assert_eq!(
                r.exit_status() % 2,
                0,
                "{r:?} must not look like a debug exit"
            );
        }
    }
}
