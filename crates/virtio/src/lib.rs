//! Virtio: paravirtualized devices in the split-driver model. The front-end driver runs in
//! the guest; the back ends here run on wirt's virtio event-loop thread, never on a vCPU
//! thread.
//!
//! How the VMM wires a device:
//! 1. wrap guest memory and the code-cache invalidation callback in a [`GuestRam`] — every
//!    device write to guest memory goes through it and is reported;
//! 2. build a device ([`block::Block`], [`rng::Rng`], [`console::Console`],
//!    [`balloon::Balloon`], [`net::Net`], [`vsock::Vsock`]) and put it in an
//!    [`MmioTransport`] (interrupt sink + GSI) or a [`transport::pci::PciTransport`]
//!    (MSI sink and/or INTx) behind a [`transport::pci::root::PciRoot`];
//! 3. insert an MMIO transport on the MMIO bus at its base with [`MMIO_WINDOW_SIZE`] and
//!    announce it ([`mmio_cmdline_arg`], or the DSDT through
//!    `arch::acpi::DsdtDevice::virtio_mmio`); optionally register the queue kick eventfds
//!    as KVM ioeventfds;
//! 4. [`EventLoop::add`] each transport, then [`EventLoop::spawn`].

pub mod balloon;
pub mod block;
pub mod chain;
pub mod config;
pub mod console;
pub mod device;
pub mod event_loop;
pub mod guest_ram;
pub mod interrupt;
pub mod net;
pub mod rng;
pub mod transport;
pub mod vsock;

#[cfg(test)]
mod test_driver;

pub use device::{DeviceContext, DeviceError, DeviceEvent, VirtioDevice};
pub use event_loop::{EventLoop, EventLoopHandle};
pub use guest_ram::{ignore_guest_writes, GuestRam, GuestWriteNotifier};
pub use interrupt::VirtioInterrupt;
pub use transport::mmio::{mmio_cmdline_arg, MmioTransport, TransportError, MMIO_WINDOW_SIZE};
pub use transport::state::{CoreState, MmioState, PciState, QueueSnapshot};
pub use transport::VirtioTransport;
