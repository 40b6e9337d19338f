//! `wirt vmm`: the per-VM child process of `wirt serve` (internal; not for people).
//!
//! Reads its VM config from a file, boots the VM, then answers the daemon's requests on
//! stdin with replies on stdout (JSON lines, see `api::protocol`). It ends the VM when the
//! guest does, when asked, or when its stdin closes (the daemon is gone); it also dies
//! with the daemon through `PR_SET_PDEATHSIG`. Its last stdout line is the outcome.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::protocol::{line, ChildMsg, Envelope, Outcome, Request};
use clap::Args;
use vmm::config::VmConfig;
use vmm::outcome::StopReason;
use vmm::{RunOptions, RunningVm, VmState};

/// How often the power button is pressed again after a shutdown request.
const REPRESS: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct VmmArgs {
    /// The VM config (JSON, as `vmm::config::VmConfig`).
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
    /// The daemon's pid: exit at once if the daemon is already gone.
    #[arg(long, value_name = "PID")]
    parent_pid: Option<i32>,
}

/// Writes one message (`id` 0: not an answer to a request).
fn say(id: u64, msg: ChildMsg) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line(&Envelope { id, msg }).as_bytes());
    let _ = out.flush();
}

/// Dies with the parent (SIGKILL when the daemon's thread that spawned us exits).
fn die_with_parent(parent: Option<i32>) -> anyhow::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set PR_SET_PDEATHSIG");
    }
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    if parent.is_some_and(|p| p != ppid) {
        anyhow::bail!("the daemon is gone");
    }
    Ok(())
}

pub fn run(args: VmmArgs) -> anyhow::Result<i32> {
    die_with_parent(args.parent_pid)?;
    let cfg: anyhow::Result<VmConfig> = std::fs::read(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))
        .and_then(|b| serde_json::from_slice(&b).context("bad VM config"));
    let vm = cfg.and_then(|cfg| Ok(RunningVm::start(&cfg, &RunOptions::default())?));
    let vm = match vm {
        Ok(vm) => vm,
        Err(e) => {
            let message = crate::one_line(&e);
            eprintln!("wirt vmm: {message}");
            say(0, ChildMsg::StartFailed { message });
            return Ok(1);
        }
    };
    say(
        0,
        ChildMsg::Started {
            engine: vm.engine().to_string(),
        },
    );

    // Requests arrive on their own thread so the main loop can also watch the VM.
    let (tx, rx) = mpsc::channel::<Option<Envelope<Request>>>();
    std::thread::Builder::new()
        .name("vmm-control".into())
        .spawn(move || {
            for l in std::io::stdin().lock().lines() {
                let Ok(l) = l else { break };
                match serde_json::from_str::<Envelope<Request>>(&l) {
                    Ok(r) => {
                        if tx.send(Some(r)).is_err() {
                            return;
                        }
                    }
                    Err(e) => say(
                        0,
                        ChildMsg::Error {
                            message: format!("bad request: {e}"),
                        },
                    ),
                }
            }
            let _ = tx.send(None); // stdin closed: the daemon is gone
        })
        .context("cannot start the control thread")?;

    // After a shutdown request the power button is pressed again every REPRESS: a press
    // made while the guest is still booting has nobody listening and is lost.
    let mut next_press: Option<Instant> = None;
    loop {
        if let VmState::Stopped(_) = vm.state() {
            break;
        }
        if next_press.is_some_and(|t| Instant::now() >= t) {
            vm.request_shutdown();
            next_press = Some(Instant::now() + REPRESS);
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(Some(req)) => {
                if matches!(req.msg, Request::Shutdown) {
                    next_press = Some(Instant::now() + REPRESS);
                }
                say(req.id, handle(&vm, req.msg))
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                vm.stop(StopReason::UserQuit);
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let report = vm.wait();
    say(0, ChildMsg::Stopped(Outcome::from_report(&report)));
    Ok(0)
}

fn handle(vm: &RunningVm, req: Request) -> ChildMsg {
    match req {
        Request::Pause => match vm.pause() {
            Ok(()) => ChildMsg::Ok,
            Err(e) => ChildMsg::Error {
                message: e.to_string(),
            },
        },
        Request::Resume => {
            vm.resume();
            ChildMsg::Ok
        }
        Request::Shutdown => {
            vm.request_shutdown();
            ChildMsg::Ok
        }
        Request::Kill => {
            vm.stop(StopReason::Killed);
            ChildMsg::Ok
        }
        Request::Info => ChildMsg::Info {
            stats: api::model::Stats::from(&vm.stats()),
            balloon: vm.balloon().map(|b| {
                let info = api::model::BalloonInfo::from(&b.state());
                // The guest refreshes its statistics when asked: fresh ones for next time.
                b.request_stats();
                info
            }),
        },
        Request::Balloon { target_bytes } => {
            if vm.set_balloon_target(target_bytes) {
                ChildMsg::Ok
            } else {
                ChildMsg::Error {
                    message: "this VM has no balloon".into(),
                }
            }
        }
    }
}
