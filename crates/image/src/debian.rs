//! Debian packages, the only source of the image's contents: find a package's candidate
//! version in apt's index (`apt-cache show`), download it (`apt-get download`, kept in a
//! cache of .deb files and checked against the index's SHA256), unpack it (`dpkg-deb -x`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use crate::apt_memo::AptMemo;
use crate::error::{ImageError, IoContext};

/// One package as apt's index describes its candidate version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// SHA256 of the .deb, from the index.
    pub sha256: String,
    /// The raw `Depends:` field (empty if none).
    #[serde(skip)]
    pub depends: String,
}

impl Package {
    /// The file name the .deb is kept under in the download cache.
    pub fn deb_file_name(&self) -> String {
        let version = self.version.replace(':', "%3a");
        format!("{}_{}_{}.deb", self.name, version, self.architecture)
    }
}

/// Looks up the candidate version of `name` in apt's index (or in the memo of earlier
/// answers, while apt's state is unchanged: see [`crate::apt_memo`]).
pub fn resolve(name: &str) -> Result<Package, ImageError> {
    let memo = AptMemo::open_default();
    if let Some(package) = memo
        .as_ref()
        .and_then(|m| m.get(name))
        .and_then(|stanza| parse_stanza(&stanza))
    {
        return Ok(package);
    }
    let package = ask_apt(name)?;
    if let Some(m) = &memo {
        m.put(name, &package.stanza);
    }
    Ok(package.package)
}

/// A package and the stanza it was parsed from.
struct Answer {
    package: Package,
    stanza: String,
}

fn ask_apt(name: &str) -> Result<Answer, ImageError> {
    let out = run(
        Command::new("apt-cache").args(["show", "--no-all-versions", name]),
        "apt-cache",
        "apt",
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.trim().is_empty() {
        return Err(ImageError::UnknownPackage {
            package: name.to_string(),
            detail: one_line(&out.stderr),
        });
    }
    let stanza = text.split("\n\n").next().unwrap_or_default().to_string();
    let package = parse_stanza(&stanza).ok_or_else(|| ImageError::UnknownPackage {
        package: name.to_string(),
        detail: "apt-cache show printed no Package/Version/Architecture/SHA256".to_string(),
    })?;
    Ok(Answer { package, stanza })
}

/// Follows a metapackage such as `linux-image-cloud-amd64` to the versioned package it
/// depends on whose name starts with `prefix` (`linux-image-6.1.0-56-cloud-amd64`).
pub fn resolve_dependency(meta: &str, prefix: &str) -> Result<Package, ImageError> {
    let package = resolve(meta)?;
    let target = package
        .depends
        .split(',')
        .filter_map(|alternatives| alternatives.split('|').next())
        .filter_map(|dep| dep.split_whitespace().next())
        .find(|name| name.starts_with(prefix))
        .ok_or_else(|| ImageError::NotInPackage {
            package: meta.to_string(),
            what: format!("dependency named {prefix}*"),
        })?;
    resolve(target)
}

/// Parses the first stanza of `apt-cache show` output.
fn parse_stanza(text: &str) -> Option<Package> {
    let stanza = text.split("\n\n").next()?;
    let field = |key: &str| {
        stanza.lines().find_map(|line| {
            line.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(|value| value.trim().to_string())
        })
    };
    Some(Package {
        name: field("Package")?,
        version: field("Version")?,
        architecture: field("Architecture")?,
        sha256: field("SHA256")?,
        depends: field("Depends").unwrap_or_default(),
    })
}

/// Returns the .deb of `package` from `debs_dir`, downloading it with `apt-get download`
/// first if it is not there (or does not match the index's checksum).
pub fn fetch(package: &Package, debs_dir: &Path) -> Result<PathBuf, ImageError> {
    fs::create_dir_all(debs_dir).context(|| format!("creating {}", debs_dir.display()))?;
    let path = debs_dir.join(package.deb_file_name());
    if path.exists() && sha256_file(&path)? == package.sha256 {
        return Ok(path);
    }
    let staging = debs_dir.join(format!(".download-{}-{}", package.name, std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).context(|| format!("creating {}", staging.display()))?;
    let spec = format!("{}={}", package.name, package.version);
    let out = run(
        Command::new("apt-get")
            .args(["download", "-q", &spec])
            .current_dir(&staging),
        "apt-get",
        "apt",
    )?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(&staging);
        return Err(ImageError::Download {
            package: spec,
            detail: one_line(&out.stderr),
        });
    }
    let downloaded = fs::read_dir(&staging)
        .context(|| format!("reading {}", staging.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| ImageError::Download {
            package: spec.clone(),
            detail: "no .deb file appeared".to_string(),
        })?;
    let actual = sha256_file(&downloaded)?;
    if actual != package.sha256 {
        let _ = fs::remove_dir_all(&staging);
        return Err(ImageError::Checksum {
            path: downloaded,
            expected: package.sha256.clone(),
            actual,
        });
    }
    fs::rename(&downloaded, &path).context(|| format!("moving the .deb to {}", path.display()))?;
    let _ = fs::remove_dir_all(&staging);
    Ok(path)
}

/// Unpacks a .deb's files into `dest` (`dpkg-deb -x`).
pub fn unpack(deb: &Path, dest: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(dest).context(|| format!("creating {}", dest.display()))?;
    let out = run(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest),
        "dpkg-deb",
        "dpkg",
    )?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ImageError::Unpack {
            path: deb.to_path_buf(),
            detail: one_line(&out.stderr),
        })
    }
}

/// SHA256 of a file as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut file = fs::File::open(path).context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).context(|| format!("reading {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a command to completion, turning "not found" into a missing-tool error that names
/// the Debian package to install.
pub(crate) fn run(
    command: &mut Command,
    tool: &'static str,
    package: &'static str,
) -> Result<Output, ImageError> {
    command.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ImageError::MissingTool { tool, package }
        } else {
            ImageError::io(format!("running {tool}"), e)
        }
    })
}

/// The last non-empty line of a tool's stderr (where apt and dpkg put the reason).
pub(crate) fn one_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("W: Download is performed unsandboxed"))
        .unwrap_or("no message")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Architecture: amd64
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Filename: pool/updates/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.192-2_amd64.deb
SHA256: 00be21c0c17f08ddf26e82d3b53fe7a41efa4a288938da6bb69e89c4b25c281d
Description: Linux for x86-64 cloud (meta-package)

Package: other
Version: 1
";

    #[test]
    fn parses_the_first_stanza() {
        let p = parse_stanza(SHOW).unwrap();
        assert_eq!(p.name, "linux-image-cloud-amd64");
        assert_eq!(p.version, "6.1.192-2");
        assert_eq!(p.architecture, "amd64");
        assert_eq!(
            p.sha256,
            "00be21c0c17f08ddf26e82d3b53fe7a41efa4a288938da6bb69e89c4b25c281d"
        );
        assert_eq!(p.depends, "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)");
    }

    #[test]
    fn incomplete_stanza_is_rejected() {
        assert!(parse_stanza("Package: x\nVersion: 1\n").is_none());
    }

    #[test]
    fn epoch_colon_is_escaped_like_apt_does() {
        let p = Package {
            name: "busybox-static".into(),
            version: "1:1.35.0-4+deb12u1+b1".into(),
            architecture: "amd64".into(),
            sha256: String::new(),
            depends: String::new(),
        };
        assert_eq!(
            p.deb_file_name(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
    }

    #[test]
    fn unknown_package_says_what_to_do() {
        let msg = resolve("wirt-no-such-package").unwrap_err().to_string();
        assert!(
            msg.contains("run `apt-get update`") || msg.contains("apt-get install apt"),
            "{msg}"
        );
        assert!(
            msg.contains("wirt-no-such-package") || msg.contains("apt-cache"),
            "{msg}"
        );
    }

    #[test]
    fn hashes_files() {
        let path = std::env::temp_dir().join(format!("wirt-sha-{}", std::process::id()));
        fs::write(&path, b"abc").unwrap();
        let h = sha256_file(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
