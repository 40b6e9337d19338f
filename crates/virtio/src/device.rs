//! What a virtio device back end implements, independent of the transport carrying it.
//!
//! The transport owns the queues and the register state; the device sees its queues only
//! while it processes an event on the event-loop thread, through a [`DeviceContext`] that
//! also carries the guest memory (writes reported, see [`GuestRam`]).

use std::os::fd::RawFd;

use virtio_queue::Queue;

use crate::chain::{ChainError, DescChain};
use crate::guest_ram::GuestRam;

/// Why processing a queue failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The queue structure itself is unusable (rings outside RAM, avail index out of range,
    /// a head index outside the table): the device must be reset by the driver.
    #[error("virtqueue {queue} is broken: {reason}")]
    BrokenQueue { queue: usize, reason: String },
}

/// What woke a device on the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEvent {
    /// The driver notified queue `n`.
    Queue(usize),
    /// The device's own extra file descriptor `n` (see [`VirtioDevice::extra_fds`]) is
    /// readable.
    Extra(usize),
}

/// Everything a device may touch while it handles one event.
pub struct DeviceContext<'a> {
    pub ram: &'a GuestRam,
    pub queues: &'a mut [Queue],
    /// Set by the device for each queue it put used buffers on (bit n = queue n).
    pub used: u64,
    /// Set by the device when its configuration space changed.
    pub config_changed: bool,
}

impl DeviceContext<'_> {
    /// Complete `head` on queue `q` with `len` written bytes.
    pub fn complete(&mut self, q: usize, head: u16, len: u32) -> Result<(), DeviceError> {
        let queue = self
            .queues
            .get_mut(q)
            .ok_or_else(|| DeviceError::BrokenQueue {
                queue: q,
                reason: "no such queue".into(),
            })?;
        self.ram
            .add_used(queue, head, len)
            .map_err(|e| DeviceError::BrokenQueue {
                queue: q,
                reason: e.to_string(),
            })?;
        self.used |= 1 << q;
        Ok(())
    }

    /// The next available chain head of queue `q`, if any.
    pub fn pop(&mut self, q: usize) -> Result<Option<u16>, DeviceError> {
        let queue = self
            .queues
            .get_mut(q)
            .ok_or_else(|| DeviceError::BrokenQueue {
                queue: q,
                reason: "no such queue".into(),
            })?;
        if !queue_ready(queue) {
            return Ok(None);
        }
        self.ram
            .pop_head(queue)
            .map_err(|e| DeviceError::BrokenQueue {
                queue: q,
                reason: e.to_string(),
            })
    }

    /// Pop, walk and complete every available chain of queue `q`: `f` gets each chain (or
    /// why it is malformed) and returns the number of bytes it wrote into it.
    pub fn for_each_chain(
        &mut self,
        q: usize,
        mut f: impl FnMut(&GuestRam, Result<DescChain, ChainError>) -> u32,
    ) -> Result<(), DeviceError> {
        while let Some(head) = self.pop(q)? {
            let (table, size) = self.table(q);
            let chain = DescChain::walk(self.ram, table, size, head);
            let len = f(self.ram, chain);
            self.complete(q, head, len)?;
        }
        Ok(())
    }

    /// Descriptor table address and size of queue `q` (for [`crate::chain::DescChain::walk`]).
    pub fn table(&self, q: usize) -> (u64, u16) {
        use virtio_queue::QueueT;
        self.queues
            .get(q)
            .map(|queue| (queue.desc_table(), queue.size()))
            .unwrap_or((0, 0))
    }
}

fn queue_ready(q: &Queue) -> bool {
    use virtio_queue::QueueT;
    q.ready()
}

/// A virtio device back end.
pub trait VirtioDevice: Send {
    /// The virtio device ID (`virtio_ids::VIRTIO_ID_*`).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the number of entries is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Feature bits the device offers (the transport adds VIRTIO_F_VERSION_1).
    fn features(&self) -> u64;
    /// Length of the device configuration space.
    fn config_len(&self) -> usize;
    /// Read configuration space at `offset`; bytes past the end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// A driver write to configuration space; ignored by default.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK with `features` accepted.
    fn activate(&mut self, _features: u64) {}
    /// Handle one event; report used buffers through `ctx`.
    fn handle(
        &mut self,
        event: DeviceEvent,
        ctx: &mut DeviceContext<'_>,
    ) -> Result<(), DeviceError>;
    /// The driver reset the device: drop in-flight state.
    fn reset(&mut self) {}
    /// File descriptors (beyond the queue kicks) the event loop should watch for this device,
    /// e.g. console input or a TAP device. Delivered as [`DeviceEvent::Extra`].
    fn extra_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
}

/// Copy the bytes of `config` at `offset` into `data` (zero past the end).
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}
