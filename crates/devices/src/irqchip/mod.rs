//! User-space interrupt controllers and timers for the software engine.
//!
//! On KVM the PIC, IOAPIC, local APICs and PIT live in the kernel; the software engine needs
//! them here. Each component is a plain state machine with its state as a serde struct
//! ([`pic`], [`ioapic`], [`lapic`], [`pit`]); [`chip`] wires them together for one VM and
//! is what the emulator and the devices talk to; [`bus_windows`] puts its ports and the
//! IOAPIC page on the VMM's buses. Time comes from an injectable [`clock`].

pub mod bus_windows;
pub mod chip;
pub mod clock;
pub mod ioapic;
pub mod lapic;
pub mod pic;
pub mod pit;

pub use bus_windows::{IoapicWindow, PortWindow};
pub use chip::{IrqChipError, SwIrqChip, SwIrqChipState, WakeReason};
pub use clock::{Clock, ManualClock, MonotonicClock, TscRate};
pub use lapic::StartupEvent;
