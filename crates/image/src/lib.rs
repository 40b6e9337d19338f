//! The default guest: a kernel and an initramfs made from Debian packages alone
//! (`apt-get download` + `dpkg-deb -x`), built once into a cache keyed by a hash of every
//! input, and reused until an input changes.
//!
//! Every end-to-end test, every benchmark and `wirt run` without `--kernel` boot this
//! image, so it must be reproducible and cheap to get again. See guest/README.md for
//! the recipe, the measurements behind the choice of kernel, and the cache layout.
//!
//! ```no_run
//! let opts = image::BuildOptions::default();
//! let image = image::build(&opts, &mut |p| eprintln!("{p:?}"))?;
//! println!("kernel: {}\ninitrd: {}", image.kernel.display(), image.initrd.display());
//! # Ok::<(), image::ImageError>(())
//! ```

mod apt_memo;
mod cache;
pub mod cmdline;
mod debian;
mod error;
mod guest_tools;
mod initramfs;
mod minimal_kernel;
mod modules;
pub mod newc;
mod options;
mod port_writer;
pub mod qemu;
mod recipe;
mod stock_kernel;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use cache::{default_cache_dir, CACHE_DIR_ENV};
pub use cmdline::{cmdline_with_script, DEFAULT_CMDLINE, EXIT_MARKER, READY_MARKER};
pub use debian::Package;
pub use error::ImageError;
pub use options::{BuildOptions, KernelFlavour, Progress, UnknownFlavour};
pub use port_writer::port_writer_elf;

use cache::{Cache, CacheLock};
use error::IoContext;

/// File names inside an image's cache directory.
const KERNEL_FILE: &str = "bzImage";
const INITRD_FILE: &str = "initrd.cpio";
const MANIFEST_FILE: &str = "manifest.json";

/// A built image in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub flavour: KernelFlavour,
    /// The kernel (a bzImage).
    pub kernel: PathBuf,
    /// The initramfs (an uncompressed newc archive).
    pub initrd: PathBuf,
    /// The hash of all inputs (hex SHA-256).
    pub key: String,
    /// The Debian packages it was made from.
    pub packages: Vec<Package>,
    /// True when `build` found it in the cache instead of building it.
    pub reused: bool,
}

impl Image {
    /// The kernel command line this image expects ([`DEFAULT_CMDLINE`]).
    pub fn cmdline(&self) -> &'static str {
        DEFAULT_CMDLINE
    }
}

/// What the cache stores next to the kernel and initrd.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Manifest {
    key: String,
    recipe_key: String,
    flavour: KernelFlavour,
    packages: Vec<Package>,
    kernel_bytes: u64,
    initrd_bytes: u64,
    build_seconds: f64,
    created_unix: u64,
}

/// wirt's boot-timer port, which /init writes once user space is up. The same value as
/// `arch::layout::BOOT_TIMER`; repeated here so this crate does not depend on the
/// platform crate (the `wirt` crate, which uses both, checks that they agree).
pub const BOOT_TIMER_PORT: u16 = 0x440;
/// The value /init writes to the boot-timer port.
pub const BOOT_TIMER_VALUE: u8 = 1;

/// The program /init runs to write the boot-timer port.
fn boot_timer_program() -> Result<Vec<u8>, ImageError> {
    port_writer_elf(BOOT_TIMER_PORT, BOOT_TIMER_VALUE)
        .map_err(|e| ImageError::Assemble(e.to_string()))
}

/// The Debian packages an image is made of.
struct Packages {
    busybox: Package,
    /// The kernel image package (stock) or the kernel source package (minimal).
    kernel: Package,
}

impl Packages {
    /// Resolves the packages of an image of `flavour` in apt's index.
    fn resolve(flavour: KernelFlavour) -> Result<Self, ImageError> {
        let busybox = debian::resolve(recipe::BUSYBOX_PACKAGE)?;
        let kernel = match flavour {
            KernelFlavour::Stock => stock_kernel::resolve()?,
            KernelFlavour::Minimal => minimal_kernel::resolve_source()?,
        };
        Ok(Self { busybox, kernel })
    }

    fn list(&self) -> Vec<Package> {
        vec![self.busybox.clone(), self.kernel.clone()]
    }
}

fn image_dir(cache: &Cache, flavour: KernelFlavour, key: &str) -> PathBuf {
    cache
        .images()
        .join(format!("{flavour}-{}", &key[..16.min(key.len())]))
}

/// The image in `dir` if it is complete.
fn load(dir: &Path) -> Option<(Manifest, Image)> {
    let text = fs::read_to_string(dir.join(MANIFEST_FILE)).ok()?;
    let manifest: Manifest = serde_json::from_str(&text).ok()?;
    let image = Image {
        flavour: manifest.flavour,
        kernel: dir.join(KERNEL_FILE),
        initrd: dir.join(INITRD_FILE),
        key: manifest.key.clone(),
        packages: manifest.packages.clone(),
        reused: true,
    };
    (image.kernel.is_file() && image.initrd.is_file()).then_some((manifest, image))
}

/// The cached image of `opts.flavour` for the current inputs, without building anything.
///
/// Package versions come from apt's index; if it cannot be read (no apt, no index), the
/// newest cached image built from the same recipe is returned instead.
pub fn cached(opts: &BuildOptions) -> Result<Option<Image>, ImageError> {
    let cache = Cache::open(opts.cache_dir.as_deref())?;
    let recipe_key = recipe::recipe_key(opts.flavour, &boot_timer_program()?);
    match Packages::resolve(opts.flavour) {
        Ok(packages) => {
            let key = recipe::image_key(&recipe_key, &packages.list());
            Ok(load(&image_dir(&cache, opts.flavour, &key))
                .filter(|(m, _)| m.key == key)
                .map(|(_, image)| image))
        }
        Err(_) => Ok(newest_with_recipe(&cache, &recipe_key)),
    }
}

fn newest_with_recipe(cache: &Cache, recipe_key: &str) -> Option<Image> {
    fs::read_dir(cache.images())
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| load(&entry.path()))
        .filter(|(m, _)| m.recipe_key == recipe_key)
        .max_by_key(|(m, _)| m.created_unix)
        .map(|(_, image)| image)
}

/// Builds the image of `opts.flavour` into the cache, or returns the cached one if no
/// input changed (`reused` is then true). Concurrent builds wait for each other.
pub fn build(opts: &BuildOptions, progress: &mut dyn FnMut(Progress)) -> Result<Image, ImageError> {
    let cache = Cache::open(opts.cache_dir.as_deref())?;
    let port_writer = boot_timer_program()?;
    let recipe_key = recipe::recipe_key(opts.flavour, &port_writer);
    progress(Progress::Step("resolving Debian packages".to_string()));
    let packages = Packages::resolve(opts.flavour)?;
    let key = recipe::image_key(&recipe_key, &packages.list());
    let dir = image_dir(&cache, opts.flavour, &key);
    let lookup = || {
        load(&dir)
            .filter(|(m, _)| m.key == key)
            .map(|(_, image)| image)
    };
    if let Some(image) = lookup() {
        return Ok(image);
    }
    let lock = cache.lock()?;
    // Another process may have built it while we waited for the lock.
    if let Some(image) = lookup() {
        return Ok(image);
    }
    let started = Instant::now();
    let scratch = lock.scratch("image")?;
    let result = build_locked(
        &cache,
        &lock,
        &scratch,
        opts,
        &port_writer,
        &packages,
        progress,
    )
    .and_then(|(staging, kernel_bytes, initrd_bytes)| {
        let manifest = Manifest {
            key: key.clone(),
            recipe_key: recipe_key.clone(),
            flavour: opts.flavour,
            packages: packages.list(),
            kernel_bytes,
            initrd_bytes,
            build_seconds: started.elapsed().as_secs_f64(),
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let json = serde_json::to_string_pretty(&manifest)
            .map_err(|e| ImageError::io("encoding the manifest", e.into()))?;
        let path = staging.join(MANIFEST_FILE);
        fs::write(&path, json).context(|| format!("writing {}", path.display()))?;
        progress(Progress::Step(format!("installing into {}", dir.display())));
        lock.install(&staging, &dir)
    });
    let _ = fs::remove_dir_all(&scratch);
    result?;
    prune_superseded(&cache, &lock, opts.flavour, &dir, &packages);
    let (_, mut image) = load(&dir).ok_or_else(|| {
        ImageError::io(
            format!("reading back {}", dir.display()),
            std::io::ErrorKind::NotFound.into(),
        )
    })?;
    image.reused = false;
    Ok(image)
}

/// Removes what the new image supersedes: older images of the same flavour, older minimal
/// kernels, .debs of older versions of its packages. Failing to prune is not failing the
/// build: the new image is installed, so errors are ignored.
fn prune_superseded(
    cache: &Cache,
    lock: &CacheLock,
    flavour: KernelFlavour,
    image_dir: &Path,
    packages: &Packages,
) {
    let _ = lock.prune(&cache.images(), &format!("{flavour}-"), image_dir);
    if flavour == KernelFlavour::Minimal {
        let kernel = minimal_kernel::cached_path(&cache.kernels(), &packages.kernel);
        if let Some(kernel_dir) = kernel.parent() {
            let _ = lock.prune(&cache.kernels(), "minimal-", kernel_dir);
        }
    }
    for package in [&packages.busybox, &packages.kernel] {
        let keep = cache.debs().join(package.deb_file_name());
        let _ = lock.prune(&cache.debs(), &format!("{}_", package.name), &keep);
    }
}

/// The build proper, under the lock: returns the staging directory and the sizes of
/// kernel and initrd.
fn build_locked(
    cache: &Cache,
    lock: &CacheLock,
    scratch: &Path,
    opts: &BuildOptions,
    port_writer: &[u8],
    packages: &Packages,
    progress: &mut dyn FnMut(Progress),
) -> Result<(PathBuf, u64, u64), ImageError> {
    let (busybox_pkg, kernel_pkg) = (&packages.busybox, &packages.kernel);
    let staging = scratch.join("image");
    fs::create_dir_all(&staging).context(|| format!("creating {}", staging.display()))?;

    progress(Progress::Step(format!(
        "downloading {} {}",
        busybox_pkg.name, busybox_pkg.version
    )));
    let deb = debian::fetch(busybox_pkg, &cache.debs())?;
    let busybox_root = scratch.join("busybox");
    debian::unpack(&deb, &busybox_root)?;
    let busybox = busybox_root.join("bin/busybox");
    let applets = initramfs::busybox_applets(&busybox)?;
    // Before the kernel, so a missing gcc fails in seconds rather than after a compile.
    progress(Progress::Step("compiling the guest tools".to_string()));
    let tools = guest_tools::compile_all(&scratch.join("tools"))?;

    let (kernel, modules) = match opts.flavour {
        KernelFlavour::Stock => {
            progress(Progress::Step(format!(
                "downloading {} {}",
                kernel_pkg.name, kernel_pkg.version
            )));
            let deb = debian::fetch(kernel_pkg, &cache.debs())?;
            let stock = stock_kernel::unpack(kernel_pkg, &deb, &scratch.join("kernel"))?;
            (stock.vmlinuz, stock.modules)
        }
        KernelFlavour::Minimal => {
            let jobs = opts.jobs.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            let kernel = minimal_kernel::build(
                lock,
                &cache.kernels(),
                &cache.debs(),
                kernel_pkg,
                jobs.max(1),
                progress,
            )?;
            (kernel, Vec::new())
        }
    };

    let kernel_target = staging.join(KERNEL_FILE);
    let kernel_bytes =
        fs::copy(&kernel, &kernel_target).context(|| format!("copying {}", kernel.display()))?;
    progress(Progress::Step(format!(
        "writing the initramfs ({} modules)",
        modules.len()
    )));
    let initrd_bytes = initramfs::write(
        &staging.join(INITRD_FILE),
        &busybox,
        &applets,
        port_writer,
        &tools,
        &modules,
    )?;
    Ok((staging, kernel_bytes, initrd_bytes))
}

/// The cache directory `opts` builds into (`opts.cache_dir` or [`default_cache_dir`]).
pub fn cache_root(opts: &BuildOptions) -> Result<PathBuf, ImageError> {
    Ok(Cache::open(opts.cache_dir.as_deref())?.root().to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(key: &str, recipe_key: &str, created_unix: u64) -> String {
        serde_json::to_string(&Manifest {
            key: key.into(),
            recipe_key: recipe_key.into(),
            flavour: KernelFlavour::Stock,
            packages: Vec::new(),
            kernel_bytes: 1,
            initrd_bytes: 1,
            build_seconds: 0.0,
            created_unix,
        })
        .unwrap()
    }

    fn entry(cache: &Cache, name: &str, manifest_json: &str, complete: bool) -> PathBuf {
        let dir = cache.images().join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(MANIFEST_FILE), manifest_json).unwrap();
        fs::write(dir.join(KERNEL_FILE), b"k").unwrap();
        if complete {
            fs::write(dir.join(INITRD_FILE), b"i").unwrap();
        }
        dir
    }

    #[test]
    fn only_complete_entries_load() {
        let root = std::env::temp_dir().join(format!("wirt-load-{}", std::process::id()));
        let cache = Cache::open(Some(&root)).unwrap();
        let whole = entry(&cache, "a", &manifest("ka", "r", 1), true);
        let partial = entry(&cache, "b", &manifest("kb", "r", 2), false);
        let garbage = entry(&cache, "c", "{not json", true);
        assert_eq!(load(&whole).unwrap().1.initrd, whole.join(INITRD_FILE));
        assert!(load(&partial).is_none());
        assert!(load(&garbage).is_none());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn fallback_picks_the_newest_image_of_the_same_recipe() {
        let root = std::env::temp_dir().join(format!("wirt-newest-{}", std::process::id()));
        let cache = Cache::open(Some(&root)).unwrap();
        entry(&cache, "old", &manifest("k1", "r", 10), true);
        entry(&cache, "new", &manifest("k2", "r", 20), true);
        entry(&cache, "other", &manifest("k3", "other-recipe", 30), true);
        assert_eq!(newest_with_recipe(&cache, "r").unwrap().key, "k2");
        assert!(newest_with_recipe(&cache, "none").is_none());
        fs::remove_dir_all(&root).unwrap();
    }
}
