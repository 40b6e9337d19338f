//! End-to-end: the balloon of a running VM, driven through a real `wirt serve`. The default
//! guest on the software engine touches memory and frees it; inflating the balloon from the
//! API (`wirt vm balloon`) must lower the guest's MemTotal (and the guest's own statistics
//! from the stats queue) and the RSS of the VM's host process; deflating gives the memory
//! back. Every API answer is checked against the OpenAPI document; the error cases get the
//! documented codes.

mod daemon_support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::client::Client;
use api::openapi::{check_response, document};
use daemon_support::{long_running_guest, temp_dir, Daemon};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
/// What the guest writes to a tmpfs file and deletes again: memory the host has backed
/// and the guest has free, which the balloon can hand back.
const FILL_MIB: u64 = 128;
const GUEST_MEMORY: &str = "256M";
const TARGET: u64 = 192 * MIB;

/// The guest: fill and free memory, then print MemTotal and MemFree (KiB) twice a second.
const SCRIPT: &str = "dd if=/dev/zero of=/tmp/fill bs=1M count=128 2>/dev/null\n\
                      rm /tmp/fill\n\
                      echo FILLED\n\
                      while :; do awk '/^MemTotal/{t=$2} /^MemFree/{f=$2} \
                      END{print \"MEM total=\" t \" free=\" f}' /proc/meminfo; sleep 0.5; done\n";

/// One API call whose answer must be documented; returns status and JSON body.
fn api(
    socket: &Path,
    method: &str,
    template: &str,
    name: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let path = template.replace("{name}", name);
    let r = rt
        .block_on(Client::new(socket).send(method, &path, body.map(|b| b.to_string().into_bytes())))
        .unwrap();
    if let Err(e) = check_response(&document(), method, template, r.status, &r.body) {
        panic!("{e}\nbody: {}", String::from_utf8_lossy(&r.body));
    }
    (r.status, r.json())
}

fn set_balloon(socket: &Path, name: &str, target: Value) -> (u16, Value) {
    api(
        socket,
        "PUT",
        "/v1/vms/{name}/balloon",
        name,
        Some(json!({ "target": target })),
    )
}

fn info(socket: &Path, name: &str) -> Value {
    let (status, v) = api(socket, "GET", "/v1/vms/{name}", name, None);
    assert_eq!(status, 200, "{v}");
    v
}

/// Collects what VM `name` prints on its console, from a background thread.
fn console_log(socket: &Path, name: &str) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let out = log.clone();
    let (socket, name) = (socket.to_path_buf(), name.to_string());
    std::thread::spawn(move || {
        use tokio::io::AsyncReadExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let Ok(mut io) = Client::new(&socket).attach_console(&name).await else {
                return;
            };
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = io.read(&mut buf).await {
                out.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    });
    log
}

/// Waits (at most `limit`) until `f` returns something.
fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (MemTotal, MemFree) in KiB from the last complete `MEM` line after `skip` bytes of log.
fn last_mem_line(log: &str, skip: usize) -> Option<(u64, u64)> {
    let tail = log.get(skip..)?;
    let complete = &tail[..tail.rfind('\n')?];
    complete.lines().rev().find_map(|l| {
        let rest = l.trim().strip_prefix("MEM total=")?;
        let (t, f) = rest.split_once(" free=")?;
        Some((t.parse().ok()?, f.parse().ok()?))
    })
}

/// The resident set size of process `pid`, in bytes.
fn rss(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

#[test]
fn inflating_the_balloon_lowers_guest_memtotal_and_host_rss_and_deflating_returns_it() {
    image::build(&image::BuildOptions::default(), &mut |_| {}).expect("default guest");
    let cmdline = image::cmdline_with_script(image::DEFAULT_CMDLINE, SCRIPT).unwrap();
    let dir = temp_dir("balloon");
    let d = Daemon::start(&dir);
    let s = d.socket.clone();

    // Refusals before anything runs: no such VM, and a VM that is not running.
    assert_eq!(
        set_balloon(&s, "nope", json!("16M")).1["code"],
        "vm_not_found"
    );
    d.vm_ok(&[
        "create",
        "plain",
        "--kernel",
        long_running_guest().to_str().unwrap(),
        "--engine",
        "sw",
        "--memory",
        "64M",
    ]);
    let (status, v) = set_balloon(&s, "plain", json!("16M"));
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("wrong_state")),
        "{v}"
    );
    // Running, but without a balloon.
    d.vm_ok(&["start", "plain"]);
    let (status, v) = set_balloon(&s, "plain", json!("16M"));
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("wrong_state")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("no balloon"), "{v}");
    assert!(info(&s, "plain")["balloon"].is_null());
    assert_eq!(
        d.vm(&["balloon", "plain", "16M"]).0,
        5,
        "409 is exit status 5"
    );
    d.vm_ok(&["kill", "plain"]);

    // The default guest with a balloon.
    let v = d.vm_ok(&[
        "create",
        "big",
        "--start",
        "--engine",
        "sw",
        "--memory",
        GUEST_MEMORY,
        "--balloon",
        "--cmdline",
        &cmdline,
    ]);
    assert_eq!(v["state"], "running", "{v}");
    let log = console_log(&s, "big");
    let v = info(&s, "big");
    let pid = v["vmm_pid"]
        .as_u64()
        .expect("the VMM's pid in the VM's info");
    assert!(
        d.children().contains(&(pid as i32)),
        "{pid} is the daemon's child"
    );
    assert_eq!(v["balloon"]["target_bytes"], 0, "{v}");

    // Bad targets: 422, and nothing changes.
    for (target, code) in [
        (json!("lots"), "invalid_request"),
        (json!(GUEST_MEMORY), "invalid_config"),
        (json!("1G"), "invalid_config"),
        (json!(4097), "invalid_config"),
    ] {
        let (status, v) = set_balloon(&s, "big", target.clone());
        assert_eq!(
            (status, v["code"].as_str()),
            (422, Some(code)),
            "{target}: {v}"
        );
    }
    assert_eq!(d.vm(&["balloon", "big", "1G"]).0, 3, "422 is exit status 3");

    // The guest has touched FILL_MIB and freed it again: the host holds that memory.
    let filled_at = poll(
        "the guest filled and freed memory",
        Duration::from_secs(300),
        || log.lock().unwrap().find("FILLED"),
    );
    let (total0, _) = poll("a MEM line", Duration::from_secs(60), || {
        last_mem_line(&log.lock().unwrap(), filled_at)
    });
    let rss0 = rss(pid);
    assert!(
        rss0 > FILL_MIB * MIB,
        "the VMM's RSS {rss0} is below what the guest touched"
    );
    // The stats queue works: the guest's own figures reach the API.
    // (The first figures are from the driver's probe, before the kernel freed its init
    // memory; each read of the info asks for fresh ones.)
    poll(
        "the guest's statistics show MemTotal",
        Duration::from_secs(30),
        || {
            let t = info(&s, "big")["balloon"]["guest_stats"]["total_memory"].as_u64()?;
            (t == total0 * 1024).then_some(())
        },
    );

    // Inflate through the CLI.
    let v = d.vm_ok(&["balloon", "big", "192M"]);
    assert_eq!(v["balloon"]["target_bytes"], TARGET, "{v}");
    let v = poll(
        "the guest inflates the balloon",
        Duration::from_secs(120),
        || {
            let v = info(&s, "big");
            (v["balloon"]["actual_bytes"] == TARGET).then_some(v)
        },
    );
    assert!(
        v["balloon"]["inflated_pages"].as_u64().unwrap() >= TARGET / 4096,
        "{v}"
    );
    let mark = log.lock().unwrap().len();
    let (total1, _) = poll("MemTotal drops", Duration::from_secs(60), || {
        last_mem_line(&log.lock().unwrap(), mark).filter(|&(t, _)| t < total0)
    });
    let dropped_kib = total0 - total1;
    assert!(
        (TARGET / 1024 - 1024..=TARGET / 1024 + 1024).contains(&dropped_kib),
        "MemTotal {total0} -> {total1} KiB: dropped by {dropped_kib} KiB, not about {} KiB",
        TARGET / 1024
    );
    let rss1 = rss(pid);
    eprintln!(
        "balloon {} MiB: guest MemTotal {total0} -> {total1} KiB, VMM RSS {} -> {} MiB",
        TARGET / MIB,
        rss0 / MIB,
        rss1 / MIB
    );
    assert!(
        rss0.saturating_sub(rss1) > 50 * MIB,
        "the VMM's RSS went from {} MiB to {} MiB only",
        rss0 / MIB,
        rss1 / MIB
    );
    poll(
        "the guest's statistics show the smaller total",
        Duration::from_secs(30),
        || {
            let t = info(&s, "big")["balloon"]["guest_stats"]["total_memory"].as_u64()?;
            (t == total1 * 1024).then_some(())
        },
    );

    // Deflate: the guest gets its memory back.
    let (status, v) = set_balloon(&s, "big", json!(0));
    assert_eq!(status, 202, "{v}");
    poll(
        "the guest deflates the balloon",
        Duration::from_secs(120),
        || (info(&s, "big")["balloon"]["actual_bytes"] == 0).then_some(()),
    );
    let mark = log.lock().unwrap().len();
    poll("MemTotal comes back", Duration::from_secs(60), || {
        last_mem_line(&log.lock().unwrap(), mark).filter(|&(t, _)| t + 256 >= total0)
    });

    d.vm_ok(&["kill", "big"]);
    let (status, v) = set_balloon(&s, "big", json!("16M"));
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("wrong_state")),
        "{v}"
    );
    assert!(
        info(&s, "big")["vmm_pid"].is_null(),
        "a stopped VM has no VMM"
    );
    d.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}
