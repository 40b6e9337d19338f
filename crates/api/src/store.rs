//! VM definitions on disk: one JSON file per VM in `<state-dir>/vms/`, written atomically
//! (temporary file, fsync, rename, fsync of the directory) so a crash never leaves a
//! half-written definition, and a restarted daemon lists the same VMs.
//!
//! Per-run files (the config handed to the VMM, its console socket, its log) live in
//! `<state-dir>/run/<name>/` and are recreated on each start.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::lifecycle::VmState;
use crate::model::{valid_name, Stats, VmSpec};

/// How a VM's last run ended, kept beside its definition so that a restarted daemon still
/// shows it (`run/<name>/last-run.json`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastRun {
    /// `stopped` or `failed`.
    pub state: VmState,
    pub reason: Option<String>,
    pub exit_status: Option<i32>,
    pub engine: Option<String>,
    pub stats: Option<Stats>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use state directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read VM definition {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating with mode 0700 if needed) the state directory.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for dir in [root.to_path_buf(), root.join("vms"), root.join("run")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| StoreError::Dir { path: dir, source })?;
        }
        Ok(Store { root: root.into() })
    }

    fn definition(&self, name: &str) -> PathBuf {
        self.root.join("vms").join(format!("{name}.json"))
    }

    /// The per-run directory of VM `name` (created, mode 0700).
    pub fn run_dir(&self, name: &str) -> Result<PathBuf, StoreError> {
        let dir = self.root.join("run").join(name);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| StoreError::Dir {
                path: dir.clone(),
                source,
            })?;
        Ok(dir)
    }

    /// Writes `spec` atomically.
    pub fn save(&self, spec: &VmSpec) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(spec).map_err(|e| StoreError::Write {
            path: self.definition(&spec.name),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.definition(&spec.name), &json)
    }

    fn last_run_file(&self, name: &str) -> PathBuf {
        self.root.join("run").join(name).join("last-run.json")
    }

    /// Records how VM `name`'s last run ended (atomically).
    pub fn save_last_run(&self, name: &str, last: &LastRun) -> Result<(), StoreError> {
        self.run_dir(name)?;
        let path = self.last_run_file(name);
        let json = serde_json::to_vec_pretty(last).map_err(|e| StoreError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&path, &json)
    }

    /// Forgets how VM `name`'s last run ended (a new run starts).
    pub fn clear_last_run(&self, name: &str) {
        let _ = fs::remove_file(self.last_run_file(name));
    }

    /// How VM `name`'s last run ended, if it ran and the record is readable.
    pub fn load_last_run(&self, name: &str) -> Option<LastRun> {
        let bytes = fs::read(self.last_run_file(name)).ok()?;
        let last: LastRun = serde_json::from_slice(&bytes).ok()?;
        matches!(last.state, VmState::Stopped | VmState::Failed).then_some(last)
    }

    /// Removes the definition and run files of VM `name`.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let path = self.definition(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Write { path, source }),
        }
        let _ = fs::remove_dir_all(self.root.join("run").join(name));
        sync_dir(&self.root.join("vms"));
        Ok(())
    }

    /// All stored definitions. A file that cannot be read is reported, not fatal.
    pub fn load_all(&self) -> Result<(Vec<VmSpec>, Vec<StoreError>), StoreError> {
        let dir = self.root.join("vms");
        let entries = fs::read_dir(&dir).map_err(|source| StoreError::Dir {
            path: dir.clone(),
            source,
        })?;
        let mut specs = Vec::new();
        let mut problems = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue; // temporary files of an interrupted write
            }
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<VmSpec>(&b).map_err(|e| e.to_string()))
                .and_then(|s| {
                    let stem = path.file_stem().and_then(|s| s.to_str());
                    if valid_name(&s.name) && stem == Some(s.name.as_str()) {
                        Ok(s)
                    } else {
                        Err("the name inside does not match the file name".into())
                    }
                });
            match parsed {
                Ok(s) => specs.push(s),
                Err(message) => problems.push(StoreError::Read { path, message }),
            }
        }
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((specs, problems))
    }
}

/// Temporary file in the same directory, fsync, rename over the target, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let err = |source| StoreError::Write {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> VmSpec {
        serde_json::from_value(serde_json::json!({"name": name, "kernel": "/k"})).unwrap()
    }

    #[test]
    fn definitions_survive_reopening_and_removal_is_complete() {
        let root = std::env::temp_dir().join(format!("wirt-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let s = Store::open(&root).unwrap();
        s.save(&spec("b")).unwrap();
        s.save(&spec("a")).unwrap();
        fs::write(root.join("vms/broken.json"), b"{").unwrap();
        s.run_dir("a").unwrap();
        let (specs, problems) = Store::open(&root).unwrap().load_all().unwrap();
        assert_eq!(specs, vec![spec("a"), spec("b")]);
        assert_eq!(problems.len(), 1);
        let last = LastRun {
            state: VmState::Stopped,
            reason: Some("guest powered off".into()),
            exit_status: Some(0),
            engine: Some("sw".into()),
            stats: None,
        };
        s.save_last_run("a", &last).unwrap();
        assert_eq!(Store::open(&root).unwrap().load_last_run("a"), Some(last));
        assert_eq!(s.load_last_run("b"), None, "never ran");
        s.remove("a").unwrap();
        assert!(!root.join("run/a").exists());
        assert_eq!(s.load_last_run("a"), None);
        let (specs, _) = s.load_all().unwrap();
        assert_eq!(specs, vec![spec("b")]);
        fs::remove_dir_all(&root).unwrap();
    }
}
