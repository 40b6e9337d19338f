//! Virtio: paravirtualized devices in the split-driver model. The front-end driver runs in
//! the guest; the back ends here run on wirt's virtio event-loop thread.
//!
//! How the VMM wires a device:
//! 1. wrap guest memory and the code-cache invalidation callback in a [`GuestRam`];
//! 2. build a device ([`block::Block`], [`rng::Rng`], [`console::Console`], ...) and put it
//!    in an [`MmioTransport`] with the interrupt sink and a GSI;
//! 3. insert the transport on the MMIO bus at its base with [`MMIO_WINDOW_SIZE`], announce it
//!    ([`mmio_cmdline_arg`] or the DSDT), optionally register [`MmioTransport::queue_kicks`]
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
pub use transport::state::{MmioState, QueueSnapshot};
