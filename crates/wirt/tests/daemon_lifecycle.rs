//! End-to-end: a real `wirt serve` on a temporary socket, driven by `wirt vm --json`:
//! VMs in their own processes on the software engine, pause/resume with counters, stop,
//! persistence across daemon restarts, guest exits, VMM crashes and daemon crashes.

mod daemon_support;

use daemon_support::{
    alive, create_args, eventually, exiting_guest, instructions, long_running_guest, raw_status,
    temp_dir, Daemon,
};

fn create_and_start(d: &Daemon, name: &str, kernel: &std::path::Path) -> serde_json::Value {
    let mut args = vec!["create".to_string(), name.to_string(), "--start".into()];
    args.extend(create_args(kernel));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    d.vm_ok(&args)
}

#[test]
fn two_vms_run_pause_resume_stop_and_their_definitions_survive_a_restart() {
    let dir = temp_dir("lifecycle");
    let d = Daemon::start(&dir);
    let guest = long_running_guest();
    for name in ["alpha", "beta"] {
        let v = create_and_start(&d, name, &guest);
        assert_eq!(v["state"], "running", "{v}");
        assert_eq!(v["engine"], "sw", "{v}");
    }
    assert_eq!(d.children().len(), 2, "one VMM process per VM");

    // Counters grow while it runs...
    let first = instructions(&d.vm_ok(&["info", "alpha"]));
    d.wait_for("alpha", "busier", |v| instructions(v) > first);

    // ...and stand still while it is paused.
    let v = d.vm_ok(&["pause", "alpha"]);
    assert_eq!(v["state"], "paused", "{v}");
    let (status, _) = d.vm(&["pause", "alpha"]);
    assert_eq!(status, 5, "pausing a paused VM is a state conflict");
    let p1 = instructions(&d.vm_ok(&["info", "alpha"]));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let p2 = instructions(&d.vm_ok(&["info", "alpha"]));
    assert_eq!(p1, p2, "a paused VM executed instructions");
    assert!(p1 > first, "{p1} <= {first}");

    let v = d.vm_ok(&["resume", "alpha"]);
    assert_eq!(v["state"], "running", "{v}");
    d.wait_for("alpha", "running again", |v| instructions(v) > p2);
    let beta = d.vm_ok(&["info", "beta"]);
    assert!(beta["uptime_ms"].as_u64().is_some(), "{beta}");
    assert!(!beta["stats"]["exits"]["pio-write"].is_null(), "{beta}");

    let ls = d.vm_ok(&["ls"]);
    let states: Vec<&str> = ls["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["running", "running"], "{ls}");

    // spin64 ignores the power button: `stop` falls back to a kill after its timeout.
    let (status, v) = d.vm(&["stop", "alpha", "--timeout", "1"]);
    assert_eq!(status, 7, "{v}");
    assert_eq!(v["state"], "stopped", "{v}");
    let v = d.vm_ok(&["info", "alpha"]);
    assert!(v["reason"].as_str().unwrap().contains("killed"), "{v}");
    d.vm_ok(&["pause", "beta"]);
    let v = d.vm_ok(&["kill", "beta"]); // a paused VM can be killed too
    assert_eq!(v["state"], "stopped", "{v}");
    assert_eq!(
        v["reason"], "killed by the user (the guest was not asked to power off)",
        "{v}"
    );
    assert!(v["stats"]["instructions"].as_u64().unwrap() > 0, "{v}");
    let (status, _) = d.vm(&["pause", "beta"]);
    assert_eq!(status, 5, "pausing a stopped VM is a state conflict");
    eventually("the VMMs are reaped", || d.children().is_empty());
    d.stop();

    // A restarted daemon lists the same VMs, with how their last runs ended.
    let d = Daemon::start(&dir);
    let ls = d.vm_ok(&["ls"]);
    let vms = ls["vms"].as_array().unwrap();
    let names: Vec<&str> = vms.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta"], "{ls}");
    assert!(vms.iter().all(|v| v["state"] == "stopped"), "{ls}");
    let beta = d.vm_ok(&["info", "beta"]);
    assert!(
        beta["reason"]
            .as_str()
            .unwrap()
            .contains("killed by the user"),
        "{beta}"
    );
    assert!(
        beta["stats"]["instructions"].as_u64().unwrap() > 0,
        "{beta}"
    );
    assert_eq!(vms[0]["config"]["kernel"], guest.display().to_string());
    assert_eq!(vms[0]["memory_bytes"], 64 << 20);

    for name in ["alpha", "beta"] {
        assert_eq!(d.vm_ok(&["rm", name])["deleted"], name);
    }
    assert_eq!(d.vm(&["info", "alpha"]).0, 4, "a deleted VM is not found");
    d.stop();
    let d = Daemon::start(&dir);
    assert_eq!(d.vm_ok(&["ls"])["vms"], serde_json::json!([]));
    d.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn guest_exits_vmm_crashes_and_daemon_crashes_are_handled() {
    let dir = temp_dir("failures");
    let d = Daemon::start(&dir);

    // A guest that ends by itself: stopped, with wirt run's exit status and its counters.
    create_and_start(&d, "hello", &exiting_guest());
    let v = d.wait_for("hello", "stopped", |v| v["state"] == "stopped");
    assert_eq!(v["exit_status"], 33, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("debug-exit"), "{v}");
    assert!(
        v["stats"]["exits"]["pio-write"].as_u64().unwrap() > 0,
        "{v}"
    );
    eventually("hello's VMM is reaped", || d.children().is_empty());

    // A VMM that dies: the VM is failed with the reason, the daemon serves on.
    create_and_start(&d, "victim", &long_running_guest());
    let vmm = d.children();
    assert_eq!(vmm.len(), 1);
    // SAFETY: signalling the VMM child of our daemon.
    unsafe { libc::kill(vmm[0], libc::SIGKILL) };
    let v = d.wait_for("victim", "failed", |v| v["state"] == "failed");
    assert!(
        v["reason"].as_str().unwrap().contains("killed by signal 9"),
        "{v}"
    );
    eventually("no zombie VMM", || {
        !alive(vmm[0]) && d.children().is_empty()
    });

    // A failed VM can be started again.
    let v = d.vm_ok(&["start", "victim"]);
    assert_eq!(v["state"], "running", "{v}");

    // `wirt vm console` holds the console until the VM ends (stdin is not a terminal, so
    // it keeps printing after its input ends); a second client is refused meanwhile.
    let console = std::process::Command::new(env!("CARGO_BIN_EXE_wirt"))
        .args(["vm", "--socket"])
        .arg(&d.socket)
        .args(["console", "victim"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Without an upgrade request the daemon answers 426, or 409 while a client is attached.
    let console_status = || raw_status(&d.socket, "GET", "/v1/vms/victim/console");
    eventually("the console is attached", || console_status() == 409);
    d.vm_ok(&["kill", "victim"]);
    let out = console.wait_with_output().unwrap();
    assert_eq!(console_status(), 409, "a stopped VM has no console");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("attached to victim's console"), "{stderr}");
    assert!(stderr.contains("console of victim closed"), "{stderr}");

    let v = d.vm_ok(&["start", "victim"]);
    assert_eq!(v["state"], "running", "{v}");
    let vmm = d.children();
    assert_eq!(vmm.len(), 1);

    // If the daemon dies, its VMMs die with it.
    d.crash();
    eventually("the VMM dies with the daemon", || !alive(vmm[0]));

    // The next daemon replaces the stale socket and still knows both VMs.
    let d = Daemon::start(&dir);
    let ls = d.vm_ok(&["ls"]);
    assert_eq!(ls["vms"].as_array().unwrap().len(), 2, "{ls}");

    // Stopping the daemon (SIGTERM) kills its VMMs and reaps them before it exits.
    d.vm_ok(&["start", "victim"]);
    let vmm = d.children();
    assert_eq!(vmm.len(), 1);
    d.stop();
    assert!(!alive(vmm[0]), "a VMM outlived its daemon");
    let d = Daemon::start(&dir);
    let v = d.vm_ok(&["info", "victim"]);
    assert_eq!(v["state"], "stopped", "{v}");
    assert_eq!(v["reason"], "killed when the daemon stopped", "{v}");
    d.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_default_guest_vms_boot_pause_resume_and_power_off_on_stop() {
    // The default guest (Debian kernel + busybox), built into the cache if missing.
    image::build(&image::BuildOptions::default(), &mut |_| {}).expect("default guest image");
    let dir = temp_dir("default-guest");
    let d = Daemon::start(&dir);
    for name in ["linux-a", "linux-b"] {
        let v = d.vm_ok(&[
            "create", name, "--start", "--engine", "sw", "--memory", "128M",
        ]);
        assert_eq!(v["state"], "running", "{v}");
    }
    // `stop` right after start: the guest is still booting and nobody listens to the power
    // button yet, so the first press is lost; `stop` presses again until the guest, once
    // up, powers off by itself.
    let graceful = |name: &str| {
        let (status, v) = d.vm(&["stop", name, "--timeout", "120"]);
        assert_eq!(status, 0, "a graceful stop, not a kill: {v}");
        assert_eq!(v["state"], "stopped", "{v}");
        assert!(
            v["reason"].as_str().unwrap_or("").contains("powered off"),
            "{v}"
        );
    };
    assert!(
        d.vm_ok(&["info", "linux-b"])["stats"]["ready_ms"].is_null(),
        "linux-b was ready before the test could stop it early"
    );
    graceful("linux-b");
    // The default guest writes the boot-timer port once its shell (and its power-button
    // handler) is up.
    d.wait_for("linux-a", "ready", |v| {
        v["stats"]["ready_ms"].as_u64().is_some()
    });
    d.vm_ok(&["pause", "linux-a"]);
    let p1 = instructions(&d.vm_ok(&["info", "linux-a"]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        instructions(&d.vm_ok(&["info", "linux-a"])),
        p1,
        "ran while paused"
    );
    d.vm_ok(&["resume", "linux-a"]);
    // An idle guest still takes timer interrupts: its counters keep growing.
    d.wait_for("linux-a", "running after resume", |v| instructions(v) > p1);
    // `stop` presses the ACPI power button; the default guest powers off by itself.
    graceful("linux-a");
    for name in ["linux-a", "linux-b"] {
        assert_eq!(d.vm_ok(&["rm", name])["deleted"], name);
    }
    eventually("the VMMs are reaped", || d.children().is_empty());
    d.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}
