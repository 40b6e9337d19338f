//! The minimal kernel: compiled from Debian's `linux-source-6.1` with guest/kernel.config
//! by guest/build-kernel.sh, and cached on its own (keyed by config, script and source
//! version) so changing anything else in the image does not recompile it.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cache::CacheLock;
use crate::debian::{self, Package};
use crate::error::{ImageError, IoContext};
use crate::options::Progress;
use crate::recipe;

/// About how many objects a compile of guest/kernel.config builds (for the progress
/// estimate; measured on 6.1.192).
pub const OBJECTS_ESTIMATE: u32 = 1160;

/// The kernel source package.
pub fn resolve_source() -> Result<Package, ImageError> {
    debian::resolve(recipe::LINUX_SOURCE_PACKAGE)
}

/// Where the compiled kernel for `source` lives in the cache.
pub fn cached_path(kernels_dir: &Path, source: &Package) -> PathBuf {
    let key = recipe::minimal_kernel_key(source);
    kernels_dir
        .join(format!("minimal-{}", &key[..16]))
        .join("bzImage")
}

/// Compiles the minimal kernel unless the cache has it; returns the bzImage path.
pub fn build(
    lock: &CacheLock,
    kernels_dir: &Path,
    debs_dir: &Path,
    source: &Package,
    jobs: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, ImageError> {
    let target = cached_path(kernels_dir, source);
    if target.is_file() {
        return Ok(target);
    }
    for tool in [
        ("make", "make"),
        ("gcc", "gcc"),
        ("flex", "flex"),
        ("bison", "bison"),
        ("bc", "bc"),
        ("tar", "tar"),
        ("xz", "xz-utils"),
    ] {
        require_tool(tool.0, tool.1)?;
    }

    progress(Progress::Step(format!(
        "downloading {} {}",
        source.name, source.version
    )));
    let deb = debian::fetch(source, debs_dir)?;

    let scratch = lock.scratch("minimal-kernel")?;
    progress(Progress::Step("unpacking the kernel source".to_string()));
    let unpacked = scratch.join("deb");
    debian::unpack(&deb, &unpacked)?;
    let tarball =
        find_tarball(&unpacked.join("usr/src")).ok_or_else(|| ImageError::NotInPackage {
            package: source.name.clone(),
            what: "usr/src/linux-source-*.tar.xz".to_string(),
        })?;
    let src_parent = scratch.join("src");
    fs::create_dir_all(&src_parent).context(|| format!("creating {}", src_parent.display()))?;
    let out = debian::run(
        Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&src_parent),
        "tar",
        "tar",
    )?;
    if !out.status.success() {
        return Err(ImageError::Unpack {
            path: tarball,
            detail: debian::one_line(&out.stderr),
        });
    }
    fs::remove_dir_all(&unpacked).context(|| format!("removing {}", unpacked.display()))?;
    let src = single_dir(&src_parent).ok_or_else(|| ImageError::NotInPackage {
        package: source.name.clone(),
        what: "a single top-level directory in the source tarball".to_string(),
    })?;

    let script = scratch.join("build-kernel.sh");
    fs::write(&script, recipe::BUILD_KERNEL_SH)
        .context(|| format!("writing {}", script.display()))?;
    let fragment = scratch.join("kernel.config");
    fs::write(&fragment, recipe::KERNEL_CONFIG)
        .context(|| format!("writing {}", fragment.display()))?;
    let build_dir = scratch.join("build");
    let log = scratch.join("build.log");
    let kept_log = kernels_dir.join("last-build.log");

    progress(Progress::Step(
        "configuring the kernel (allnoconfig + guest/kernel.config)".to_string(),
    ));
    if let Some(detail) = run_logged(
        Command::new("sh")
            .arg(&script)
            .arg("configure")
            .arg(&src)
            .arg(&build_dir)
            .arg(&fragment),
        &log,
        &mut |_| {},
    )? {
        return Err(keep_log_error(&log, &kept_log, detail));
    }
    check_config(&build_dir.join(".config"))?;

    progress(Progress::Step(format!(
        "compiling the kernel with {jobs} jobs"
    )));
    let mut objects = 0u32;
    let failed = run_logged(
        Command::new("sh")
            .arg(&script)
            .arg("compile")
            .arg(&src)
            .arg(&build_dir)
            .arg(jobs.to_string()),
        &log,
        &mut |line| {
            let line = line.trim();
            if let Some(file) = line.strip_prefix("CC ") {
                objects += 1;
                progress(Progress::Compile {
                    objects,
                    estimate: OBJECTS_ESTIMATE.max(objects),
                    current: file.trim().to_string(),
                });
            }
        },
    )?;
    if let Some(detail) = failed {
        return Err(keep_log_error(&log, &kept_log, detail));
    }

    let staging = scratch.join("install");
    fs::create_dir_all(&staging).context(|| format!("creating {}", staging.display()))?;
    let bz = build_dir.join("arch/x86/boot/bzImage");
    fs::copy(&bz, staging.join("bzImage")).context(|| format!("copying {}", bz.display()))?;
    fs::copy(build_dir.join(".config"), staging.join("config"))
        .context(|| "copying the resolved .config".to_string())?;
    let dir = target.parent().unwrap_or(kernels_dir).to_path_buf();
    lock.install(&staging, &dir)?;
    let _ = fs::remove_dir_all(&scratch);
    Ok(target)
}

fn require_tool(tool: &'static str, package: &'static str) -> Result<(), ImageError> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(ImageError::MissingTool { tool, package })
    }
}

/// Keeps the log of a failed build where the next build does not delete it.
fn keep_log_error(log: &Path, kept: &Path, detail: String) -> ImageError {
    if let Some(parent) = kept.parent() {
        let _ = fs::create_dir_all(parent);
    }
    let log = match fs::copy(log, kept) {
        Ok(_) => kept.to_path_buf(),
        Err(_) => log.to_path_buf(),
    };
    ImageError::KernelBuild { detail, log }
}

/// Runs `command`, copying its stdout and stderr into `log` and handing each stdout line
/// to `on_line`. Returns `Some(why)` if the command failed.
fn run_logged(
    command: &mut Command,
    log: &Path,
    on_line: &mut dyn FnMut(&str),
) -> Result<Option<String>, ImageError> {
    let mut log_file = File::options()
        .append(true)
        .create(true)
        .open(log)
        .context(|| format!("opening {}", log.display()))?;
    let stderr_log = log_file
        .try_clone()
        .context(|| format!("opening {}", log.display()))?;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_log))
        .spawn()
        .context(|| "starting sh".to_string())?;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log_file, "{line}");
            on_line(&line);
        }
    }
    let status = child
        .wait()
        .context(|| "waiting for the kernel build".to_string())?;
    if status.success() {
        return Ok(None);
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(4).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Ok(Some(format!("{status}; last output: {}", tail.join(" | "))))
}

/// Every `=y` of the fragment must be in the resolved .config: Kconfig silently drops an
/// option whose dependencies are off.
fn check_config(config: &Path) -> Result<(), ImageError> {
    let resolved =
        fs::read_to_string(config).context(|| format!("reading {}", config.display()))?;
    let dropped = dropped_options(recipe::KERNEL_CONFIG, &resolved);
    if dropped.is_empty() {
        Ok(())
    } else {
        Err(ImageError::KernelConfig {
            options: dropped.join(", "),
        })
    }
}

/// The `CONFIG_X=y` lines of `fragment` missing from `resolved`.
pub fn dropped_options(fragment: &str, resolved: &str) -> Vec<String> {
    let have: std::collections::HashSet<&str> = resolved.lines().map(str::trim).collect();
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_") && l.ends_with("=y"))
        .filter(|l| !have.contains(l))
        .map(str::to_string)
        .collect()
}

fn find_tarball(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-source-") && n.ends_with(".tar.xz"))
        })
}

fn single_dir(dir: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    if dirs.len() == 1 {
        dirs.pop()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_dropped_options() {
        let fragment = "# comment\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n";
        assert_eq!(dropped_options(fragment, "CONFIG_A=y\n"), ["CONFIG_B=y"]);
        assert!(dropped_options(fragment, "CONFIG_B=y\nCONFIG_A=y\n").is_empty());
    }

    #[test]
    fn fragment_has_no_modules_and_no_duplicates() {
        let mut seen = std::collections::HashSet::new();
        for line in recipe::KERNEL_CONFIG
            .lines()
            .filter(|l| l.starts_with("CONFIG_"))
        {
            assert!(!line.ends_with("=m"), "modules are off: {line}");
            let name = line.split('=').next().unwrap();
            assert!(seen.insert(name.to_string()), "{name} twice");
        }
    }
}
