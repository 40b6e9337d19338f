//! The transport-independent half of a virtio device: status and feature negotiation,
//! the queues, activation, and running the device back end for an event. The MMIO and PCI
//! transports decode their own registers on top of it and supply the interrupt path as a
//! [`VirtioIrq`].

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use crate::device::{DeviceContext, DeviceEvent, VirtioDevice};
use crate::guest_ram::GuestRam;
use crate::interrupt::VirtioIrq;
use crate::transport::state::{CoreState, QueueSnapshot};

/// The state behind the register file, shared with the event loop.
pub struct VirtioCore {
    pub(crate) device: Box<dyn VirtioDevice>,
    pub(crate) queues: Vec<Queue>,
    pub(crate) ram: GuestRam,
    pub(crate) irq: Arc<dyn VirtioIrq>,
    kicks: Arc<Vec<EventFd>>,
    pub(crate) status: u32,
    pub(crate) device_features_sel: u32,
    pub(crate) driver_features_sel: u32,
    pub(crate) driver_features: u64,
    pub(crate) queue_sel: u32,
    pub(crate) config_generation: u32,
    pub(crate) activated: bool,
}

impl VirtioCore {
    /// VIRTIO_RING_F_EVENT_IDX is not offered: with it, the device must publish
    /// `avail_event` after draining a queue, or the driver stops kicking (Linux then waits
    /// forever for its second request). The back ends do not publish it yet.
    pub(crate) fn device_features(&self) -> u64 {
        self.device.features() | 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_INDIRECT_DESC
    }

    pub(crate) fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    pub(crate) fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
        self.irq.reset();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.activated = false;
    }

    pub(crate) fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let newly = value & !self.status;
        // Bits may only be added (except by a reset); NEEDS_RESET is the device's.
        let mut status = (self.status | value) & !VIRTIO_CONFIG_S_NEEDS_RESET
            | (self.status & VIRTIO_CONFIG_S_NEEDS_RESET);
        if newly & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let ok = self.driver_features & !self.device_features() == 0
                && self.driver_features & 1 << VIRTIO_F_VERSION_1 != 0;
            if !ok {
                tracing::warn!(
                    features = self.driver_features,
                    "virtio-mmio: driver accepted unoffered features or not VERSION_1"
                );
                status &= !VIRTIO_CONFIG_S_FEATURES_OK;
            }
        }
        if newly & VIRTIO_CONFIG_S_DRIVER_OK != 0
            && !self.activated
            && status & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && status & VIRTIO_CONFIG_S_FAILED == 0
        {
            self.status = status;
            self.activate();
            return;
        }
        self.status = status;
    }

    pub(crate) fn activate(&mut self) {
        let event_idx = self.driver_features & 1 << VIRTIO_RING_F_EVENT_IDX != 0;
        for (i, q) in self.queues.iter_mut().enumerate() {
            q.set_event_idx(event_idx);
            if q.ready() && !self.ram.queue_is_valid(q) {
                tracing::warn!(queue = i, "virtio-mmio: queue rings outside guest RAM");
                self.needs_reset();
                return;
            }
        }
        self.device.activate(self.driver_features);
        self.activated = true;
        // Buffers may have been offered before DRIVER_OK: have the event loop look at every
        // queue (this runs on a vCPU thread, where device code must not).
        for kick in self.kicks.iter() {
            let _ = kick.write(1);
        }
    }

    pub(crate) fn needs_reset(&mut self) {
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        self.config_generation = self.config_generation.wrapping_add(1);
        self.irq.signal_config();
    }

    /// Run the device for one event (on the event-loop thread) and raise the interrupt if
    /// the driver wants one.
    pub fn handle_event(&mut self, event: DeviceEvent) {
        if !self.activated || self.status & VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
            return;
        }
        if let DeviceEvent::Queue(i) = event {
            if self.queues.get(i).is_none_or(|q| !q.ready()) {
                return;
            }
        }
        let mut ctx = DeviceContext {
            ram: &self.ram,
            queues: &mut self.queues,
            used: 0,
            config_changed: false,
        };
        let result = self.device.handle(event, &mut ctx);
        let (used, config_changed) = (ctx.used, ctx.config_changed);
        for (i, q) in self.queues.iter_mut().enumerate() {
            if used & 1 << i != 0 && self.ram.needs_notification(q) {
                self.irq.signal_queue(i);
            }
        }
        if config_changed {
            self.config_generation = self.config_generation.wrapping_add(1);
            self.irq.signal_config();
        }
        if let Err(e) = result {
            tracing::warn!(
                "virtio device {}: {e}; needs reset",
                self.device.device_type()
            );
            self.needs_reset();
        }
    }
}

impl VirtioCore {
    pub(crate) fn new(
        device: Box<dyn VirtioDevice>,
        queues: Vec<Queue>,
        kicks: Arc<Vec<EventFd>>,
        ram: GuestRam,
        irq: Arc<dyn VirtioIrq>,
    ) -> Self {
        VirtioCore {
            device,
            queues,
            kicks,
            ram,
            irq,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            config_generation: 0,
            activated: false,
        }
    }

    pub(crate) fn extra_fds(&self) -> Vec<RawFd> {
        self.device.extra_fds()
    }

    /// Snapshot of negotiation, queues and configuration space.
    pub(crate) fn state(&self) -> CoreState {
        CoreState {
            device_type: self.device.device_type(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            config_generation: self.config_generation,
            queues: self.queues.iter().map(QueueSnapshot::of).collect(),
            config: self.config_snapshot(),
        }
    }

    /// Resume from `state`; a device that was running is activated again.
    pub(crate) fn restore(&mut self, state: &CoreState) {
        self.status = state.status;
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.driver_features = state.driver_features;
        self.queue_sel = state.queue_sel;
        self.config_generation = state.config_generation;
        for (q, s) in self.queues.iter_mut().zip(&state.queues) {
            s.apply(q);
        }
        self.activated = false;
        if state.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.device.activate(self.driver_features);
            self.activated = true;
        }
    }

    pub(crate) fn config_snapshot(&self) -> Vec<u8> {
        let mut config = vec![0u8; self.device.config_len()];
        self.device.read_config(0, &mut config);
        config
    }
}

pub(crate) fn lock_core(core: &Mutex<VirtioCore>) -> MutexGuard<'_, VirtioCore> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}
