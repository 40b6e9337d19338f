//! `wirt serve`: the host daemon. Listens on a Unix socket, runs each VM in its own
//! `wirt vmm` child, and on SIGTERM or SIGINT kills the VMs' processes (their definitions
//! stay in the state directory) before it exits.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// The default socket of `wirt serve` and `wirt vm`.
pub const DEFAULT_SOCKET: &str = "/run/wirt/wirt.sock";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Unix socket to listen on (mode 0600, or 0660 with --group).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where VM definitions and per-VM run files are kept (created with mode 0700).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/wirt")]
    state_dir: PathBuf,
    /// Let members of this group (name or number) use the socket too.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
}

/// The gid of a group given by name or number.
fn group_id(group: &str) -> anyhow::Result<u32> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(n);
    }
    let c = std::ffi::CString::new(group).context("bad group name")?;
    // SAFETY: getgrnam gets a NUL-terminated name; the returned record (static storage,
    // valid until the next getgr* call, which nothing else in this thread makes) is only
    // read here.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        anyhow::bail!("no group named {group:?}");
    }
    // SAFETY: gr is non-null and points to a valid group record.
    Ok(unsafe { (*gr).gr_gid })
}

pub fn run(args: ServeArgs) -> anyhow::Result<i32> {
    let group = args.group.as_deref().map(group_id).transpose()?;
    let program = std::env::current_exe().context("cannot find the wirt binary")?;
    let opts = api::ServeOptions {
        socket: args.socket.clone(),
        state_dir: args.state_dir,
        group,
        program,
    };
    // One thread: children are spawned from it, so PR_SET_PDEATHSIG ties them to the daemon.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        eprintln!("wirt: serving on {}", args.socket.display());
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        };
        api::serve(opts, stop).await?;
        eprintln!("wirt: stopped");
        anyhow::Ok(0)
    })
}
