//! The control protocol between the daemon and one `wirt vmm` child: JSON, one message
//! per line, over the child's stdin (requests) and stdout (replies and its last words).
//!
//! Pipes rather than a socket because they need no file and tell each side at once when
//! the other is gone: the child stops its VM when its stdin closes; the daemon sees EOF on
//! stdout and reaps the child. Every line is an [`Envelope`]: a request's `id` comes back on
//! its reply (so a late reply to a timed-out request is never taken for the next one's);
//! messages nobody asked for have id 0: the first line, [`ChildMsg::Started`] or
//! [`ChildMsg::StartFailed`], and the last, [`ChildMsg::Stopped`].

use serde::{Deserialize, Serialize};

use crate::model::{BalloonInfo, Stats};

/// One line of the protocol: a message and the id of the request it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub id: u64,
    #[serde(flatten)]
    pub msg: T,
}

/// A request from the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Pause,
    Resume,
    /// Ask the guest to power off (ACPI power button).
    Shutdown,
    /// End the VM now.
    Kill,
    /// Current counters (and the balloon's figures, if the VM has one).
    Info,
    /// Ask the guest to hold `target_bytes` of its memory in the balloon (checked by the
    /// daemon: a multiple of 4 KiB, below the VM's memory).
    Balloon {
        target_bytes: u64,
    },
}

/// A message from the child.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChildMsg {
    /// The VM is booted and its vCPUs run.
    Started { engine: String },
    /// The VM could not be built; the child exits next.
    StartFailed { message: String },
    /// The request was done.
    Ok,
    /// The request failed (e.g. pause timed out).
    Error { message: String },
    /// The answer to [`Request::Info`].
    Info {
        stats: Stats,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        balloon: Option<BalloonInfo>,
    },
    /// The VM has ended; the child exits next.
    Stopped(Outcome),
}

/// How a VM ended, as the child reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// One line: "guest powered off", "stopped by the user", ...
    pub reason: String,
    /// `wirt run`'s exit status for this outcome.
    pub exit_status: i32,
    /// Whether the VMM (rather than the guest or a user) ended the VM: the engine could not
    /// go on, or wirt failed. Such a VM is `failed`, not `stopped`.
    pub failed: bool,
    pub stats: Stats,
}

impl Outcome {
    pub fn from_report(r: &vmm::RunReport) -> Outcome {
        use vmm::outcome::StopReason;
        Outcome {
            reason: r.reason.describe(),
            exit_status: r.reason.exit_status(),
            failed: matches!(
                r.reason,
                StopReason::InternalError { .. } | StopReason::Failed(_)
            ),
            stats: Stats::from(&r.stats),
        }
    }
}

/// Encodes one message as a line (with the trailing newline).
pub fn line<T: Serialize>(msg: &T) -> String {
    // Serializing these plain enums and structs cannot fail.
    let mut s = serde_json::to_string(msg).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_single_lines() {
        let l = line(&Envelope {
            id: 7,
            msg: Request::Pause,
        });
        assert_eq!(l, "{\"id\":7,\"op\":\"pause\"}\n");
        let back: Envelope<Request> = serde_json::from_str(&l).unwrap();
        assert_eq!(back.msg, Request::Pause);
        let m = ChildMsg::Stopped(Outcome {
            reason: "x\ny".into(),
            exit_status: 33,
            failed: false,
            stats: Stats::default(),
        });
        let l = line(&Envelope {
            id: 0,
            msg: m.clone(),
        });
        assert_eq!(l.matches('\n').count(), 1);
        let back: Envelope<ChildMsg> = serde_json::from_str(&l).unwrap();
        assert_eq!(back.msg, m);
        let ok: Envelope<ChildMsg> = serde_json::from_str("{\"id\":3,\"type\":\"ok\"}").unwrap();
        assert_eq!((ok.id, ok.msg), (3, ChildMsg::Ok));
    }

    #[test]
    fn balloon_requests_and_figures_round_trip() {
        let l = line(&Envelope {
            id: 4,
            msg: Request::Balloon {
                target_bytes: 64 << 20,
            },
        });
        assert_eq!(
            l,
            "{\"id\":4,\"op\":\"balloon\",\"target_bytes\":67108864}\n"
        );
        let back: Envelope<Request> = serde_json::from_str(&l).unwrap();
        assert_eq!(
            back.msg,
            Request::Balloon {
                target_bytes: 64 << 20
            }
        );
        let info = ChildMsg::Info {
            stats: Stats::default(),
            balloon: Some(BalloonInfo {
                target_bytes: 4096,
                actual_bytes: 0,
                ..BalloonInfo::default()
            }),
        };
        let back: Envelope<ChildMsg> = serde_json::from_str(&line(&Envelope {
            id: 1,
            msg: info.clone(),
        }))
        .unwrap();
        assert_eq!(back.msg, info);
        // A VM without a balloon: the field is absent, and absent reads as none.
        let bare = "{\"id\":2,\"type\":\"info\",\"stats\":{\"exits\":{},\"instructions\":0,\"elapsed_ms\":0}}";
        let back: Envelope<ChildMsg> = serde_json::from_str(bare).unwrap();
        assert_eq!(
            back.msg,
            ChildMsg::Info {
                stats: Stats::default(),
                balloon: None
            }
        );
    }
}
