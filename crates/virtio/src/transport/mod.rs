//! Transports: how the guest's driver reaches a device's registers and queues.

pub mod core;
pub mod mmio;
pub mod pci;
pub mod state;

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::transport::core::VirtioCore;

/// A transport the [`crate::EventLoop`] can serve: it hands out the shared device core and
/// the queues' kick eventfds.
pub trait VirtioTransport {
    /// The device core and one kick eventfd per queue.
    fn shared(&self) -> (Arc<Mutex<VirtioCore>>, Arc<Vec<EventFd>>);
}
