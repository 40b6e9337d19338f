//! The on-disk cache: where it is, a lock so concurrent builds do not collide, scratch
//! space, and atomic installation (build in a scratch directory, then rename).
//!
//! Layout under the cache root:
//!
//! ```text
//! lock                          flock(2)ed by a build for its whole duration
//! debs/<name>_<version>_<arch>.deb   downloaded packages, checked against apt's SHA256
//! kernels/minimal-<key>/bzImage      compiled minimal kernels
//! images/<flavour>-<key>/{vmlinuz,initrd.cpio,manifest.json}
//! tmp/                          scratch space of the running build
//! ```

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{ImageError, IoContext};

/// Environment variable that overrides the cache location.
pub const CACHE_DIR_ENV: &str = "WIRT_CACHE_DIR";

/// The cache directory: `$WIRT_CACHE_DIR`, else `$XDG_CACHE_HOME/wirt`, else
/// `$HOME/.cache/wirt`.
pub fn default_cache_dir() -> Result<PathBuf, ImageError> {
    cache_dir_from(|name| std::env::var_os(name))
}

/// [`default_cache_dir`] with the environment passed in.
fn cache_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<PathBuf, ImageError> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var(CACHE_DIR_ENV) {
        return Ok(dir);
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return Ok(xdg.join("wirt"));
    }
    var("HOME")
        .map(|home| home.join(".cache").join("wirt"))
        .ok_or(ImageError::NoCacheDir)
}

/// A cache root and its sub-directories.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache at `dir`, or at [`default_cache_dir`].
    pub fn open(dir: Option<&Path>) -> Result<Self, ImageError> {
        let root = match dir {
            Some(d) => d.to_path_buf(),
            None => default_cache_dir()?,
        };
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn debs(&self) -> PathBuf {
        self.root.join("debs")
    }

    pub fn kernels(&self) -> PathBuf {
        self.root.join("kernels")
    }

    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Takes the build lock, waiting while another build holds it, and clears scratch
    /// space left behind by builds that were killed.
    pub fn lock(&self) -> Result<CacheLock, ImageError> {
        fs::create_dir_all(&self.root)
            .context(|| format!("creating the cache directory {}", self.root.display()))?;
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock only reads the descriptor number; `file` owns it and outlives the
        // call. The lock is released when `file` is closed (CacheLock is dropped).
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(ImageError::io(
                format!("locking {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        let tmp = self.root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).context(|| format!("clearing {}", tmp.display()))?;
        }
        Ok(CacheLock {
            _file: file,
            cache: self.clone(),
        })
    }
}

/// Held while building; dropping it releases the lock.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
    cache: Cache,
}

impl CacheLock {
    /// A fresh, empty scratch directory (only the lock holder makes them, so names do
    /// not collide).
    pub fn scratch(&self, what: &str) -> Result<PathBuf, ImageError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = self
            .cache
            .root
            .join("tmp")
            .join(format!("{what}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Moves a finished `staging` directory to `target` in one rename, so readers see
    /// either nothing or a complete entry.
    pub fn install(&self, staging: &Path, target: &Path) -> Result<(), ImageError> {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).context(|| format!("creating {}", parent.display()))?;
        }
        if target.exists() {
            // Left by an older build of the same key that was interrupted after the
            // rename cannot be: renames are atomic, so this is a complete entry. Replace it.
            fs::remove_dir_all(target).context(|| format!("removing {}", target.display()))?;
        }
        sync_dir(staging)?;
        fs::rename(staging, target)
            .context(|| format!("moving {} to {}", staging.display(), target.display()))?;
        if let Some(parent) = target.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

impl CacheLock {
    /// Removes the entries of `dir` whose names start with `prefix`, except `keep`:
    /// images and kernels superseded by a newer build of the same flavour, and .debs
    /// of older package versions, so the cache does not grow with every Debian update.
    pub fn prune(&self, dir: &Path, prefix: &str, keep: &Path) -> Result<(), ImageError> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Ok(());
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name();
            if path == keep || !name.to_string_lossy().starts_with(prefix) {
                continue;
            }
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.context(|| format!("removing the stale {}", path.display()))?;
        }
        Ok(())
    }
}

/// fsyncs every file in `dir` and the directory itself.
fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    for entry in fs::read_dir(dir).context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .context(|| format!("reading {}", dir.display()))?
            .path();
        if path.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .context(|| format!("syncing {}", path.display()))?;
        }
    }
    File::open(dir)
        .and_then(|f| f.sync_all())
        .context(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_cache(name: &str) -> Cache {
        let dir = std::env::temp_dir().join(format!("wirt-cache-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Cache::open(Some(&dir)).unwrap()
    }

    #[test]
    fn cache_dir_follows_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        static ALL: [(&str, &str); 3] = [
            ("WIRT_CACHE_DIR", "/w"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(cache_dir_from(env(&ALL[..])).unwrap(), PathBuf::from("/w"));
        assert_eq!(
            cache_dir_from(env(&ALL[1..])).unwrap(),
            PathBuf::from("/x/wirt")
        );
        assert_eq!(
            cache_dir_from(env(&ALL[2..])).unwrap(),
            PathBuf::from("/h/.cache/wirt")
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/h/.cache/wirt")
        );
        assert!(matches!(
            cache_dir_from(env(&[])),
            Err(ImageError::NoCacheDir)
        ));
    }

    #[test]
    fn install_is_a_rename_of_a_complete_directory() {
        let cache = temp_cache("install");
        let lock = cache.lock().unwrap();
        let staging = lock.scratch("x").unwrap();
        fs::write(staging.join("f"), b"1").unwrap();
        let target = cache.images().join("k");
        lock.install(&staging, &target).unwrap();
        assert_eq!(fs::read(target.join("f")).unwrap(), b"1");
        assert!(!staging.exists());
        drop(lock);
        fs::remove_dir_all(cache.root()).unwrap();
    }

    #[test]
    fn lock_excludes_a_second_holder_until_dropped() {
        let cache = temp_cache("lock");
        let lock = cache.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = cache.clone();
        let waiter = std::thread::spawn(move || {
            let _second = other.lock().unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "a second lock was granted while the first was held"
        );
        drop(lock);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the second lock is granted after the first is dropped");
        waiter.join().unwrap();
        fs::remove_dir_all(cache.root()).unwrap();
    }

    #[test]
    fn prune_keeps_the_current_entry_and_other_prefixes() {
        let cache = temp_cache("prune");
        let lock = cache.lock().unwrap();
        let images = cache.images();
        for name in ["minimal-old", "minimal-new", "stock-x"] {
            fs::create_dir_all(images.join(name)).unwrap();
        }
        lock.prune(&images, "minimal-", &images.join("minimal-new"))
            .unwrap();
        assert!(!images.join("minimal-old").exists());
        assert!(images.join("minimal-new").exists());
        assert!(images.join("stock-x").exists());
        drop(lock);
        fs::remove_dir_all(cache.root()).unwrap();
    }

    #[test]
    fn lock_clears_stale_scratch() {
        let cache = temp_cache("stale");
        fs::create_dir_all(cache.root().join("tmp/old")).unwrap();
        let _lock = cache.lock().unwrap();
        assert!(!cache.root().join("tmp/old").exists());
        fs::remove_dir_all(cache.root()).unwrap();
    }
}
