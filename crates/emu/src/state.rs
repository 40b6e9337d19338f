//! The plain, serializable register state the engine loads from and saves to.
//!
//! Mirrors the engine-neutral `arch::regs::CpuState` field for field (this crate depends on
//! no other wirt crate), plus the x87/SSE state and the MSRs the engine keeps.

use serde::{Deserialize, Serialize};

/// A segment register with its hidden descriptor-cache part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentState {
    pub selector: u16,
    pub base: u64,
    /// Limit in bytes (already scaled by G).
    pub limit: u32,
    /// Type field (bits 0..4 of the access byte, without S).
    pub type_: u8,
    /// S: code/data (true) or system (false).
    pub s: bool,
    pub dpl: u8,
    pub present: bool,
    pub avl: bool,
    pub l: bool,
    pub db: bool,
    pub g: bool,
    pub unusable: bool,
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableState {
    pub base: u64,
    pub limit: u16,
}

/// x87, SSE and AVX state: the FXSAVE fields (the 512-byte image), the upper halves of
/// the YMM registers and XCR0 (the XSAVE feature-enable register).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FpuState {
    pub fcw: u16,
    pub fsw: u16,
    /// Abridged tag word (one bit per register, 1 = valid), as FXSAVE stores it.
    pub ftw: u8,
    pub fop: u16,
    pub fip: u64,
    pub fdp: u64,
    /// ST0..ST7 as 80-bit values in the low 10 bytes of each 16.
    pub st: [[u8; 16]; 8],
    pub mxcsr: u32,
    /// XMM0..15 = bits 127:0 of YMM0..15.
    pub xmm: [u128; 16],
    /// Bits 255:128 of YMM0..15.
    #[serde(default)]
    pub ymm_hi: [u128; 16],
    /// XCR0: the state components XSAVE manages and AVX instructions may use (bit 0 x87,
    /// always set; bit 1 SSE; bit 2 AVX).
    #[serde(default = "xcr0_reset")]
    pub xcr0: u64,
}

fn xcr0_reset() -> u64 {
    1
}

impl Default for FpuState {
    fn default() -> Self {
        FpuState {
            fcw: 0x37f,
            fsw: 0,
            ftw: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            st: [[0; 16]; 8],
            mxcsr: 0x1f80,
            xmm: [0; 16],
            ymm_hi: [0; 16],
            xcr0: xcr0_reset(),
        }
    }
}

/// The complete architectural state of one vCPU as this engine keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuRegs {
    /// rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15.
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub es: SegmentState,
    pub cs: SegmentState,
    pub ss: SegmentState,
    pub ds: SegmentState,
    pub fs: SegmentState,
    pub gs: SegmentState,
    pub ldt: SegmentState,
    pub tr: SegmentState,
    pub gdt: TableState,
    pub idt: TableState,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub dr: [u64; 8],
    /// MSRs the engine keeps (index, value); see `msr.rs` for the list.
    pub msrs: Vec<(u32, u64)>,
    pub fpu: FpuState,
    /// True while the vCPU waits in HLT for an interrupt.
    pub halted: bool,
}

impl CpuRegs {
    /// 64-bit mode with paging (page tables at `cr3`), flat segments: a 64-bit code
    /// segment with selector `code`, data segments (DS, ES, FS, GS, SS) with `code + 8`;
    /// RIP at `rip`. The GDT register is left empty: loaded segments need no table.
    pub fn flat_long_mode(code: u16, cr3: u64, rip: u64) -> Self {
        let seg = |selector, type_, l: bool| SegmentState {
            selector,
            limit: 0xffff_ffff,
            type_,
            s: true,
            present: true,
            l,
            db: !l,
            g: true,
            ..Default::default()
        };
        let mut r = CpuRegs::reset();
        r.cs = seg(code, 0xb, true);
        r.ds = seg(code + 8, 3, false);
        r.es = r.ds;
        r.fs = r.ds;
        r.gs = r.ds;
        r.ss = r.ds;
        r.gdt = TableState { base: 0, limit: 0 };
        r.cr0 = 0x8000_0011; // PG, ET, PE
        r.cr3 = cr3;
        r.cr4 = 0x20; // PAE
        r.efer = 0x500; // LMA, LME
        r.rip = rip;
        r
    }

    /// The architectural RESET state (real mode, CS:IP = F000:FFF0).
    pub fn reset() -> Self {
        let data = SegmentState {
            limit: 0xffff,
            type_: 3,
            s: true,
            present: true,
            ..Default::default()
        };
        CpuRegs {
            rip: 0xfff0,
            rflags: 2,
            cs: SegmentState {
                selector: 0xf000,
                base: 0xffff_0000,
                type_: 0xb,
                ..data
            },
            ds: data,
            es: data,
            ss: data,
            fs: data,
            gs: data,
            ldt: SegmentState {
                type_: 2,
                s: false,
                ..data
            },
            tr: SegmentState {
                type_: 0xb,
                s: false,
                ..data
            },
            gdt: TableState {
                base: 0,
                limit: 0xffff,
            },
            idt: TableState {
                base: 0,
                limit: 0xffff,
            },
            cr0: 0x6000_0010,
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            ..Default::default()
        }
    }
}
