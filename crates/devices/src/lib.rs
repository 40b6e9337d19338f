//! Device models that live in the wirt process: the port-I/O and MMIO buses, the legacy
//! platform devices every x86 guest expects, and the interrupt controllers and timers that
//! KVM keeps in the kernel but the software engine needs in user space.

pub mod interrupt;
pub mod irqchip;
pub mod legacy;

pub use interrupt::InterruptSink;
