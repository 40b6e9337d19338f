//! The device manager: creates the platform's legacy devices, places them on the port and
//! MMIO buses at the addresses in `arch::layout` (the same addresses the ACPI tables
//! describe), and is the [`IoHandler`] both engines dispatch guest I/O to.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arch::layout;
use devices::legacy::{
    pc_testdev, BootTimer, Bus, BusDevice, BusError, DebugExit, PcTestDev, PciConfigPorts,
    Pm1Control, Pm1Event, PmTimer, PortSink, ResetControl, Rtc, Serial, SerialError, VmControl,
    I8042,
};
use devices::InterruptSink;
use hypervisor::IoHandler;

/// All devices of one VM and the buses that reach them.
pub struct DeviceManager {
    pio: Bus,
    mmio: Arc<Bus>,
    pub control: Arc<VmControl>,
    pub serial: Arc<Serial>,
    pub boot_timer: Arc<BootTimer>,
    /// The ACPI PM1 event block: pressing its power button asks the guest to shut down.
    pub pm1_event: Arc<Pm1Event>,
}

impl DeviceManager {
    /// Builds the legacy platform: COM1, i8042, CMOS RTC, ACPI PM block, the PCI
    /// configuration ports with the reset register inside them, debug-exit and boot-timer
    /// ports, and a sink for the POST-code port. The configuration ports reach whatever PCI
    /// host bridge is later placed at `layout::PCI_ECAM_START` (see `virtio_devices`);
    /// without one, configuration reads float to all ones as on a board with no PCI bus.
    pub fn new(
        serial_out: Box<dyn Write + Send>,
        irq: Arc<dyn InterruptSink>,
        mem_size: u64,
        start: Instant,
    ) -> Result<DeviceManager, DeviceError> {
        let control = Arc::new(VmControl::new().map_err(|e| DeviceError::Control(e.to_string()))?);
        let serial = Arc::new(Serial::new(serial_out, irq.clone(), layout::COM1_IRQ)?);
        let boot_timer = Arc::new(BootTimer::new(start, control.clone()));
        let pio = Bus::new();
        let mmio = Arc::new(Bus::new());
        let place =
            |dev: Arc<dyn BusDevice>, base: u16, len: u64| pio.insert(dev, u64::from(base), len);
        place(serial.clone(), layout::COM1, 8)?;
        let i8042 = Arc::new(I8042::new(
            control.clone(),
            irq.clone(),
            layout::I8042_IRQ,
            12,
        ));
        place(i8042.clone(), layout::I8042_DATA, 1)?;
        place(i8042.command_port(), layout::I8042_COMMAND, 1)?;
        let rtc = Rtc::new();
        let below_4g = mem_size.min(layout::MMIO_HOLE_START);
        rtc.set_memory_size(below_4g, mem_size - below_4g);
        place(Arc::new(rtc), layout::RTC_INDEX, 2)?;
        place(
            Arc::new(DebugExit::new(control.clone())),
            layout::DEBUG_EXIT,
            4,
        )?;
        place(boot_timer.clone(), layout::BOOT_TIMER, 4)?;
        let pm1_event = Arc::new(Pm1Event::new(irq.clone(), u32::from(layout::ACPI_SCI_IRQ)));
        place(
            pm1_event.clone(),
            layout::ACPI_PM1A_EVT,
            u64::from(layout::ACPI_PM1A_EVT_LEN),
        )?;
        place(
            Arc::new(Pm1Control::new(layout::ACPI_S5_SLP_TYP, control.clone())),
            layout::ACPI_PM1A_CNT,
            u64::from(layout::ACPI_PM1A_CNT_LEN),
        )?;
        place(
            Arc::new(PmTimer::new()),
            layout::ACPI_PM_TMR,
            u64::from(layout::ACPI_PM_TMR_LEN),
        )?;
        // 0xcf9 lies inside the CONFIG_ADDRESS dword: one device owns 0xcf8..0xd00.
        const _: () = assert!(layout::RESET_CONTROL == layout::PCI_CONFIG_PORTS + 1);
        place(
            Arc::new(PciConfigPorts::new(
                Arc::new(ResetControl::new(control.clone())),
                mmio.clone(),
                layout::PCI_ECAM_START,
                layout::PCI_ECAM_BUSES,
            )),
            layout::PCI_CONFIG_PORTS,
            u64::from(layout::PCI_CONFIG_PORTS_LEN),
        )?;
        place(Arc::new(PortSink::new(0xff)), layout::POST_CODE, 1)?;
        Ok(DeviceManager {
            pio,
            mmio,
            control,
            serial,
            boot_timer,
            pm1_event,
        })
    }

    /// Places QEMU's `pc-testdev` (the `test_device` option): its ports, its IRQ-line ports
    /// driving `irq`, and its MMIO scratch RAM.
    pub fn add_test_device(&self, irq: Arc<dyn InterruptSink>) -> Result<(), DeviceError> {
        let dev = PcTestDev::new(irq);
        self.pio.insert(
            dev.ports(),
            u64::from(pc_testdev::PORTS),
            pc_testdev::PORTS_LEN,
        )?;
        self.pio.insert(
            dev.irq_lines(),
            u64::from(pc_testdev::IRQ_PORTS),
            pc_testdev::IRQ_PORTS_LEN,
        )?;
        self.mmio
            .insert(dev.ioram(), pc_testdev::IORAM_BASE, pc_testdev::IORAM_LEN)?;
        Ok(())
    }

    /// The MMIO bus (virtio transports, the PCI host bridge's ECAM window and BARs go here).
    pub fn mmio_bus(&self) -> &Arc<Bus> {
        &self.mmio
    }

    /// Offers `bytes` to the UART until it took all of them, waiting for the guest to drain
    /// its receive FIFO in between. Gives up when the VM is stopping (`stopping` says so).
    pub fn deliver_serial_input(&self, mut bytes: &[u8], stopping: &dyn Fn() -> bool) {
        while !bytes.is_empty() && !stopping() {
            let n = self.serial.enqueue_input(bytes);
            bytes = &bytes[n..];
            if !bytes.is_empty() {
                wait_readable(
                    self.serial.input_room_fd().as_raw_fd(),
                    Duration::from_millis(50),
                );
                let _ = self.serial.input_room_fd().read();
            }
        }
    }
}

/// Waits until `fd` is readable or `timeout` passed.
fn wait_readable(fd: i32, timeout: Duration) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, count 1; poll only writes `revents`.
    unsafe { libc::poll(&mut p, 1, ms) };
}

impl IoHandler for DeviceManager {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        self.pio.read(u64::from(port), data);
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        self.pio.write(u64::from(port), data);
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        self.mmio.read(addr, data);
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.mmio.write(addr, data);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot create the VM control channel: {0}")]
    Control(String),
    #[error("cannot create the serial port: {0}")]
    Serial(#[from] SerialError),
    #[error("cannot place a device: {0}")]
    Bus(#[from] BusError),
}
