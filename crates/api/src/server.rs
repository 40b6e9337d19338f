//! The daemon's listening socket: created with mode 0600 (only the daemon's user may
//! control VMs) or 0660 with a group (that group's members may too), never briefly wider.
//! A stale socket from a dead daemon is replaced; a live one is refused.

use std::future::{Future, IntoFuture};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::daemon::Daemon;
use crate::routes::router;
use crate::store::StoreError;

/// What `wirt serve` was given.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Members of this group may use the socket too (mode 0660).
    pub group: Option<u32>,
    /// The `wirt` binary that runs each VM as `wirt vmm`.
    pub program: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{} is in use by a running daemon: stop it or choose another --socket", .0.display())]
    InUse(PathBuf),
    #[error("{} exists and is not a socket: choose another --socket", .0.display())]
    NotASocket(PathBuf),
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set the owner group or mode of {}: {source}", path.display())]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Binds the socket with the right mode, or explains why not.
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, ServeError> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(ServeError::NotASocket(path.into()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.into()));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    // SAFETY: umask only changes this process's file-creation mask; it is restored at once.
    // The mask makes bind create the socket as 0600, so it is never reachable by others.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|source| ServeError::Bind {
        path: path.into(),
        source,
    })?;
    if let Some(gid) = group {
        let perm = |source| ServeError::Permissions {
            path: path.into(),
            source,
        };
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(perm)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(perm)?;
    }
    Ok(listener)
}

/// Serves the API until `shutdown` completes, then kills the VMs' processes (their
/// definitions stay) and removes the socket.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let daemon = Daemon::open(&opts.state_dir, opts.program.clone())?;
    let std_listener = bind(&opts.socket, opts.group)?;
    let result = run(std_listener, daemon.clone(), shutdown).await;
    daemon.stop_all().await;
    let _ = std::fs::remove_file(&opts.socket);
    result
}

async fn run(
    std_listener: UnixListener,
    daemon: Daemon,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    std_listener
        .set_nonblocking(true)
        .map_err(ServeError::Serve)?;
    let listener = tokio::net::UnixListener::from_std(std_listener).map_err(ServeError::Serve)?;
    let app = router(daemon);
    tokio::select! {
        r = axum::serve(listener, app).into_future() => r.map_err(ServeError::Serve),
        () = shutdown => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_socket_is_private_or_shared_with_one_group_and_never_stolen() {
        let dir = std::env::temp_dir().join(format!("wirt-bind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");

        let l = bind(&path, None).unwrap();
        assert_eq!(mode(&path), 0o600);
        // A live daemon's socket is refused.
        assert!(matches!(bind(&path, None), Err(ServeError::InUse(_))));
        drop(l);
        // A stale one is replaced; with a group, the mode is 0660 and the group is set.
        // SAFETY: getegid has no preconditions.
        let gid = unsafe { libc::getegid() };
        let _l = bind(&path, Some(gid)).unwrap();
        assert_eq!(mode(&path), 0o660);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&path).unwrap().gid(), gid);

        // Never replaces a file that is not a socket.
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(bind(&file, None), Err(ServeError::NotASocket(_))));
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
