//! The software engine's decode/execute speed on small 64-bit guest loops, in guest
//! instructions per second (criterion's "elements"): a register-only arithmetic loop, a
//! loop with loads and stores through the TLB, and a long straight-line body run once
//! (every instruction decoded into the block cache first) against the same body run many
//! times (decoded once, then served from the cache).
//!
//! `cargo bench -p wirt-bench --bench emu`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use emu::{Cpu, CpuRegs, Exit, Platform};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Where the loop code goes.
const CODE: u64 = 0x10000;
/// The data array of the memory loop (RDI points here).
const DATA: u64 = 0x20_0000;

/// A platform with nothing on it: the loops never touch I/O.
struct Null;

impl Platform for Null {
    fn pio_read(&mut self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn pio_write(&mut self, _port: u16, _data: &[u8]) {}
    fn mmio_read(&mut self, _gpa: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&mut self, _gpa: u64, _data: &[u8]) {}
    fn interrupt_pending(&mut self) -> bool {
        false
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        None
    }
    fn tsc(&mut self) -> u64 {
        0
    }
}

/// 4 MiB of guest RAM, identity-mapped with 2 MiB pages, holding `code` at [`CODE`].
fn memory(code: &[u8]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    // PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000, 512 large pages.
    mem.write_obj(0x2003u64, GuestAddress(0x1000)).unwrap();
    mem.write_obj(0x3003u64, GuestAddress(0x2000)).unwrap();
    for i in 0..512u64 {
        mem.write_obj((i << 21) | 0x83, GuestAddress(0x3000 + i * 8))
            .unwrap();
    }
    mem.write_slice(code, GuestAddress(CODE)).unwrap();
    mem
}

/// 64-bit mode with paging, RIP at [`CODE`], RCX = `count`, RDI = [`DATA`].
fn long_mode(count: u64) -> CpuRegs {
    let mut r = CpuRegs::flat_long_mode(8, 0x1000, CODE);
    r.gpr[1] = count;
    r.gpr[4] = 0x8000;
    r.gpr[7] = DATA;
    r
}

/// Runs from `regs` to the final HLT; returns the instructions executed.
fn run_to_halt(cpu: &mut Cpu, regs: &CpuRegs) -> u64 {
    cpu.set_regs(regs); // also empties the decoded-block cache
    let before = cpu.instructions();
    loop {
        match cpu.run(&mut Null, 50_000_000) {
            Exit::BudgetExhausted => {}
            Exit::Halted => break,
            Exit::Shutdown => panic!("guest shut down: {:x?}", cpu.regs()),
        }
    }
    cpu.instructions() - before
}

/// add rax, rcx; xor rdx, rax; imul rbx, rdx, 3; shr rdx, 1; dec ecx; jnz top; hlt
const ALU_LOOP: &[u8] = &[
    0x48, 0x01, 0xc8, // add rax, rcx
    0x48, 0x31, 0xc2, // xor rdx, rax
    0x48, 0x6b, 0xda, 0x03, // imul rbx, rdx, 3
    0x48, 0xd1, 0xea, // shr rdx, 1
    0xff, 0xc9, // dec ecx
    0x75, 0xef, // jnz top
    0xf4, // hlt
];

/// The memory loop walks down an array of 8-byte entries (512 per 4 KiB page, so TLB
/// probes and RAM bounds checks are part of it): load, add, store back, load the next one.
/// top: mov rax, [rdi+rcx*8]; add rax, rcx; mov [rdi+rcx*8], rax;
///      mov rbx, [rdi+rcx*8+8]; dec ecx; jnz top; hlt
const MEMORY_LOOP: &[u8] = &[
    0x48, 0x8b, 0x04, 0xcf, // mov rax, [rdi+rcx*8]
    0x48, 0x01, 0xc8, // add rax, rcx
    0x48, 0x89, 0x04, 0xcf, // mov [rdi+rcx*8], rax
    0x48, 0x8b, 0x5c, 0xcf, 0x08, // mov rbx, [rdi+rcx*8+8]
    0xff, 0xc9, // dec ecx
    0x75, 0xec, // jnz top
    0xf4, // hlt
];

/// One repetition of the straight-line body: a mix of common integer forms (16 bytes).
const BODY_UNIT: &[u8] = &[
    0x48, 0x01, 0xd8, // add rax, rbx
    0x48, 0x8d, 0x14, 0x40, // lea rdx, [rax+rax*2]
    0x48, 0x31, 0xd3, // xor rbx, rdx
    0x48, 0xc1, 0xe0, 0x03, // shl rax, 3
    0x90, 0x90, // nop; nop
];

/// `units` copies of [`BODY_UNIT`], then `dec ecx; jnz top` (rel32) and HLT.
fn straight_line(units: usize) -> Vec<u8> {
    let mut code: Vec<u8> = BODY_UNIT.repeat(units);
    code.extend_from_slice(&[0xff, 0xc9]); // dec ecx
    let back = -(code.len() as i32 + 6);
    code.extend_from_slice(&[0x0f, 0x85]); // jnz rel32
    code.extend_from_slice(&back.to_le_bytes());
    code.push(0xf4);
    code
}

fn bench_loop(c: &mut Criterion, name: &str, code: &[u8], iterations: u64) {
    let mem = memory(code);
    let mut cpu = Cpu::new(&mem);
    let regs = long_mode(iterations);
    let n = run_to_halt(&mut cpu, &regs);
    let mut g = c.benchmark_group("emu");
    g.throughput(Throughput::Elements(n));
    g.bench_function(name, |b| b.iter(|| run_to_halt(&mut cpu, &regs)));
    g.finish();
}

fn loops(c: &mut Criterion) {
    bench_loop(c, "alu-loop", ALU_LOOP, 100_000);
    bench_loop(c, "memory-loop", MEMORY_LOOP, 60_000);
}

/// 4608 instructions in 12 KiB of code: run once, every block is decoded first; run 64
/// times, the decoded blocks are reused 63 times.
fn decode_cache(c: &mut Criterion) {
    let code = straight_line(768);
    bench_loop(c, "straight-line-cold (decode + run once)", &code, 1);
    bench_loop(c, "straight-line-warm (64 passes)", &code, 64);
}

criterion_group!(benches, loops, decode_cache);
criterion_main!(benches);
