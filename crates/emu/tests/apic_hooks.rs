//! The CPU's side of the local APIC: NMIs (taken whatever RFLAGS.IF, blocked until IRET,
//! one latched behind a running handler), CR8 as the platform's TPR, and IA32_APIC_BASE
//! (the platform may refuse a value; CPUID.1:EDX.APIC follows the enable bit).

mod common;

use common::*;
use emu::{Cpu, Exit, Platform};
use iced_x86::code_asm::*;

/// [`TestPlatform`] plus NMIs waiting, a TPR and an APIC that refuses reserved bit 0.
#[derive(Default)]
struct ApicPlatform {
    inner: TestPlatform,
    nmis: u32,
    cr8: u64,
}

impl Platform for ApicPlatform {
    fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        self.inner.pio_read(port, data)
    }
    fn pio_write(&mut self, port: u16, data: &[u8]) {
        self.inner.pio_write(port, data)
    }
    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]) {
        self.inner.mmio_read(gpa, data)
    }
    fn mmio_write(&mut self, gpa: u64, data: &[u8]) {
        self.inner.mmio_write(gpa, data)
    }
    fn interrupt_pending(&mut self) -> bool {
        self.inner.interrupt_pending()
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        self.inner.acknowledge_interrupt()
    }
    fn tsc(&mut self) -> u64 {
        self.inner.tsc()
    }
    fn apic_base_written(&mut self, value: u64) -> bool {
        value & 1 == 0
    }
    fn nmi_pending(&mut self) -> bool {
        self.nmis != 0
    }
    fn take_nmi(&mut self) -> bool {
        let took = self.nmis != 0;
        self.nmis = self.nmis.saturating_sub(1);
        took
    }
    fn cr8(&mut self) -> u64 {
        self.cr8
    }
    fn set_cr8(&mut self, value: u64) {
        self.cr8 = value;
    }
}

fn outs(p: &ApicPlatform, port: u16) -> Vec<u32> {
    p.inner
        .outs
        .iter()
        .filter(|(q, _)| *q == port)
        .map(|(_, v)| *v)
        .collect()
}

fn run(cpu: &mut Cpu, p: &mut ApicPlatform) -> Exit {
    for _ in 0..1000 {
        match cpu.run(p, 1_000_000) {
            Exit::BudgetExhausted => continue,
            e => return e,
        }
    }
    Exit::BudgetExhausted
}

#[test]
fn nmi_ignores_if_is_blocked_until_iret_and_latches_one() {
    let m = memory();
    setup_long_mode(&m);
    let handler = HANDLERS + 0x1000;
    load(
        &m,
        handler,
        &asm64(handler, |a| {
            a.mov(eax, 2).unwrap();
            a.out(0xe0, eax).unwrap();
            // Long enough for the other NMIs to arrive while this one is handled.
            for _ in 0..8 {
                a.nop().unwrap();
            }
            a.mov(eax, 3).unwrap();
            a.out(0xe0, eax).unwrap();
            a.iretq().unwrap();
        }),
    );
    set_gate(&m, 2, handler, 0, 0);
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            a.cli().unwrap();
            a.hlt().unwrap();
            a.mov(eax, 1).unwrap();
            a.out(0xe0, eax).unwrap();
            a.hlt().unwrap();
        }),
    );
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = ApicPlatform::default();
    assert_eq!(cpu.run(&mut p, 1000), Exit::Halted);
    // Three NMIs while halted with IF=0: one delivered, one latched, one merged.
    p.nmis = 3;
    assert_eq!(run(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(outs(&p, 0xe0), vec![2, 3, 2, 3, 1]);
    assert_eq!(p.nmis, 0);
}

#[test]
fn cr8_is_the_platforms_tpr() {
    let m = memory();
    setup_long_mode(&m);
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            a.mov(rax, 9u64).unwrap();
            a.mov(cr8, rax).unwrap();
            a.mov(rbx, cr8).unwrap();
            a.mov(eax, ebx).unwrap();
            a.out(0xe0, eax).unwrap();
            a.mov(rax, 16u64).unwrap();
            a.mov(cr8, rax).unwrap(); // #GP: CR8 holds 4 bits
            a.hlt().unwrap();
        }),
    );
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = ApicPlatform::default();
    assert_eq!(run(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(outs(&p, 0xe0), vec![9]);
    assert_eq!(p.cr8, 9);
    assert_eq!(outs(&p, VEC_PORT), vec![13]);
}

#[test]
fn apic_base_refusal_is_gp_and_cpuid_apic_bit_follows_enable() {
    let m = memory();
    setup_long_mode(&m);
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            a.mov(eax, 1).unwrap();
            a.cpuid().unwrap();
            a.mov(eax, edx).unwrap();
            a.out(0xe0, eax).unwrap();
            a.mov(ecx, 0x1b).unwrap();
            a.rdmsr().unwrap();
            a.and(eax, !0x800).unwrap();
            a.wrmsr().unwrap();
            a.mov(eax, 1).unwrap();
            a.cpuid().unwrap();
            a.mov(eax, edx).unwrap();
            a.out(0xe0, eax).unwrap();
            a.mov(ecx, 0x1b).unwrap();
            a.rdmsr().unwrap();
            a.out(0xe1, eax).unwrap();
            a.or(eax, 1).unwrap();
            a.wrmsr().unwrap(); // refused by the platform: #GP
            a.hlt().unwrap();
        }),
    );
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = ApicPlatform::default();
    assert_eq!(run(&mut cpu, &mut p), Exit::Halted);
    let leaf1 = outs(&p, 0xe0);
    assert_eq!(leaf1.len(), 2);
    assert_ne!(leaf1[0] & (1 << 9), 0, "APIC enabled at reset");
    assert_eq!(
        leaf1[1] & (1 << 9),
        0,
        "globally disabled: the bit is clear"
    );
    assert_eq!(
        outs(&p, 0xe1),
        vec![0xfee0_0100],
        "the accepted value is kept"
    );
    assert_eq!(outs(&p, VEC_PORT), vec![13]);
}
