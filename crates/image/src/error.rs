//! Why building or finding the default guest failed, each case worded so the message says
//! what to do next.

use std::path::PathBuf;

/// Everything that can go wrong while building or looking up the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A host program the build runs is not installed.
    #[error("`{tool}` is not installed: run `apt-get install {package}`")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },

    /// apt does not know a package (its index is missing or stale).
    #[error(
        "apt does not know the Debian package {package}: is the package index updated? \
         run `apt-get update` ({detail})"
    )]
    UnknownPackage { package: String, detail: String },

    /// `apt-get download` failed.
    #[error(
        "apt-get download {package} failed: is the package index updated and the Debian \
         mirror reachable? run `apt-get update` and retry ({detail})"
    )]
    Download { package: String, detail: String },

    /// A downloaded .deb does not match the checksum in apt's index.
    #[error(
        "{path} has SHA256 {actual}, apt's index says {expected}: delete it and run \
         `apt-get update`, then build again"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// `dpkg-deb -x` or `tar -x` failed.
    #[error("unpacking {path} failed: {detail}")]
    Unpack { path: PathBuf, detail: String },

    /// A package did not contain a file the recipe needs.
    #[error("{package} contains no {what}: the recipe in guest/ does not match this package")]
    NotInPackage { package: String, what: String },

    /// A kernel module's dependencies could not be resolved.
    #[error("kernel module {module}: {detail}")]
    Module { module: String, detail: String },

    /// Kconfig dropped options of guest/kernel.config (a prerequisite is missing).
    #[error(
        "guest/kernel.config: Kconfig dropped {options}: add the options they depend on \
         (see guest/README.md)"
    )]
    KernelConfig { options: String },

    /// The kernel compile (or configure) failed.
    #[error("compiling the minimal kernel failed ({detail}); the full log is {log}")]
    KernelBuild { detail: String, log: PathBuf },

    /// Neither WIRT_CACHE_DIR, XDG_CACHE_HOME nor HOME is set.
    #[error("no cache directory: set WIRT_CACHE_DIR (or XDG_CACHE_HOME or HOME)")]
    NoCacheDir,

    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A guest tool from guest/tools/ did not compile.
    #[error("compiling guest/tools/{tool} with gcc failed: {detail}")]
    GuestTool { tool: &'static str, detail: String },

    /// The boot-timer program could not be assembled (a bug in this crate).
    #[error("assembling the boot-timer program failed: {0}")]
    Assemble(String),
}

impl ImageError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to I/O results: `fs::read(p).context(|| format!("reading {p:?}"))?`.
pub(crate) trait IoContext<T> {
    fn context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, ImageError> {
        self.map_err(|e| ImageError::io(what(), e))
    }
}
