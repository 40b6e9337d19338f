//! Legacy platform devices and the buses they sit on.
//!
//! Everything an x86 guest expects to find at fixed ports without asking (a UART, an i8042,
//! the CMOS RTC, ACPI PM registers, ...), plus the [`Bus`] that routes port and MMIO accesses
//! to devices and the [`VmControl`] mailbox through which devices ask the VMM to reset or stop
//! the VM. Devices do not know their port numbers: the VMM places them (at the addresses in
//! `arch::layout`) and they see offsets into their range.

pub mod acpi_pm;
pub mod boot_timer;
pub mod bus;
pub mod control;
pub mod debug_exit;
pub mod i8042;
pub mod pc_testdev;
pub mod pci_config_ports;
pub mod port_sink;
pub mod reset_control;
pub mod rtc;
pub mod serial;
mod sync;

#[cfg(test)]
mod platform_tests;

pub use acpi_pm::{
    Pm1Control, Pm1ControlState, Pm1Event, Pm1EventState, PmTimer, PmTimerState, PM_TIMER_HZ,
};
pub use boot_timer::BootTimer;
pub use bus::{Bus, BusDevice, BusError, BusRange, BusStats};
pub use control::{ControlError, ControlEvent, VmControl};
pub use debug_exit::DebugExit;
pub use i8042::{I8042State, I8042};
pub use pc_testdev::PcTestDev;
pub use pci_config_ports::PciConfigPorts;
pub use port_sink::PortSink;
pub use reset_control::{ResetControl, ResetControlState};
pub use rtc::{Rtc, RtcDateTime, RtcError, RtcState};
pub use serial::{Serial, SerialDeviceState, SerialError, SerialStats};
