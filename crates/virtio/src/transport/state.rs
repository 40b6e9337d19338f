//! Transport and queue state as plain serde structs, for snapshots.

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

/// One virtqueue's driver-visible state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx: bool,
}

impl QueueSnapshot {
    pub fn of(q: &Queue) -> Self {
        QueueSnapshot {
            max_size: q.max_size(),
            size: q.size(),
            ready: q.ready(),
            desc_table: q.desc_table(),
            avail_ring: q.avail_ring(),
            used_ring: q.used_ring(),
            next_avail: q.next_avail(),
            next_used: q.next_used(),
            event_idx: q.event_idx_enabled(),
        }
    }

    /// Apply to `q` (whose max size is the device's); invalid values are rejected by the
    /// queue and leave the corresponding field at its reset value.
    pub fn apply(&self, q: &mut Queue) {
        q.reset();
        let _ = q.try_set_size(self.size);
        let _ = q.try_set_desc_table_address(GuestAddress(self.desc_table));
        let _ = q.try_set_avail_ring_address(GuestAddress(self.avail_ring));
        let _ = q.try_set_used_ring_address(GuestAddress(self.used_ring));
        q.set_next_avail(self.next_avail);
        q.set_next_used(self.next_used);
        q.set_event_idx(self.event_idx);
        q.set_ready(self.ready);
    }
}

/// The transport-independent device state: negotiation, queues, configuration space.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreState {
    pub device_type: u32,
    pub status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub config_generation: u32,
    pub queues: Vec<QueueSnapshot>,
    /// The device configuration space as the driver last saw it.
    pub config: Vec<u8>,
}

/// A virtio-mmio device: everything needed to resume it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioState {
    pub core: CoreState,
    pub interrupt_status: u32,
}

/// MSI-X and INTx state of a virtio-pci function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciIrqState {
    pub msix_enabled: bool,
    pub function_masked: bool,
    /// Per vector: address low, address high, data, vector control.
    pub table: Vec<[u32; 4]>,
    pub pending: Vec<bool>,
    pub config_vector: u16,
    pub queue_vectors: Vec<u16>,
    pub isr: u8,
}

/// A virtio-pci function: everything needed to resume it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciState {
    pub core: CoreState,
    pub command: u16,
    pub bar0: u64,
    pub interrupt_line: u8,
    pub irq: PciIrqState,
}
