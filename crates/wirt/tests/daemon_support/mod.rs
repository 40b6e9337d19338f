//! A real `wirt serve` on a temporary socket for the daemon tests, and `wirt vm` runs
//! against it.

#![allow(dead_code)] // each test binary uses a different part

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The guest the daemon tests run: a kernel that runs until stopped and whose instructions
/// the software engine counts. When the software engine boots the default guest, this can
/// become the default guest's kernel (plus its initrd and cmdline in [`create_args`]).
pub fn long_running_guest() -> PathBuf {
    test_guests::path("spin64")
}

/// A guest that ends by itself (debug-exit 0x10: exit status 33).
pub fn exiting_guest() -> PathBuf {
    test_guests::path("hello64")
}

/// `wirt vm create` flags for `kernel` on the software engine.
pub fn create_args(kernel: &Path) -> Vec<String> {
    vec![
        "--kernel".into(),
        kernel.display().to_string(),
        "--engine".into(),
        "sw".into(),
        "--memory".into(),
        "64M".into(),
    ]
}

/// A fresh directory for one test (removed when the test's [`Daemon`] is dropped last).
pub fn temp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wirt-daemon-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running `wirt serve`.
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
}

impl Daemon {
    /// Starts `wirt serve` with its socket and state directory in `dir`.
    pub fn start(dir: &Path) -> Daemon {
        let socket = dir.join("api.sock");
        let state_dir = dir.join("state");
        let child = Command::new(env!("CARGO_BIN_EXE_wirt"))
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "the daemon did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child: Some(child),
            socket,
            state_dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM; the daemon must exit 0 and remove its socket.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(status.success(), "daemon exited with {status}");
        assert!(!self.socket.exists(), "the socket was not removed");
    }

    /// SIGKILL, as if the daemon crashed.
    pub fn crash(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Runs `wirt vm --socket S --json ARGS` and returns (status, JSON of stdout or Null).
    pub fn vm(&self, args: &[&str]) -> (i32, Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_wirt"))
            .arg("vm")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), v)
    }

    /// Like [`Daemon::vm`] but the command must succeed.
    pub fn vm_ok(&self, args: &[&str]) -> Value {
        let (status, v) = self.vm(args);
        assert_eq!(status, 0, "wirt vm {args:?} failed: {v}");
        v
    }

    /// Polls `wirt vm info NAME` until `pred` holds (at most 20 s).
    pub fn wait_for(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.vm_ok(&["info", name]);
            if pred(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{name} never became {what}: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The live child processes of the daemon (its VMMs).
    pub fn children(&self) -> Vec<i32> {
        children_of(self.pid())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The child processes of `pid`, from /proc.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Waits (at most 10 s) until `cond` holds.
pub fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn instructions(info: &Value) -> u64 {
    info["stats"]["instructions"].as_u64().unwrap_or(0)
}

/// The HTTP status of a bodiless request, spoken by hand (no client library involved).
pub fn raw_status(socket: &Path, method: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = UnixStream::connect(socket).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: wirt\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
