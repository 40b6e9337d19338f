//! Prints the engine's speed in million guest instructions per second on a simple loop
//! (ALU ops, a load, a store, a taken branch) in 64-bit mode with paging on.
//!
//! `cargo run --release -p emu --example mips [iterations]`

use std::time::Instant;

use emu::{Cpu, CpuRegs, Exit, Platform};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

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

fn main() {
    let iters: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000_000);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    // Identity map 1 GiB with 2 MiB pages: PML4 0x1000, PDPT 0x2000, PD 0x3000.
    mem.write_obj(0x2003u64, GuestAddress(0x1000)).unwrap();
    mem.write_obj(0x3003u64, GuestAddress(0x2000)).unwrap();
    for i in 0..512u64 {
        mem.write_obj((i << 21) | 0x83, GuestAddress(0x3000 + i * 8))
            .unwrap();
    }
    // loop: add rax, rcx; xor rdx, rax; mov [rsp-8], rdx; mov rbx, [rsp-8];
    //       lea rsi, [rbx+rax*2]; dec ecx; jnz loop; hlt
    let code: &[u8] = &[
        0x48, 0x01, 0xc8, // add rax, rcx
        0x48, 0x31, 0xc2, // xor rdx, rax
        0x48, 0x89, 0x54, 0x24, 0xf8, // mov [rsp-8], rdx
        0x48, 0x8b, 0x5c, 0x24, 0xf8, // mov rbx, [rsp-8]
        0x48, 0x8d, 0x34, 0x43, // lea rsi, [rbx+rax*2]
        0xff, 0xc9, // dec ecx
        0x75, 0xe8, // jnz loop
        0xf4, // hlt
    ];
    mem.write_slice(code, GuestAddress(0x10000)).unwrap();
    let mut r = CpuRegs::flat_long_mode(8, 0x1000, 0x10000);
    r.gpr[1] = iters as u64;
    r.gpr[4] = 0x8000;
    let mut cpu = Cpu::new(&mem);
    cpu.set_regs(&r);
    let start = Instant::now();
    loop {
        match cpu.run(&mut Null, 10_000_000) {
            Exit::BudgetExhausted => {}
            Exit::Halted => break,
            Exit::Shutdown => panic!("guest shut down: {:x?}", cpu.regs()),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = cpu.instructions();
    println!(
        "{n} instructions in {secs:.3} s: {:.1} MIPS",
        n as f64 / secs / 1e6
    );
}
