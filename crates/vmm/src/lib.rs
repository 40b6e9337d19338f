//! The VMM: turns a [`config::VmConfig`] into a running VM and waits for it to end.
//!
//! Pieces, one module each: configuration and validation ([`config`]), the console backend
//! ([`console`], [`terminal`]), the legacy devices and buses ([`devices`]), vCPU threads
//! ([`vcpu`]), the stop decision ([`outcome`]), the statistics table ([`stats`]), and the
//! sequence that ties them together ([`vm`]).

pub mod config;
pub mod console;
pub mod devices;
pub mod fast_notify;
pub mod outcome;
pub mod pause;
pub mod stats;
pub mod terminal;
pub mod vcpu;
pub mod virtio_devices;
pub mod vm;

pub use vm::{run_vm, RunReport, RunningVm, VmState};

/// How `run_vm` reports progress.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Print the engine chosen and when the guest became ready.
    pub verbose: bool,
    /// Hold console input until the guest's first boot-timer write: the default guest's
    /// console is not ready for input before that, and bytes piped in early would be lost.
    pub hold_input_until_ready: bool,
    /// Sent to the guest when piped stdin ends (Ctrl-D for the default guest's shell).
    pub eof_byte: Option<u8>,
}

/// Everything that can stop a VM from starting.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("guest memory: {0}")]
    Layout(#[from] arch::memory::MemoryError),
    #[error("cannot allocate guest memory: {0}")]
    Memory(#[source] vm_memory::mmap::FromRangesError),
    #[error(transparent)]
    Engine(#[from] hypervisor::Error),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    #[error(transparent)]
    Devices(#[from] devices::DeviceError),
    #[error(transparent)]
    Virtio(#[from] virtio_devices::VirtioSetupError),
    #[error("cannot load the guest: {0}")]
    Boot(#[from] arch::platform::Error),
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the VM is not running")]
    NotRunning,
    #[error("the vCPUs did not stop within 10 s")]
    PauseTimeout,
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
}
