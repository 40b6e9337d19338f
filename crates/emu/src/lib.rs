//! emu — the software engine's x86-64 CPU.
//!
//! # Architecture
//!
//! - **Decoding** is iced-x86's (`decode_cache.rs`): guest code is decoded into blocks
//!   of `iced_x86::Instruction`s, cached by linear address and validated on every entry
//!   against the physical page (through the TLB) and that page's *code version*. A block
//!   is a trace through one page: it goes on past conditional branches (not-taken path)
//!   and same-page direct jumps, and the run loop leaves it wherever execution departs.
//! - **Code versions** (`memory.rs`): one `AtomicU32` per 4 KiB guest page, shared by all
//!   vCPUs; a write to a page that holds decoded code bumps it, so self-modifying code and
//!   the kernel's alternatives/jump-label patching (also from another vCPU) take effect.
//! - **Interpreter** (`exec/`): one function per instruction group, working on iced's
//!   operand description; arithmetic flags are lazy (`flags.rs`). The most frequent forms
//!   (mov/alu/adc/sbb/jcc/call/ret/push/pop/lea/shifts/rotates/setcc/cmov/imul with
//!   32/64-bit registers) are classified once per decoded block and run through
//!   specialised fast paths (`exec/fast.rs`); a shift whose flags the next instruction
//!   overwrites skips computing them. REP MOVS/STOS copy page-sized chunks at once.
//! - **Port I/O** (`exec/io.rs`) checks IOPL and then the TSS I/O permission bitmap.
//! - **MMU** (`mmu.rs`, `tlb.rs`, `protect.rs`): 32-bit, PAE and 4-level page walks with
//!   A/D bits, reserved-bit faults, NX, U/S, R/W+WP, SMEP, SMAP, protection keys (PKU,
//!   PKS), global, large and 1 GiB pages, PCID/INVPCID (flushing conservatively); a direct-mapped software TLB holds host pointers
//!   so most accesses are a probe plus a host load/store. Every guest-physical access is
//!   bounds-checked against the RAM regions; the rest goes to `Platform::mmio_*`.
//! - **Exceptions/interrupts** (`exceptions.rs`, `interrupts.rs`): faults are `Err` values
//!   that unwind to the block loop and are delivered through the IVT/IDT (TSS stack switch,
//!   IST), escalating to #DF and triple fault (`Exit::Shutdown`).
//! - **Segments** (`segments.rs`), **MSRs** (`msr.rs`), **CPUID** (`cpuid.rs`), and the
//!   separable **x87** (`x87/`: 80-bit arithmetic on `rustc_apfloat`, all D8–DF
//!   instructions), **XSAVE** (`xsave.rs`: XCR0, XSAVE/XRSTOR) and **SSE/AVX** (`sse/`:
//!   one lane function per SSE operation, used by the legacy, VEX.128 and VEX.256 forms)
//!   units.
//!
//! Why hand-written: iced-x86 decodes but does not execute, and no maintained Rust crate
//! executes x86-64 system code (paging, privilege changes, interrupts) at this level.
//!
//! # Use
//!
//! One `GuestRam` per VM (`GuestRam::new(&mem)`), one `Cpu::with_ram(ram.clone())` per
//! vCPU thread, `Cpu::set_regs` to load a state, then `Cpu::run(&mut platform, budget)` in
//! a loop: `Exit::BudgetExhausted` (poll timers/stop requests and call again),
//! `Exit::Halted` (sleep until an interrupt may be pending), `Exit::Shutdown` (triple
//! fault). Device DMA into guest memory must be reported with
//! `GuestRam::note_external_write` so cached code on those pages is dropped.
//!
//! Correctness: `tests/diff.rs` runs every integer, SSE-SSE4.2, AVX and string instruction
//! form against the host CPU; `tests/system.rs` runs small guest programs for the system parts.
//! `examples/mips.rs` prints the speed; `examples/boot.rs` boots a Linux bzImage.

mod cpu;
pub mod cpuid;
mod debug;
mod decode_cache;
mod exceptions;
mod exec;
mod flags;
mod interrupts;
mod memory;
mod mmu;
mod msr;
mod platform;
mod protect;
mod segments;
mod sse;
mod state;
mod tlb;
mod x87;
mod xsave;

pub use cpu::{Cpu, Exit};
pub use cpuid::CpuidLeaf;
pub use memory::{CodeVersions, GuestRam};
pub use platform::Platform;
pub use state::{CpuRegs, FpuState, SegmentState, TableState};
