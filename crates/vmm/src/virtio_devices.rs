//! Creates the VM's virtio devices from its config, puts each behind a virtio-mmio
//! transport on the MMIO bus, describes them in the ACPI DSDT (so both the stock and the
//! minimal kernel find them), and starts the event loop that runs their back ends.
//!
//! Layout: device `i` gets the 4 KiB page at `MMIO_DEVICES_START + i * 0x1000` and the
//! `i`-th free ISA interrupt line.

use std::sync::Arc;

use arch::acpi::DsdtDevice;
use arch::layout::MMIO_DEVICES_START;
use devices::legacy::{Bus, BusError};
use devices::InterruptSink;
use virtio::balloon::{Balloon, BalloonHandle};
use virtio::block::{Block, BlockError};
use virtio::net::tap::TapError;
use virtio::net::Net;
use virtio::rng::Rng;
use virtio::vsock::{Vsock, VsockError};
use virtio::{
    EventLoop, EventLoopHandle, GuestRam, GuestWriteNotifier, MmioTransport, VirtioDevice,
};
use vm_memory::GuestMemoryMmap;

use crate::config::VmConfig;

/// ISA interrupt lines no legacy device uses (COM1 4, i8042 1/12, RTC 8, SCI 9, PIT 0).
const FREE_ISA_IRQS: [u32; 7] = [5, 6, 7, 10, 11, 14, 15];
/// Distance between two devices' MMIO windows.
const SLOT_SIZE: u64 = 0x1000;

/// The running virtio side of a VM.
pub struct VirtioDevices {
    /// What the DSDT must describe.
    pub dsdt: Vec<DsdtDevice>,
    /// Runs the back ends; dropping it stops them.
    pub event_loop: Option<EventLoopHandle>,
    /// Controls the balloon, if the VM has one.
    pub balloon: Option<BalloonHandle>,
}

/// Creates every virtio device `cfg` asks for and places it on `mmio`.
pub fn attach(
    cfg: &VmConfig,
    mmio: &Bus,
    mem: Arc<GuestMemoryMmap>,
    irq: Arc<dyn InterruptSink>,
    notify: GuestWriteNotifier,
) -> Result<VirtioDevices, VirtioSetupError> {
    let mut devs: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for d in &cfg.disks {
        let b = Block::new(d).map_err(|source| VirtioSetupError::Disk {
            path: d.path.display().to_string(),
            source,
        })?;
        devs.push(Box::new(b));
    }
    for n in &cfg.nets {
        let net = Net::new(n).map_err(|source| VirtioSetupError::Net {
            tap: n.tap.clone(),
            source,
        })?;
        devs.push(Box::new(net));
    }
    if let Some(v) = &cfg.vsock {
        devs.push(Box::new(Vsock::new(v)?));
    }
    if cfg.rng {
        devs.push(Box::new(Rng::new()));
    }
    let mut balloon = None;
    if let Some(b) = &cfg.balloon {
        let (dev, handle) = Balloon::new(*b).map_err(VirtioSetupError::Io)?;
        devs.push(Box::new(dev));
        balloon = Some(handle);
    }
    if devs.is_empty() {
        return Ok(VirtioDevices {
            dsdt: Vec::new(),
            event_loop: None,
            balloon,
        });
    }
    if devs.len() > FREE_ISA_IRQS.len() {
        return Err(VirtioSetupError::TooMany(devs.len()));
    }

    let ram = GuestRam::new(mem, notify);
    let mut event_loop = EventLoop::new().map_err(VirtioSetupError::Io)?;
    let mut dsdt = Vec::new();
    for (i, (dev, gsi)) in devs.into_iter().zip(FREE_ISA_IRQS).enumerate() {
        let base = MMIO_DEVICES_START + i as u64 * SLOT_SIZE;
        let transport = Arc::new(MmioTransport::new(dev, ram.clone(), irq.clone(), gsi)?);
        event_loop
            .add(transport.as_ref())
            .map_err(VirtioSetupError::Io)?;
        mmio.insert(transport, base, virtio::MMIO_WINDOW_SIZE)?;
        dsdt.push(DsdtDevice::virtio_mmio(
            i as u32,
            base,
            virtio::MMIO_WINDOW_SIZE,
            gsi,
        ));
    }
    let handle = event_loop.spawn().map_err(VirtioSetupError::Io)?;
    Ok(VirtioDevices {
        dsdt,
        event_loop: Some(handle),
        balloon,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum VirtioSetupError {
    #[error("cannot open disk image {path}: {source}")]
    Disk {
        path: String,
        #[source]
        source: BlockError,
    },
    #[error("cannot open TAP interface {tap}: {source}")]
    Net {
        tap: String,
        #[source]
        source: TapError,
    },
    #[error("cannot set up virtio-vsock: {0}")]
    Vsock(#[from] VsockError),
    #[error("cannot set up a virtio transport: {0}")]
    Transport(#[from] virtio::TransportError),
    #[error("cannot place a virtio device: {0}")]
    Bus(#[from] BusError),
    #[error("{0} virtio devices: at most 7 fit the free interrupt lines")]
    TooMany(usize),
    #[error("virtio setup: {0}")]
    Io(#[source] std::io::Error),
}
