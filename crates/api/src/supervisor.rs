//! Runs one VM in a `wirt vmm` child process and watches it.
//!
//! The child gets its VM config as a file, requests on stdin and writes replies on stdout
//! (see [`crate::protocol`]); its stderr goes to `vmm.log` in the VM's run directory. A
//! watcher task reads the child's stdout until EOF, then reaps the child (so there are no
//! zombies) and reports how it ended: with the outcome the child announced, or — when it
//! died without one (a crash, a signal) — with the exit status and the last log line.
//! The child kills itself if the daemon dies (`PR_SET_PDEATHSIG`, set by `wirt vmm`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, Notify};

use crate::protocol::{line, ChildMsg, Envelope, Outcome, Request};

/// How long a VMM may take to build its VM.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a VMM may take to answer a request (a pause waits up to 10 s for the vCPUs).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an info request may take: a listing must not hang on one stuck VMM.
pub const INFO_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot start the VMM process {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the VMM log {}: {source}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The VMM said why it could not start the VM, or died trying.
    #[error("{0}")]
    StartFailed(String),
    #[error("the VMM is gone")]
    Gone,
    #[error("the VMM did not answer within {0:?}")]
    Timeout(Duration),
}

/// How a VMM process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// What the child announced before exiting, if it did.
    pub outcome: Option<Outcome>,
    /// The process's end, e.g. "exit status 0" or "killed by signal 9".
    pub process: String,
    /// The last line the child wrote to its log.
    pub last_log: Option<String>,
}

/// A running VMM child.
pub struct Vmm {
    stdin: tokio::sync::Mutex<ChildStdin>,
    /// The request waiting for its answer: its id and where the answer goes.
    pending: Mutex<Option<(u64, oneshot::Sender<ChildMsg>)>>,
    next_id: std::sync::atomic::AtomicU64,
    kill: Notify,
    pid: Option<u32>,
}

/// What to run: the `wirt` binary and where the VM's files go.
#[derive(Clone, Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Vmm {
    /// Starts the child and waits until it has booted the VM (or failed to). `on_exit` is
    /// called once, from the watcher task, when the child has ended and been reaped.
    pub async fn spawn(
        launch: &Launch,
        on_exit: Box<dyn FnOnce(Exit) + Send>,
    ) -> Result<(std::sync::Arc<Vmm>, String), SupervisorError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log)
            .map_err(|source| SupervisorError::Log {
                path: launch.log.clone(),
                source,
            })?;
        let mut child = Command::new(&launch.program)
            .arg("vmm")
            .arg("--config")
            .arg(&launch.config)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| SupervisorError::Spawn {
                program: launch.program.clone(),
                source,
            })?;
        let pid = child.id();
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(SupervisorError::StartFailed("no pipes to the VMM".into()));
        };
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        let engine = match first {
            Ok(Ok(Some(l))) => {
                match serde_json::from_str::<Envelope<ChildMsg>>(&l).map(|e| e.msg) {
                    Ok(ChildMsg::Started { engine }) => engine,
                    Ok(ChildMsg::StartFailed { message }) => {
                        let _ = child.wait().await;
                        return Err(SupervisorError::StartFailed(message));
                    }
                    _ => {
                        let _ = child.kill().await;
                        return Err(SupervisorError::StartFailed(format!(
                            "the VMM said something unexpected: {l:.200}"
                        )));
                    }
                }
            }
            Ok(_) => {
                let status = child.wait().await;
                let mut msg = format!("the VMM exited ({})", describe_status(status));
                if let Some(l) = last_line(&launch.log) {
                    msg.push_str(": ");
                    msg.push_str(&l);
                }
                return Err(SupervisorError::StartFailed(msg));
            }
            Err(_) => {
                let _ = child.kill().await;
                return Err(SupervisorError::Timeout(START_TIMEOUT));
            }
        };
        let vmm = std::sync::Arc::new(Vmm {
            stdin: tokio::sync::Mutex::new(stdin),
            pending: Mutex::new(None),
            next_id: std::sync::atomic::AtomicU64::new(1),
            kill: Notify::new(),
            pid,
        });
        tokio::spawn(watch(
            vmm.clone(),
            child,
            lines,
            launch.log.clone(),
            on_exit,
        ));
        Ok((vmm, engine))
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Sends `req` and waits for the child's answer.
    pub async fn request(&self, req: Request) -> Result<ChildMsg, SupervisorError> {
        let limit = if req == Request::Info {
            INFO_TIMEOUT
        } else {
            REQUEST_TIMEOUT
        };
        self.request_within(req, limit).await
    }

    async fn request_within(
        &self,
        req: Request,
        limit: Duration,
    ) -> Result<ChildMsg, SupervisorError> {
        let mut stdin = self.stdin.lock().await; // one request in flight at a time
        let (tx, rx) = oneshot::channel();
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some((id, tx));
        let l = line(&Envelope { id, msg: req });
        if stdin.write_all(l.as_bytes()).await.is_err() {
            return Err(SupervisorError::Gone);
        }
        let _ = stdin.flush().await;
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(msg)) => Ok(msg),
            Ok(Err(_)) => Err(SupervisorError::Gone),
            Err(_) => {
                // A late answer must not be taken for the next request's.
                drop(
                    self.pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take(),
                );
                Err(SupervisorError::Timeout(limit))
            }
        }
    }

    /// Kills the child process (SIGKILL); the watcher reaps it and reports.
    pub fn force_kill(&self) {
        self.kill.notify_one();
    }
}

async fn watch(
    vmm: std::sync::Arc<Vmm>,
    mut child: Child,
    mut lines: Lines<BufReader<ChildStdout>>,
    log: PathBuf,
    on_exit: Box<dyn FnOnce(Exit) + Send>,
) {
    let mut outcome = None;
    let mut killed = false;
    loop {
        tokio::select! {
            l = lines.next_line() => match l {
                Ok(Some(l)) => match serde_json::from_str::<Envelope<ChildMsg>>(&l) {
                    Ok(Envelope { msg: ChildMsg::Stopped(o), .. }) => outcome = Some(o),
                    Ok(Envelope { id, msg }) => {
                        let mut pending = vmm.pending.lock().unwrap_or_else(|p| p.into_inner());
                        // Only the answer to the request waiting now; a late one is dropped.
                        if pending.as_ref().is_some_and(|(want, _)| *want == id) {
                            if let Some((_, tx)) = pending.take() {
                                let _ = tx.send(msg);
                            }
                        }
                    }
                    Err(e) => tracing::warn!("VMM {:?} sent a bad line: {e}", vmm.pid),
                },
                _ => break,
            },
            _ = vmm.kill.notified(), if !killed => {
                killed = true;
                let _ = child.start_kill();
            }
        }
    }
    // Fail any request still waiting: its answer will never come.
    drop(vmm.pending.lock().unwrap_or_else(|p| p.into_inner()).take());
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            _ = vmm.kill.notified(), if !killed => {
                killed = true;
                let _ = child.start_kill();
            }
        }
    };
    on_exit(Exit {
        outcome,
        process: describe_status(status),
        last_log: last_line(&log),
    });
}

fn describe_status(s: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match s {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "ended".into(),
        },
        Err(e) => format!("cannot be waited for: {e}"),
    }
}

/// The last non-empty line of a (small) log file, shortened to 300 characters.
pub fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let tail = &text[text.len().saturating_sub(4096)..];
    let s = String::from_utf8_lossy(tail);
    s.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(300).collect())
}
