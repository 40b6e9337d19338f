//! Smoke-boots a Linux bzImage on the engine with a minimal platform (serial port output
//! only, no interrupt controller or timers): useful to find unimplemented instructions and
//! to measure speed on real guest code. Prints the serial console and the exit.
//!
//! `cargo run --release -p emu --example boot -- /path/to/bzImage [max-instructions] [initrd]`

use std::io::Write;
use std::time::Instant;

use emu::{Cpu, CpuRegs, Exit, Platform, TableState};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const RAM: usize = 512 << 20;
const BOOT_PARAMS: u64 = 0x7000;
const CMDLINE: u64 = 0x20000;
const KERNEL: u64 = 0x100_0000;

struct Serial {
    tsc: u64,
    lines: usize,
}

impl Platform for Serial {
    fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        if port == 0x3fd {
            data[0] = 0x60; // transmitter empty
        }
    }
    fn pio_write(&mut self, port: u16, data: &[u8]) {
        if port == 0x3f8 {
            let mut out = std::io::stdout();
            let _ = out.write_all(&data[..1]);
            if data[0] == b'\n' {
                self.lines += 1;
                let _ = out.flush();
            }
        }
    }
    fn mmio_read(&mut self, _gpa: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn mmio_write(&mut self, _gpa: u64, _data: &[u8]) {}
    fn interrupt_pending(&mut self) -> bool {
        false
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        None
    }
    fn tsc(&mut self) -> u64 {
        self.tsc += 1000;
        self.tsc
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: boot <bzImage> [max-instructions]");
    let max: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000_000);
    let initrd = args.next().map(|p| std::fs::read(p).expect("read initrd"));
    let image = std::fs::read(&path).expect("read bzImage");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let kernel_off = (setup_sects + 1) * 512;
    mem.write_slice(&image[kernel_off..], GuestAddress(KERNEL))
        .unwrap();
    // boot_params: copy the setup header, fill in what a boot loader must.
    let hdr_end = 0x202 + image[0x201] as usize;
    mem.write_slice(&image[0x1f1..hdr_end], GuestAddress(BOOT_PARAMS + 0x1f1))
        .unwrap();
    let cmdline = b"console=ttyS0 earlyprintk=serial,ttyS0,115200 noapic nolapic lpj=1000000 tsc=reliable panic=-1\0";
    mem.write_slice(cmdline, GuestAddress(CMDLINE)).unwrap();
    mem.write_obj(0xffu8, GuestAddress(BOOT_PARAMS + 0x210))
        .unwrap(); // type_of_loader
    let lf = mem
        .read_obj::<u8>(GuestAddress(BOOT_PARAMS + 0x211))
        .unwrap();
    mem.write_obj(lf | 0x01, GuestAddress(BOOT_PARAMS + 0x211))
        .unwrap(); // LOADED_HIGH
    mem.write_obj(CMDLINE as u32, GuestAddress(BOOT_PARAMS + 0x228))
        .unwrap();
    mem.write_obj(KERNEL as u32, GuestAddress(BOOT_PARAMS + 0x214))
        .unwrap(); // code32_start
                   // e820: low RAM, and RAM from 1 MiB.
    let e820 = [
        (0u64, 0x9fc00u64, 1u32),
        (0x10_0000, RAM as u64 - 0x10_0000, 1),
    ];
    for (i, (a, l, t)) in e820.iter().enumerate() {
        let at = BOOT_PARAMS + 0x2d0 + i as u64 * 20;
        mem.write_obj(*a, GuestAddress(at)).unwrap();
        mem.write_obj(*l, GuestAddress(at + 8)).unwrap();
        mem.write_obj(*t, GuestAddress(at + 16)).unwrap();
    }
    mem.write_obj(e820.len() as u8, GuestAddress(BOOT_PARAMS + 0x1e8))
        .unwrap();
    if let Some(rd) = &initrd {
        let at = 0x1000_0000u64;
        mem.write_slice(rd, GuestAddress(at)).unwrap();
        mem.write_obj(at as u32, GuestAddress(BOOT_PARAMS + 0x218))
            .unwrap();
        mem.write_obj(rd.len() as u32, GuestAddress(BOOT_PARAMS + 0x21c))
            .unwrap();
    }
    // Identity map 4 GiB with 1 GiB pages; GDT with flat 64-bit code (0x10) and data (0x18).
    mem.write_obj(0x2003u64, GuestAddress(0x1000)).unwrap();
    for i in 0..4u64 {
        mem.write_obj((i << 30) | 0x83, GuestAddress(0x2000 + i * 8))
            .unwrap();
    }
    let gdt: [u64; 4] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
    for (i, d) in gdt.iter().enumerate() {
        mem.write_obj(*d, GuestAddress(0x500 + i as u64 * 8))
            .unwrap();
    }
    let mut r = CpuRegs::flat_long_mode(0x10, 0x1000, KERNEL + 0x200); // 64-bit entry
    r.gdt = TableState {
        base: 0x500,
        limit: 31,
    };
    r.idt = TableState { base: 0, limit: 0 };
    r.cr0 = 0x8005_0033; // also WP, NE, MP: as Linux's 64-bit boot protocol leaves it
    r.cr4 = 0x6a0; // also OSFXSR, OSXMMEXCPT, PGE
    r.gpr[6] = BOOT_PARAMS; // rsi
    r.gpr[4] = 0x8000;
    let mut cpu = Cpu::new(&mem);
    cpu.set_regs(&r);
    let mut p = Serial { tsc: 0, lines: 0 };
    let start = Instant::now();
    let exit = loop {
        match cpu.run(&mut p, 50_000_000) {
            Exit::BudgetExhausted if cpu.instructions() < max => continue,
            e => break e,
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let st = cpu.regs();
    println!(
        "\n--- {exit:?} after {} instructions in {secs:.2} s ({:.1} MIPS), rip {:#x}, {} lines",
        cpu.instructions(),
        cpu.instructions() as f64 / secs / 1e6,
        st.rip,
        p.lines
    );
}
