//! What to build: which kernel, where the cache is, how many compile jobs.

use std::path::PathBuf;

/// Which kernel the image boots.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum KernelFlavour {
    /// Debian's cloud kernel as packaged (`linux-image-cloud-amd64`); virtio drivers are
    /// modules that /init loads. Nothing to compile: builds in seconds.
    Stock,
    /// A kernel compiled from Debian's `linux-source-6.1` with guest/kernel.config:
    /// everything wirt emulates built in, nothing else. Takes minutes to build once.
    #[default]
    Minimal,
}

impl KernelFlavour {
    /// Every flavour, default first.
    pub const ALL: [KernelFlavour; 2] = [KernelFlavour::Minimal, KernelFlavour::Stock];

    /// The flavour's name on the command line and in cache paths.
    pub fn name(self) -> &'static str {
        match self {
            KernelFlavour::Stock => "stock",
            KernelFlavour::Minimal => "minimal",
        }
    }
}

impl std::fmt::Display for KernelFlavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown flavour name.
#[derive(Debug, thiserror::Error)]
#[error("unknown kernel flavour {0:?}: use \"minimal\" or \"stock\"")]
pub struct UnknownFlavour(pub String);

impl std::str::FromStr for KernelFlavour {
    type Err = UnknownFlavour;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stock" => Ok(KernelFlavour::Stock),
            "minimal" => Ok(KernelFlavour::Minimal),
            other => Err(UnknownFlavour(other.to_string())),
        }
    }
}

/// Options of [`crate::build`] and [`crate::cached`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub flavour: KernelFlavour,
    /// The cache directory; `None` means [`crate::default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Parallel compile jobs for the kernel; `None` means the number of CPUs.
    pub jobs: Option<usize>,
}

/// What the build is doing, for a progress display.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A new step started ("downloading linux-source-6.1 6.1.192-2").
    Step(String),
    /// The kernel compile made progress: `objects` files compiled so far, out of about
    /// `estimate` (from a previous build of the same config); `current` is the last one.
    Compile {
        objects: u32,
        estimate: u32,
        current: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in KernelFlavour::ALL {
            assert_eq!(f.name().parse::<KernelFlavour>().unwrap(), f);
        }
        assert!("big".parse::<KernelFlavour>().is_err());
    }
}
