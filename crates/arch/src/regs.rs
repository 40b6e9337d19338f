//! The architectural register state of one x86-64 vCPU, as plain serializable data.
//!
//! This is the boundary type between the platform (which decides how a vCPU starts), the
//! engines (which convert it to `kvm_regs`/`kvm_sregs` or to the emulator's own state) and
//! snapshots (which save and restore it). It is deliberately engine-neutral.

use serde::{Deserialize, Serialize};

/// A segment register as the hidden descriptor cache holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    /// The 4-bit descriptor type (access byte bits 0..3; the S bit is `s`).
    pub type_: u8,
    pub present: bool,
    pub dpl: u8,
    /// D/B: default operation size 32 bits.
    pub db: bool,
    /// S: code/data (true) or system (false) segment.
    pub s: bool,
    /// L: 64-bit code segment.
    pub l: bool,
    /// G: limit is in 4 KiB units (the `limit` field here is always in bytes).
    pub g: bool,
    pub avl: bool,
    /// Unusable (null) segment.
    pub unusable: bool,
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorTable {
    pub base: u64,
    pub limit: u16,
}

/// General-purpose registers in the architectural encoding order
/// (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15).
pub const RAX: usize = 0;
pub const RCX: usize = 1;
pub const RDX: usize = 2;
pub const RBX: usize = 3;
pub const RSP: usize = 4;
pub const RBP: usize = 5;
pub const RSI: usize = 6;
pub const RDI: usize = 7;

/// The complete architectural state a vCPU starts from or is saved as.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuState {
    /// rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15.
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DescriptorTable,
    pub idt: DescriptorTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    /// Model-specific registers to set, as (index, value) pairs.
    pub msrs: Vec<(u32, u64)>,
}

pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const MP: u64 = 1 << 1;
    pub const EM: u64 = 1 << 2;
    pub const TS: u64 = 1 << 3;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const WP: u64 = 1 << 16;
    pub const AM: u64 = 1 << 18;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

pub mod cr4 {
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const PGE: u64 = 1 << 7;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
}

pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
}

/// RFLAGS bit 1 is reserved and always reads as 1.
pub const RFLAGS_RESERVED: u64 = 1 << 1;

impl CpuState {
    /// The state of an x86 CPU after RESET (real mode, CS:IP = F000:FFF0), used by
    /// application processors before their INIT/SIPI sequence and by tests.
    pub fn reset() -> Self {
        let data = Segment {
            selector: 0,
            base: 0,
            limit: 0xffff,
            type_: 3,
            present: true,
            s: true,
            ..Default::default()
        };
        CpuState {
            rip: 0xfff0,
            rflags: RFLAGS_RESERVED,
            cs: Segment {
                selector: 0xf000,
                base: 0xffff_0000,
                type_: 0xb,
                ..data
            },
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            tr: Segment {
                type_: 0xb,
                s: false,
                ..data
            },
            ldt: Segment {
                type_: 2,
                s: false,
                ..data
            },
            gdt: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            idt: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            cr0: cr0::ET | cr0::CD | cr0::NW,
            ..Default::default()
        }
    }
}
