//! Shared test scaffolding: guest memory, a recording Platform, and a long-mode machine
//! (page tables, GDT, IDT with reporting handlers, TSS) to run small guest programs in.
#![allow(dead_code)]

use emu::{Cpu, CpuRegs, Exit, Platform, SegmentState, TableState};
use iced_x86::code_asm::CodeAssembler;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const RAM: usize = 8 << 20;
pub const PML4: u64 = 0x1000;
pub const PDPT: u64 = 0x2000;
pub const PD: u64 = 0x3000;
pub const IDT: u64 = 0x4000;
pub const GDT: u64 = 0x5000;
pub const TSS: u64 = 0x6000;
pub const IST1_TOP: u64 = 0x7ff0;
pub const KSTACK_TOP: u64 = 0xf000;
pub const CODE: u64 = 0x10000;
pub const DATA: u64 = 0x20000;
pub const HANDLERS: u64 = 0x30000;
pub const USTACK_TOP: u64 = 0x48000;
/// Port the default exception handlers write the vector to.
pub const VEC_PORT: u16 = 0xf0;

pub const KCODE: u16 = 0x08;
pub const KDATA: u16 = 0x10;
pub const UCODE32: u16 = 0x18;
pub const UDATA: u16 = 0x20;
pub const UCODE: u16 = 0x28;
pub const TSS_SEL: u16 = 0x30;
pub const CODE32: u16 = 0x40;

#[derive(Default)]
pub struct TestPlatform {
    pub outs: Vec<(u16, u32)>,
    pub pending: Vec<u8>,
    pub tsc: u64,
    pub mmio: Vec<(u64, u64)>,
}

impl Platform for TestPlatform {
    fn pio_read(&mut self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn pio_write(&mut self, port: u16, data: &[u8]) {
        let mut b = [0u8; 4];
        b[..data.len()].copy_from_slice(data);
        self.outs.push((port, u32::from_le_bytes(b)));
    }
    fn mmio_read(&mut self, _gpa: u64, data: &mut [u8]) {
        data.fill(0xab);
    }
    fn mmio_write(&mut self, gpa: u64, data: &[u8]) {
        let mut b = [0u8; 8];
        b[..data.len()].copy_from_slice(data);
        self.mmio.push((gpa, u64::from_le_bytes(b)));
    }
    fn interrupt_pending(&mut self) -> bool {
        !self.pending.is_empty()
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        if self.pending.is_empty() {
            None
        } else {
            Some(self.pending.remove(0))
        }
    }
    fn tsc(&mut self) -> u64 {
        self.tsc += 1000;
        self.tsc
    }
}

pub fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).unwrap()
}

pub fn w64(m: &GuestMemoryMmap, a: u64, v: u64) {
    m.write_obj(v, GuestAddress(a)).unwrap();
}

pub fn r64(m: &GuestMemoryMmap, a: u64) -> u64 {
    m.read_obj(GuestAddress(a)).unwrap()
}

pub fn seg(sel: u16, type_: u8, dpl: u8, l: bool, db: bool) -> SegmentState {
    SegmentState {
        selector: sel,
        base: 0,
        limit: 0xffff_ffff,
        type_,
        s: true,
        dpl,
        present: true,
        avl: false,
        l,
        db,
        g: true,
        unusable: false,
    }
}

/// Writes page tables (identity map of the first 1 GiB with 2 MiB pages, user-accessible),
/// GDT, TSS, and an IDT whose handlers write their vector to `VEC_PORT` and halt.
pub fn setup_long_mode(m: &GuestMemoryMmap) {
    w64(m, PML4, PDPT | 7);
    w64(m, PDPT, PD | 7);
    // 1..4 GiB with 1 GiB pages (MMIO lives below 4 GiB).
    for i in 1..4u64 {
        w64(m, PDPT + i * 8, (i << 30) | 0x87);
    }
    for i in 0..512u64 {
        w64(m, PD + i * 8, (i << 21) | 0x87);
    }
    let gdt: [u64; 9] = [
        0,
        0x00af_9a00_0000_ffff, // 0x08 kernel code 64
        0x00cf_9200_0000_ffff, // 0x10 kernel data
        0x00cf_fa00_0000_ffff, // 0x18 user code 32
        0x00cf_f200_0000_ffff, // 0x20 user data
        0x00af_fa00_0000_ffff, // 0x28 user code 64
        0x0000_8900_0000_0067 | ((TSS & 0xff_ffff) << 16), // 0x30 TSS (low)
        TSS >> 32,             // 0x38 TSS (high)
        0x00cf_9a00_0000_ffff, // 0x40 kernel code 32
    ];
    for (i, d) in gdt.iter().enumerate() {
        w64(m, GDT + i as u64 * 8, *d);
    }
    // TSS: RSP0 and IST1.
    w64(m, TSS + 4, KSTACK_TOP);
    w64(m, TSS + 0x24, IST1_TOP);
    for v in 0..256u64 {
        let h = HANDLERS + v * 16;
        // mov eax, v ; out VEC_PORT, eax ; hlt ; jmp $-1
        let code = [
            0xb8,
            v as u8,
            0,
            0,
            0,
            0xe7,
            VEC_PORT as u8,
            0xf4,
            0xeb,
            0xfd,
        ];
        m.write_slice(&code, GuestAddress(h)).unwrap();
        set_gate(m, v as u8, h, 0, 0);
    }
}

/// Installs a 64-bit interrupt gate.
pub fn set_gate(m: &GuestMemoryMmap, v: u8, target: u64, dpl: u8, ist: u8) {
    let lo = (target & 0xffff)
        | ((KCODE as u64) << 16)
        | ((ist as u64) << 32)
        | (0x8e_u64 | ((dpl as u64) << 5)) << 40
        | ((target >> 16) & 0xffff) << 48;
    w64(m, IDT + v as u64 * 16, lo);
    w64(m, IDT + v as u64 * 16 + 8, target >> 32);
}

pub fn long_mode_regs(rip: u64) -> CpuRegs {
    let mut r = CpuRegs::reset();
    let data = seg(KDATA, 3, 0, false, true);
    r.cs = seg(KCODE, 0xb, 0, true, false);
    r.ds = data;
    r.es = data;
    r.ss = data;
    r.fs = data;
    r.gs = data;
    r.tr = SegmentState {
        selector: TSS_SEL,
        base: TSS,
        limit: 0x67,
        type_: 0xb,
        s: false,
        present: true,
        ..Default::default()
    };
    r.gdt = TableState {
        base: GDT,
        limit: 9 * 8 - 1,
    };
    r.idt = TableState {
        base: IDT,
        limit: 0xfff,
    };
    r.cr0 = 0x8005_0033;
    r.cr3 = PML4;
    r.cr4 = 0x6a0;
    r.efer = 0xd01;
    r.rip = rip;
    r.rflags = 2;
    r.gpr[4] = KSTACK_TOP;
    r
}

/// Assembles 64-bit code for `at`.
pub fn asm64(at: u64, f: impl FnOnce(&mut CodeAssembler)) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a);
    a.assemble(at).unwrap()
}

pub fn load(m: &GuestMemoryMmap, at: u64, code: &[u8]) {
    m.write_slice(code, GuestAddress(at)).unwrap();
}

/// Runs until HLT or shutdown (bounded).
pub fn run_to_halt(cpu: &mut Cpu, p: &mut TestPlatform) -> Exit {
    for _ in 0..1000 {
        match cpu.run(p, 1_000_000) {
            Exit::BudgetExhausted => continue,
            e => return e,
        }
    }
    Exit::BudgetExhausted
}

/// Vectors reported by the default handlers so far.
pub fn vectors(p: &TestPlatform) -> Vec<u32> {
    p.outs
        .iter()
        .filter(|(port, _)| *port == VEC_PORT)
        .map(|(_, v)| *v)
        .collect()
}
