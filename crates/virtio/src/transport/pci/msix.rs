//! Interrupts of a virtio-pci function: MSI-X when the engine can deliver MSIs, else INTx
//! with the ISR register.
//!
//! The MSI-X table and pending-bit array live in BAR0; a message whose vector (or the whole
//! function) is masked is remembered as pending and sent when the driver unmasks it.

use std::sync::{Arc, Mutex, MutexGuard};

use devices::InterruptSink;
use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};

use crate::interrupt::VirtioIrq;
use crate::transport::state::PciIrqState;

/// "No vector" in the virtio-pci vector registers.
pub const NO_VECTOR: u16 = 0xffff;
const ENTRY_SIZE: usize = 16;

/// Something that delivers message-signalled interrupts (KVM_SIGNAL_MSI, or the software
/// engine's LAPIC).
pub trait MsiSink: Send + Sync {
    fn send_msi(&self, address: u64, data: u32);
}

/// The engine's MSI path as an [`MsiSink`], or `None` where the engine delivers no MSIs
/// (functions then offer only INTx).
pub fn engine_msi(sink: &Arc<dyn InterruptSink>) -> Option<Arc<dyn MsiSink>> {
    sink.supports_msi()
        .then(|| Arc::new(EngineMsi(sink.clone())) as Arc<dyn MsiSink>)
}

struct EngineMsi(Arc<dyn InterruptSink>);

impl MsiSink for EngineMsi {
    fn send_msi(&self, address: u64, data: u32) {
        // A message the engine refuses (an address outside the APIC window the guest
        // programmed) is lost, as on hardware.
        if !self.0.send_msi(address, data) {
            tracing::debug!(address, data, "MSI not delivered");
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// MSI-X Enable and Function Mask from the capability's Message Control.
    enabled: bool,
    function_masked: bool,
    /// Per vector: address low, address high, data, vector control.
    table: Vec<[u32; 4]>,
    pending: Vec<bool>,
    config_vector: u16,
    queue_vectors: Vec<u16>,
    /// INTx: the ISR register (bit 0 queue, bit 1 config).
    isr: u8,
}

/// The interrupt side of one virtio-pci function.
pub struct PciIrq {
    state: Mutex<State>,
    msi: Option<Arc<dyn MsiSink>>,
    intx: Arc<dyn InterruptSink>,
    gsi: u32,
}

impl PciIrq {
    pub fn new(
        vectors: usize,
        queues: usize,
        msi: Option<Arc<dyn MsiSink>>,
        intx: Arc<dyn InterruptSink>,
        gsi: u32,
    ) -> Self {
        PciIrq {
            state: Mutex::new(State {
                // Every entry starts masked, as the PCI spec requires.
                table: vec![[0, 0, 0, 1]; vectors],
                pending: vec![false; vectors],
                config_vector: NO_VECTOR,
                queue_vectors: vec![NO_VECTOR; queues],
                ..State::default()
            }),
            msi,
            intx,
            gsi,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn vectors(&self) -> usize {
        self.lock().table.len()
    }

    pub fn has_msix(&self) -> bool {
        self.msi.is_some()
    }

    /// MSI-X delivery is in use (capability enabled by the driver and deliverable).
    fn msix_active(s: &State, msi: &Option<Arc<dyn MsiSink>>) -> bool {
        s.enabled && msi.is_some()
    }

    fn deliver(&self, s: &mut State, vector: u16) {
        let v = usize::from(vector);
        let Some(entry) = s.table.get(v).copied() else {
            return;
        };
        if s.function_masked || entry[3] & 1 != 0 {
            s.pending[v] = true;
            return;
        }
        if let Some(msi) = &self.msi {
            msi.send_msi(u64::from(entry[1]) << 32 | u64::from(entry[0]), entry[2]);
        }
    }

    fn signal(&self, vector: u16, isr_bit: u32) {
        let mut s = self.lock();
        if Self::msix_active(&s, &self.msi) {
            if vector != NO_VECTOR {
                self.deliver(&mut s, vector);
            }
        } else {
            s.isr |= isr_bit as u8;
            self.intx.set_level(self.gsi, true);
        }
    }

    /// Read-and-clear of the ISR register; lowers the INTx line.
    pub fn read_isr(&self) -> u8 {
        let mut s = self.lock();
        let v = std::mem::take(&mut s.isr);
        if v != 0 {
            self.intx.set_level(self.gsi, false);
        }
        v
    }

    pub fn config_vector(&self) -> u16 {
        self.lock().config_vector
    }

    /// Set the config vector; reads back NO_VECTOR if `v` is out of range.
    pub fn set_config_vector(&self, v: u16) {
        let mut s = self.lock();
        s.config_vector = if usize::from(v) < s.table.len() {
            v
        } else {
            NO_VECTOR
        };
    }

    pub fn queue_vector(&self, q: usize) -> u16 {
        self.lock()
            .queue_vectors
            .get(q)
            .copied()
            .unwrap_or(NO_VECTOR)
    }

    pub fn set_queue_vector(&self, q: usize, v: u16) {
        let mut s = self.lock();
        let v = if usize::from(v) < s.table.len() {
            v
        } else {
            NO_VECTOR
        };
        if let Some(slot) = s.queue_vectors.get_mut(q) {
            *slot = v;
        }
    }

    /// The capability's Message Control bits (enable, function mask).
    pub fn control(&self) -> (bool, bool) {
        let s = self.lock();
        (s.enabled, s.function_masked)
    }

    pub fn set_control(&self, enabled: bool, function_masked: bool) {
        let mut s = self.lock();
        s.enabled = enabled;
        s.function_masked = function_masked;
        self.flush_pending(&mut s);
    }

    fn flush_pending(&self, s: &mut State) {
        if !Self::msix_active(s, &self.msi) || s.function_masked {
            return;
        }
        for v in 0..s.table.len() {
            if s.pending[v] && s.table[v][3] & 1 == 0 {
                s.pending[v] = false;
                self.deliver(s, v as u16);
            }
        }
    }

    /// Read from the MSI-X table at byte `offset`.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        let s = self.lock();
        read_words(offset, data, |i| {
            s.table.get(i / 4).map(|e| e[i % 4]).unwrap_or(0)
        });
    }

    /// Write to the MSI-X table (32-bit accesses; wider ones are split).
    pub fn table_write(&self, offset: u64, data: &[u8]) {
        let mut s = self.lock();
        for (i, chunk) in data.chunks(4).enumerate() {
            if chunk.len() != 4 || !offset.is_multiple_of(4) {
                return;
            }
            let word = (offset / 4) as usize + i;
            let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if let Some(e) = s.table.get_mut(word / 4) {
                e[word % 4] = v;
            }
        }
        self.flush_pending(&mut s);
    }

    /// Read the pending-bit array.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        let s = self.lock();
        for (i, b) in data.iter_mut().enumerate() {
            let byte = offset as usize + i;
            *b = (0..8)
                .filter(|bit| s.pending.get(byte * 8 + bit).copied().unwrap_or(false))
                .fold(0u8, |acc, bit| acc | 1 << bit);
        }
    }

    pub fn state(&self) -> PciIrqState {
        let s = self.lock();
        PciIrqState {
            msix_enabled: s.enabled,
            function_masked: s.function_masked,
            table: s.table.clone(),
            pending: s.pending.clone(),
            config_vector: s.config_vector,
            queue_vectors: s.queue_vectors.clone(),
            isr: s.isr,
        }
    }

    /// Restore from a snapshot; table sizes must match (extra entries are ignored).
    pub fn restore(&self, st: &PciIrqState) {
        let mut s = self.lock();
        s.enabled = st.msix_enabled;
        s.function_masked = st.function_masked;
        for (d, v) in s.table.iter_mut().zip(&st.table) {
            *d = *v;
        }
        for (d, v) in s.pending.iter_mut().zip(&st.pending) {
            *d = *v;
        }
        let n = s.table.len();
        let valid = |v: u16| if usize::from(v) < n { v } else { NO_VECTOR };
        s.config_vector = valid(st.config_vector);
        for (d, v) in s.queue_vectors.iter_mut().zip(&st.queue_vectors) {
            *d = valid(*v);
        }
        s.isr = st.isr & 3;
        self.intx.set_level(self.gsi, s.isr != 0);
    }

    pub fn table_len_bytes(&self) -> usize {
        self.vectors() * ENTRY_SIZE
    }
}

/// Fill `data` from 32-bit words `word(i)` starting at byte `offset`.
fn read_words(offset: u64, data: &mut [u8], word: impl Fn(usize) -> u32) {
    for (i, b) in data.iter_mut().enumerate() {
        let byte = offset as usize + i;
        *b = word(byte / 4).to_le_bytes()[byte % 4];
    }
}

impl VirtioIrq for PciIrq {
    fn signal_queue(&self, queue: usize) {
        let v = self.queue_vector(queue);
        self.signal(v, VIRTIO_MMIO_INT_VRING);
    }

    fn signal_config(&self) {
        let v = self.config_vector();
        self.signal(v, VIRTIO_MMIO_INT_CONFIG);
    }

    fn reset(&self) {
        let mut s = self.lock();
        s.config_vector = NO_VECTOR;
        s.queue_vectors.fill(NO_VECTOR);
        if std::mem::take(&mut s.isr) != 0 {
            self.intx.set_level(self.gsi, false);
        }
    }
}
