//! `wirt vm ...`: the client of `wirt serve`. Human tables by default, `--json` for
//! scripts (the daemon's JSON, unchanged).
//!
//! Exit status: 0 success; 1 cannot reach the daemon or another local error; 2 usage
//! error; 3 the daemon rejected the request (400, 413, 422: bad config, unreadable kernel,
//! start failed); 4 no such VM (404); 5 wrong state or name taken (409); 6 the daemon or a
//! VMM failed (5xx); 7 `stop` timed out and the VM was killed.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::client::{Client, ClientError};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::run::BalloonSpec;
use crate::vm_args::{DeviceArgs, Guest, MachineArgs};
use vmm::config::MemorySize;

#[derive(Args, Debug)]
pub struct VmArgs {
    /// The daemon's socket (default: $WIRT_SOCKET, else /run/wirt/wirt.sock).
    #[arg(long, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    /// Print the daemon's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: VmCommand,
}

#[derive(Subcommand, Debug)]
enum VmCommand {
    /// Define a VM (with the flags of `wirt run`); --start also starts it.
    Create(Box<CreateArgs>),
    /// Start a VM in its own VMM process.
    Start { name: String },
    /// Pause all vCPUs of a VM.
    Pause { name: String },
    /// Resume a paused VM.
    Resume { name: String },
    /// Ask the guest to power off (the VMM presses the ACPI power button, again every 5 s, since a
    /// guest still booting may not listen yet); kill it if it has not after --timeout seconds.
    Stop {
        name: String,
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        timeout: u64,
    },
    /// End a VM now (the guest is not asked).
    Kill { name: String },
    /// Delete a VM that is not running (--force kills it first).
    Rm {
        name: String,
        #[arg(long, short)]
        force: bool,
    },
    /// List VMs.
    Ls,
    /// Show a VM: state, engine, uptime, exit counters.
    Info { name: String },
    /// Set how much memory the balloon takes from a running VM's guest (e.g. 64M; 0 gives
    /// it all back). The guest inflates or deflates in its own time: watch `wirt vm info`.
    Balloon {
        name: String,
        #[arg(value_name = "SIZE")]
        target: MemorySize,
    },
    /// Attach this terminal to a VM's serial console; Ctrl-A x detaches (the VM runs on).
    /// With stdin not a terminal, input is passed through and output is printed until the
    /// VM stops (or the command is interrupted).
    Console { name: String },
}

#[derive(Args, Debug)]
struct CreateArgs {
    name: String,
    #[command(flatten)]
    machine: MachineArgs,
    /// Device paths (disk images, sockets) are paths on the daemon's host.
    #[command(flatten)]
    devices: DeviceArgs,
    /// Start the VM once it is defined.
    #[arg(long)]
    start: bool,
}

/// Exit status for an API error (see the module docs).
fn status_of(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Api { status, .. }) => match status {
            404 => 4,
            409 => 5,
            400..=499 => 3,
            _ => 6,
        },
        _ => 1,
    }
}

pub fn run(args: VmArgs) -> anyhow::Result<i32> {
    let socket = args
        .socket
        .clone()
        .or_else(|| std::env::var_os("WIRT_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::serve_cmd::DEFAULT_SOCKET));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = Client::new(&socket);
    match rt.block_on(dispatch(&client, args)) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("wirt: error: {}", crate::one_line(&e));
            Ok(status_of(&e))
        }
    }
}

fn vm_path(name: &str, op: &str) -> String {
    // Names are restricted to [A-Za-z0-9_.-] by the daemon; anything else cannot match.
    let name: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if op.is_empty() {
        format!("/v1/vms/{name}")
    } else {
        format!("/v1/vms/{name}/{op}")
    }
}

async fn dispatch(c: &Client, args: VmArgs) -> anyhow::Result<i32> {
    let json = args.json;
    let show = |v: &Value| {
        if json {
            println!("{v}");
        } else {
            print!("{}", info_table(v));
        }
    };
    let brief = |v: &Value| {
        if json {
            println!("{v}");
        } else {
            println!("{}: {}", str_of(&v["name"]), state_line(v));
        }
    };
    match args.command {
        VmCommand::Create(a) => {
            anyhow::ensure!(
                !a.devices.test_device,
                "--test-device is for `wirt run` (conformance tests), not for daemon VMs"
            );
            let Guest {
                kernel,
                initrd,
                cmdline,
            } = a.machine.guest(false)?;
            let mut spec = json!({
                "name": a.name, "kernel": kernel, "cmdline": cmdline, "cpus": a.machine.cpus,
                "memory": a.machine.memory.0, "engine": a.machine.engine, "disks": a.devices.disk, "nets": a.devices.net,
                "rng": a.devices.rng,
            });
            if let Some(i) = initrd {
                spec["initrd"] = json!(i);
            }
            if let Some(v) = a.devices.vsock {
                spec["vsock"] = json!(v);
            }
            if let Some(c) = &a.devices.virtio_console {
                spec["virtio_console"] = json!(c);
            }
            spec["virtio_transport"] = json!(a.devices.virtio_transport);
            if let Some(f) = &a.machine.cpu_features {
                spec["cpu_features"] = json!(f.0);
            }
            if let Some(BalloonSpec(cfg, target)) = a.devices.balloon {
                spec["balloon"] = json!(cfg);
                if let Some(t) = target {
                    spec["balloon_target"] = json!(t.0);
                }
            }
            let mut v = c.call("POST", "/v1/vms", Some(&spec)).await?;
            if a.start {
                v = c.call("POST", &vm_path(&a.name, "start"), None).await?;
            }
            brief(&v);
        }
        VmCommand::Start { name } => brief(&c.call("POST", &vm_path(&name, "start"), None).await?),
        VmCommand::Pause { name } => brief(&c.call("POST", &vm_path(&name, "pause"), None).await?),
        VmCommand::Resume { name } => {
            brief(&c.call("POST", &vm_path(&name, "resume"), None).await?)
        }
        VmCommand::Kill { name } => brief(&c.call("POST", &vm_path(&name, "kill"), None).await?),
        VmCommand::Stop { name, timeout } => return stop(c, &name, timeout, &brief).await,
        VmCommand::Rm { name, force } => {
            if force {
                match c.call("POST", &vm_path(&name, "kill"), None).await {
                    Ok(_) => {}
                    Err(ClientError::Api { status: 409, .. }) => {} // not running: fine
                    Err(e) => return Err(e.into()),
                }
            }
            c.call("DELETE", &vm_path(&name, ""), None).await?;
            if json {
                println!("{}", json!({"deleted": name}));
            } else {
                println!("{name}: deleted");
            }
        }
        VmCommand::Ls => {
            let v = c.call("GET", "/v1/vms", None).await?;
            if json {
                println!("{v}");
            } else {
                print!("{}", list_table(&v));
            }
        }
        VmCommand::Info { name } => show(&c.call("GET", &vm_path(&name, ""), None).await?),
        VmCommand::Balloon { name, target } => {
            let body = json!({ "target": target.0 });
            let v = c
                .call("PUT", &vm_path(&name, "balloon"), Some(&body))
                .await?;
            if json {
                println!("{v}");
            } else {
                println!("{}: balloon target {target}", str_of(&v["name"]));
            }
        }
        VmCommand::Console { name } => return console(c, &name).await,
    }
    Ok(0)
}

async fn stop(c: &Client, name: &str, timeout: u64, brief: &dyn Fn(&Value)) -> anyhow::Result<i32> {
    c.call("POST", &vm_path(name, "shutdown"), None).await?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let v = c.call("GET", &vm_path(name, ""), None).await?;
        let state = str_of(&v["state"]);
        if state != "running" && state != "paused" {
            brief(&v);
            return Ok(0);
        }
        if Instant::now() >= deadline {
            eprintln!("wirt: {name} did not power off within {timeout} s; killing it");
            match c.call("POST", &vm_path(name, "kill"), None).await {
                Ok(v) => brief(&v),
                Err(ClientError::Api { status: 409, .. }) => {} // it stopped meanwhile
                Err(e) => return Err(e.into()),
            }
            return Ok(7);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn console(c: &Client, name: &str) -> anyhow::Result<i32> {
    let io = c.attach_console(name).await?;
    let (mut from_vm, mut to_vm) = tokio::io::split(io);
    eprint!("wirt: attached to {name}'s console; Ctrl-A x detaches\r\n");
    let tty = vmm::terminal::is_tty(libc::STDIN_FILENO);
    let raw = vmm::terminal::RawMode::enable(libc::STDIN_FILENO)
        .context("cannot put the terminal in raw mode")?;

    // Typed input: a blocking thread reads stdin and hands chunks to the async side.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(16);
    std::thread::Builder::new()
        .name("console-stdin".into())
        .spawn(move || {
            let mut parser = vmm::terminal::EscapeParser::default();
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk = if tty {
                    match parser.feed(&buf[..n]) {
                        vmm::terminal::Typed::Bytes(b) => b,
                        vmm::terminal::Typed::Quit(b) => {
                            let _ = tx.blocking_send(Some(b));
                            break;
                        }
                    }
                } else {
                    buf[..n].to_vec()
                };
                if tx.blocking_send(Some(chunk)).is_err() {
                    return;
                }
            }
            let _ = tx.blocking_send(None);
        })
        .context("cannot start the console input thread")?;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4096];
    let mut input_open = true;
    let ended_by_vm = loop {
        tokio::select! {
            n = from_vm.read(&mut buf) => match n {
                Ok(0) | Err(_) => break true,
                Ok(n) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
            },
            chunk = rx.recv(), if input_open => match chunk {
                Some(Some(b)) => {
                    if to_vm.write_all(&b).await.is_err() {
                        break true;
                    }
                }
                // Ctrl-A x (tty) detaches at once.
                _ if tty => break false,
                // Piped input ended: keep printing output until the VM side closes (a
                // half-close would end the VMM's console session).
                _ => input_open = false,
            },
        }
    };
    drop(raw);
    if ended_by_vm {
        eprintln!("\r\nwirt: the console of {name} closed (the VM stopped?)");
    } else {
        eprintln!("\r\nwirt: detached from {name}");
    }
    Ok(0)
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn state_line(v: &Value) -> String {
    let mut s = str_of(&v["state"]).to_string();
    if let Some(r) = v["reason"].as_str() {
        s.push_str(&format!(" ({r})"));
    }
    s
}

fn human_ms(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) => {
            let s = ms / 1000;
            if s >= 3600 {
                format!("{}h{:02}m", s / 3600, s / 60 % 60)
            } else if s >= 60 {
                format!("{}m{:02}s", s / 60, s % 60)
            } else {
                format!("{}.{}s", s, ms % 1000 / 100)
            }
        }
    }
}

fn memory(v: &Value) -> String {
    v.as_u64()
        .map(|b| MemorySize(b).to_string())
        .unwrap_or_else(|| "-".into())
}

/// A byte count for a person: `64M` when it is whole mebibytes, else `61.3M`.
fn approx_memory(v: &Value) -> String {
    match v.as_u64() {
        Some(b) if !b.is_multiple_of(1 << 20) => format!("{:.1}M", b as f64 / f64::from(1 << 20)),
        _ => memory(v),
    }
}

/// `wirt vm ls`: one VM per line.
fn list_table(v: &Value) -> String {
    let mut s = format!(
        "{:<20} {:<8} {:<6} {:>4} {:>7} {:>9}\n",
        "NAME", "STATE", "ENGINE", "CPUS", "MEMORY", "UPTIME"
    );
    for vm in v["vms"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "{:<20} {:<8} {:<6} {:>4} {:>7} {:>9}\n",
            str_of(&vm["name"]),
            str_of(&vm["state"]),
            str_of(&vm["engine"]),
            vm["vcpus"].as_u64().unwrap_or(0),
            memory(&vm["memory_bytes"]),
            human_ms(vm["uptime_ms"].as_u64()),
        ));
    }
    s
}

/// `wirt vm info`: key-value lines, then the exit counters.
fn info_table(v: &Value) -> String {
    let cfg = &v["config"];
    let mut s = String::new();
    let mut row = |k: &str, val: String| s.push_str(&format!("{k:<14} {val}\n"));
    row("name", str_of(&v["name"]).into());
    row("state", state_line(v));
    if let Some(x) = v["exit_status"].as_i64() {
        row("exit status", x.to_string());
    }
    row("engine", str_of(&v["engine"]).into());
    row("vcpus", v["vcpus"].as_u64().unwrap_or(0).to_string());
    row("memory", memory(&v["memory_bytes"]));
    row("uptime", human_ms(v["uptime_ms"].as_u64()));
    if let Some(p) = v["vmm_pid"].as_u64() {
        row("vmm pid", p.to_string());
    }
    let b = &v["balloon"];
    if b.is_object() {
        row(
            "balloon",
            format!(
                "target {}, holds {}",
                approx_memory(&b["target_bytes"]),
                approx_memory(&b["actual_bytes"])
            ),
        );
        let g = &b["guest_stats"];
        for (key, name) in [
            ("total_memory", "guest total"),
            ("free_memory", "guest free"),
            ("available_memory", "guest avail"),
        ] {
            if g[key].is_u64() {
                row(name, approx_memory(&g[key]));
            }
        }
    }
    row("kernel", str_of(&cfg["kernel"]).into());
    if let Some(i) = cfg["initrd"].as_str() {
        row("initrd", i.into());
    }
    row("cmdline", str_of(&cfg["cmdline"]).into());
    let stats = &v["stats"];
    if let Some(exits) = stats["exits"].as_object() {
        s.push_str("exit reason        count\n");
        for (r, n) in exits {
            s.push_str(&format!("{:<16} {:>9}\n", r, n.as_u64().unwrap_or(0)));
        }
        let total: u64 = exits.values().filter_map(Value::as_u64).sum();
        s.push_str(&format!("{:<16} {:>9}\n", "total", total));
        if let Some(i) = stats["instructions"].as_u64().filter(|&i| i > 0) {
            s.push_str(&format!("{:<16} {:>9}\n", "instructions", i));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use vmm::config::BalloonConfig;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        vm: VmArgs,
    }

    #[test]
    fn create_takes_the_device_flags_of_run() {
        let cli = Cli::try_parse_from([
            "wirt",
            "create",
            "a",
            "--disk",
            "path=/d.img,readonly=on",
            "--disk",
            "path=/e.img",
            "--net",
            "tap=tap0",
            "--vsock",
            "cid=3,socket=/v.sock",
            "--rng",
            "--balloon",
        ])
        .unwrap();
        let VmCommand::Create(a) = cli.vm.command else {
            panic!("not create");
        };
        assert_eq!(a.devices.disk.len(), 2);
        assert!(a.devices.disk[0].readonly);
        assert_eq!(a.devices.net[0].tap, "tap0");
        assert_eq!(a.devices.vsock.map(|v| v.cid), Some(3));
        assert!(a.devices.rng);
        assert_eq!(
            a.devices.balloon,
            Some(BalloonSpec(BalloonConfig::default(), None))
        );
        assert!(Cli::try_parse_from(["wirt", "create", "a", "--disk", "readonly=on"]).is_err());
    }

    #[test]
    fn balloon_takes_a_name_and_a_size_and_info_shows_the_balloon() {
        let cli = Cli::try_parse_from(["wirt", "balloon", "a", "64M"]).unwrap();
        let VmCommand::Balloon { name, target } = cli.vm.command else {
            panic!("not balloon");
        };
        assert_eq!((name.as_str(), target), ("a", MemorySize(64 << 20)));
        assert!(Cli::try_parse_from(["wirt", "balloon", "a", "lots"]).is_err());
        assert!(Cli::try_parse_from(["wirt", "balloon", "a"]).is_err());

        let v = json!({"name": "a", "state": "running", "vmm_pid": 42, "config": {},
            "balloon": {"target_bytes": 64 << 20, "actual_bytes": 3 << 19,
                "guest_stats": {"total_memory": 200 << 20, "free_memory": 1_500_000}}});
        let t = info_table(&v);
        assert!(t.contains("vmm pid        42\n"), "{t}");
        assert!(t.contains("balloon        target 64M, holds 1.5M\n"), "{t}");
        assert!(t.contains("guest total    200M\n"), "{t}");
        assert!(t.contains("guest free     1.4M\n"), "{t}");
        assert!(!t.contains("guest avail"), "{t}");
        assert!(!info_table(&json!({"name": "b"})).contains("balloon"));
    }

    #[test]
    fn balloon_options_parse() {
        let b: BalloonSpec = "deflate-on-oom=on,free-page-reporting,target=64M"
            .parse()
            .unwrap();
        assert!(b.0.deflate_on_oom && b.0.free_page_reporting);
        assert_eq!(b.1, Some(MemorySize(64 << 20)));
        assert!("inflate=on".parse::<BalloonSpec>().is_err());
        assert!("target=lots".parse::<BalloonSpec>().is_err());
        assert!("deflate-on-oom=maybe".parse::<BalloonSpec>().is_err());
    }
}
