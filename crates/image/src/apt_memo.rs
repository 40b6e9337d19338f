//! Remembers `apt-cache show` answers between runs.
//!
//! Asking apt costs 0.3 to 1 s per package (it loads its whole index), and every `wirt run`
//! that boots the default guest asks to know the image's cache key. The answer only changes
//! when apt's package lists, its configuration (sources, pins) or the installed packages
//! change, so it is kept under a fingerprint of those files: their paths, sizes and
//! modification times. A changed fingerprint (after `apt-get update`, say) asks apt again.
//! The memo is only a shortcut: any failure to read or write it falls back to asking apt.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

/// Where apt keeps what decides a package's candidate version.
const APT_STATE: [&str; 3] = ["/var/lib/apt/lists", "/etc/apt", "/var/lib/dpkg/status"];
/// How deep the fingerprint walks below each of those (`/etc/apt/*.d/*` is depth 2).
const MAX_DEPTH: usize = 3;

/// Memoized `apt-cache show` stanzas in one directory, valid for one fingerprint.
pub(crate) struct AptMemo {
    dir: PathBuf,
    fingerprint: String,
}

impl AptMemo {
    /// The memo in the default cache directory, or `None` when there is none to use.
    pub(crate) fn open_default() -> Option<Self> {
        let dir = crate::cache::default_cache_dir().ok()?.join("apt-memo");
        let roots: Vec<&Path> = APT_STATE.iter().map(Path::new).collect();
        Some(AptMemo::new(dir, &roots))
    }

    fn new(dir: PathBuf, roots: &[&Path]) -> Self {
        AptMemo {
            dir,
            fingerprint: fingerprint(roots),
        }
    }

    /// The remembered stanza for `package`, if it was remembered under this fingerprint.
    pub(crate) fn get(&self, package: &str) -> Option<String> {
        let text = fs::read_to_string(self.file(package)?).ok()?;
        let (first, stanza) = text.split_once('\n')?;
        (first == self.fingerprint).then(|| stanza.to_string())
    }

    /// Remembers `stanza` for `package` (written atomically; failures are ignored).
    pub(crate) fn put(&self, package: &str, stanza: &str) {
        let Some(path) = self.file(package) else {
            return;
        };
        let tmp = self
            .dir
            .join(format!(".{package}.{}.tmp", std::process::id()));
        let written = fs::create_dir_all(&self.dir).and_then(|()| {
            let mut f = fs::File::create(&tmp)?;
            writeln!(f, "{}", self.fingerprint)?;
            f.write_all(stanza.as_bytes())?;
            fs::rename(&tmp, &path)
        });
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// The memo file of `package`; `None` for a name that is not a Debian package name.
    fn file(&self, package: &str) -> Option<PathBuf> {
        let valid = !package.is_empty()
            && !package.starts_with('.')
            && package
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
        valid.then(|| self.dir.join(package))
    }
}

/// A hash of every file's path, size and modification time below `roots`, and of
/// `APT_CONFIG` (which can point apt elsewhere).
fn fingerprint(roots: &[&Path]) -> String {
    let mut entries = Vec::new();
    for root in roots {
        collect(root, MAX_DEPTH, &mut entries);
    }
    entries.sort();
    let mut h = Sha256::new();
    h.update(std::env::var("APT_CONFIG").unwrap_or_default());
    for e in entries {
        h.update(e.as_bytes());
        h.update([0]);
    }
    crate::debian::hex(&h.finalize())
}

fn collect(path: &Path, depth: usize, out: &mut Vec<String>) {
    let Ok(meta) = fs::metadata(path) else {
        out.push(format!("{} missing", path.display()));
        return;
    };
    if meta.is_dir() {
        if depth == 0 {
            return;
        }
        let Ok(dir) = fs::read_dir(path) else {
            return;
        };
        for entry in dir.filter_map(Result::ok) {
            let name = entry.file_name();
            // apt's download area and lock change without changing the index.
            if name == "partial" || name == "lock" {
                continue;
            }
            collect(&entry.path(), depth - 1, out);
        }
        return;
    }
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    out.push(format!("{} {} {mtime}", path.display(), meta.len()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wirt-apt-memo-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn remembers_until_apt_state_changes() {
        let d = scratch("state");
        let lists = d.join("lists");
        fs::create_dir_all(lists.join("partial")).unwrap();
        fs::write(lists.join("deb_Packages"), "a").unwrap();
        let memo = AptMemo::new(d.join("memo"), &[&lists]);
        assert_eq!(memo.get("busybox-static"), None);
        memo.put("busybox-static", "Package: busybox-static\nVersion: 1\n");
        assert_eq!(
            memo.get("busybox-static").as_deref(),
            Some("Package: busybox-static\nVersion: 1\n")
        );
        // A partial download does not matter; a changed list does.
        fs::write(lists.join("partial").join("x"), "zz").unwrap();
        let same = AptMemo::new(d.join("memo"), &[&lists]);
        assert!(same.get("busybox-static").is_some());
        fs::write(lists.join("deb_Packages"), "ab").unwrap();
        let updated = AptMemo::new(d.join("memo"), &[&lists]);
        assert_eq!(updated.get("busybox-static"), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn names_that_are_not_package_names_are_not_files() {
        let d = scratch("names");
        let memo = AptMemo::new(d.clone(), &[]);
        for bad in ["", "../etc", "a/b", ".hidden", "UPPER"] {
            memo.put(bad, "x");
            assert_eq!(memo.get(bad), None, "{bad}");
        }
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
        fs::remove_dir_all(&d).unwrap();
    }
}
