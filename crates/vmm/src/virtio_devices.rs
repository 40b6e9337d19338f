//! Creates the VM's virtio devices from its config, puts each behind the transport the
//! config chooses, describes them in the ACPI tables (so both the stock and the minimal
//! kernel find them), and starts the event loop that runs their back ends.
//!
//! virtio-mmio: device `i` gets the 4 KiB page at `MMIO_DEVICES_START + i * 0x1000` and the
//! `i`-th free ISA interrupt line; each is a DSDT device. Where the engine offers them (KVM),
//! queue kicks are ioeventfds and the line is an irqfd (see `fast_notify.rs`).
//!
//! virtio-pci: a host bridge whose ECAM window sits at `PCI_ECAM_START` (the chipset's
//! 0xcf8/0xcfc ports reach it too, see `devices.rs`); device `i` is the function in slot
//! `i + 1`, its INTA# the GSI `pci_intx_gsi(slot, 0)` (all different for up to eight
//! devices, so no line is shared), and it offers MSI-X when the engine delivers MSIs. The
//! guest places the BARs in the bridge's window; the DSDT gets `PCI0` and the MCFG table.

use std::sync::Arc;

use arch::acpi::{DsdtDevice, PciHostBridge};
use arch::layout::{
    pci_intx_gsi, MMIO_DEVICES_START, PCI_ECAM_BUSES, PCI_ECAM_SIZE, PCI_ECAM_START,
    PCI_INTX_GSI_COUNT, PCI_MMIO_SIZE, PCI_MMIO_START,
};
use devices::legacy::{Bus, BusError};
use devices::InterruptSink;
use hypervisor::Vm;
use virtio::balloon::{Balloon, BalloonHandle};
use virtio::block::{Block, BlockError};
use virtio::net::tap::TapError;
use virtio::net::Net;
use virtio::rng::Rng;
use virtio::transport::pci::msix::engine_msi;
use virtio::transport::pci::root::{PciError, PciRoot};
use virtio::transport::pci::PciTransport;
use virtio::vsock::{Vsock, VsockError};
use virtio::{
    EventLoop, EventLoopHandle, GuestRam, GuestWriteNotifier, MmioTransport, VirtioDevice,
    VirtioTransport as _,
};
use vm_memory::GuestMemoryMmap;

use crate::config::{VirtioTransport, VmConfig};
use crate::fast_notify::{self, FastNotifyError};

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
    /// The host side of the virtio console (hvc0), if the VM has one.
    pub console: Option<crate::console::VirtioConsoleBackend>,
}

/// Creates every virtio device `cfg` asks for and places it on `mmio`, directly or behind
/// a PCI host bridge. `engine`, when given, is asked for ioeventfds and irqfds.
pub fn attach(
    cfg: &VmConfig,
    mmio: &Arc<Bus>,
    mem: Arc<GuestMemoryMmap>,
    irq: Arc<dyn InterruptSink>,
    notify: GuestWriteNotifier,
    engine: Option<Arc<dyn Vm>>,
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
    let mut console = None;
    if let Some(c) = &cfg.virtio_console {
        let (dev, backend) = crate::console::open_virtio_console(c)?;
        devs.push(Box::new(dev));
        console = Some(backend);
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
            console,
        });
    }
    let ram = GuestRam::new(mem, notify);
    let mut event_loop = EventLoop::new().map_err(VirtioSetupError::Io)?;
    let dsdt = match cfg.virtio_transport {
        VirtioTransport::Mmio => {
            place_mmio(devs, &ram, mmio, &irq, engine.as_deref(), &mut event_loop)?
        }
        VirtioTransport::Pci => place_pci(devs, &ram, mmio, &irq, engine, &mut event_loop)?,
    };
    let handle = event_loop.spawn().map_err(VirtioSetupError::Io)?;
    Ok(VirtioDevices {
        dsdt,
        event_loop: Some(handle),
        balloon,
        console,
    })
}

/// Each device behind a virtio-mmio transport with its own ISA interrupt line.
fn place_mmio(
    devs: Vec<Box<dyn VirtioDevice>>,
    ram: &GuestRam,
    mmio: &Bus,
    irq: &Arc<dyn InterruptSink>,
    engine: Option<&dyn Vm>,
    event_loop: &mut EventLoop,
) -> Result<Vec<DsdtDevice>, VirtioSetupError> {
    if devs.len() > FREE_ISA_IRQS.len() {
        return Err(VirtioSetupError::TooMany(devs.len(), FREE_ISA_IRQS.len()));
    }
    let mut dsdt = Vec::new();
    for (i, (dev, gsi)) in devs.into_iter().zip(FREE_ISA_IRQS).enumerate() {
        let base = MMIO_DEVICES_START + i as u64 * SLOT_SIZE;
        let irqfd = match engine {
            Some(vm) => fast_notify::level_irqfd(vm, gsi)?,
            None => None,
        };
        let line = irqfd
            .as_ref()
            .map_or_else(|| irq.clone(), |l| l.line.clone());
        let transport = Arc::new(MmioTransport::new(dev, ram.clone(), line, gsi)?);
        if let Some(vm) = engine {
            let (_, kicks) = transport.shared();
            let notify = base + MmioTransport::QUEUE_NOTIFY_OFFSET;
            fast_notify::register_queue_kicks(vm, notify, &kicks)?;
        }
        if let Some(l) = irqfd {
            event_loop
                .add_resample(l.resample, transport.interrupt().clone())
                .map_err(VirtioSetupError::Io)?;
        }
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
    Ok(dsdt)
}

/// A PCI host bridge with each device as a virtio-pci function in its own slot.
fn place_pci(
    devs: Vec<Box<dyn VirtioDevice>>,
    ram: &GuestRam,
    mmio: &Arc<Bus>,
    irq: &Arc<dyn InterruptSink>,
    engine: Option<Arc<dyn Vm>>,
    event_loop: &mut EventLoop,
) -> Result<Vec<DsdtDevice>, VirtioSetupError> {
    let max = PCI_INTX_GSI_COUNT as usize;
    if devs.len() > max {
        return Err(VirtioSetupError::TooMany(devs.len(), max));
    }
    let root = PciRoot::new(mmio);
    mmio.insert(root.ecam(), PCI_ECAM_START, PCI_ECAM_SIZE)?;
    let msi = engine_msi(irq);
    let mut kicks_by_slot = Vec::new();
    for (slot, dev) in (1u8..).zip(devs) {
        let gsi = pci_intx_gsi(slot, 0);
        let transport = Arc::new(PciTransport::new(
            dev,
            ram.clone(),
            msi.clone(),
            irq.clone(),
            gsi,
        )?);
        event_loop
            .add(transport.as_ref())
            .map_err(VirtioSetupError::Io)?;
        kicks_by_slot.push((slot, transport.shared().1));
        root.add_at(slot, transport)?;
    }
    if let Some(vm) = engine {
        root.set_bar_listener(fast_notify::pci_kick_follower(vm, kicks_by_slot));
    }
    Ok(DsdtDevice::pci_host_bridge(PciHostBridge {
        ecam_base: PCI_ECAM_START,
        ecam_buses: PCI_ECAM_BUSES,
        mmio_base: PCI_MMIO_START,
        mmio_len: PCI_MMIO_SIZE,
    })
    .to_vec())
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
    #[error("cannot set up the virtio console: {0}")]
    Console(#[from] crate::console::ConsoleError),
    #[error("cannot set up a virtio transport: {0}")]
    Transport(#[from] virtio::TransportError),
    #[error("cannot place a virtio device: {0}")]
    Bus(#[from] BusError),
    #[error("cannot place a virtio-pci device: {0}")]
    Pci(#[from] PciError),
    #[error("{0} virtio devices: at most {1} fit the free interrupt lines")]
    TooMany(usize, usize),
    #[error("cannot connect a virtio device to the engine: {0}")]
    FastNotify(#[from] FastNotifyError),
    #[error("virtio setup: {0}")]
    Io(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::interrupt::NullInterruptSink;
    use devices::legacy::{BusDevice, PciConfigPorts, PortSink};
    use vm_memory::GuestAddress;

    fn attach_with(
        transport: VirtioTransport,
        disk: &std::path::Path,
    ) -> (Arc<Bus>, VirtioDevices) {
        attach_on(transport, disk, None)
    }

    fn attach_on(
        transport: VirtioTransport,
        disk: &std::path::Path,
        engine: Option<Arc<dyn Vm>>,
    ) -> (Arc<Bus>, VirtioDevices) {
        let mut cfg = VmConfig::new("/k".into());
        cfg.disks
            .push(format!("path={}", disk.display()).parse().unwrap());
        cfg.rng = true;
        cfg.virtio_transport = transport;
        let mmio = Arc::new(Bus::new());
        let mem =
            Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
        let irq: Arc<dyn InterruptSink> = Arc::new(NullInterruptSink);
        let v = attach(&cfg, &mmio, mem, irq, virtio::ignore_guest_writes(), engine).unwrap();
        (mmio, v)
    }

    /// The chipset's 0xcf8/0xcfc ports in front of `mmio`'s ECAM window.
    fn chipset_ports(mmio: &Arc<Bus>) -> PciConfigPorts {
        PciConfigPorts::new(
            Arc::new(PortSink::new(0)),
            mmio.clone(),
            PCI_ECAM_START,
            PCI_ECAM_BUSES,
        )
    }

    fn scratch_disk(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("wirt-vd-{name}-{}.img", std::process::id()));
        std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
        p
    }

    #[test]
    fn pci_puts_each_device_in_its_own_slot_behind_the_host_bridge() {
        let disk = scratch_disk("pci");
        let (mmio, v) = attach_with(VirtioTransport::Pci, &disk);
        std::fs::remove_file(&disk).unwrap();
        // Through the chipset's 0xcf8/0xcfc ports, as the minimal kernel probes.
        let ports = chipset_ports(&mmio);
        let cfg_read = |slot: u32, reg: u32| {
            ports.write(0, &(0x8000_0000 | slot << 11 | reg).to_le_bytes());
            let mut b = [0u8; 4];
            ports.read(4, &mut b);
            u32::from_le_bytes(b)
        };
        assert_eq!(cfg_read(0, 0), 0x0008_1b36, "host bridge in slot 0");
        assert_eq!(cfg_read(1, 0), 0x1042_1af4, "virtio-blk in slot 1");
        assert_eq!(cfg_read(2, 0), 0x1044_1af4, "virtio-rng in slot 2");
        assert_eq!(cfg_read(3, 0), 0xffff_ffff, "slot 3 is empty");
        // Interrupt line (0x3c) and pin INTA# (0x3d): the _PRT's GSIs.
        assert_eq!(cfg_read(1, 0x3c) & 0xffff, 0x100 | pci_intx_gsi(1, 0));
        assert_eq!(cfg_read(2, 0x3c) & 0xffff, 0x100 | pci_intx_gsi(2, 0));
        let names: Vec<&str> = v.dsdt.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["PCI0", "PRES"]);
        assert!(
            mmio.resolve(MMIO_DEVICES_START).is_none(),
            "no virtio-mmio windows"
        );
    }

    /// An engine that only records ioeventfd (de)registrations.
    #[derive(Default)]
    struct KickRecorder(std::sync::Mutex<Vec<(bool, u64, Option<u32>)>>);

    impl Vm for KickRecorder {
        fn engine(&self) -> hypervisor::EngineKind {
            hypervisor::EngineKind::Kvm
        }
        fn create_vcpu(&self, _id: u32) -> Result<Box<dyn hypervisor::Vcpu>, hypervisor::Error> {
            Err(hypervisor::Error::InvalidState("no vCPUs here".into()))
        }
        fn interrupt_sink(&self) -> Arc<dyn InterruptSink> {
            Arc::new(NullInterruptSink)
        }
        fn register_mmio_kick(
            &self,
            addr: u64,
            value: Option<u32>,
            _kick: &vmm_sys_util::eventfd::EventFd,
        ) -> Result<bool, hypervisor::Error> {
            self.0.lock().unwrap().push((true, addr, value));
            Ok(true)
        }
        fn unregister_mmio_kick(
            &self,
            addr: u64,
            value: Option<u32>,
            _kick: &vmm_sys_util::eventfd::EventFd,
        ) -> Result<(), hypervisor::Error> {
            self.0.lock().unwrap().push((false, addr, value));
            Ok(())
        }
    }

    #[test]
    fn pci_notify_ioeventfds_follow_bar0_where_the_guest_puts_it() {
        let disk = scratch_disk("pci-kicks");
        let engine = Arc::new(KickRecorder::default());
        let (mmio, _v) = attach_on(VirtioTransport::Pci, &disk, Some(engine.clone()));
        std::fs::remove_file(&disk).unwrap();
        let ports = chipset_ports(&mmio);
        let cfg_write = |reg: u32, v: u32| {
            ports.write(0, &(0x8000_0000 | 1 << 11 | reg).to_le_bytes());
            ports.write(4, &v.to_le_bytes());
        };
        let notify = |bar: u64| bar + virtio::transport::pci::NOTIFY_OFFSET;
        // BAR0 (64-bit) at 0xc000_0000, then memory decoding on.
        cfg_write(0x10, 0xc000_0000);
        cfg_write(0x14, 0);
        assert!(engine.0.lock().unwrap().is_empty(), "decoding is still off");
        cfg_write(0x04, 0x2);
        assert_eq!(
            *engine.0.lock().unwrap(),
            [(true, notify(0xc000_0000), None)],
            "virtio-blk's one queue"
        );
        // The guest moves the BAR: the kick follows it.
        engine.0.lock().unwrap().clear();
        cfg_write(0x04, 0);
        cfg_write(0x10, 0xc010_0000);
        cfg_write(0x04, 0x2);
        assert_eq!(
            *engine.0.lock().unwrap(),
            [
                (false, notify(0xc000_0000), None),
                (true, notify(0xc010_0000), None)
            ]
        );
    }

    #[test]
    fn mmio_places_windows_and_no_host_bridge() {
        let disk = scratch_disk("mmio");
        let (mmio, v) = attach_with(VirtioTransport::Mmio, &disk);
        std::fs::remove_file(&disk).unwrap();
        assert!(mmio.resolve(MMIO_DEVICES_START).is_some());
        assert!(mmio.resolve(MMIO_DEVICES_START + SLOT_SIZE).is_some());
        assert!(mmio.resolve(PCI_ECAM_START).is_none());
        assert_eq!(v.dsdt.len(), 2);
        assert!(v.dsdt.iter().all(|d| d.hid == "LNRO0005"));
    }
}
