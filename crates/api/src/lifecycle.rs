//! The VM state machine the daemon enforces, in one place:
//!
//! ```text
//!   created ──start──▶ running ◀──resume── paused
//!      ▲                  │  └───pause──────▶ │
//!      │                  ├─shutdown (guest powers off)──┐
//!      │                  └─kill / guest exit / crash ───┤ (also from paused)
//!      │                                                 ▼
//!   (daemon restart)                     stopped  or  failed ──start──▶ running
//! ```
//!
//! `created`: defined, never started by this daemon. `failed`: the VMM process died without
//! reporting an outcome, could not start the VM, or the engine could not go on. Delete is
//! allowed only when no VMM process runs (`created`, `stopped`, `failed`). Anything else
//! is `409 wrong_state`.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Created,
    Running,
    Paused,
    Stopped,
    Failed,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Created => "created",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopped => "stopped",
            VmState::Failed => "failed",
        }
    }

    /// Whether a VMM process exists for a VM in this state.
    pub fn is_active(self) -> bool {
        matches!(self, VmState::Running | VmState::Paused)
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation on a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Start,
    Pause,
    Resume,
    Shutdown,
    Kill,
    Delete,
    Console,
    /// Set the balloon's target.
    Balloon,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Pause => "pause",
            Op::Resume => "resume",
            Op::Shutdown => "shut down",
            Op::Kill => "kill",
            Op::Delete => "delete",
            Op::Console => "attach to",
            Op::Balloon => "set the balloon of",
        }
    }

    /// The states this operation is valid in.
    pub fn valid_in(self) -> &'static [VmState] {
        use VmState::*;
        match self {
            Op::Start => &[Created, Stopped, Failed],
            Op::Pause => &[Running],
            Op::Resume => &[Paused],
            Op::Shutdown | Op::Kill | Op::Console | Op::Balloon => &[Running, Paused],
            Op::Delete => &[Created, Stopped, Failed],
        }
    }
}

/// `Ok` if `op` is valid for VM `name` in `state`, else the 409 error to return.
pub fn check(name: &str, state: VmState, op: Op) -> Result<(), ApiError> {
    if op.valid_in().contains(&state) {
        Ok(())
    } else {
        let valid: Vec<&str> = op.valid_in().iter().map(|s| s.as_str()).collect();
        Err(ApiError::WrongState(format!(
            "cannot {} VM {name:?}: it is {state} (valid when {})",
            op.as_str(),
            valid.join(" or ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        assert!(check("a", VmState::Running, Op::Pause).is_ok());
        assert!(check("a", VmState::Paused, Op::Resume).is_ok());
        assert!(check("a", VmState::Stopped, Op::Start).is_ok());
        let e = check("a", VmState::Stopped, Op::Pause).unwrap_err();
        assert_eq!(e.code(), "wrong_state");
        assert!(e.to_string().contains("it is stopped"), "{e}");
        assert!(check("a", VmState::Running, Op::Delete).is_err());
        assert!(check("a", VmState::Running, Op::Resume).is_err());
        assert!(check("a", VmState::Created, Op::Kill).is_err());
        assert!(check("a", VmState::Paused, Op::Balloon).is_ok());
        let e = check("a", VmState::Created, Op::Balloon).unwrap_err();
        assert!(e.to_string().contains("set the balloon of"), "{e}");
    }
}
